"""Only an account's baseline is "already published when first seen"; rule_versions names the account.

Until now ``publications.first_seen_published`` was true for every rule first seen already
published, and analysts were told to leave those out: a rule added and published between two
syncs was left out too, so a report counted 1 publication where the publish quota dropped by 2.
Only an account's first listing (its baseline, the listing with no complete one before it) shows
rules whose publication qrsync could not have seen; a rule that appears published in any later
listing was published between that listing and the one before it (``previous_seen_at``).

- ``publications.in_baseline`` (new) is true for the rules of the baseline;
  ``first_seen_published``, the name existing queries filter on, now means the same.
- ``rule_versions.account_name`` (new): the account's name, as the other views have it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# A rule's first sighting records as previous_seen_at the account's previous complete listing:
# null only in the baseline (see insert_first_chunk and merge_listing in queries.sql).
BASELINE = "c.from_state IS NULL AND c.previous_seen_at IS NULL"

UP = f"""
CREATE OR REPLACE VIEW publications AS
SELECT c.id AS state_change_id,
       a.name AS account,
       c.account_id,
       c.prefix,
       r.path,
       c.from_state,
       c.observed_at AS published_observed_at,
       c.previous_seen_at,
       r.first_seen_at,
       c.observed_at - r.first_seen_at AS wait,
       {BASELINE} AS first_seen_published,
       c.sync_run_id,
       round(CAST(extract(epoch FROM c.observed_at - r.first_seen_at) / 3600 AS numeric), 2)
           AS wait_hours,
       {BASELINE} AS in_baseline
FROM rule_state_changes c
JOIN accounts a ON a.id = c.account_id
JOIN rules r ON r.account_id = c.account_id AND r.prefix = c.prefix
WHERE c.to_state = 2;
COMMENT ON VIEW publications IS
    'Each observed change of a rule to published (state 2), with the wait since it was first seen.'
    ' A rule added already published after the account''s first listing is a publication too'
    ' (from_state null); the first listing''s published rules are marked in_baseline.';
COMMENT ON COLUMN publications.from_state IS
    '1 (unpublished) before; null when the rule was first seen (or seen back) already published.';
COMMENT ON COLUMN publications.previous_seen_at IS
    'The publication happened after this: when the rule was last seen in its previous state, or,'
    ' for a rule first seen already published, the account''s previous complete listing'
    ' (null in the baseline).';
COMMENT ON COLUMN publications.wait IS
    'Time from first sighting to the publication being observed (0 for a rule first seen'
    ' already published).';
COMMENT ON COLUMN publications.in_baseline IS
    'true: the rule was already published in the account''s first listing (its baseline), so'
    ' when it was published is unknown; leave these out to count publications.';
COMMENT ON COLUMN publications.first_seen_published IS
    'Same as in_baseline (the older name): true only for the published rules of the account''s'
    ' first listing. A rule added already published later is a publication (false).';

CREATE OR REPLACE VIEW rule_versions AS
SELECT v.account_id, v.prefix, v.valid_from, v.valid_to, v.path, v.state, v.open_version,
       v.permit_sub_rule, v.debug_urls, v.deleted, v.sync_run_id, a.name AS account_name
FROM rule_past_versions v
JOIN accounts a ON a.id = v.account_id
UNION ALL
SELECT r.account_id, r.prefix, COALESCE(r.deleted_at, r.changed_at), CAST(NULL AS timestamptz),
       r.path, r.state, r.open_version, r.permit_sub_rule, r.debug_urls,
       r.deleted_at IS NOT NULL, r.version_run_id, a.name
FROM rules r
JOIN accounts a ON a.id = r.account_id;
COMMENT ON COLUMN rule_versions.account_name IS 'The account''s name from the configuration.';
"""


def _earlier(filename: str) -> ModuleType:
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(sql: str, start_marker: str) -> str:
    """From ``start_marker`` to the next blank line of an earlier migration's SQL."""
    start = sql.index(start_marker)
    end = sql.find("\n\n", start)
    return sql[start : end if end != -1 else len(sql)]


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    # CREATE OR REPLACE cannot drop the added columns: drop both views and recreate them as
    # revisions 0001 and 0004 (publications) and 0011 (rule_versions) left them.
    op.execute("DROP VIEW publications; DROP VIEW rule_versions;")
    op.execute(_block(_earlier("0001_initial_schema.py").VIEWS, "CREATE VIEW publications AS"))
    op.execute(
        _block(
            _earlier("0004_deletions_view_and_hours.py").UP,
            "CREATE OR REPLACE VIEW publications AS",
        )
    )
    op.execute(_earlier("0011_current_versions_in_rules.py").VIEW)
