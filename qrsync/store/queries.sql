-- Every statement qrsync runs against its database, each under a "-- name: NAME --" header
-- followed by a one-line description (procrastinate style). Tables are unqualified: every
-- connection's search_path is the configured schema. Parameters are %(named)s.

-- name: mirror_accounts --
-- Insert or update the configured accounts in one statement, writing only rows that changed.
INSERT INTO accounts AS a (name, kind, appid, miniprogram_appid, token_source, schedule, enabled,
                           in_config, source)
SELECT c.name, c.kind, c.appid, c.miniprogram_appid, c.token_source, c.schedule, c.enabled, true,
       'config'
FROM unnest(CAST(%(names)s AS text[]), CAST(%(kinds)s AS text[]), CAST(%(appids)s AS text[]),
            CAST(%(miniprogram_appids)s AS text[]), CAST(%(token_sources)s AS text[]),
            CAST(%(schedules)s AS text[]), CAST(%(enableds)s AS boolean[]))
     AS c(name, kind, appid, miniprogram_appid, token_source, schedule, enabled)
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind, appid = EXCLUDED.appid, miniprogram_appid = EXCLUDED.miniprogram_appid,
    token_source = EXCLUDED.token_source, schedule = EXCLUDED.schedule,
    enabled = EXCLUDED.enabled, in_config = true, source = 'config', updated_at = now()
WHERE (a.kind, a.appid, a.miniprogram_appid, a.token_source, a.schedule, a.enabled, a.in_config,
       a.source)
      IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.appid, EXCLUDED.miniprogram_appid,
                        EXCLUDED.token_source, EXCLUDED.schedule, EXCLUDED.enabled, true,
                        'config');

-- name: disable_removed_accounts --
-- Disable the accounts no longer in the configuration; their history stays.
UPDATE accounts
SET enabled = false, in_config = false, updated_at = now()
WHERE name <> ALL (CAST(%(names)s AS text[])) AND (enabled OR in_config) AND source = 'config'
RETURNING name;

-- name: account_ids --
-- The id of every account by name.
SELECT id, name FROM accounts;

-- name: list_accounts --
-- The accounts with their last finished run, for `qrsync accounts`.
SELECT a.id, a.name, a.kind, a.appid, a.miniprogram_appid, a.token_source, a.enabled,
       a.in_config, a.source, r.id AS last_run_id, r.status AS last_status, r.started_at AS last_run_at,
       r.finished_at AS last_finished_at, r.rules_seen AS last_rules_seen, r.error AS last_error,
       (SELECT count(*) FROM rules x WHERE x.account_id = a.id AND x.deleted_at IS NULL)
           AS live_rules
FROM accounts a
LEFT JOIN LATERAL (
    SELECT * FROM sync_runs s WHERE s.account_id = a.id AND s.status <> 'running'
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1
) r ON true
ORDER BY a.name;

-- name: open_run --
-- The first statement of a run's transaction, which stays open for the whole run on the one
-- connection the run holds: the transaction's search_path, a new run id, its run lock (so that a
-- 'running' row whose lock is free is always a dead run: the lock is held before the row exists)
-- and the lock that serialises the runs of an account. Transaction-level locks: PgBouncer-safe.
-- The statements after it (start_run) see every run of the account that committed meanwhile.
SELECT set_config('search_path', %(search_path)s, true) AS search_path, reserved.id,
       pg_advisory_xact_lock(1903260011, CAST(%(account_id)s AS integer)) AS account_locked,
       pg_advisory_xact_lock(1903260013, CAST(reserved.id %% 2147483647 AS integer)) AS run_locked
FROM (SELECT nextval(pg_get_serial_sequence(%(runs_table)s, 'id')) AS id) AS reserved;

