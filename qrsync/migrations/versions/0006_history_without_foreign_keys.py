"""Drop the foreign keys of the two history tables, which a merge writes by the hundred thousand.

On an initial listing of 100,000 rules, checking the four foreign keys of ``rule_versions`` and
``rule_state_changes`` took about 1 s of a 3.5 s sync. qrsync is their only writer and takes
both ids from rows it has just read or written (and never deletes accounts or runs), so the
checks guard nothing the merge does not already guarantee. ``rules.account_id`` keeps its
foreign key (BI tools use it to suggest joins); the columns' comments name what they refer to.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE rule_versions DROP CONSTRAINT rule_versions_account_id_fkey,"
        " DROP CONSTRAINT rule_versions_sync_run_id_fkey;"
        "ALTER TABLE rule_state_changes DROP CONSTRAINT rule_state_changes_account_id_fkey,"
        " DROP CONSTRAINT rule_state_changes_sync_run_id_fkey;"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE rule_versions"
        " ADD CONSTRAINT rule_versions_account_id_fkey"
        " FOREIGN KEY (account_id) REFERENCES accounts (id),"
        " ADD CONSTRAINT rule_versions_sync_run_id_fkey"
        " FOREIGN KEY (sync_run_id) REFERENCES sync_runs (id);"
        "ALTER TABLE rule_state_changes"
        " ADD CONSTRAINT rule_state_changes_account_id_fkey"
        " FOREIGN KEY (account_id) REFERENCES accounts (id),"
        " ADD CONSTRAINT rule_state_changes_sync_run_id_fkey"
        " FOREIGN KEY (sync_run_id) REFERENCES sync_runs (id);"
    )
