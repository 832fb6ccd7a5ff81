"""Discovery runs: one row per discovery of a platform's authorizers, by the CLI or by a daemon's
own discovery schedule.

- ``discovery_runs``: when it ran, for which platform, by which replica, for which schedule slot
  (``scheduled_for``: unique per platform, so that of several daemon replicas exactly one
  discovers in each slot: the one whose INSERT wins), how it ended and what it found.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE discovery_runs (
    id bigserial PRIMARY KEY,
    component_appid text NOT NULL,
    trigger text NOT NULL DEFAULT 'cli',
    scheduled_for timestamptz,
    replica text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed')),
    authorizers integer,
    added integer,
    enabled integer,
    disabled integer,
    unsyncable integer,
    errcode integer,
    error text
);
CREATE UNIQUE INDEX discovery_runs_slot ON discovery_runs (component_appid, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
COMMENT ON TABLE discovery_runs IS
    'Each discovery of a third-party platform''s authorizers (qrsync accounts discover, or the'
    ' daemon''s discovery schedule: one row per schedule slot, whichever replica claimed it).';
COMMENT ON COLUMN discovery_runs.scheduled_for IS
    'The daemon''s schedule slot this discovery ran for; null for qrsync accounts discover.';
COMMENT ON COLUMN discovery_runs.status IS
    'running, succeeded or failed (see errcode and error; no account was changed).';
COMMENT ON COLUMN discovery_runs.unsyncable IS
    'Authorizers found that cannot be synced (see discovered_authorizers.reason).';
"""

DOWN = """
DROP TABLE discovery_runs;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
