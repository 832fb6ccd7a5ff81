"""Digests of each account's last complete listing: an unchanged listing is not staged at all.

One row per account: a digest of every 5,000 rules of the last complete listing that left the
account's rules equal to it. The next listing is compared with them as its pages arrive; while
they match, nothing is sent to the database, and a listing that matches to the end writes no
rule, no history and no staged row (only its run and snapshot). Any run that changes the
account's rules otherwise drops the row. Internal, like staged_rules: not for reports.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE listing_digests (
            account_id bigint PRIMARY KEY,
            sync_run_id bigint NOT NULL,
            chunk_rows integer NOT NULL,
            rules_seen integer NOT NULL,
            digests bytea[] NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE listing_digests")
