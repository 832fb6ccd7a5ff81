"""Accounts found by discovery (`qrsync accounts discover`), and what discovery saw of each authorizer.

- ``accounts.source`` may be ``discover``: an account made from a third-party platform's
  authorizer list (never touched by the file's mirror or by an import).
- ``discovered_authorizers``: one row per (platform, authorizer) discovery has seen, with its
  kind, its ``auth_time`` (an authorizer whose ``auth_time`` did not change and that was
  synced is not asked about again), whether it is still listed, and why it is not synced
  (``reason``: a subscription account, unverified, a permission set missing, no linked mini
  program, an errcode); such an authorizer is looked at again at the next discovery.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UP = """
ALTER TABLE accounts DROP CONSTRAINT accounts_source_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_source_check
    CHECK (source IN ('config', 'import', 'discover'));
COMMENT ON COLUMN accounts.source IS
    'config: mirrored from the configuration file; import: from qrsync accounts import;'
    ' discover: from a third-party platform''s authorizer list (qrsync accounts discover).';

CREATE TABLE discovered_authorizers (
    component_appid text NOT NULL,
    authorizer_appid text NOT NULL,
    kind text,
    nick_name text,
    auth_time bigint,
    listed boolean NOT NULL DEFAULT true,
    synced boolean NOT NULL DEFAULT false,
    reason text,
    errcode integer,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    checked_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT discovered_authorizers_pkey PRIMARY KEY (component_appid, authorizer_appid)
);
COMMENT ON TABLE discovered_authorizers IS
    'Each authorizer of a third-party platform that qrsync accounts discover has seen.';
COMMENT ON COLUMN discovered_authorizers.kind IS
    'miniprogram, service_account or subscription_account (from api_get_authorizer_info).';
COMMENT ON COLUMN discovered_authorizers.auth_time IS
    'api_get_authorizer_list''s auth_time when it was last looked at; a change is looked at again.';
COMMENT ON COLUMN discovered_authorizers.listed IS
    'false: gone from the platform''s authorizer list (its accounts are disabled, history kept).';
COMMENT ON COLUMN discovered_authorizers.synced IS
    'true: its accounts are synced; false: see reason (looked at again at the next discovery).';
COMMENT ON COLUMN discovered_authorizers.reason IS
    'Why it is not synced: subscription account, unverified, permission set missing, no linked'
    ' mini program, an errcode met on the way; null when synced.';
"""

DOWN = """
DROP TABLE discovered_authorizers;
-- Discovered accounts (and their history) stay, as imported ones.
UPDATE accounts SET source = 'import' WHERE source = 'discover';
ALTER TABLE accounts DROP CONSTRAINT accounts_source_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_source_check CHECK (source IN ('config', 'import'));
COMMENT ON COLUMN accounts.source IS
    'config: mirrored from the configuration file; import: from qrsync accounts import.';
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