-- name: start_run --
-- Open the sync_runs row of a reserved run (committed at once, from another connection than
-- the run's: the run is 'running' for everybody until finished or failed), and close the
-- account's runs left 'running' by a process that died (SIGKILL, OOM, power loss): a live run
-- holds its run lock (open_run) from before its row exists until after it is closed, so one
-- whose lock is free is dead however young, and PostgreSQL rolled back all it had not committed
-- (nothing it listed was written). Its staged rows, if any, go with it.
-- It also reads what the run starts from. The run holds the account's lock (open_run) since
-- before this statement began, so what it reads is what every earlier run of the account
-- committed, and nothing changes it until the run ends: whether the account has rules, and
-- live ones (a first listing is merged in one piece, a later one compared with them), the
-- digests of its last complete listing if kept, and the hold on its caller AppID if its quota
-- is used up.
WITH closed AS (
    UPDATE sync_runs r
    SET status = 'failed', finished_at = now(), abandoned = true,
        error = 'abandoned: the process running it ended before the run did (closed by run '
                || CAST(%(run_id)s AS text) || ')'
    WHERE r.account_id = %(account_id)s AND r.status = 'running' AND r.id <> %(run_id)s
      AND pg_try_advisory_xact_lock(1903260013, CAST(r.id %% 2147483647 AS integer))
    RETURNING r.id
),
forgotten AS (
    DELETE FROM staged_rules s USING closed c WHERE s.sync_run_id = c.id
),
started AS (
    INSERT INTO sync_runs (id, account_id, trigger, scheduled_for, replica, started_at)
    VALUES (%(run_id)s, %(account_id)s, %(trigger)s, %(scheduled_for)s, %(replica)s,
            %(started_at)s)
    RETURNING id
)
SELECT (SELECT count(*) FROM closed) AS closed_dead_runs, (SELECT id FROM started) AS id,
       EXISTS (SELECT FROM rules WHERE account_id = %(account_id)s AND deleted_at IS NULL)
         AS has_live_rules,
       EXISTS (SELECT FROM rules WHERE account_id = %(account_id)s) AS has_rules,
       d.chunk_rows, d.rules_seen, d.digests,
       h.errcode AS hold_errcode, h.held_since, h.held_until
FROM (SELECT) AS one
LEFT JOIN listing_digests d ON d.account_id = %(account_id)s
LEFT JOIN quota_holds h ON h.appid = %(appid)s AND h.held_until > %(started_at)s;

-- name: unchanged_expectations --
-- What the listings of many accounts are compared with before their runs open (one statement for
-- a fleet, read without their locks: open_unchanged_runs checks it again under them): the
-- digests of each account's last complete listing, for accounts with live rules whose listing
-- fits in :max_rules.
SELECT d.account_id, d.sync_run_id, d.rules_seen, d.digests
FROM listing_digests d
WHERE d.account_id = ANY (CAST(%(account_ids)s AS bigint[]))
  AND d.chunk_rows = %(group_rows)s AND d.rules_seen BETWEEN 1 AND %(max_rules)s
  AND EXISTS (SELECT FROM rules r WHERE r.account_id = d.account_id AND r.deleted_at IS NULL);

-- name: lock_unchanged_accounts --
-- The first statement of a batch of unchanged listings' transaction: its search_path, and the
-- lock of each account whose lock is free (tried, not waited for: an account whose run is under
-- way goes its own way, and a batch never waits, nor deadlocks, on another).
SELECT set_config('search_path', %(search_path)s, true) AS search_path,
       ARRAY(SELECT i.account_id
             FROM unnest(CAST(%(account_ids)s AS bigint[])) AS i(account_id)
             WHERE pg_try_advisory_xact_lock(1903260011, CAST(i.account_id AS integer)))
         AS locked;

-- name: open_unchanged_runs --
-- Open a run for each listing of a batch that still equals its account's last complete one.
-- Under the accounts' locks (lock_unchanged_accounts, an earlier statement: this one sees every
-- run that committed before them), a listing is still unchanged if its account's digests are
-- still those its expectation read (kept by the same run). The account's runs left 'running' by
-- a process that died are closed, as start_run does. The runs are closed by
-- close_unchanged_runs in the same transaction: nobody sees them 'running'. (The runs come as
-- one JSON array: binding a dozen arrays cost more CPU than the rest of the batch's recording.)
WITH listed AS MATERIALIZED (
    SELECT i.account_id, i.trigger, i.scheduled_for, i.replica, i.started_at,
           nextval(pg_get_serial_sequence(%(runs_table)s, 'id')) AS id
    FROM jsonb_to_recordset(CAST(%(runs)s AS jsonb))
           AS i(account_id bigint, digest_run_id bigint, trigger text,
                scheduled_for timestamptz, replica text, started_at timestamptz)
    JOIN listing_digests d ON d.account_id = i.account_id AND d.sync_run_id = i.digest_run_id
),
closed AS (
    UPDATE sync_runs r
    SET status = 'failed', finished_at = now(), abandoned = true,
        error = 'abandoned: the process running it ended before the run did (closed by run '
                || CAST(l.id AS text) || ')'
    FROM listed l
    WHERE r.account_id = l.account_id AND r.status = 'running'
      AND pg_try_advisory_xact_lock(1903260013, CAST(r.id %% 2147483647 AS integer))
    RETURNING r.id, r.account_id
),
forgotten AS (
    DELETE FROM staged_rules s USING closed c WHERE s.sync_run_id = c.id
),
started AS (
    INSERT INTO sync_runs (id, account_id, trigger, scheduled_for, replica, started_at)
    SELECT id, account_id, trigger, scheduled_for, replica, started_at FROM listed
    RETURNING id, account_id
)
SELECT s.id, s.account_id,
       (SELECT count(*) FROM closed c WHERE c.account_id = s.account_id) AS closed_dead_runs
FROM started s;

-- name: close_unchanged_runs --
-- Record the snapshot of each unchanged listing and close its run (opened by
-- open_unchanged_runs in this transaction), as finish_run does for one run that wrote nothing.
WITH closing AS (
    SELECT *
    FROM jsonb_to_recordset(CAST(%(runs)s AS jsonb))
           AS c(run_id bigint, account_id bigint, observed_at timestamptz,
                qrcodejump_open integer, qrcodejump_pub_quota integer, total_count integer,
                rules_seen integer, api_calls integer, pages integer, message text)
),
snapshot AS (
    INSERT INTO account_snapshots (account_id, sync_run_id, taken_at, qrcodejump_open,
                                   qrcodejump_pub_quota, total_count, rule_count, complete)
    SELECT account_id, run_id, observed_at, qrcodejump_open, qrcodejump_pub_quota, total_count,
           rules_seen, true
    FROM closing
)
UPDATE sync_runs r
SET finished_at = %(finished_at)s, status = 'succeeded', api_calls = c.api_calls,
    pages = c.pages, rules_seen = c.rules_seen, inserted = 0, updated = 0,
    unchanged = c.rules_seen, deleted = 0, state_changes = 0, total_count = c.total_count,
    message = c.message
FROM closing c
WHERE r.id = c.run_id;

-- name: quota_hold --
-- The hold on a caller AppID whose quota is used up, if it still stands.
SELECT errcode, held_since, held_until FROM quota_holds
WHERE appid = %(appid)s AND held_until > %(now)s;

-- name: quota_holds --
-- Every hold, standing or expired (an expired one is harmless: it is replaced by the next).
SELECT appid, errcode, held_since, held_until, sync_run_id, held_until > %(now)s AS standing
FROM quota_holds
ORDER BY held_until DESC, appid;

-- name: release_quota_hold --
-- Lift the hold on a caller AppID: it is called again at once.
DELETE FROM quota_holds WHERE appid = %(appid)s
RETURNING errcode, held_since, held_until;

-- name: hold_quota --
-- Stop calling a caller AppID until its quota resets (45009, 45011).
INSERT INTO quota_holds (appid, errcode, held_since, held_until, sync_run_id)
VALUES (%(appid)s, %(errcode)s, %(held_since)s, %(held_until)s, %(run_id)s)
ON CONFLICT (appid) DO UPDATE
SET errcode = EXCLUDED.errcode, held_since = EXCLUDED.held_since,
    held_until = EXCLUDED.held_until, sync_run_id = EXCLUDED.sync_run_id;

-- name: create_listed_rules --
-- The rules of a run's listing as they arrive, for an account that has live rules: COPYed
-- without an index while the next pages are fetched, compared with the stored rules in one
-- pass at the end (compare_listing). A temporary table of the listing's transaction, shaped
-- like staged_rules but with none of its indexes: never logged, gone at commit or rollback.
CREATE TEMPORARY TABLE listed_rules (LIKE staged_rules) ON COMMIT DROP;

-- name: compare_listing --
-- Compare the run's listing with the account's live rules in one pass (a hash join: each side
-- read once), stage the rules that are new, changed or back for merge_chunk, and say how many
-- distinct prefixes the listing holds and which live rules it lacks. A live rule listed twice
-- (page drift) has all its listed rows staged, and merge_chunk keeps the later one; whether
-- any was is known from the counts, so that a listing without (the usual case) is not grouped.
WITH compared AS MATERIALIZED (
    SELECT l.seq, l.prefix, l.path, l.state, l.open_version, l.permit_sub_rule, l.debug_urls,
           r.prefix AS live_prefix,
           r.prefix IS NULL
             OR (r.path, r.state, r.open_version, r.permit_sub_rule, r.debug_urls)
                IS DISTINCT FROM (l.path, l.state, l.open_version, l.permit_sub_rule,
                                  l.debug_urls) AS differs
    FROM listed_rules l
    FULL JOIN (
        SELECT prefix, path, state, open_version, permit_sub_rule, debug_urls
        FROM rules
        WHERE account_id = %(account_id)s AND deleted_at IS NULL
    ) r ON r.prefix = l.prefix
),
tally AS MATERIALIZED (
    -- (The live rules are counted apart, not from the join: a rule listed twice is in it
    -- twice. Counting them again costs less than keeping them all for the join.)
    SELECT count(*) FILTER (WHERE prefix IS NOT NULL AND live_prefix IS NOT NULL)
             AS matched_rows,
           count(*) FILTER (WHERE prefix IS NULL) AS missing,
           (SELECT count(*) FROM rules WHERE account_id = %(account_id)s AND deleted_at IS NULL)
             AS live_rules
    FROM compared
),
listed_twice AS (
    SELECT live_prefix AS prefix
    FROM compared
    WHERE (SELECT matched_rows > live_rules - missing FROM tally)
      AND prefix IS NOT NULL AND live_prefix IS NOT NULL
    GROUP BY live_prefix
    HAVING count(*) > 1
),
staged AS (
    INSERT INTO staged_rules (sync_run_id, seq, prefix, path, state, open_version,
                              permit_sub_rule, debug_urls)
    SELECT %(run_id)s, seq, prefix, path, state, open_version, permit_sub_rule, debug_urls
    FROM compared
    WHERE prefix IS NOT NULL
      AND (differs OR prefix IN (SELECT t.prefix FROM listed_twice t))
    RETURNING 1
)
SELECT (SELECT live_rules - missing FROM tally)
         + (SELECT count(DISTINCT prefix) FROM compared WHERE live_prefix IS NULL) AS seen,
       (SELECT live_rules FROM tally) AS live_rules,
       (SELECT count(*) FROM staged) AS staged,
       ARRAY(SELECT live_prefix FROM compared WHERE prefix IS NULL ORDER BY live_prefix)
         AS missing;

-- name: merge_chunk --
-- Apply the staged rules with seq in [:lo, :hi) (a first listing, or the rules a compared
-- listing found new, changed or back) to rules, their debug URLs and their history, inside the
-- run's transaction. Unchanged rules are not written at all; of a prefix staged twice (page
-- drift), the later stands.
WITH listing AS MATERIALIZED (
    SELECT DISTINCT ON (prefix) prefix, path, state, open_version, permit_sub_rule, debug_urls
    FROM staged_rules
    WHERE sync_run_id = %(run_id)s AND seq >= %(lo)s AND seq < %(hi)s
    ORDER BY prefix, seq DESC
),
previous AS (
    SELECT max(taken_at) AS listed_at
    FROM account_snapshots
    WHERE account_id = %(account_id)s AND complete
),
diff AS MATERIALIZED (
    SELECT l.prefix, l.path, l.state, l.open_version, l.permit_sub_rule, l.debug_urls,
           r.prefix IS NULL AS is_new,
           r.deleted_at IS NOT NULL AS is_back,
           r.prefix IS NOT NULL AND r.deleted_at IS NULL
             AND (r.path, r.state, r.open_version, r.permit_sub_rule, r.debug_urls)
                 IS DISTINCT FROM (l.path, l.state, l.open_version, l.permit_sub_rule,
                                   l.debug_urls) AS is_changed,
           r.path AS old_path,
           r.state AS old_state,
           r.open_version AS old_open_version,
           r.permit_sub_rule AS old_permit_sub_rule,
           r.debug_urls AS old_debug_urls,
           r.changed_at AS old_changed_at,
           r.deleted_at AS old_deleted_at,
           r.version_run_id AS old_version_run_id
    FROM listing l
    -- An account with no rule at all (its first listing) has nothing to compare with: the
    -- join is skipped as a whole rather than probed per rule.
    LEFT JOIN rules r ON CAST(%(has_rules)s AS boolean)
                     AND r.account_id = %(account_id)s AND r.prefix = l.prefix
),
changed AS MATERIALIZED (
    SELECT * FROM diff WHERE is_changed OR is_back
),
inserted AS (
    INSERT INTO rules (account_id, prefix, path, state, open_version, permit_sub_rule, debug_urls,
                       first_seen_at, changed_at, published_at, version_run_id)
    SELECT %(account_id)s, prefix, path, state, open_version, permit_sub_rule, debug_urls,
           %(observed_at)s, %(observed_at)s,
           CASE WHEN state = 2 THEN CAST(%(observed_at)s AS timestamptz) END, %(run_id)s
    FROM diff
    WHERE is_new
    RETURNING 1
),
updated AS (
    UPDATE rules r
    SET path = d.path, state = d.state, open_version = d.open_version,
        permit_sub_rule = d.permit_sub_rule, debug_urls = d.debug_urls,
        changed_at = %(observed_at)s, deleted_at = NULL, version_run_id = %(run_id)s,
        published_at = COALESCE(r.published_at,
                                CASE WHEN d.state = 2 THEN CAST(%(observed_at)s AS timestamptz) END)
    FROM changed d
    WHERE r.account_id = %(account_id)s AND r.prefix = d.prefix
      -- Probe the few changed prefixes (the planner cannot see that they are few).
      AND r.prefix = ANY (ARRAY(SELECT prefix FROM changed))
      AND EXISTS (SELECT FROM changed)
    RETURNING d.is_back
),
state_changes AS (
    INSERT INTO rule_state_changes (account_id, prefix, from_state, to_state, observed_at,
                                    previous_seen_at, sync_run_id)
    SELECT %(account_id)s, d.prefix,
           CASE WHEN d.is_new OR d.is_back THEN NULL ELSE d.old_state END,
           d.state, %(observed_at)s,
           CASE WHEN d.is_new OR d.is_back THEN p.listed_at
                ELSE GREATEST(d.old_changed_at, p.listed_at) END,
           %(run_id)s
    FROM diff d, previous p
    WHERE d.is_new OR d.is_back OR (d.is_changed AND d.old_state IS DISTINCT FROM d.state)
    RETURNING 1
),
closed_versions AS (
    -- The content a change or a return replaces becomes a past version (the current one is
    -- the rules row itself).
    INSERT INTO rule_past_versions (account_id, prefix, valid_from, valid_to, path, state,
                                    open_version, permit_sub_rule, debug_urls, deleted,
                                    sync_run_id)
    SELECT %(account_id)s, prefix, COALESCE(old_deleted_at, old_changed_at), %(observed_at)s,
           old_path, old_state, old_open_version, old_permit_sub_rule, old_debug_urls,
           old_deleted_at IS NOT NULL, old_version_run_id
    FROM changed
    RETURNING 1
),
urls_changed AS (
    SELECT prefix, debug_urls
    FROM diff
    WHERE (is_new AND debug_urls IS NOT NULL)
       OR ((is_changed OR is_back) AND debug_urls IS DISTINCT FROM old_debug_urls)
),
removed_urls AS (
    DELETE FROM rule_debug_urls u
    USING urls_changed c
    WHERE u.account_id = %(account_id)s AND u.prefix = c.prefix
      AND u.prefix = ANY (ARRAY(SELECT prefix FROM urls_changed))
      AND EXISTS (SELECT FROM urls_changed)
      AND u.url <> ALL (COALESCE(c.debug_urls, CAST('{}' AS text[])))
    RETURNING 1
),
added_urls AS (
    INSERT INTO rule_debug_urls AS t (account_id, prefix, url, position)
    SELECT %(account_id)s, c.prefix, u.url, min(u.pos)
    FROM urls_changed c
    CROSS JOIN LATERAL unnest(c.debug_urls) WITH ORDINALITY AS u(url, pos)
    GROUP BY c.prefix, u.url
    ON CONFLICT (account_id, prefix, url) DO UPDATE
    SET position = EXCLUDED.position
    WHERE t.position IS DISTINCT FROM EXCLUDED.position
    RETURNING 1
)
SELECT (SELECT count(*) FROM listing) AS listed,
       (SELECT count(*) FROM inserted) AS inserted,
       (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM updated WHERE is_back) AS revived,
       (SELECT count(*) FROM state_changes) AS state_changes,
       (SELECT count(*) FROM closed_versions) + (SELECT count(*) FROM removed_urls)
         + (SELECT count(*) FROM added_urls) AS history_rows;

