"""The one definition of qrsync's tables (SQLAlchemy Core), used by Alembic as target_metadata.

Tables carry no schema name: every connection's ``search_path`` is set to ``database.schema``
(see :mod:`qrsync.store.engine`), so one definition serves any schema. A test checks that
migrating from empty gives exactly this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from qrsync.store.revision import HEAD_REVISION as HEAD_REVISION  # re-export; bump it there

metadata = MetaData()

TS = DateTime(timezone=True)

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("appid", Text, nullable=False),
    Column("miniprogram_appid", Text),
    Column("token_source", Text, nullable=False),
    Column("schedule", Text),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("in_config", Boolean, nullable=False, server_default=text("true")),
    Column("source", Text, nullable=False, server_default=text("'config'")),
    Column("central_url", Text),
    Column("secret_env", Text),
    Column("token_env", Text),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    Column("updated_at", TS, nullable=False, server_default=text("now()")),
    UniqueConstraint("name", name="accounts_name_key"),
    CheckConstraint("kind IN ('miniprogram', 'service_account')", name="accounts_kind_check"),
    CheckConstraint("source IN ('config', 'import', 'discover')", name="accounts_source_check"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("trigger", Text, nullable=False),
    Column("scheduled_for", TS),
    Column("replica", Text),
    Column("started_at", TS, nullable=False, server_default=text("now()")),
    Column("finished_at", TS),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("api_calls", Integer, nullable=False, server_default=text("0")),
    Column("pages", Integer, nullable=False, server_default=text("0")),
    Column("rules_seen", Integer, nullable=False, server_default=text("0")),
    Column("inserted", Integer, nullable=False, server_default=text("0")),
    Column("updated", Integer, nullable=False, server_default=text("0")),
    Column("unchanged", Integer, nullable=False, server_default=text("0")),
    Column("deleted", Integer, nullable=False, server_default=text("0")),
    Column("state_changes", Integer, nullable=False, server_default=text("0")),
    Column("total_count", Integer),
    Column("errcode", Integer),
    Column("error", Text),
    Column("message", Text),
    Column("abandoned", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint(
        "status IN ('running', 'succeeded', 'partial', 'failed')", name="sync_runs_status_check"
    ),
    Index("sync_runs_account_started_idx", "account_id", "started_at"),
    Index(
        "sync_runs_running_idx",
        "account_id",
        postgresql_where=text("status = 'running'"),
    ),
    Index(
        "sync_runs_account_slot_idx",
        "account_id",
        "scheduled_for",
        postgresql_where=text("scheduled_for IS NOT NULL"),
    ),
)

rules = Table(
    "rules",
    metadata,
    Column("account_id", BigInteger, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("path", Text),
    Column("state", SmallInteger),
    Column("open_version", SmallInteger),
    Column("permit_sub_rule", SmallInteger),
    Column("debug_urls", ARRAY(Text)),
    Column("first_seen_at", TS, nullable=False),
    Column("changed_at", TS, nullable=False),
    Column("published_at", TS),
    Column("deleted_at", TS),
    Column("version_run_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("account_id", "prefix", name="rules_pkey"),
)

rule_debug_urls = Table(
    "rule_debug_urls",
    metadata,
    Column("account_id", BigInteger, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "prefix", "url", name="rule_debug_urls_pkey"),
)

rule_state_changes = Table(
    "rule_state_changes",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("account_id", BigInteger, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("from_state", SmallInteger),
    Column("to_state", SmallInteger),
    Column("observed_at", TS, nullable=False),
    Column("previous_seen_at", TS),
    Column("sync_run_id", BigInteger, nullable=False),
    Index("rule_state_changes_observed_brin", "observed_at", postgresql_using="brin"),
    Index("rule_state_changes_account_prefix_idx", "account_id", "prefix"),
)

rule_past_versions = Table(
    "rule_past_versions",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("account_id", BigInteger, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("valid_from", TS, nullable=False),
    Column("valid_to", TS, nullable=False),
    Column("path", Text),
    Column("state", SmallInteger),
    Column("open_version", SmallInteger),
    Column("permit_sub_rule", SmallInteger),
    Column("debug_urls", ARRAY(Text)),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("sync_run_id", BigInteger, nullable=False),
    Index("rule_past_versions_account_prefix_from_idx", "account_id", "prefix", "valid_from"),
)

account_snapshots = Table(
    "account_snapshots",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("sync_run_id", BigInteger, ForeignKey("sync_runs.id"), nullable=False),
    Column("taken_at", TS, nullable=False),
    Column("qrcodejump_open", SmallInteger),
    Column("qrcodejump_pub_quota", Integer),
    Column("total_count", Integer),
    Column("rule_count", Integer, nullable=False),
    Column("complete", Boolean, nullable=False),
    Index("account_snapshots_account_taken_idx", "account_id", "taken_at"),
)

staged_rules = Table(
    "staged_rules",
    metadata,
    Column("sync_run_id", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("path", Text),
    Column("state", SmallInteger),
    Column("open_version", SmallInteger),
    Column("permit_sub_rule", SmallInteger),
    Column("debug_urls", ARRAY(Text)),
    Index("staged_rules_run_seq_idx", "sync_run_id", "seq"),
    prefixes=["UNLOGGED"],
)

listing_digests = Table(
    "listing_digests",
    metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("sync_run_id", BigInteger, nullable=False),
    Column("chunk_rows", Integer, nullable=False),
    Column("rules_seen", Integer, nullable=False),
    Column("digests", ARRAY(LargeBinary), nullable=False),
)

quota_holds = Table(
    "quota_holds",
    metadata,
    Column("appid", Text, primary_key=True),
    Column("errcode", Integer, nullable=False),
    Column("held_since", TS, nullable=False),
    Column("held_until", TS, nullable=False),
    Column("sync_run_id", BigInteger, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("key", Text, primary_key=True),
    Column("access_token", Text, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("reuse_until", TS, nullable=False),
    Column("fetched_at", TS, nullable=False, server_default=text("now()")),
)

authorizer_refresh_tokens = Table(
    "authorizer_refresh_tokens",
    metadata,
    Column("component_appid", Text, nullable=False),
    Column("authorizer_appid", Text, nullable=False),
    Column("refresh_token", Text, nullable=False),
    Column("seed_fingerprint", Text, nullable=False),
    Column("updated_at", TS, nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint(
        "component_appid", "authorizer_appid", name="authorizer_refresh_tokens_pkey"
    ),
)

account_leases = Table(
    "account_leases",
    metadata,
    Column("account_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("holder", Text),
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    Column(
        "lease_until",
        TS,
        nullable=False,
        server_default=text("'-infinity'::timestamp with time zone"),
    ),
    Column("scheduled_for", TS),
    Column("sync_run_id", BigInteger),
    Column("claimed_at", TS),
)

discovered_authorizers = Table(
    "discovered_authorizers",
    metadata,
    Column("component_appid", Text, nullable=False),
    Column("authorizer_appid", Text, nullable=False),
    Column("kind", Text),
    Column("nick_name", Text),
    Column("auth_time", BigInteger),
    Column("listed", Boolean, nullable=False, server_default=text("true")),
    Column("synced", Boolean, nullable=False, server_default=text("false")),
    Column("reason", Text),
    Column("errcode", Integer),
    Column("first_seen_at", TS, nullable=False, server_default=text("now()")),
    Column("checked_at", TS, nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("component_appid", "authorizer_appid", name="discovered_authorizers_pkey"),
)

discovery_runs = Table(
    "discovery_runs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("component_appid", Text, nullable=False),
    Column("trigger", Text, nullable=False, server_default=text("'cli'")),
    Column("scheduled_for", TS),
    Column("replica", Text),
    Column("started_at", TS, nullable=False, server_default=text("now()")),
    Column("finished_at", TS),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("authorizers", Integer),
    Column("added", Integer),
    Column("enabled", Integer),
    Column("disabled", Integer),
    Column("unsyncable", Integer),
    Column("errcode", Integer),
    Column("error", Text),
    Index(
        "discovery_runs_slot",
        "component_appid",
        "scheduled_for",
        unique=True,
        postgresql_where=text("scheduled_for IS NOT NULL"),
    ),
)

notify_channels = Table(
    "notify_channels",
    metadata,
    Column("name", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("account_patterns", ARRAY(Text), nullable=False),
    Column("failing_runs", Integer, nullable=False, server_default=text("3")),
    Column("waiting_days", Double, nullable=False, server_default=text("7")),
    Column("quota_below", Integer, nullable=False, server_default=text("10")),
    Column("configured", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    Column("updated_at", TS, nullable=False, server_default=text("now()")),
    CheckConstraint(
        "kind IN ('wecom', 'dingtalk', 'feishu', 'lark', 'slack', 'webhook')",
        name="notify_channels_kind_check",
    ),
)

notify_events = Table(
    "notify_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("prefix", Text),
    Column("occurred_at", TS, nullable=False),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("sync_run_id", BigInteger),
    Column("dedup_key", Text, unique=True),
    Column("recorded_at", TS, nullable=False, server_default=text("now()")),
    Index("notify_events_account_idx", "account_id", "occurred_at"),
)

notify_messages = Table(
    "notify_messages",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("channel", Text, nullable=False),
    Column("sent_at", TS, nullable=False, server_default=text("now()")),
    Column("events", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("http_status", Integer),
    Column("detail", Text),
    Column("replica", Text),
    Index("notify_messages_channel_sent_idx", "channel", "sent_at"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("event_id", BigInteger, ForeignKey("notify_events.id"), nullable=False),
    Column("channel", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", TS, nullable=False, server_default=text("now()")),
    Column("last_attempt_at", TS),
    Column("last_error", Text),
    Column("sent_at", TS),
    Column("message_id", BigInteger),
    PrimaryKeyConstraint("channel", "event_id", name="notifications_pkey"),
    CheckConstraint(
        "status IN ('pending', 'sent', 'abandoned')", name="notifications_status_check"
    ),
    Index(
        "notifications_pending_idx",
        "channel",
        "next_attempt_at",
        "event_id",
        postgresql_where=text("status = 'pending'"),
    ),
)
"""Notifications (revision 0015): the ``[[notify]]`` channels, the outbox of events the
triggers derive from the history, one row per event and channel, and every message sent."""
