"""Notifications: channels, events derived from the history by triggers, deliveries.

- ``notify_channels``: the ``[[notify]]`` channels of the configuration, mirrored at every start
  (like ``accounts``); a channel removed from the file is kept with ``configured = false``.
- ``notify_events``: the outbox. Each row is an event derived from what qrsync records, written
  by triggers in the very transaction that records the history it comes from: statement-level
  triggers with transition tables on ``rule_state_changes``, ``rule_past_versions``,
  ``account_snapshots`` and ``sync_runs``, so that a listing of 100,000 rules costs one
  ``INSERT ... SELECT`` and a sync adds no statement of its own. An account's first listing
  (its baseline) makes no rule event. ``rule_waiting`` is time-based: the delivery sweep writes
  it, once per rule version and threshold (``dedup_key``).
- ``notifications``: one row per event and channel that wants it, with its delivery state.
- ``notify_messages``: every message sent or attempted, per channel (the platform's rate limits
  are counted on it).
- ``notification_log``: a view of the notifications with their events, for people.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

EVENT_KINDS = (
    "rule_published",
    "rule_unpublished",
    "rule_deleted",
    "rule_restored",
    "rule_path_changed",
    "rule_waiting",
    "quota_low",
    "account_failing",
    "account_recovered",
    "deletions_held",
    "authorization_needed",
)
AUTHORIZATION_ERRCODES = (40013, 40125, 61006, 61007, 61023)
"""Errcodes of a credential WeChat refuses: an appid or AppSecret, the verify ticket, a
permission set, an authorizer refresh token (REFERENCE.md): a person must act."""

_KINDS = ", ".join(f"'{kind}'" for kind in EVENT_KINDS)
_AUTH = ", ".join(str(code) for code in AUTHORIZATION_ERRCODES)

TABLES = f"""
CREATE TABLE notify_channels (
    name text PRIMARY KEY,
    kind text NOT NULL
        CHECK (kind IN ('wecom', 'dingtalk', 'feishu', 'lark', 'slack', 'webhook')),
    events text[] NOT NULL,
    account_patterns text[] NOT NULL,
    failing_runs integer NOT NULL DEFAULT 3,
    waiting_days double precision NOT NULL DEFAULT 7,
    quota_below integer NOT NULL DEFAULT 10,
    configured boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notify_channels IS
    'The [[notify]] channels of the configuration, mirrored at every start (URLs and secrets'
    ' never: they stay in the environment or files the configuration names).';
COMMENT ON COLUMN notify_channels.events IS 'The event kinds the channel wants.';
COMMENT ON COLUMN notify_channels.account_patterns IS
    'The accounts the channel wants: the configured names and globs as anchored regular'
    ' expressions.';
COMMENT ON COLUMN notify_channels.failing_runs IS
    'account_failing after this many failed runs in a row.';
COMMENT ON COLUMN notify_channels.waiting_days IS
    'rule_waiting after a rule''s version stayed unpublished this long.';
COMMENT ON COLUMN notify_channels.quota_below IS
    'quota_low when the publish quota falls to this or below (once per crossing).';
COMMENT ON COLUMN notify_channels.configured IS
    'false: removed from the configuration (its undelivered notifications are abandoned).';

CREATE TABLE notify_events (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ({_KINDS})),
    account_id bigint NOT NULL,
    prefix text,
    occurred_at timestamptz NOT NULL,
    details jsonb NOT NULL DEFAULT '{{}}',
    sync_run_id bigint,
    dedup_key text UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notify_events_account_idx ON notify_events (account_id, occurred_at);
COMMENT ON TABLE notify_events IS
    'Events derived from the history (rule_state_changes, rule_past_versions, account_snapshots,'
    ' sync_runs) in the transaction that recorded it, for the channels that want them; the'
    ' time-based rule_waiting by the delivery sweep.';
COMMENT ON COLUMN notify_events.kind IS '{", ".join(EVENT_KINDS)}.';
COMMENT ON COLUMN notify_events.prefix IS 'The rule''s prefix for rule events, else null.';
COMMENT ON COLUMN notify_events.occurred_at IS
    'When qrsync observed it (the listing, the run''s end, the sweep).';
COMMENT ON COLUMN notify_events.details IS
    'Kind-specific facts: path, old_path, from_state, to_state, waited_days, quota, threshold,'
    ' failed_runs, error, errcode, held_deletions, command.';
COMMENT ON COLUMN notify_events.sync_run_id IS 'The run whose history the event comes from.';
COMMENT ON COLUMN notify_events.dedup_key IS
    'rule_waiting: one event per rule version and threshold.';

CREATE TABLE notify_messages (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now(),
    events integer NOT NULL,
    ok boolean NOT NULL,
    http_status integer,
    detail text,
    replica text
);
CREATE INDEX notify_messages_channel_sent_idx ON notify_messages (channel, sent_at);
COMMENT ON TABLE notify_messages IS
    'Every message sent or attempted to a channel (a digest covers many events); the'
    ' platform''s rate limits are counted on it.';
COMMENT ON COLUMN notify_messages.ok IS 'The receiver accepted it (a 200 whose body carries an'
    ' error is not ok).';
COMMENT ON COLUMN notify_messages.detail IS 'What the receiver answered, one line, masked.';

CREATE TABLE notifications (
    event_id bigint NOT NULL REFERENCES notify_events (id),
    channel text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'abandoned')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_error text,
    sent_at timestamptz,
    message_id bigint,
    PRIMARY KEY (channel, event_id)
);
CREATE INDEX notifications_pending_idx ON notifications (channel, next_attempt_at, event_id)
    WHERE status = 'pending';