-- name: insert_first_chunk --
-- A group of an account's first listing (the account has no rule at all), COPYed into
-- listed_rules while the next pages are fetched: insert its rules (each its own first version),
-- their first-seen state changes and their debug URLs, with no comparison to make (a plain insert:
-- ON CONFLICT would cost two thirds more). Of a prefix listed twice in the group the later
-- stands. A prefix an earlier group of the listing already inserted (page drift) fails the
-- insert: the run sets such rules aside (set_aside_repeats) and inserts the group again.
WITH chunk AS MATERIALIZED (
    SELECT DISTINCT ON (prefix) seq, prefix, path, state, open_version, permit_sub_rule,
           debug_urls
    FROM listed_rules
    ORDER BY prefix, seq DESC
),
previous AS (
    SELECT max(taken_at) AS listed_at
    FROM account_snapshots
    WHERE account_id = %(account_id)s AND complete
),
inserted AS (
    INSERT INTO rules (account_id, prefix, path, state, open_version, permit_sub_rule, debug_urls,
                       first_seen_at, changed_at, published_at, version_run_id)
    SELECT %(account_id)s, prefix, path, state, open_version, permit_sub_rule, debug_urls,
           %(observed_at)s, %(observed_at)s,
           CASE WHEN state = 2 THEN CAST(%(observed_at)s AS timestamptz) END, %(run_id)s
    FROM chunk  -- (in prefix order already: the index pages fill in order)
    RETURNING prefix, path, state, open_version, permit_sub_rule, debug_urls
),
state_changes AS (
    INSERT INTO rule_state_changes (account_id, prefix, from_state, to_state, observed_at,
                                    previous_seen_at, sync_run_id)
    SELECT %(account_id)s, i.prefix, NULL, i.state, %(observed_at)s, p.listed_at, %(run_id)s
    FROM inserted i, previous p
    RETURNING 1
),
urls AS (
    INSERT INTO rule_debug_urls (account_id, prefix, url, position)
    SELECT %(account_id)s, i.prefix, u.url, min(u.pos)
    FROM inserted i
    CROSS JOIN LATERAL unnest(i.debug_urls) WITH ORDINALITY AS u(url, pos)
    WHERE i.debug_urls IS NOT NULL
    GROUP BY i.prefix, u.url
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS inserted,
       (SELECT count(*) FROM state_changes) AS state_changes,
       (SELECT count(*) FROM urls) AS history_rows;

-- name: set_aside_repeats --
-- The rules of a first listing's group that an earlier group already inserted (page drift):
-- out of listed_rules, into staged_rules for repeat_first_rules.
WITH repeated AS (
    DELETE FROM listed_rules l
    USING rules r
    WHERE r.account_id = %(account_id)s AND r.prefix = l.prefix
    RETURNING l.seq, l.prefix, l.path, l.state, l.open_version, l.permit_sub_rule, l.debug_urls
)
INSERT INTO staged_rules (sync_run_id, seq, prefix, path, state, open_version, permit_sub_rule,
                          debug_urls)
SELECT %(run_id)s, seq, prefix, path, state, open_version, permit_sub_rule, debug_urls
FROM repeated;

-- name: repeat_first_rules --
-- The prefixes a first listing held in more than one group (set_aside_repeats):
-- the later listing of each stands. Every row it rewrites was inserted by this run, in this
-- transaction, so the rule keeps one version and one first-seen state change.
WITH later AS MATERIALIZED (
    SELECT DISTINCT ON (prefix) prefix, path, state, open_version, permit_sub_rule, debug_urls
    FROM staged_rules
    WHERE sync_run_id = %(run_id)s
    ORDER BY prefix, seq DESC
),
updated_rules AS (
    UPDATE rules r
    SET path = l.path, state = l.state, open_version = l.open_version,
        permit_sub_rule = l.permit_sub_rule, debug_urls = l.debug_urls,
        published_at = CASE WHEN l.state = 2 THEN r.first_seen_at END
    FROM later l
    WHERE r.account_id = %(account_id)s AND r.prefix = l.prefix
      AND (r.path, r.state, r.open_version, r.permit_sub_rule, r.debug_urls)
          IS DISTINCT FROM (l.path, l.state, l.open_version, l.permit_sub_rule, l.debug_urls)
    RETURNING r.prefix
),
updated_states AS (
    UPDATE rule_state_changes c
    SET to_state = l.state
    FROM later l
    WHERE c.account_id = %(account_id)s AND c.prefix = l.prefix AND c.sync_run_id = %(run_id)s
      AND c.to_state IS DISTINCT FROM l.state
),
removed_urls AS (
    DELETE FROM rule_debug_urls u
    USING later l
    WHERE u.account_id = %(account_id)s AND u.prefix = l.prefix
      AND l.prefix IN (SELECT prefix FROM updated_rules)
      AND u.url <> ALL (COALESCE(l.debug_urls, CAST('{}' AS text[])))
)
INSERT INTO rule_debug_urls AS t (account_id, prefix, url, position)
SELECT %(account_id)s, l.prefix, u.url, min(u.pos)
FROM later l
CROSS JOIN LATERAL unnest(l.debug_urls) WITH ORDINALITY AS u(url, pos)
WHERE l.prefix IN (SELECT prefix FROM updated_rules)
GROUP BY l.prefix, u.url
ON CONFLICT (account_id, prefix, url) DO UPDATE
SET position = EXCLUDED.position
WHERE t.position IS DISTINCT FROM EXCLUDED.position;

-- name: apply_deletions --
-- Once a complete listing is merged: mark deleted the :candidates (the live rules
-- compare_listing found missing, less those WeChat still returned by prefix), unless that is
-- more than :max_delete_fraction of the :live_rules before the run (or all of them) and the
-- user did not confirm.
WITH previous AS (
    SELECT max(taken_at) AS listed_at
    FROM account_snapshots
    WHERE account_id = %(account_id)s AND complete
),
candidates AS MATERIALIZED (
    SELECT r.*
    FROM unnest(CAST(%(candidates)s AS text[])) AS c(prefix)
    -- One index probe per candidate, whatever the statistics say.
    CROSS JOIN LATERAL (
        SELECT x.prefix, x.path, x.state, x.open_version, x.permit_sub_rule, x.debug_urls,
               x.changed_at, x.version_run_id
        FROM rules x
        WHERE x.account_id = %(account_id)s AND x.prefix = c.prefix AND x.deleted_at IS NULL
        LIMIT 1
    ) r
),
guard AS (
    SELECT count(*) AS would_delete, CAST(%(live_rules)s AS bigint) AS live_rules
    FROM candidates
),
verdict AS (
    SELECT would_delete, live_rules,
           would_delete = 0
             OR CAST(%(allow_mass_delete)s AS boolean)
             OR (would_delete <= CAST(%(max_delete_fraction)s AS float8) * live_rules
                 AND would_delete < live_rules) AS allowed
    FROM guard
),
gone AS MATERIALIZED (
    SELECT c.* FROM candidates c, verdict v WHERE v.allowed
),
marked_deleted AS (
    UPDATE rules r
    SET deleted_at = %(observed_at)s, version_run_id = %(run_id)s
    FROM gone g
    WHERE r.account_id = %(account_id)s AND r.prefix = g.prefix
    RETURNING 1
),
state_changes AS (
    INSERT INTO rule_state_changes (account_id, prefix, from_state, to_state, observed_at,
                                    previous_seen_at, sync_run_id)
    SELECT %(account_id)s, g.prefix, g.state, NULL, %(observed_at)s,
           GREATEST(g.changed_at, p.listed_at), %(run_id)s
    FROM gone g, previous p
    RETURNING 1
),
closed_versions AS (
    -- The live version a deletion ends becomes a past version; the deleted one is the rules
    -- row itself (deleted_at set).
    INSERT INTO rule_past_versions (account_id, prefix, valid_from, valid_to, path, state,
                                    open_version, permit_sub_rule, debug_urls, deleted,
                                    sync_run_id)
    SELECT %(account_id)s, prefix, changed_at, %(observed_at)s, path, state, open_version,
           permit_sub_rule, debug_urls, false, version_run_id
    FROM gone
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked_deleted) AS deleted,
       (SELECT count(*) FROM state_changes) AS state_changes,
       (SELECT count(*) FROM closed_versions) AS history_rows,
       v.would_delete, v.live_rules, v.allowed AS deletions_allowed
FROM verdict v;

-- name: finish_run --
-- Record the listing's snapshot, keep or drop the digests of the listing, forget its staged
-- rows and close the run, in one statement.
WITH snapshot AS (
    INSERT INTO account_snapshots (account_id, sync_run_id, taken_at, qrcodejump_open,
                                   qrcodejump_pub_quota, total_count, rule_count, complete)
    VALUES (%(account_id)s, %(run_id)s, %(observed_at)s, %(qrcodejump_open)s, %(qrcodejump_pub_quota)s,
            %(total_count)s, %(rules_seen)s, %(complete)s)
),
kept_digests AS (
    INSERT INTO listing_digests (account_id, sync_run_id, chunk_rows, rules_seen, digests)
    SELECT %(account_id)s, %(run_id)s, %(digest_rows)s, %(rules_seen)s, %(digests)s
    WHERE CAST(%(digests)s AS bytea[]) IS NOT NULL
    ON CONFLICT (account_id) DO UPDATE
    SET sync_run_id = EXCLUDED.sync_run_id, chunk_rows = EXCLUDED.chunk_rows,
        rules_seen = EXCLUDED.rules_seen, digests = EXCLUDED.digests
),
dropped_digests AS (
    DELETE FROM listing_digests WHERE account_id = %(account_id)s AND %(drop_digests)s
),
staged AS (
    DELETE FROM staged_rules WHERE sync_run_id = %(run_id)s
)
UPDATE sync_runs
SET finished_at = %(finished_at)s, status = %(status)s, api_calls = %(api_calls)s, pages = %(pages)s,
    rules_seen = %(rules_seen)s, inserted = %(inserted)s, updated = %(updated)s, unchanged = %(unchanged)s,
    deleted = %(deleted)s, state_changes = %(state_changes)s, total_count = %(total_count)s,
    message = %(message)s
WHERE id = %(run_id)s;

-- name: fail_run --
-- Close a run as failed with its errcode and one-line error (its staged rows were rolled back
-- with its listing's transaction).
UPDATE sync_runs
SET finished_at = %(finished_at)s, status = 'failed', errcode = %(errcode)s, error = %(error)s,
    api_calls = %(api_calls)s, pages = %(pages)s, abandoned = %(abandoned)s
WHERE id = %(run_id)s AND status = 'running';

-- name: token_lock --
-- Serialise refreshes of one token across processes (transaction-level: PgBouncer-safe).
SELECT pg_advisory_xact_lock(1903260012, hashtext(%(key)s));

-- name: tokens_reusable --
-- The cached tokens among these keys that may still be reused, with how many seconds they may
-- (read once by a sync of many accounts, instead of once per account).
SELECT key, access_token,
       EXTRACT(EPOCH FROM reuse_until - now()) AS reuse_s
FROM tokens
WHERE key = ANY(CAST(%(keys)s AS text[])) AND reuse_until > now();

-- name: token_get --
-- A cached token that may still be reused (until shortly before it expires).
SELECT access_token
FROM tokens
WHERE key = %(key)s AND reuse_until > now();

-- name: token_put --
-- Store a freshly fetched token for every process to share, reused until :reuse_s from now.
INSERT INTO tokens (key, access_token, expires_at, reuse_until, fetched_at)
VALUES (%(key)s, %(access_token)s, now() + make_interval(secs => %(expires_in)s),
        now() + make_interval(secs => %(reuse_s)s), now())
ON CONFLICT (key) DO UPDATE
SET access_token = EXCLUDED.access_token, expires_at = EXCLUDED.expires_at,
    reuse_until = EXCLUDED.reuse_until, fetched_at = EXCLUDED.fetched_at;

-- name: refresh_token_get --
-- The stored authorizer refresh token and the fingerprint of the config value it came from.
SELECT refresh_token, seed_fingerprint
FROM authorizer_refresh_tokens
WHERE component_appid = %(component_appid)s AND authorizer_appid = %(authorizer_appid)s;

-- name: refresh_token_put --
-- Save an authorizer refresh token (committed at once: the old one dies within minutes).
INSERT INTO authorizer_refresh_tokens (component_appid, authorizer_appid, refresh_token,
                                       seed_fingerprint, updated_at)
VALUES (%(component_appid)s, %(authorizer_appid)s, %(refresh_token)s, %(seed_fingerprint)s, now())
ON CONFLICT (component_appid, authorizer_appid) DO UPDATE
SET refresh_token = EXCLUDED.refresh_token, seed_fingerprint = EXCLUDED.seed_fingerprint,
    updated_at = now();

-- name: sealed_tokens --
-- Every stored token, for re-encryption with the first configured key (rotation).
SELECT 'tokens' AS tab, key AS id, '' AS id2, access_token AS value FROM tokens
UNION ALL
SELECT 'authorizer_refresh_tokens', component_appid, authorizer_appid, refresh_token
FROM authorizer_refresh_tokens;

-- name: reseal_token --
UPDATE tokens SET access_token = %(value)s WHERE key = %(id)s AND access_token = %(old)s;

-- name: reseal_refresh_token --
UPDATE authorizer_refresh_tokens SET refresh_token = %(value)s
WHERE component_appid = %(id)s AND authorizer_appid = %(id2)s AND refresh_token = %(old)s;

-- name: schema_revision --
-- The Alembic revision of the schema, to refuse to run on an unmigrated database.
SELECT version_num FROM alembic_version;

-- name: report_rules_by_state --
-- Live rules per account and state, with deleted ones, for `qrsync report`.
SELECT a.name AS account, a.kind,
       count(r.prefix) FILTER (WHERE r.deleted_at IS NULL AND r.state = 1) AS unpublished,
       count(r.prefix) FILTER (WHERE r.deleted_at IS NULL AND r.state = 2) AS published,
       count(r.prefix) FILTER (WHERE r.deleted_at IS NULL AND r.state NOT IN (1, 2)) AS other,
       count(r.prefix) FILTER (WHERE r.deleted_at IS NOT NULL) AS deleted
FROM accounts a
LEFT JOIN rules r ON r.account_id = a.id
WHERE (CAST(%(account)s AS text) IS NULL OR a.name = %(account)s)
GROUP BY a.name, a.kind
ORDER BY a.name;

-- name: report_publications --
-- The most recent publications seen happening since :since: every change to published after
-- the account's baseline, rules added already published between two listings included
-- (added_published: the wait before publishing is unknown).
SELECT account, prefix, path, published_observed_at, wait, previous_seen_at,
       from_state IS NULL AS added_published
FROM publications
WHERE published_observed_at >= %(since)s AND NOT in_baseline
  AND (CAST(%(account)s AS text) IS NULL OR account = %(account)s)
ORDER BY published_observed_at DESC, account, prefix
LIMIT %(limit)s;

-- name: report_deletions --
-- The most recent deletions since :since.
SELECT a.name AS account, c.prefix, c.from_state, c.observed_at, c.previous_seen_at
FROM rule_state_changes c
JOIN accounts a ON a.id = c.account_id
WHERE c.to_state IS NULL AND c.observed_at >= %(since)s
  AND (CAST(%(account)s AS text) IS NULL OR a.name = %(account)s)
ORDER BY c.observed_at DESC, a.name, c.prefix
LIMIT %(limit)s;

-- name: report_quota --
-- The latest publish quota and open flag per account, and the quota a week before.
SELECT a.name AS account, s.qrcodejump_pub_quota, s.qrcodejump_open, s.taken_at,
       w.qrcodejump_pub_quota AS quota_week_before
FROM accounts a
JOIN LATERAL (
    SELECT * FROM account_snapshots x WHERE x.account_id = a.id
    ORDER BY x.taken_at DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT qrcodejump_pub_quota FROM account_snapshots y
    WHERE y.account_id = a.id AND y.taken_at <= s.taken_at - interval '7 days'
    ORDER BY y.taken_at DESC LIMIT 1
) w ON true
WHERE (CAST(%(account)s AS text) IS NULL OR a.name = %(account)s)
ORDER BY a.name;

-- name: sync_health --
-- Sync health per account, failing and stale ones first, for `qrsync status`; last_message
-- says why a partial run was partial.
SELECT h.account, h.enabled, h.last_status, h.last_run_at, h.last_success_at, h.success_age,
       h.failure_streak, h.last_errcode, h.last_error, r.message AS last_message
FROM sync_health h
LEFT JOIN sync_runs r ON r.id = h.last_run_id
WHERE (CAST(%(account)s AS text) IS NULL OR h.account = %(account)s)
ORDER BY h.failure_streak DESC, h.last_success_at ASC NULLS FIRST, h.account;

-- name: report_publish_queue --
-- The rules waiting longest unpublished (the publish queue), oldest first.
SELECT account, prefix, path, unpublished_since, waiting
FROM unpublished_rules
WHERE (CAST(%(account)s AS text) IS NULL OR account = %(account)s)
ORDER BY unpublished_since, account, prefix
LIMIT %(limit)s;

-- name: report_publish_queue_by_account --
-- Per account: rules waiting unpublished and the longest wait.
SELECT account, count(*) AS waiting_rules, max(waiting) AS longest_wait
FROM unpublished_rules
WHERE (CAST(%(account)s AS text) IS NULL OR account = %(account)s)
GROUP BY account
ORDER BY max(waiting) DESC, account;

-- name: report_publications_per_day --
-- Publications seen happening per day (session time zone) since :since.
SELECT CAST(published_observed_at AS date) AS day, count(*) AS publications
FROM publications
WHERE published_observed_at >= %(since)s AND NOT in_baseline
  AND (CAST(%(account)s AS text) IS NULL OR account = %(account)s)
GROUP BY 1
ORDER BY 1;

-- name: report_quota_series --
-- Publish quota per account and day since :since (quota_daily).
SELECT account, day, qrcodejump_pub_quota
FROM quota_daily
WHERE taken_at >= %(since)s AND (CAST(%(account)s AS text) IS NULL OR account = %(account)s)
ORDER BY account, day;

-- name: report_sync_per_day --
-- Finished runs per day and status since :since.
SELECT CAST(r.started_at AS date) AS day,
       count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE r.status = 'partial') AS partial,
       count(*) FILTER (WHERE r.status = 'failed') AS failed
FROM sync_runs r
JOIN accounts a ON a.id = r.account_id
WHERE r.started_at >= %(since)s AND r.status <> 'running'
  AND (CAST(%(account)s AS text) IS NULL OR a.name = %(account)s)
GROUP BY 1
ORDER BY 1;

-- name: role_exists --
-- Whether a database role exists (grant-readonly refuses to invent one).
SELECT 1 FROM pg_roles WHERE rolname = %(role)s;

-- name: ensure_leases --
-- Give every account a lease row (claims then lock an existing row).
INSERT INTO account_leases (account_id)
SELECT id FROM accounts
ON CONFLICT (account_id) DO NOTHING;

-- name: claim_slot --
-- Claim (account, slot) for :replica unless another replica's lease is live or the slot is done;
-- a run left 'running' under an expired lease is closed as abandoned (a takeover).
WITH current AS (
    SELECT l.account_id, l.holder, l.epoch, l.lease_until > now() AS active, l.sync_run_id
    FROM account_leases l
    WHERE l.account_id = %(account_id)s
    FOR UPDATE
),
done AS (
    SELECT EXISTS (
        SELECT 1 FROM sync_runs r
        WHERE r.account_id = %(account_id)s AND r.scheduled_for = %(slot)s
          AND r.status <> 'running' AND NOT r.abandoned
    ) AS done
),
decision AS (
    SELECT c.holder, c.sync_run_id, d.done, NOT d.done AND NOT c.active AS granted
    FROM current c, done d
),
closed AS (
    UPDATE sync_runs r
    SET status = 'failed', finished_at = now(), abandoned = true,
        error = 'abandoned by replica ' || COALESCE(x.holder, '?') || ' (its lease expired)'
    FROM decision x
    -- The holder's run of this account: the one attached to the lease, or one it started
    -- but had not attached yet when it died.
    WHERE x.granted AND r.account_id = %(account_id)s AND r.status = 'running'
      AND (r.id = x.sync_run_id OR r.replica = x.holder)
    RETURNING r.id
),
forgotten AS (
    DELETE FROM staged_rules s USING closed c WHERE s.sync_run_id = c.id
),
granted AS (
    UPDATE account_leases l
    SET holder = %(replica)s, epoch = l.epoch + 1,
        lease_until = now() + make_interval(secs => %(lease_s)s),
        scheduled_for = %(slot)s, sync_run_id = NULL, claimed_at = now()
    FROM decision x
    WHERE x.granted AND l.account_id = %(account_id)s
    RETURNING l.epoch
)
SELECT (SELECT epoch FROM granted) AS epoch,
       (SELECT holder FROM decision) AS holder,
       (SELECT done FROM decision) AS done,
       (SELECT count(*) FROM closed) AS abandoned_runs;

-- name: database_now --
-- The database's clock: slots are named from it, so that replicas whose clocks disagree still
-- name the same slot (leases already expire on it: now() in claim_slot and renew_leases).
SELECT clock_timestamp() AS now;

-- name: attach_run --
-- Record which run a lease covers (so a takeover can close it).
UPDATE account_leases SET sync_run_id = %(run_id)s
WHERE account_id = %(account_id)s AND epoch = %(epoch)s;

-- name: renew_leases --
-- Extend this replica's leases; the ones not returned were taken over (stale epoch).
UPDATE account_leases l
SET lease_until = now() + make_interval(secs => %(lease_s)s)
FROM unnest(CAST(%(account_ids)s AS bigint[]), CAST(%(epochs)s AS bigint[])) AS h(account_id, epoch)
WHERE l.account_id = h.account_id AND l.epoch = h.epoch AND l.holder = %(replica)s
RETURNING l.account_id;

-- name: fence --
-- Inside the merge transaction: the lease must still be ours (the epoch fences a replica whose
-- lease was taken over); FOR SHARE keeps a takeover waiting until the merge commits.
SELECT 1 FROM account_leases
WHERE account_id = %(account_id)s AND epoch = %(epoch)s AND holder = %(replica)s
FOR SHARE;

-- name: release_lease --
-- Give the lease up at the end of a run.
UPDATE account_leases SET lease_until = now()
WHERE account_id = %(account_id)s AND epoch = %(epoch)s AND holder = %(replica)s;

-- name: metrics_rules_by_state --
-- Live rules per account and state, for the Prometheus gauge.
SELECT a.name AS account, r.state, count(*) AS rules
FROM rules r JOIN accounts a ON a.id = r.account_id
WHERE r.deleted_at IS NULL
GROUP BY a.name, r.state;

-- name: metrics_accounts --
-- Per account: quota left (latest listing) and the last successful run's end, for Prometheus.
SELECT a.name AS account, s.qrcodejump_pub_quota AS quota,
       (SELECT max(r.finished_at) FROM sync_runs r
         WHERE r.account_id = a.id AND r.status IN ('succeeded', 'partial')) AS last_success
FROM accounts a
LEFT JOIN account_latest_snapshot s ON s.account_id = a.id
WHERE a.enabled;

-- name: import_accounts --
-- Insert or update accounts from a CSV import (source 'import'), writing only rows that changed;
-- refuses (by matching nothing) names that belong to the configuration file.
INSERT INTO accounts AS a (name, kind, appid, miniprogram_appid, token_source, schedule, enabled,
                           in_config, source, central_url, secret_env, token_env)
SELECT c.name, c.kind, c.appid, c.miniprogram_appid, c.token_source, c.schedule, c.enabled, false,
       'import', c.central_url, c.secret_env, c.token_env
FROM unnest(CAST(%(names)s AS text[]), CAST(%(kinds)s AS text[]), CAST(%(appids)s AS text[]),
            CAST(%(miniprogram_appids)s AS text[]), CAST(%(token_sources)s AS text[]),
            CAST(%(schedules)s AS text[]), CAST(%(enableds)s AS boolean[]),
            CAST(%(central_urls)s AS text[]), CAST(%(secret_envs)s AS text[]),
            CAST(%(token_envs)s AS text[]))
     AS c(name, kind, appid, miniprogram_appid, token_source, schedule, enabled, central_url,
          secret_env, token_env)
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind, appid = EXCLUDED.appid, miniprogram_appid = EXCLUDED.miniprogram_appid,
    token_source = EXCLUDED.token_source, schedule = EXCLUDED.schedule,
    enabled = EXCLUDED.enabled, central_url = EXCLUDED.central_url,
    secret_env = EXCLUDED.secret_env, token_env = EXCLUDED.token_env, updated_at = now()
WHERE a.source = 'import'
  AND (a.kind, a.appid, a.miniprogram_appid, a.token_source, a.schedule, a.enabled,
       a.central_url, a.secret_env, a.token_env)
      IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.appid, EXCLUDED.miniprogram_appid,
                        EXCLUDED.token_source, EXCLUDED.schedule, EXCLUDED.enabled,
                        EXCLUDED.central_url, EXCLUDED.secret_env, EXCLUDED.token_env)
