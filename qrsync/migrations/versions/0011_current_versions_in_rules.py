"""A rule's current version lives in its ``rules`` row; ``rule_versions`` becomes a view.

Until now every rule's current content was stored twice: in ``rules`` and as the open row
(``valid_to`` null) of the ``rule_versions`` table. A first listing of 100,000 rules wrote
100,000 version rows with two indexes (about a third of the database's work for it), and every
change closed one version row and inserted another.

Now (the design of SQL:2011 system-versioned tables: current rows in the table, replaced ones
in a history table):

- ``rule_versions`` is renamed ``rule_past_versions`` and keeps only the replaced versions
  (``valid_to`` not null): a change or a deletion inserts one row there, the content it
  replaced, and nothing for a rule seen for the first time.
- ``rules.version_run_id`` is the run that opened the rule's current version.
- ``rule_versions`` is a view with the same columns as the table had (``id`` aside, a
  surrogate key nobody could join on): the past versions, and each rule's current version
  from ``rules`` (``valid_from`` its ``changed_at``, or ``deleted_at`` once deleted). Reports
  and BI tools read it as before.

The upgrade moves each current version's run to its rule and deletes the current versions
from the table (each ``rules`` row is rewritten once); the downgrade puts them back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW rule_versions AS
SELECT account_id, prefix, valid_from, valid_to, path, state, open_version, permit_sub_rule,
       debug_urls, deleted, sync_run_id
FROM rule_past_versions
UNION ALL
SELECT account_id, prefix, COALESCE(deleted_at, changed_at), CAST(NULL AS timestamptz), path,
       state, open_version, permit_sub_rule, debug_urls, deleted_at IS NOT NULL, version_run_id
FROM rules;
COMMENT ON VIEW rule_versions IS
    'Each distinct content of a rule over time (type-2 history); valid_to null is current.'
    ' The past versions (rule_past_versions) and each rule''s current one (rules).';
COMMENT ON COLUMN rule_versions.account_id IS 'The account (accounts.id).';
COMMENT ON COLUMN rule_versions.prefix IS 'The rule (rules.prefix).';
COMMENT ON COLUMN rule_versions.valid_from IS 'When qrsync first saw this content.';
COMMENT ON COLUMN rule_versions.valid_to IS
    'When qrsync saw it replaced; null for the current version.';
COMMENT ON COLUMN rule_versions.path IS 'The page, in this version.';
COMMENT ON COLUMN rule_versions.state IS '1 unpublished, 2 published, in this version.';
COMMENT ON COLUMN rule_versions.open_version IS
    'Mini-program rules: 1 develop, 2 trial, 3 release.';
COMMENT ON COLUMN rule_versions.permit_sub_rule IS 'Mini-program rules: 2 owns every sub-rule.';
COMMENT ON COLUMN rule_versions.debug_urls IS 'The debug_url list verbatim, in this version.';
COMMENT ON COLUMN rule_versions.deleted IS 'true: the rule was gone during this interval.';
COMMENT ON COLUMN rule_versions.sync_run_id IS 'The run that opened this version.';
"""


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE rule_versions RENAME TO rule_past_versions;
ALTER INDEX rule_versions_pkey RENAME TO rule_past_versions_pkey;
ALTER INDEX rule_versions_account_prefix_from_idx
    RENAME TO rule_past_versions_account_prefix_from_idx;
ALTER SEQUENCE rule_versions_id_seq RENAME TO rule_past_versions_id_seq;
COMMENT ON TABLE rule_past_versions IS
    'The replaced versions of each rule (valid_to set); rule_versions adds the current ones.';
COMMENT ON COLUMN rule_past_versions.valid_to IS 'When qrsync saw it replaced.';

ALTER TABLE rules ADD COLUMN version_run_id bigint;
UPDATE rules r
SET version_run_id = COALESCE(
    (SELECT max(v.sync_run_id) FROM rule_past_versions v
      WHERE v.account_id = r.account_id AND v.prefix = r.prefix AND v.valid_to IS NULL),
    (SELECT max(c.sync_run_id) FROM rule_state_changes c
      WHERE c.account_id = r.account_id AND c.prefix = r.prefix));
ALTER TABLE rules ALTER COLUMN version_run_id SET NOT NULL;
COMMENT ON COLUMN rules.version_run_id IS
    'The run that opened the rule''s current version (rule_versions.sync_run_id).';
DELETE FROM rule_past_versions WHERE valid_to IS NULL;
ALTER TABLE rule_past_versions ALTER COLUMN valid_to SET NOT NULL;
"""
        + VIEW
    )


def downgrade() -> None:
    op.execute(
        """
DROP VIEW rule_versions;
ALTER TABLE rule_past_versions ALTER COLUMN valid_to DROP NOT NULL;
INSERT INTO rule_past_versions (account_id, prefix, valid_from, valid_to, path, state,
                                open_version, permit_sub_rule, debug_urls, deleted, sync_run_id)
SELECT account_id, prefix, COALESCE(deleted_at, changed_at), NULL, path, state, open_version,
       permit_sub_rule, debug_urls, deleted_at IS NOT NULL, version_run_id
FROM rules;
ALTER TABLE rules DROP COLUMN version_run_id;
COMMENT ON COLUMN rule_past_versions.valid_to IS
    'When qrsync saw it replaced; null for the current version.';
COMMENT ON TABLE rule_past_versions IS
    'Each distinct content of a rule over time (type-2 history); valid_to null is current.';
ALTER SEQUENCE rule_past_versions_id_seq RENAME TO rule_versions_id_seq;
ALTER INDEX rule_past_versions_account_prefix_from_idx
    RENAME TO rule_versions_account_prefix_from_idx;
ALTER INDEX rule_past_versions_pkey RENAME TO rule_versions_pkey;
ALTER TABLE rule_past_versions RENAME TO rule_versions;
"""
    )