COMMENT ON TABLE notifications IS
    'One row per event and channel that wants it: delivered once per channel in normal'
    ' operation whatever the number of qrsync processes, at least once across a crash between'
    ' sending and recording.';
COMMENT ON COLUMN notifications.status IS
    'pending (not delivered yet: see attempts and last_error), sent, or abandoned (the channel'
    ' was removed from the configuration).';
COMMENT ON COLUMN notifications.attempts IS 'Failed deliveries so far.';
COMMENT ON COLUMN notifications.next_attempt_at IS
    'Not tried again before this (exponential backoff after a failure).';
COMMENT ON COLUMN notifications.last_error IS 'What went wrong last, one line, masked.';
COMMENT ON COLUMN notifications.sent_at IS 'When the receiver accepted the message holding it.';
COMMENT ON COLUMN notifications.message_id IS 'The notify_messages row that delivered it.';

CREATE VIEW notification_log AS
SELECT n.channel, e.id AS event_id, e.kind, a.name AS account, e.prefix, e.occurred_at,
       e.details, n.status, n.attempts, n.last_error, n.sent_at, n.next_attempt_at
FROM notifications n
JOIN notify_events e ON e.id = n.event_id
JOIN accounts a ON a.id = e.account_id;
COMMENT ON VIEW notification_log IS
    'Each notification with its event: what each channel got (a digest''s "and N more" lists'
    ' its events here) and what it still has to get.';
COMMENT ON COLUMN notification_log.status IS 'pending, sent or abandoned.';
"""

FUNCTIONS = f"""
CREATE FUNCTION notify_wants(c notify_channels, kind text, account text, details jsonb)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT c.configured
       AND kind = ANY (c.events)
       AND account ~ ANY (c.account_patterns)
       AND CASE kind
             WHEN 'quota_low' THEN c.quota_below = CAST(details ->> 'threshold' AS integer)
             WHEN 'account_failing'
                 THEN c.failing_runs = CAST(details ->> 'threshold' AS integer)
             WHEN 'account_recovered'
                 THEN c.failing_runs <= CAST(details ->> 'failed_runs' AS integer)
             WHEN 'rule_waiting'
                 THEN c.waiting_days = CAST(details ->> 'threshold' AS double precision)
             ELSE true
           END
$$;
COMMENT ON FUNCTION notify_wants(notify_channels, text, text, jsonb) IS
    'Whether channel c wants an event of this kind, account and details (thresholds).';