RETURNING name;

-- name: disable_unimported_accounts --
-- Disable imported accounts the latest import no longer lists (their history stays).
UPDATE accounts
SET enabled = false, updated_at = now()
WHERE source = 'import' AND enabled AND name <> ALL (CAST(%(names)s AS text[]))
RETURNING name;

-- name: config_account_names --
-- Names that belong to the configuration file (an import may not take them).
SELECT name FROM accounts WHERE source = 'config' AND name = ANY (CAST(%(names)s AS text[]));

-- name: imported_accounts --
-- The imported accounts, for building their configuration at start.
SELECT name, kind, appid, miniprogram_appid, token_source, schedule, enabled, central_url,
       secret_env, token_env
FROM accounts
WHERE source = 'import'
ORDER BY name;

-- name: discovered_accounts --
-- The accounts discovery made (source 'discover'), enabled or not.
SELECT name, kind, appid, miniprogram_appid, token_source, schedule, enabled
FROM accounts
WHERE source = 'discover'
ORDER BY name;

-- name: accounts_defined_elsewhere --
-- The configuration file's and the latest import's accounts: discovery never makes their AppID
-- pair (or their name) a second account.
SELECT name, appid, miniprogram_appid, source
FROM accounts
WHERE (source = 'config' AND in_config) OR (source = 'import' AND enabled);

