"""Account leases for daemon replicas, and abandoned runs.

A replica syncs an account only while it holds the account's lease (renewed while the run lasts;
the epoch fences a replica whose lease was taken over). ``sync_runs.abandoned`` marks a run closed
by another replica (or by a shutdown) so that the slot can be taken over.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE account_leases (
    account_id bigint PRIMARY KEY REFERENCES accounts (id),
    holder text,
    epoch bigint NOT NULL DEFAULT 0,
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    scheduled_for timestamptz,
    sync_run_id bigint,
    claimed_at timestamptz
);
COMMENT ON TABLE account_leases IS
    'Internal: which daemon replica may sync an account now (lease rows, PgBouncer-safe).';
COMMENT ON COLUMN account_leases.holder IS 'The replica holding (or last holding) the lease.';
COMMENT ON COLUMN account_leases.epoch IS
    'Incremented at every claim; a replica whose epoch is stale may not write.';
COMMENT ON COLUMN account_leases.lease_until IS 'The lease expires then unless renewed.';
COMMENT ON COLUMN account_leases.scheduled_for IS 'The slot being (or last) synced.';
COMMENT ON COLUMN account_leases.sync_run_id IS 'The run of that slot.';

ALTER TABLE sync_runs ADD COLUMN abandoned boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN sync_runs.abandoned IS
    'true: the run was closed by another replica or a shutdown; its slot may be taken over.';
CREATE INDEX sync_runs_account_slot_idx ON sync_runs (account_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
"""

DOWN = """
DROP INDEX sync_runs_account_slot_idx;
ALTER TABLE sync_runs DROP COLUMN abandoned;
DROP TABLE account_leases;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
