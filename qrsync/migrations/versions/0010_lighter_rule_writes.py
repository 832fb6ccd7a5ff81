"""Lighter writes of rules and their history: costs an initial listing paid per rule that
guard nothing.

- ``rules.account_id`` loses its foreign key. Checking it ran once per inserted rule (about
  0.3 s of a 1.8 s merge of 100,000 new rules). qrsync is the only writer of ``rules`` and takes
  the account id from the ``accounts`` row it has just read, and it never deletes accounts; the
  column's comment names what it refers to, and docs/analysts.md says how to declare the join
  in Metabase (as for the history tables since 0006).
- ``rule_versions_current_idx`` (account_id, prefix WHERE valid_to IS NULL) goes: the index on
  (account_id, prefix, valid_from) finds a rule's current version as fast (a rule has a handful
  of versions), and every new version no longer updates two indexes on the prefix.
- ``staged_rules_run_prefix_idx`` goes: staged rules are only ever read by run and sequence
  now (a later listing is compared in a temporary table of its own and stages only what
  differs), and a first listing of 100,000 rules no longer sorts 100,000 prefixes into it.
- ``rule_state_changes_account_observed_idx`` (a b-tree on account_id, observed_at) becomes
  ``rule_state_changes_observed_brin`` (BRIN on observed_at): changes are appended in time
  order, so a block range index answers "since" questions (reports, dashboards) for almost no
  upkeep, where the b-tree cost about 80 ms per 100,000 new rules.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE rules DROP CONSTRAINT rules_account_id_fkey;"
        "DROP INDEX rule_versions_current_idx;"
        "DROP INDEX staged_rules_run_prefix_idx;"
        "DROP INDEX rule_state_changes_account_observed_idx;"
        "CREATE INDEX rule_state_changes_observed_brin ON rule_state_changes"
        " USING brin (observed_at);"
    )


def downgrade() -> None:
    op.execute(
        "DROP INDEX rule_state_changes_observed_brin;"
        "CREATE INDEX staged_rules_run_prefix_idx ON staged_rules (sync_run_id, prefix);"
        "CREATE INDEX rule_state_changes_account_observed_idx"
        " ON rule_state_changes (account_id, observed_at);"
        "CREATE INDEX rule_versions_current_idx ON rule_versions (account_id, prefix)"
        " WHERE valid_to IS NULL;"
        "ALTER TABLE rules ADD CONSTRAINT rules_account_id_fkey"
        " FOREIGN KEY (account_id) REFERENCES accounts (id);"
    )