-- name: discover_accounts --
-- Insert or update discovered accounts (source 'discover'), writing only rows that changed;
-- names of other sources are left alone (matched by nothing).
INSERT INTO accounts AS a (name, kind, appid, miniprogram_appid, token_source, enabled,
                           in_config, source)
SELECT c.name, c.kind, c.appid, c.miniprogram_appid, CAST(%(token_source)s AS text), true, false,
       'discover'
FROM unnest(CAST(%(names)s AS text[]), CAST(%(kinds)s AS text[]), CAST(%(appids)s AS text[]),
            CAST(%(miniprogram_appids)s AS text[]))
     AS c(name, kind, appid, miniprogram_appid)
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind, appid = EXCLUDED.appid, miniprogram_appid = EXCLUDED.miniprogram_appid,
    token_source = EXCLUDED.token_source, enabled = true, updated_at = now()
WHERE a.source = 'discover'
  AND (a.kind, a.appid, a.miniprogram_appid, a.token_source, a.enabled)
      IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.appid, EXCLUDED.miniprogram_appid,
                        EXCLUDED.token_source, true)
RETURNING name;

-- name: disable_discovered_accounts --
-- Disable the discovered accounts named (gone from the list, or no longer syncable); their
-- history stays.
UPDATE accounts
SET enabled = false, updated_at = now()
WHERE source = 'discover' AND enabled AND name = ANY (CAST(%(names)s AS text[]))
RETURNING name;