CREATE FUNCTION notify_rule_state_changes() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM notify_channels WHERE configured) THEN
        RETURN NULL;
    END IF;
    -- A first sighting without an earlier complete listing (previous_seen_at null) is the
    -- account's baseline: no event. A rule seen again after a deletion was first seen before.
    WITH ev AS (
    INSERT INTO notify_events (kind, account_id, prefix, occurred_at, details, sync_run_id)
    SELECT e.kind, e.account_id, e.prefix, e.observed_at, e.details, e.sync_run_id
    FROM (
        SELECT CASE
                 WHEN c.to_state IS NULL THEN 'rule_deleted'
                 WHEN c.from_state IS NULL AND r.first_seen_at < c.observed_at
                     THEN 'rule_restored'
                 WHEN c.to_state = 2 THEN 'rule_published'
                 WHEN c.from_state = 2 THEN 'rule_unpublished'
               END AS kind,
               c.account_id, c.prefix, c.observed_at, c.sync_run_id,
               jsonb_build_object(
                   'path', r.path, 'from_state', c.from_state, 'to_state', c.to_state,
                   'first_seen_at', r.first_seen_at, 'previous_seen_at', c.previous_seen_at,
                   'waited_days',
                   round(CAST(extract(epoch FROM c.observed_at - r.first_seen_at) / 86400
                              AS numeric), 1)) AS details
        FROM new_changes c
        JOIN rules r ON r.account_id = c.account_id AND r.prefix = c.prefix
        WHERE c.from_state IS NOT NULL OR c.previous_seen_at IS NOT NULL
    ) e
    JOIN accounts a ON a.id = e.account_id
    WHERE e.kind IS NOT NULL
      AND EXISTS (SELECT FROM notify_channels n WHERE notify_wants(n, e.kind, a.name, e.details))
    RETURNING id, kind, account_id, details
    )
    INSERT INTO notifications (event_id, channel)
    SELECT ev.id, c.name
    FROM ev
    JOIN accounts a ON a.id = ev.account_id
    JOIN notify_channels c ON notify_wants(c, ev.kind, a.name, ev.details);
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_rule_versions() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM notify_channels WHERE configured) THEN
        RETURN NULL;
    END IF;
    -- A live version closed by a change of the rule (not by its deletion, nor its return)
    -- whose path differs from the rule's new one.
    WITH ev AS (
    INSERT INTO notify_events (kind, account_id, prefix, occurred_at, details, sync_run_id)
    SELECT 'rule_path_changed', v.account_id, v.prefix, v.valid_to,
           jsonb_build_object('path', r.path, 'old_path', v.path, 'state', r.state),
           r.version_run_id
    FROM new_versions v
    JOIN rules r ON r.account_id = v.account_id AND r.prefix = v.prefix
    JOIN accounts a ON a.id = v.account_id
    WHERE NOT v.deleted AND r.deleted_at IS NULL AND r.changed_at = v.valid_to
      AND r.path IS DISTINCT FROM v.path
      AND EXISTS (SELECT FROM notify_channels n
                  WHERE notify_wants(n, 'rule_path_changed', a.name, '{{}}'))
    RETURNING id, kind, account_id, details
    )
    INSERT INTO notifications (event_id, channel)
    SELECT ev.id, c.name
    FROM ev
    JOIN accounts a ON a.id = ev.account_id
    JOIN notify_channels c ON notify_wants(c, ev.kind, a.name, ev.details);
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_account_snapshots() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    -- Most snapshots are above every threshold: nothing to look up.
    IF NOT EXISTS (
        SELECT FROM new_snapshots s
        WHERE s.qrcodejump_pub_quota <= (SELECT max(quota_below) FROM notify_channels
                                         WHERE configured AND 'quota_low' = ANY (events)))
    THEN
        RETURN NULL;
    END IF;
    -- Once per crossing of each channel's threshold: the quota is at or below it now and was
    -- above it (or unknown) in the account's previous snapshot that knew it.
    WITH ev AS (
    INSERT INTO notify_events (kind, account_id, occurred_at, details, sync_run_id)
    SELECT 'quota_low', s.account_id, s.taken_at,
           jsonb_build_object('quota', s.qrcodejump_pub_quota, 'threshold', t.threshold,
                              'previous_quota', s.previous_quota),
           s.sync_run_id
    FROM (
        SELECT n.*,
               (SELECT x.qrcodejump_pub_quota
                FROM account_snapshots x
                WHERE x.account_id = n.account_id AND x.taken_at < n.taken_at
                  AND x.qrcodejump_pub_quota IS NOT NULL
                ORDER BY x.taken_at DESC
                LIMIT 1) AS previous_quota
        FROM new_snapshots n
        WHERE n.qrcodejump_pub_quota IS NOT NULL
    ) AS s
    JOIN accounts a ON a.id = s.account_id
    CROSS JOIN LATERAL (
        SELECT DISTINCT c.quota_below AS threshold
        FROM notify_channels c
        WHERE notify_wants(c, 'quota_low', a.name,
                           jsonb_build_object('threshold', c.quota_below))
    ) AS t
    WHERE s.qrcodejump_pub_quota <= t.threshold
      AND (s.previous_quota IS NULL OR s.previous_quota > t.threshold)
    RETURNING id, kind, account_id, details
    )
    INSERT INTO notifications (event_id, channel)
    SELECT ev.id, c.name
    FROM ev
    JOIN accounts a ON a.id = ev.account_id
    JOIN notify_channels c ON notify_wants(c, ev.kind, a.name, ev.details);
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_sync_runs() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM notify_channels WHERE configured) THEN
        RETURN NULL;
    END IF;
    -- Runs that closed in this statement (an abandoned run says nothing about the account),
    -- each with the account's run before it; streak: the account's failed runs since its last
    -- success, this one included, counted only when this run or the one before it failed.
    WITH closed AS MATERIALIZED (
        SELECT n.id, n.account_id, n.status, n.errcode, n.error, n.message, n.finished_at,
               a.name AS account, p.status AS previous_status, p.errcode AS previous_errcode,
               CASE WHEN n.status = 'failed' OR p.status = 'failed' THEN
                   (SELECT count(*)
                    FROM sync_runs f
                    WHERE f.account_id = n.account_id AND f.status = 'failed' AND NOT f.abandoned
                      AND f.started_at <= n.started_at
                      AND f.started_at > COALESCE(
                          (SELECT g.started_at FROM sync_runs g
                           WHERE g.account_id = n.account_id AND g.id <> n.id
                             AND g.status IN ('succeeded', 'partial')
                             AND g.started_at <= n.started_at
                           ORDER BY g.started_at DESC
                           LIMIT 1),
                          '-infinity'))
               ELSE 0 END AS streak
        FROM new_runs n
        JOIN old_runs o ON o.id = n.id
        JOIN accounts a ON a.id = n.account_id
        LEFT JOIN LATERAL (
            SELECT g.status, g.errcode
            FROM sync_runs g
            WHERE g.account_id = n.account_id AND g.id <> n.id
              AND g.status <> 'running' AND NOT g.abandoned
              AND g.started_at <= n.started_at
            ORDER BY g.started_at DESC
            LIMIT 1
        ) AS p ON true
        WHERE o.status = 'running' AND n.status <> 'running' AND NOT n.abandoned
    ),
    events AS (
        SELECT 'account_failing' AS kind, c.account_id, c.account, c.finished_at, c.id,
               jsonb_build_object('failed_runs', c.streak, 'threshold', c.streak,
                                  'errcode', c.errcode, 'error', c.error) AS details
        FROM closed c
        WHERE c.status = 'failed'
        UNION ALL
        SELECT 'authorization_needed', c.account_id, c.account, c.finished_at, c.id,
               jsonb_build_object('errcode', c.errcode, 'error', c.error)
        FROM closed c
        WHERE c.status = 'failed' AND c.errcode IN ({_AUTH})
          AND c.previous_errcode IS DISTINCT FROM c.errcode
        UNION ALL
        SELECT 'account_recovered', c.account_id, c.account, c.finished_at, c.id,
               jsonb_build_object('failed_runs', c.streak, 'status', c.status)
        FROM closed c
        WHERE c.status IN ('succeeded', 'partial') AND c.previous_status = 'failed'
          AND c.streak > 0
        UNION ALL
        SELECT 'deletions_held', c.account_id, c.account, c.finished_at, c.id,
               jsonb_build_object(
                   'held_deletions',
                   CAST(substring(c.message FROM '(\\d+) of \\d+ live rules are missing')
                        AS integer),
                   'live_rules',
                   CAST(substring(c.message FROM '\\d+ of (\\d+) live rules are missing')
                        AS integer),
                   'command',
                   substring(c.message FROM '(qrsync sync --account .* --allow-mass-delete)'),
                   'message', c.message)
        FROM closed c
        WHERE c.status = 'partial' AND c.message LIKE '%--allow-mass-delete%'
    ),
    ev AS (
    INSERT INTO notify_events (kind, account_id, occurred_at, details, sync_run_id)
    SELECT e.kind, e.account_id, e.finished_at, e.details, e.id
    FROM events e
    WHERE EXISTS (SELECT FROM notify_channels n
                  WHERE notify_wants(n, e.kind, e.account, e.details))
    RETURNING id, kind, account_id, details
    )
    INSERT INTO notifications (event_id, channel)
    SELECT ev.id, c.name
    FROM ev
    JOIN accounts a ON a.id = ev.account_id
    JOIN notify_channels c ON notify_wants(c, ev.kind, a.name, ev.details);
    RETURN NULL;
