"""Quota holds: an AppID whose API quota WeChat said is used up (45009 daily, 45011 per
minute) is not called again until the quota resets.

One row per caller AppID (accounts sharing an AppID share its quota). Users may read it (a
dashboard can show "held until"); deleting a row lifts the hold at once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE quota_holds (
            appid text PRIMARY KEY,
            errcode integer NOT NULL,
            held_since timestamptz NOT NULL,
            held_until timestamptz NOT NULL,
            sync_run_id bigint NOT NULL
        );
        COMMENT ON TABLE quota_holds IS
            'AppIDs whose WeChat API quota is used up: not called until held_until. '
            'Delete a row to lift its hold at once.';
        COMMENT ON COLUMN quota_holds.appid IS 'The caller AppID whose quota is used up.';
        COMMENT ON COLUMN quota_holds.errcode IS
            '45009 (daily quota, resets at midnight China time) or 45011 (per-minute quota).';
        COMMENT ON COLUMN quota_holds.held_since IS 'When WeChat said so.';
        COMMENT ON COLUMN quota_holds.held_until IS 'When the quota resets: calls resume then.';
        COMMENT ON COLUMN quota_holds.sync_run_id IS 'The run (sync_runs.id) that met the errcode.';
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE quota_holds")