-- name: discovered_authorizers --
-- What discovery saw of each authorizer of a platform (qrsync accounts, the next discovery).
SELECT authorizer_appid, kind, nick_name, auth_time, listed, synced, reason, errcode,
       first_seen_at, checked_at
FROM discovered_authorizers
WHERE component_appid = %(component_appid)s
ORDER BY authorizer_appid;

-- name: all_discovered_authorizers --
-- Every platform's authorizers that are listed but not synced, with the reason (qrsync accounts).
SELECT component_appid, authorizer_appid, kind, nick_name, reason, errcode, checked_at
FROM discovered_authorizers
WHERE listed AND NOT synced
ORDER BY component_appid, authorizer_appid;

-- name: record_discovered_authorizers --
-- Record what one discovery saw of the authorizers it looked at; an authorizer met by an
-- errcode keeps the kind and name seen before.
INSERT INTO discovered_authorizers AS d (component_appid, authorizer_appid, kind, nick_name,
                                         auth_time, listed, synced, reason, errcode)
SELECT %(component_appid)s, c.appid, c.kind, c.nick_name, c.auth_time, true, c.synced, c.reason,
       c.errcode
FROM unnest(CAST(%(appids)s AS text[]), CAST(%(kinds)s AS text[]), CAST(%(nick_names)s AS text[]),
            CAST(%(auth_times)s AS bigint[]), CAST(%(synceds)s AS boolean[]),
            CAST(%(reasons)s AS text[]), CAST(%(errcodes)s AS integer[]))
     AS c(appid, kind, nick_name, auth_time, synced, reason, errcode)