END
$$;

CREATE TRIGGER notify_rule_state_changes AFTER INSERT ON rule_state_changes
    REFERENCING NEW TABLE AS new_changes
    FOR EACH STATEMENT EXECUTE FUNCTION notify_rule_state_changes();
CREATE TRIGGER notify_rule_versions AFTER INSERT ON rule_past_versions
    REFERENCING NEW TABLE AS new_versions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_rule_versions();
CREATE TRIGGER notify_account_snapshots AFTER INSERT ON account_snapshots
    REFERENCING NEW TABLE AS new_snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION notify_account_snapshots();
CREATE TRIGGER notify_sync_runs AFTER UPDATE ON sync_runs
    REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION notify_sync_runs();
"""

DOWN = """
DROP TRIGGER notify_sync_runs ON sync_runs;
DROP TRIGGER notify_account_snapshots ON account_snapshots;
DROP TRIGGER notify_rule_versions ON rule_past_versions;
DROP TRIGGER notify_rule_state_changes ON rule_state_changes;
DROP VIEW notification_log;
DROP TABLE notifications;
DROP TABLE notify_messages;
DROP TABLE notify_events;
DROP FUNCTION notify_sync_runs();
DROP FUNCTION notify_account_snapshots();
DROP FUNCTION notify_rule_versions();
DROP FUNCTION notify_rule_state_changes();
DROP FUNCTION notify_wants(notify_channels, text, text, jsonb);
DROP TABLE notify_channels;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(FUNCTIONS)


def downgrade() -> None:
    op.execute(DOWN)
