"""Index the staged rules of a run by sequence: a listing is merged chunk by chunk as it arrives.

Each chunk's merge reads the rows just staged (``seq`` in a range); without this index it read
every row the run had staged so far, which grows quadratically over a long listing. Staged rows
are never committed any more (the whole listing is one transaction), so the table stays small.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX staged_rules_run_seq_idx ON staged_rules (sync_run_id, seq)")


def downgrade() -> None:
    op.execute("DROP INDEX staged_rules_run_seq_idx")
