"""Accounts imported from a CSV file (`qrsync accounts import`), beside those of the config.

Platforms whose authorizer accounts come and go keep them in the database: ``source`` says where
an account comes from (the config file's mirror never disables an imported one), and the token
columns hold what the file would say (names of environment variables, a central service's URL;
never a secret).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UP = """
ALTER TABLE accounts
    ADD COLUMN source text NOT NULL DEFAULT 'config'
        CONSTRAINT accounts_source_check CHECK (source IN ('config', 'import')),
    ADD COLUMN central_url text,
    ADD COLUMN secret_env text,
    ADD COLUMN token_env text;
COMMENT ON COLUMN accounts.source IS
    'config: mirrored from the configuration file; import: from qrsync accounts import.';
COMMENT ON COLUMN accounts.central_url IS 'Imported accounts, token source central: its URL.';
COMMENT ON COLUMN accounts.secret_env IS
    'Imported accounts, token source stable_token: the environment variable holding the secret.';
COMMENT ON COLUMN accounts.token_env IS
    'Imported accounts, token source static: the environment variable holding the token.';
"""

DOWN = """
ALTER TABLE accounts
    DROP COLUMN token_env,
    DROP COLUMN secret_env,
    DROP COLUMN central_url,
    DROP COLUMN source;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
