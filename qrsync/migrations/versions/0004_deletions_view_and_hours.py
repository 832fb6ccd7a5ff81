"""A deletions view; durations in hours for BI tools; enabled flags; first_seen_published fixed.

Analysts asked for: a `deletions` view to match `publications`; numeric hours beside every
interval (Metabase and Grafana handle intervals poorly); whether a rule's account is enabled in
`current_rules` and `unpublished_rules`; and `publications.first_seen_published` true only for a
rule's very first sighting (not for a rule that comes back already published).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UP = """
CREATE OR REPLACE VIEW current_rules AS
SELECT a.name AS account,
       r.account_id,
       a.kind,
       a.appid,
       a.miniprogram_appid,
       r.prefix,
       r.path,
       r.state,
       CASE r.state WHEN 1 THEN 'unpublished' WHEN 2 THEN 'published' END AS state_name,
       r.open_version,
       r.permit_sub_rule,
       r.debug_urls,
       r.first_seen_at,
       r.changed_at,
       r.published_at,
       GREATEST(r.changed_at, s.last_complete_at) AS last_seen_at,
       a.enabled AS account_enabled
FROM rules r
JOIN accounts a ON a.id = r.account_id
LEFT JOIN LATERAL (
    SELECT max(taken_at) AS last_complete_at
    FROM account_snapshots
    WHERE account_id = r.account_id AND complete
) s ON true
WHERE r.deleted_at IS NULL;
COMMENT ON COLUMN current_rules.account_enabled IS
    'false: the account is paused or was removed from the configuration (its rules may be stale).';

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
       c.from_state IS NULL AND c.observed_at = r.first_seen_at AS first_seen_published,
       c.sync_run_id,
       round(CAST(extract(epoch FROM c.observed_at - r.first_seen_at) / 3600 AS numeric), 2)
           AS wait_hours
FROM rule_state_changes c
JOIN accounts a ON a.id = c.account_id
JOIN rules r ON r.account_id = c.account_id AND r.prefix = c.prefix
WHERE c.to_state = 2;
COMMENT ON COLUMN publications.first_seen_published IS
    'true: the rule was already published the very first time qrsync saw it (wait 0).';
COMMENT ON COLUMN publications.wait_hours IS 'wait in hours (a number, for BI tools).';

CREATE OR REPLACE VIEW unpublished_rules AS
SELECT r.account,
       r.account_id,
       r.prefix,
       r.path,
       s.since AS unpublished_since,
       now() - s.since AS waiting,
       r.first_seen_at,
       r.changed_at,
       round(CAST(extract(epoch FROM now() - s.since) / 3600 AS numeric), 2) AS waiting_hours,
       r.account_enabled
FROM current_rules r
CROSS JOIN LATERAL (
    -- Unpublished since the last change to state 1, or since first seen.
    SELECT COALESCE(
        (SELECT max(c.observed_at) FROM rule_state_changes c
          WHERE c.account_id = r.account_id AND c.prefix = r.prefix AND c.to_state = 1),
        r.first_seen_at) AS since
) s
WHERE r.state = 1;
COMMENT ON COLUMN unpublished_rules.waiting_hours IS 'waiting in hours (a number, for BI tools).';
COMMENT ON COLUMN unpublished_rules.account_enabled IS
    'false: the account is paused or was removed from the configuration.';

CREATE OR REPLACE VIEW sync_health AS
SELECT a.name AS account,
       a.id AS account_id,
       a.enabled,
       last_run.id AS last_run_id,
       last_run.status AS last_status,
       last_run.started_at AS last_run_at,
       last_run.error AS last_error,
       last_run.errcode AS last_errcode,
       last_ok.finished_at AS last_success_at,
       now() - last_ok.finished_at AS success_age,
       (SELECT count(*) FROM sync_runs f
         WHERE f.account_id = a.id AND f.status = 'failed'
           AND f.started_at > COALESCE(last_ok.started_at, '-infinity')) AS failure_streak,
       round(CAST(extract(epoch FROM now() - last_ok.finished_at) / 3600 AS numeric), 2)
           AS success_age_hours
FROM accounts a
LEFT JOIN LATERAL (
    -- Named columns, not *: a view would pin every column of sync_runs it expanded.
    SELECT r.id, r.status, r.started_at, r.error, r.errcode
    FROM sync_runs r WHERE r.account_id = a.id AND r.status <> 'running'
    ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) last_run ON true
LEFT JOIN LATERAL (
    SELECT r.started_at, r.finished_at
    FROM sync_runs r WHERE r.account_id = a.id AND r.status IN ('succeeded', 'partial')
    ORDER BY r.started_at DESC, r.id DESC LIMIT 1
) last_ok ON true;
COMMENT ON COLUMN sync_health.success_age_hours IS 'success_age in hours (a number, for BI tools).';

CREATE VIEW deletions AS
SELECT c.id AS state_change_id,
       a.name AS account,
       c.account_id,
       c.prefix,
       r.path,
       c.from_state,
       c.observed_at AS deleted_observed_at,
       c.previous_seen_at,
       r.deleted_at IS NOT NULL AS still_deleted,
       c.sync_run_id
FROM rule_state_changes c
JOIN accounts a ON a.id = c.account_id
JOIN rules r ON r.account_id = c.account_id AND r.prefix = c.prefix
WHERE c.to_state IS NULL;
COMMENT ON VIEW deletions IS
    'Each observed deletion of a rule (gone from a complete listing), the counterpart of publications.';
COMMENT ON COLUMN deletions.state_change_id IS 'The rule_state_changes row of the deletion.';
COMMENT ON COLUMN deletions.account IS 'The account''s name from the configuration.';
COMMENT ON COLUMN deletions.account_id IS 'The account''s id (accounts.id).';
COMMENT ON COLUMN deletions.prefix IS 'The rule that was deleted.';
COMMENT ON COLUMN deletions.path IS 'The page the rule opened (as last seen).';
COMMENT ON COLUMN deletions.from_state IS 'The rule''s state when last seen: 1 unpublished, 2 published.';
COMMENT ON COLUMN deletions.deleted_observed_at IS
    'When qrsync saw the rule gone (it went between previous_seen_at and this).';
COMMENT ON COLUMN deletions.previous_seen_at IS 'When the rule was last seen live.';
COMMENT ON COLUMN deletions.still_deleted IS 'false: the rule came back later.';
COMMENT ON COLUMN deletions.sync_run_id IS 'The run that observed the deletion.';
"""

REPLACED = ("current_rules", "publications", "sync_health", "unpublished_rules")


def _view_block(sql: str, view: str) -> str:
    """The CREATE VIEW statement of ``view`` and its COMMENTs, as an earlier migration wrote
    them (each view's block there ends at a blank line)."""
    start = sql.index(f"CREATE VIEW {view} AS")
    end = sql.find("\n\n", start)
    return sql[start : end if end != -1 else len(sql)]


def _earlier(filename: str) -> ModuleType:
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    # CREATE OR REPLACE cannot drop the added columns: drop the views (dependents first) and
    # recreate them as revisions 0001 and 0002 defined them.
    op.execute("DROP VIEW deletions; DROP VIEW unpublished_rules; DROP VIEW sync_health;")
    op.execute("DROP VIEW publications; DROP VIEW current_rules;")
    initial = _earlier("0001_initial_schema.py").VIEWS
    analyst = _earlier("0002_analyst_views_and_comments.py").UP
    for view in ("current_rules", "publications", "sync_health"):
        op.execute(_view_block(initial, view))
    op.execute(_view_block(analyst, "unpublished_rules"))
