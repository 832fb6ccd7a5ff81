"""Views analysts need (unpublished_rules, account_latest_snapshot) and comments on every column.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UP = """
CREATE VIEW unpublished_rules AS
SELECT r.account,
       r.account_id,
       r.prefix,
       r.path,
       s.since AS unpublished_since,
       now() - s.since AS waiting,
       r.first_seen_at,
       r.changed_at
FROM current_rules r
CROSS JOIN LATERAL (
    -- Unpublished since the last change to state 1, or since first seen.
    SELECT COALESCE(
        (SELECT max(c.observed_at) FROM rule_state_changes c
          WHERE c.account_id = r.account_id AND c.prefix = r.prefix AND c.to_state = 1),
        r.first_seen_at) AS since
) s
WHERE r.state = 1;
COMMENT ON VIEW unpublished_rules IS
    'The publish queue: live rules not yet published, with how long each has waited.';
COMMENT ON COLUMN unpublished_rules.account IS 'The account''s name from the configuration.';
COMMENT ON COLUMN unpublished_rules.account_id IS 'The account''s id (accounts.id).';
COMMENT ON COLUMN unpublished_rules.prefix IS 'The rule: a URL prefix, verbatim.';
COMMENT ON COLUMN unpublished_rules.path IS 'The mini program page the rule opens, verbatim.';
COMMENT ON COLUMN unpublished_rules.unpublished_since IS
    'When qrsync first saw the rule in its current unpublished state (first sighting, or the change to state 1).';
COMMENT ON COLUMN unpublished_rules.waiting IS 'How long the rule has been waiting unpublished, as of now.';
COMMENT ON COLUMN unpublished_rules.first_seen_at IS 'When qrsync first saw the rule.';
COMMENT ON COLUMN unpublished_rules.changed_at IS 'When qrsync last saw the rule''s content change.';

CREATE VIEW account_latest_snapshot AS
SELECT DISTINCT ON (s.account_id)
       a.name AS account,
       s.account_id,
       s.taken_at,
       s.qrcodejump_open,
       s.qrcodejump_pub_quota,
       s.total_count,
       s.rule_count,
       s.complete,
       s.sync_run_id
FROM account_snapshots s
JOIN accounts a ON a.id = s.account_id
ORDER BY s.account_id, s.taken_at DESC, s.id DESC;
COMMENT ON VIEW account_latest_snapshot IS
    'Per account, the latest listing''s numbers: publish quota left, open flag, rule counts.';
COMMENT ON COLUMN account_latest_snapshot.account IS 'The account''s name from the configuration.';
COMMENT ON COLUMN account_latest_snapshot.account_id IS 'The account''s id (accounts.id).';
COMMENT ON COLUMN account_latest_snapshot.taken_at IS 'When the listing was taken.';
COMMENT ON COLUMN account_latest_snapshot.qrcodejump_open IS '1 when QR-code jumping is switched on.';
COMMENT ON COLUMN account_latest_snapshot.qrcodejump_pub_quota IS 'Publishes left this month.';
COMMENT ON COLUMN account_latest_snapshot.total_count IS 'total_count as WeChat reported it.';
COMMENT ON COLUMN account_latest_snapshot.rule_count IS 'Distinct rules the listing held.';
COMMENT ON COLUMN account_latest_snapshot.complete IS
    'true: a complete, consistent listing whose deletions were applied.';
COMMENT ON COLUMN account_latest_snapshot.sync_run_id IS 'The run that took the listing.';

COMMENT ON COLUMN accounts.id IS 'Surrogate key, referenced as account_id everywhere.';
COMMENT ON COLUMN accounts.token_source IS 'stable_token, central, static or component.';
COMMENT ON COLUMN accounts.schedule IS 'The account''s own schedule, if it has one.';
COMMENT ON COLUMN accounts.created_at IS 'When the account first appeared in the configuration.';
COMMENT ON COLUMN accounts.updated_at IS 'When the account''s configuration last changed.';
COMMENT ON COLUMN rules.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN rule_debug_urls.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN rule_debug_urls.prefix IS 'The rule (rules.prefix).';
COMMENT ON COLUMN rule_debug_urls.url IS 'A debug URL, verbatim (quirks such as "https: //" kept).';
COMMENT ON COLUMN rule_state_changes.id IS 'Surrogate key.';
COMMENT ON COLUMN rule_state_changes.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN rule_state_changes.prefix IS 'The rule (rules.prefix).';
COMMENT ON COLUMN rule_state_changes.observed_at IS 'When qrsync saw the new state.';
COMMENT ON COLUMN rule_state_changes.sync_run_id IS 'The run that saw it (sync_runs.id).';
COMMENT ON COLUMN rule_versions.id IS 'Surrogate key.';
COMMENT ON COLUMN rule_versions.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN rule_versions.prefix IS 'The rule (rules.prefix).';
COMMENT ON COLUMN rule_versions.valid_from IS 'When qrsync first saw this content.';
COMMENT ON COLUMN rule_versions.valid_to IS 'When qrsync saw it replaced; null for the current version.';
COMMENT ON COLUMN rule_versions.path IS 'The page, in this version.';
COMMENT ON COLUMN rule_versions.state IS '1 unpublished, 2 published, in this version.';
COMMENT ON COLUMN rule_versions.open_version IS 'Mini-program rules: 1 develop, 2 trial, 3 release.';
COMMENT ON COLUMN rule_versions.permit_sub_rule IS 'Mini-program rules: 2 owns every sub-rule.';
COMMENT ON COLUMN rule_versions.debug_urls IS 'The debug_url list verbatim, in this version.';
COMMENT ON COLUMN rule_versions.sync_run_id IS 'The run that opened this version.';
COMMENT ON COLUMN account_snapshots.id IS 'Surrogate key.';
COMMENT ON COLUMN account_snapshots.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN account_snapshots.sync_run_id IS 'The run that took the listing (sync_runs.id).';
COMMENT ON COLUMN account_snapshots.taken_at IS 'When the listing was taken.';
COMMENT ON COLUMN sync_runs.id IS 'Surrogate key.';
COMMENT ON COLUMN sync_runs.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN sync_runs.replica IS 'The daemon replica that ran it; null from the command line.';
COMMENT ON COLUMN sync_runs.started_at IS 'When the run started.';
COMMENT ON COLUMN sync_runs.finished_at IS 'When it finished; null while running.';
COMMENT ON COLUMN sync_runs.api_calls IS 'qrcodejumpget calls made (retries included).';
COMMENT ON COLUMN sync_runs.pages IS 'Pages read, across listing attempts.';
COMMENT ON COLUMN sync_runs.inserted IS 'Rules seen for the first time (or back after deletion: see updated).';
COMMENT ON COLUMN sync_runs.updated IS 'Rules whose content changed, or that came back.';
COMMENT ON COLUMN sync_runs.unchanged IS 'Rules listed and not written.';
COMMENT ON COLUMN sync_runs.deleted IS 'Rules marked deleted.';
COMMENT ON COLUMN sync_runs.state_changes IS 'rule_state_changes rows written.';
"""

DOWN = """
DROP VIEW account_latest_snapshot;
DROP VIEW unpublished_rules;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