ON CONFLICT (component_appid, authorizer_appid) DO UPDATE
SET kind = COALESCE(EXCLUDED.kind, d.kind), nick_name = COALESCE(EXCLUDED.nick_name, d.nick_name),
    auth_time = EXCLUDED.auth_time, listed = true, synced = EXCLUDED.synced,
    reason = EXCLUDED.reason, errcode = EXCLUDED.errcode, checked_at = now();

-- name: unlist_discovered_authorizers --
-- Mark the authorizers of a platform that its list no longer has.
UPDATE discovered_authorizers
SET listed = false, synced = false, checked_at = now(),
    reason = 'no longer in the platform''s authorizer list (authorisation withdrawn)'
WHERE component_appid = %(component_appid)s AND listed
  AND authorizer_appid <> ALL (CAST(%(appids)s AS text[]));

-- name: seed_refresh_token --
-- Store an imported authorizer refresh token, unless the same seed was stored before (then the
-- stored one, possibly rotated since, is kept).
INSERT INTO authorizer_refresh_tokens AS t (component_appid, authorizer_appid, refresh_token,
                                            seed_fingerprint, updated_at)
VALUES (%(component_appid)s, %(authorizer_appid)s, %(refresh_token)s, %(seed_fingerprint)s, now())
ON CONFLICT (component_appid, authorizer_appid) DO UPDATE
SET refresh_token = EXCLUDED.refresh_token, seed_fingerprint = EXCLUDED.seed_fingerprint,
    updated_at = now()
WHERE t.seed_fingerprint IS DISTINCT FROM EXCLUDED.seed_fingerprint;

-- name: check_where --
-- Which database, as whom, on what server: the first words of `qrsync check`'s database line.
SELECT current_database(), current_user, current_setting('server_version');

-- name: check_database_rights --
-- What the role may do in the database and the schema qrsync lives in (`qrsync check`).
SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %(schema)s) AS schema_exists,
       has_database_privilege(current_database(), 'CREATE') AS may_create_schemas,
       has_database_privilege(current_database(), 'TEMPORARY') AS may_create_temporary,
       CASE WHEN EXISTS (SELECT FROM pg_namespace WHERE nspname = %(schema)s)
            THEN has_schema_privilege(%(schema)s, 'USAGE, CREATE') END AS schema_usage_and_create;

-- name: check_tables_lacking_privileges --
-- Tables of the schema the role may not read and write (`qrsync check`).
SELECT c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
  AND NOT has_table_privilege(c.oid, %(privileges)s)
ORDER BY 1;

-- name: cached_tokens --
-- The cached tokens, without their values (`qrsync tokens`).
SELECT key, fetched_at, expires_at, reuse_until FROM tokens ORDER BY key;

-- name: drop_token --
-- Forget a cached token: the next run that needs it fetches a fresh one (`qrsync tokens drop`).
DELETE FROM tokens WHERE key = %(key)s RETURNING key, expires_at;

-- name: notify_mirror_channels --
-- Insert or update the configured notification channels (a JSON list), writing only rows that changed.
INSERT INTO notify_channels AS c (name, kind, events, account_patterns, failing_runs,
                                  waiting_days, quota_below, configured)
SELECT x.name, x.kind, x.events, x.account_patterns, x.failing_runs, x.waiting_days,
       x.quota_below, true
FROM jsonb_to_recordset(CAST(%(channels)s AS jsonb))
     AS x(name text, kind text, events text[], account_patterns text[], failing_runs integer,
          waiting_days double precision, quota_below integer)
ON CONFLICT (name) DO UPDATE
SET kind = EXCLUDED.kind, events = EXCLUDED.events, account_patterns = EXCLUDED.account_patterns,
    failing_runs = EXCLUDED.failing_runs, waiting_days = EXCLUDED.waiting_days,
    quota_below = EXCLUDED.quota_below, configured = true, updated_at = now()
WHERE (c.kind, c.events, c.account_patterns, c.failing_runs, c.waiting_days, c.quota_below,
       c.configured)
      IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.events, EXCLUDED.account_patterns,
                        EXCLUDED.failing_runs, EXCLUDED.waiting_days, EXCLUDED.quota_below,
                        true);

-- name: notify_unconfigure_channels --
-- Channels no longer in the configuration stop wanting events; what they had still to get is abandoned.
WITH gone AS (
    UPDATE notify_channels
    SET configured = false, updated_at = now()
    WHERE configured AND name <> ALL (CAST(%(names)s AS text[]))
    RETURNING name
)
UPDATE notifications n
SET status = 'abandoned'
FROM gone
WHERE n.channel = gone.name AND n.status = 'pending';

-- name: notify_lock_channel --
-- One sender per channel at a time, across processes (transaction-level: PgBouncer-safe).
SELECT pg_try_advisory_xact_lock(1903260017, hashtext(%(channel)s)) AS locked;

-- name: notify_claim --
-- The channel's notifications due now, oldest event first, locked until this transaction ends (others skip them).
SELECT e.id, e.kind, a.name AS account, e.prefix, e.occurred_at, e.details, n.attempts
FROM notifications n
JOIN notify_events e ON e.id = n.event_id
JOIN accounts a ON a.id = e.account_id
WHERE n.channel = %(channel)s AND n.status = 'pending' AND n.next_attempt_at <= clock_timestamp()
ORDER BY n.event_id
LIMIT %(limit)s
FOR UPDATE OF n SKIP LOCKED;

-- name: notify_sent_lately --
-- Messages sent or attempted to the channel in the last minute (its rate limit), and the latest one's time.
SELECT count(*) AS last_minute, max(sent_at) AS last_sent_at, clock_timestamp() AS now
FROM notify_messages
WHERE channel = %(channel)s AND sent_at > clock_timestamp() - interval '1 minute';

-- name: notify_record_attempt --
-- Record a message sent or attempted, and its events as sent, or as failed with their next attempt backed off.
WITH message AS (
    INSERT INTO notify_messages (channel, sent_at, events, ok, http_status, detail, replica)
    VALUES (%(channel)s, clock_timestamp(), cardinality(CAST(%(event_ids)s AS bigint[])), %(ok)s,
            %(http_status)s, %(detail)s, %(replica)s)
    RETURNING id
),
sent AS (
    UPDATE notifications n
    SET status = 'sent', sent_at = clock_timestamp(), last_attempt_at = clock_timestamp(),
        message_id = (SELECT id FROM message)
    WHERE CAST(%(ok)s AS boolean) AND n.channel = %(channel)s
      AND n.event_id = ANY (CAST(%(event_ids)s AS bigint[])) AND n.status = 'pending'
    RETURNING 1
),
failed AS (
    UPDATE notifications n
    SET attempts = n.attempts + 1, last_attempt_at = clock_timestamp(), last_error = %(detail)s,
        next_attempt_at = clock_timestamp() + make_interval(secs => GREATEST(
            CAST(%(retry_after_s)s AS double precision),
            LEAST(CAST(%(max_backoff_s)s AS double precision),
                  CAST(%(backoff_s)s AS double precision) * power(2, n.attempts))
            * (0.8 + 0.4 * random())))
    WHERE NOT CAST(%(ok)s AS boolean) AND n.channel = %(channel)s
      AND n.event_id = ANY (CAST(%(event_ids)s AS bigint[])) AND n.status = 'pending'
    RETURNING 1
)
SELECT (SELECT id FROM message) AS message_id, (SELECT count(*) FROM sent) AS sent,
       (SELECT count(*) FROM failed) AS failed;

-- name: notify_record_waiting --
-- rule_waiting: rules whose current version stayed unpublished longer than a channel's waiting_days, once per version and threshold (crossed since the channel was configured).
WITH ev AS (
INSERT INTO notify_events (kind, account_id, prefix, occurred_at, details, sync_run_id, dedup_key)
SELECT 'rule_waiting', r.account_id, r.prefix, clock_timestamp(),
       jsonb_build_object(
           'path', r.path, 'waiting_since', r.changed_at, 'threshold', t.days,
           'waited_days',
           round(CAST(extract(epoch FROM clock_timestamp() - r.changed_at) / 86400 AS numeric), 1)),
       r.version_run_id,
       concat_ws(' ', 'rule_waiting', r.account_id, r.prefix,
                 CAST(extract(epoch FROM r.changed_at) AS text), CAST(t.days AS text))
FROM (
    SELECT waiting_days AS days, min(created_at) AS since
    FROM notify_channels
    WHERE configured AND 'rule_waiting' = ANY (events)
    GROUP BY waiting_days
) AS t
JOIN rules r ON r.state = 1 AND r.deleted_at IS NULL
            AND r.changed_at <= clock_timestamp() - t.days * interval '1 day'
            AND r.changed_at > t.since - t.days * interval '1 day'
JOIN accounts a ON a.id = r.account_id AND a.enabled
WHERE EXISTS (SELECT FROM notify_channels c
              WHERE notify_wants(c, 'rule_waiting', a.name,
                                 jsonb_build_object('threshold', t.days)))
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, kind, account_id, details
)
INSERT INTO notifications (event_id, channel)
SELECT ev.id, c.name
FROM ev
JOIN accounts a ON a.id = ev.account_id
JOIN notify_channels c ON notify_wants(c, ev.kind, a.name, ev.details);

-- name: notify_status --
-- Per channel: what is pending (and failing: tried and not delivered), sent, the oldest pending event, the last answer.
SELECT c.name AS channel, c.kind, c.configured,
       p.pending, p.failing, p.oldest_pending_at,
       (SELECT count(*) FROM notifications s WHERE s.channel = c.name AND s.status = 'sent')
           AS sent,
       m.sent_at AS last_attempt_at, m.ok AS last_ok, m.detail AS last_answer,
       (SELECT max(s.sent_at) FROM notify_messages s WHERE s.channel = c.name AND s.ok)
           AS last_sent_at
FROM notify_channels c
CROSS JOIN LATERAL (
    SELECT count(*) AS pending, count(*) FILTER (WHERE n.attempts > 0) AS failing,
           min(e.recorded_at) AS oldest_pending_at
    FROM notifications n
    JOIN notify_events e ON e.id = n.event_id
    WHERE n.channel = c.name AND n.status = 'pending'
) AS p
LEFT JOIN LATERAL (
    SELECT x.sent_at, x.ok, x.detail
    FROM notify_messages x
    WHERE x.channel = c.name
    ORDER BY x.sent_at DESC, x.id DESC
    LIMIT 1
) AS m ON true
WHERE c.configured OR p.pending > 0
ORDER BY c.name;

-- name: notify_channel_log --
-- A channel's latest notifications, pending first (`qrsync notify status --channel`).
SELECT event_id, kind, account, prefix, occurred_at, status, attempts, last_error, sent_at,
       next_attempt_at
FROM notification_log
WHERE channel = %(channel)s
ORDER BY status <> 'pending', event_id DESC
LIMIT %(limit)s;

-- name: metrics_notifications --
-- Per configured channel: notifications pending and the age of the oldest, for Prometheus.
SELECT c.name AS channel, count(n.event_id) AS pending,
       COALESCE(extract(epoch FROM clock_timestamp() - min(e.recorded_at)), 0) AS oldest_age_s
FROM notify_channels c
LEFT JOIN notifications n ON n.channel = c.name AND n.status = 'pending'
LEFT JOIN notify_events e ON e.id = n.event_id
WHERE c.configured
GROUP BY c.name;

-- name: notify_record_stale_accounts --
-- account_failing for an enabled account without a successful run for failing_runs of its schedule's periods (:periods, JSON), once per last success and threshold, unless its failed runs already said so.
WITH ev AS (
INSERT INTO notify_events (kind, account_id, occurred_at, details, dedup_key)
SELECT 'account_failing', a.id, clock_timestamp(),
       jsonb_build_object(
           'threshold', t.runs, 'failed_runs', f.failed, 'last_success_at', s.finished_at,
           'no_success_hours',
           round(CAST(extract(epoch FROM clock_timestamp()
                                         - COALESCE(s.finished_at, a.created_at)) / 3600
                      AS numeric), 1),
           'error', 'no successful run for ' || t.runs || ' periods of its schedule'),
       concat_ws(' ', 'account_stale', a.id,
                 COALESCE(CAST(extract(epoch FROM s.finished_at) AS text), 'never'),
                 CAST(t.runs AS text))
FROM jsonb_to_recordset(CAST(%(periods)s AS jsonb)) AS p(account text, period_s double precision)
JOIN accounts a ON a.name = p.account AND a.enabled
CROSS JOIN (
    SELECT DISTINCT failing_runs AS runs
    FROM notify_channels
    WHERE configured AND 'account_failing' = ANY (events)
) AS t
LEFT JOIN LATERAL (
    SELECT r.finished_at
    FROM sync_runs r
    WHERE r.account_id = a.id AND r.status IN ('succeeded', 'partial')
    ORDER BY r.started_at DESC
    LIMIT 1
) AS s ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS failed
    FROM sync_runs r
    WHERE r.account_id = a.id AND r.status = 'failed'
      AND r.started_at > COALESCE(s.finished_at, '-infinity')
) AS f
WHERE COALESCE(s.finished_at, a.created_at)
      < clock_timestamp() - make_interval(secs => t.runs * p.period_s)
  AND NOT EXISTS (
      SELECT FROM notify_events e
      WHERE e.account_id = a.id AND e.kind = 'account_failing'
        AND e.occurred_at > COALESCE(s.finished_at, '-infinity'))
  AND EXISTS (
      SELECT FROM notify_channels c
      WHERE notify_wants(c, 'account_failing', a.name, jsonb_build_object('threshold', t.runs)))
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, kind, account_id, details
)
INSERT INTO notifications (event_id, channel)
SELECT ev.id, c.name
FROM ev
JOIN accounts a ON a.id = ev.account_id
JOIN notify_channels c ON notify_wants(c, ev.kind, a.name, ev.details);

-- name: claim_discovery_slot --
-- Claim a slot's discovery of a platform (the replica whose row goes in runs it), unless one started less than stale_s ago still runs; older ones are closed as abandoned.
WITH abandoned AS (
    UPDATE discovery_runs
    SET status = 'failed', finished_at = now(),
        error = 'abandoned: still running after ' || CAST(%(stale_s)s AS text)
                || ' s (its replica stopped or was killed mid-discovery); no account changed'
    WHERE component_appid = %(component_appid)s AND status = 'running'
      AND started_at < now() - make_interval(secs => %(stale_s)s)
)
INSERT INTO discovery_runs (component_appid, trigger, scheduled_for, replica)
SELECT %(component_appid)s, 'schedule', %(scheduled_for)s, %(replica)s
WHERE NOT EXISTS (
    SELECT FROM discovery_runs
    WHERE component_appid = %(component_appid)s AND status = 'running'
      AND started_at >= now() - make_interval(secs => %(stale_s)s)
)
ON CONFLICT (component_appid, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
RETURNING id;

-- name: start_discovery --
-- Open the row of a discovery that claims no slot (`qrsync accounts discover`).
INSERT INTO discovery_runs (component_appid, trigger, replica)
VALUES (%(component_appid)s, %(trigger)s, %(replica)s)
RETURNING id;

-- name: finish_discovery --
-- Close a discovery's row: how it ended, what it found, the errcode and (masked) error if any.
UPDATE discovery_runs
SET finished_at = now(), status = %(status)s, authorizers = %(authorizers)s, added = %(added)s,
    enabled = %(enabled)s, disabled = %(disabled)s, unsyncable = %(unsyncable)s,
    errcode = %(errcode)s, error = %(error)s
WHERE id = %(id)s;

-- name: last_discoveries --
-- The latest discovery of each platform, for `qrsync status` and `qrsync accounts`.
SELECT DISTINCT ON (component_appid)
       id, component_appid, trigger, scheduled_for, replica, started_at, finished_at, status,
       authorizers, added, enabled, disabled, unsyncable, errcode, error
FROM discovery_runs
ORDER BY component_appid, started_at DESC, id DESC;

-- name: discoveries_finished --
-- How many discoveries have succeeded: a replica seeing it grow reloads the accounts.
SELECT count(*) AS finished FROM discovery_runs WHERE status = 'succeeded';
