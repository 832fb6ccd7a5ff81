"""A run's life in the database: opened, its listing staged and merged, closed.

A run's listing is applied in one transaction (behaviours 1-4) that is open while the pages
arrive, so that the database works while the next pages are being fetched, and memory does not
grow with the listing (behaviour 9):

- an account's first listing (no rule at all) is COPYed into ``listed_rules``, a temporary
  table of the transaction with no index to maintain, group by group, and each group inserted
  with its history (``insert_first_chunk`` in ``queries.sql``) while the next pages are
  fetched: there is nothing to compare with, and the database works beside the network;
- any later listing is COPYed into ``listed_rules`` as it arrives, and compared with the
  stored rules in one pass of hash joins at its end (``compare_listing``), which also finds
  the live rules it lacks; only the rules that differ are staged and merged (``merge_chunk``).
  A resync that changes 1 % of the rules stages 1 % of them. (The listing of an account whose
  rules are all deleted is staged in the UNLOGGED ``staged_rules`` and merged in one piece.)

A listing equal to the account's last complete one is recognised by its digests
(:mod:`qrsync.store.digests`) and not compared at all. Deletions, the snapshot and the run's
closing come last, in the same transaction; a listing that fails or is interrupted is rolled
back whole, its staged rows with it.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import chain
from typing import Any, NamedTuple

import psycopg

from qrsync.errors import DatabaseError
from qrsync.masking import mask, one_line
from qrsync.model import Page, Rule
from qrsync.store import digests
from qrsync.store.digests import Group, Spool, chunked, digested
from qrsync.store.engine import Conn, Engine, dicts, first_line, one, quote_ident
from qrsync.store.queries import query

COPY_STAGED = (
    "COPY staged_rules (sync_run_id, seq, prefix, path, state, open_version, permit_sub_rule,"
    " debug_urls) FROM STDIN"
)
STAGED_TYPES = ["int8", "int4", "text", "text", "int2", "int2", "int2", "text[]"]
COPY_LISTED = COPY_STAGED.replace("staged_rules", "listed_rules")


DEAD_RUN_GRACE_S = 0.0
"""How old a run left 'running' without its run lock must be to be closed as dead: no age at
all, since a live run holds its lock from before its row exists (``open_run``)."""

LISTING_MEMORY = "SET LOCAL work_mem = '64MB'"
"""A first listing is sorted by prefix in one piece, and a later one compared with the stored
rules by hash joins: in memory (about 15 MB per 100,000 rules) rather than in temporary files."""

_WHOLE_TABLE_PLANS = ("enable_hashjoin", "enable_mergejoin", "enable_bitmapscan")
PROBE_PLANS = "; ".join(f"SET LOCAL {name} = off" for name in _WHOLE_TABLE_PLANS)
"""The rules a compared listing stages are the few that differ, so every join of their merge
should probe an index per rule. The planner cannot see that (they are a CTE; the rules they
join grew inside the transaction, beyond their statistics) and may hash a whole account."""
LISTING_PLANS = "; ".join(f"SET LOCAL {name} = on" for name in _WHOLE_TABLE_PLANS)
"""A listing compared with the whole account: hash joins, each side read once."""


class Deletions(NamedTuple):
    """What apply_deletions did (nothing, when no live rule was missing)."""

    deleted: int = 0
    state_changes: int = 0
    history_rows: int = 0
    would_delete: int = 0
    live_rules: int = 0
    deletions_allowed: bool = True


@dataclass(frozen=True)
class MergeCounts:
    rules_seen: int
    inserted: int
    updated: int
    deleted: int
    state_changes: int
    history_rows: int
    would_delete: int
    live_rules: int
    deletions_allowed: bool

    @property
    def unchanged(self) -> int:
        return self.rules_seen - self.inserted - self.updated


@dataclass(frozen=True)
class RunOutcome:
    """What closes a run that went through (succeeded or partial)."""

    status: str
    api_calls: int
    pages: int
    total_count: int | None
    qrcodejump_open: int | None
    qrcodejump_pub_quota: int | None
    complete: bool
    message: str | None


class QuotaHold(NamedTuple):
    """A caller AppID not called until its quota resets (``quota_holds``)."""

    errcode: int
    since: datetime
    until: datetime


class OpenRun(NamedTuple):
    """A run just opened: its id, its connection (whose transaction holds the run's locks for
    its whole duration), what it starts from, and the dead runs of the account it closed."""

    run_id: int
    conn: Conn
    state: Any
    closed_dead_runs: int


class RunStore:
    """The database operations of sync runs. A run holds one connection for its whole
    duration (:meth:`open_run`): its transaction holds the run's locks and applies its listing;
    the other operations are one short transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._runs_table = f"{quote_ident(engine.schema)}.sync_runs"
        self._run_conns: dict[int, Conn] = {}
        self._guard = threading.Lock()

    def open_run(
        self,
        account_id: int,
        appid: str,
        *,
        trigger: str,
        started_at: datetime,
        scheduled_for: datetime | None = None,
        replica: str | None = None,
    ) -> OpenRun:
        """Open a run: its run lock and the account's lock are taken by the transaction that
        stays open until the run is closed (:meth:`end_run`), before its 'running' row is
        committed from another connection, so that a run whose lock is free is dead however
        young it is; that statement also reads what the run starts from. Three statements,
        beside the one that closes the run."""
        conn = self.engine.checkout()
        try:
            run_id = int(
                one(
                    conn,
                    query("open_run"),
                    {
                        "search_path": self.engine.search_path,
                        "account_id": account_id,
                        "runs_table": self._runs_table,
                    },
                ).id
            )
            with self.engine.transaction() as other:
                started = one(
                    other,
                    query("start_run"),
                    {
                        "run_id": run_id,
                        "account_id": account_id,
                        "trigger": trigger,
                        "scheduled_for": scheduled_for,
                        "replica": replica,
                        "started_at": started_at,
                        "appid": appid,
                    },
                )
        except BaseException:
            self.engine.give_back(conn)
            raise
        with self._guard:
            self._run_conns[run_id] = conn
        return OpenRun(run_id, conn, started, int(started.closed_dead_runs))

    def end_run(self, run_id: int) -> None:
        """Let the run's connection go, and its locks with its transaction (closing its row
        must come first)."""
        with self._guard:
            conn = self._run_conns.pop(run_id, None)
        if conn is not None:
            self.engine.give_back(conn)  # rolls back whatever finish() did not commit

    def listing(
        self,
        run: OpenRun,
        account_id: int,
        *,
        clock: Callable[[], datetime],
        fence: Callable[[Conn], None] | None = None,
    ) -> ListingWriter:
        """The run's transaction: stage and merge its listing as it arrives, then close it
        (see :class:`ListingWriter`)."""
        return ListingWriter(run, account_id, clock=clock, fence=fence, on_close=self.end_run)

    def quota_holds(self, now: datetime) -> list[dict[str, Any]]:
        """Every hold (``standing``: still in force at ``now``), latest first."""
        with self.engine.transaction() as conn:
            return dicts(conn, query("quota_holds"), {"now": now})

    def release_quota_hold(self, appid: str) -> QuotaHold | None:
        """Lift the hold on ``appid`` (``qrsync quota release``); the hold it was, if any."""
        with self.engine.transaction() as conn:
            row = conn.execute(query("release_quota_hold"), {"appid": appid}).fetchone()
        return None if row is None else QuotaHold(row.errcode, row.held_since, row.held_until)

    def hold_quota(self, appid: str, hold: QuotaHold, run_id: int) -> None:
        with self.engine.transaction() as conn:
            conn.execute(
                query("hold_quota"),
                {
                    "appid": appid,
                    "errcode": hold.errcode,
                    "held_since": hold.since,
                    "held_until": hold.until,
                    "run_id": run_id,
                },
            )

    def fail_run(
        self,
        run_id: int,
        *,
        errcode: int | None,
        error: str,
        api_calls: int,
        pages: int,
        finished_at: datetime,
        abandoned: bool = False,
    ) -> None:
        """Close a run as failed (``abandoned``: interrupted, its slot may be run again); a run
        already closed by another replica's takeover is left as that replica wrote it."""
        with self._guard:
            own = self._run_conns.get(run_id)
        if own is not None and (own.closed or own.broken):
            self.engine.suspect()  # the others idle in the pool may be gone as well
        params = {
            "run_id": run_id,
            "errcode": errcode,
            "error": one_line(mask(error)),
            "api_calls": api_calls,
            "pages": pages,
            "finished_at": finished_at,
            "abandoned": abandoned,
        }
        try:
            try:
                with self.engine.transaction() as conn:
                    conn.execute(query("fail_run"), params)
            except psycopg.OperationalError:
                # The connection it got was gone too (the server ended every session, and this
                # one was not seen to): once more, every idle connection pinged first.
                self.engine.suspect()
                with self.engine.transaction() as conn:
                    conn.execute(query("fail_run"), params)
        finally:
            self.end_run(run_id)  # (unrecorded, the run is then closed as dead by the next)


_TOTALS = (
    "next_seq",
    "merged_seq",
    "seen",
    "inserted",
    "updated",
    "revived",
    "state_changes",
    "history_rows",
    "rows_in",
    "_confirmed",
)
"""The writer's running totals, restored when an :meth:`ListingWriter.attempt` fails."""


class ListingWriter:
    """One run's listing applied in one transaction that is open while its pages arrive (see
    the module's docstring for the two ways: a first listing, a compared one).

    Use as a context manager: the transaction (holding the account's advisory lock, so that two
    runs of one account never merge at once) is committed by :meth:`finish` and rolled back if
    anything raises before. :meth:`restart` forgets the current attempt (an inconsistent
    listing is listed again); :meth:`attempt` wraps a step that may fail without failing the
    run (deletions confirmed by prefix).
    """

    def __init__(
        self,
        run: OpenRun,
        account_id: int,
        *,
        clock: Callable[[], datetime],
        fence: Callable[[Conn], None] | None,
        on_close: Callable[[int], None] | None = None,
    ) -> None:
        self.on_close = on_close  # lets the run's connection go once the run is closed
        self.run_id = run.run_id
        self.account_id = account_id
        self.clock = clock
        self.fence = fence
        self._conn: Conn | None = run.conn
        self._savepoint = False  # a savepoint marks where the listing began (restart)
        self._reset()
        self._start(run.state)

    def _reset(self) -> None:
        self._candidates: list[str] | None = None
        self._confirmed: frozenset[str] = frozenset()  # rules asked for by prefix and found
        self._listed_ready = False  # listed_rules exists in this transaction
        self._missing: list[str] = []  # live rules the listing lacks (compared listings)
        self._live_rules = 0  # live rules before the run (compared listings)
        self.rows_in = 0  # rules handed to stage(), duplicates included
        self._listing: list[bytes] | None = None  # digests of the listing's groups, once staged
        self._listing_rows = 0
        self.unchanged = False  # the listing equals the last complete one: nothing was staged
        self.next_seq = 0
        self.merged_seq = 0
        self.seen = 0
        self.inserted = 0
        self.updated = 0
        self.revived = 0
        self.state_changes = 0
        self.history_rows = 0

    def __enter__(self) -> ListingWriter:
        return self

    def _start(self, row: Any) -> None:
        """What the listing starts from (read by ``start_run`` under the account's lock)."""
        self._compare = bool(row.has_live_rules)
        self._has_rules = bool(row.has_rules)
        self._expected: list[bytes] | None = None
        self._expected_seen = 0
        if row.has_live_rules and row.digests is not None and row.chunk_rows == digests.GROUP_ROWS:
            self._expected = [bytes(digest) for digest in row.digests]
            self._expected_seen = row.rules_seen

    def __exit__(self, *exc_info: object) -> None:
        # What finish() did not commit is rolled back when the run's connection is given back
        # (RunStore.end_run), after the run is recorded as failed: its lock is held until then.
        self._conn = None

    @property
    def conn(self) -> Conn:
        if self._conn is None:
            raise RuntimeError("the listing's transaction is closed")
        return self._conn

    def _before_writing(self) -> None:
        """Mark where the listing began before its first write, so that :meth:`restart` can
        undo it without letting the run's locks go (a listing that writes nothing needs no
        mark: most runs)."""
        if not self._savepoint:
            # A first listing is sorted by prefix in one piece: in memory (LISTING_MEMORY).
            memory = "" if self._compare else f"; {LISTING_MEMORY}"
            self.conn.execute(f"SAVEPOINT listing{memory}")
            self._savepoint = True

    def restart(self) -> None:
        """Forget everything staged and merged, keeping the run's locks."""
        if self._savepoint:  # (nothing was written without one)
            memory = "" if self._compare else f"; {LISTING_MEMORY}"
            self.conn.execute(f"ROLLBACK TO SAVEPOINT listing{memory}")
        compare, has_rules = self._compare, self._has_rules
        expected, expected_seen = self._expected, self._expected_seen
        self._reset()
        self._compare, self._has_rules = compare, has_rules
        self._expected, self._expected_seen = expected, expected_seen

    def stage(self, pages: Iterable[Page], *, listing: bool = True) -> None:
        """COPY the pages' rules to the database as they arrive, and merge them at the end.

        ``listing``: the pages are the account's listing (not rules asked for by prefix):
        their digests are kept, and while they equal those of the account's last complete
        listing nothing is staged; if they do to the end, nothing is (:attr:`unchanged`).
        """
        rules = chain.from_iterable(page.rules for page in pages)
        chunks: Iterator[list[Rule]]
        if listing:
            self._listing = []
            groups = digested(rules)
            if self._expected is not None:
                groups = self._unless_unchanged(groups, self._expected)
            chunks = map(self._listed, groups)
        else:
            chunks = chunked(rules)  # rules asked for by prefix: no digests
        if self._compare and listing:
            self._stage_compared(chunks)
            return
        if listing and not self._has_rules:
            self._stage_first(chunks)
            return
        # The listing of an account whose rules are all deleted (merged in one sorted piece),
        # or the few rules asked for by prefix (compared rule by rule as merged).
        for chunk in chunks:
            self.rows_in += len(chunk)
            if not listing:
                self._confirmed = self._confirmed.union(rule.prefix for rule in chunk)
            self._copy(chunk)
        if self.next_seq > self.merged_seq:
            if self._compare:
                self.conn.execute(PROBE_PLANS)
            # (A prefix found by get_type 1 is one the listing lacked: newly seen.)
            self.seen += self._merge(self.merged_seq, self.next_seq)

    def _stage_compared(self, chunks: Iterator[list[Rule]]) -> None:
        """The listing of an account with live rules: COPY its rules into listed_rules as they
        arrive (no index to maintain), then compare them with the stored rules in one pass, and
        stage and merge only the ones that differ. The live rules the listing lacks are kept
        for :meth:`deletion_candidates`."""
        lo = self.next_seq
        for chunk in chunks:
            self._ensure_listed()
            self.rows_in += len(chunk)
            self._copy(chunk, COPY_LISTED)
        if self.unchanged:
            return  # equal to the last listing
        self._ensure_listed()  # (an empty listing lacks every live rule)
        # The whole listing against the whole account: hash joins, in memory.
        self.conn.execute(f"{LISTING_PLANS}; {LISTING_MEMORY}")
        found = one(
            self.conn,
            query("compare_listing"),
            {"run_id": self.run_id, "account_id": self.account_id},
        )
        self.seen += found.seen
        self._live_rules = found.live_rules
        self._missing = list(found.missing)
        if found.staged:
            self.conn.execute(PROBE_PLANS)  # the few staged rules: index probes
            self._merge(lo, self.next_seq)
        self.merged_seq = self.next_seq

    def _stage_first(self, chunks: Iterator[list[Rule]]) -> None:
        """The first listing of an account without any rule: each group is COPYed into
        listed_rules and inserted, with its history, as soon as it is whole, while the next
        pages are fetched (nothing to compare with: every rule is new). A prefix that an
        earlier group already inserted (page drift) is set aside, and the later listing of it
        applied at the end."""
        observed_at = self.clock()
        params = {"run_id": self.run_id, "account_id": self.account_id, "observed_at": observed_at}
        repeats = False
        for chunk in chunks:
            self._ensure_listed()
            self.rows_in += len(chunk)
            self._copy(chunk, COPY_LISTED)
            self.conn.execute("SAVEPOINT first_chunk")
            try:
                row = one(self.conn, query("insert_first_chunk"), params)
            except psycopg.errors.UniqueViolation:
                self.conn.execute("ROLLBACK TO SAVEPOINT first_chunk")
                self.conn.execute(query("set_aside_repeats"), params)
                row = one(self.conn, query("insert_first_chunk"), params)
                repeats = True
            self.conn.execute("RELEASE SAVEPOINT first_chunk; TRUNCATE listed_rules")
            self.seen += row.inserted
            self.inserted += row.inserted
            self.state_changes += row.state_changes
            self.history_rows += row.history_rows
            self._has_rules = self._has_rules or row.inserted > 0
        if repeats:
            self.conn.execute(query("repeat_first_rules"), params)
        self.merged_seq = self.next_seq

    def _ensure_listed(self) -> None:
        if not self._listed_ready:
            self._before_writing()
            # (temp_buffers is left alone: once a session has used a temporary table, setting
            # it to another size is an error, and behind PgBouncer sessions are shared.)
            self.conn.execute(query("create_listed_rules"))
            self._listed_ready = True

    def _unless_unchanged(self, groups: Iterator[Group], expected: list[bytes]) -> Iterator[Group]:
        """The groups, unless they equal the last complete listing's to the end (then none,
        and :attr:`unchanged`). Equal groups wait in a spool until one differs."""
        spool = Spool()
        try:
            for index, group in enumerate(groups):
                if index < len(expected) and group.digest == expected[index]:
                    spool.add(group)
                    continue
                yield from spool.replay()
                yield group
                yield from groups
                return
            if spool.groups == len(expected):
                self.unchanged = True
                self.seen = self._expected_seen
                self._listing = list(expected)
                return
            yield from spool.replay()  # the listing is shorter than the last one
        finally:
            spool.close()

    def _listed(self, group: Group) -> list[Rule]:
        """Note a group of the listing (its digest is kept if the run ends complete)."""
        assert self._listing is not None
        self._listing.append(group.digest)
        self._listing_rows += len(group.rules)
        return group.rules

    def _copy(self, rules: list[Rule], statement: str = COPY_STAGED) -> None:
        """COPY ``rules`` into staged_rules (or, with COPY_LISTED, listed_rules), numbered
        from :attr:`next_seq` in listing order."""
        self._before_writing()
        with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(STAGED_TYPES)
            for rule in rules:
                copy.write_row(_staged_row(self.run_id, self.next_seq, rule))
                self.next_seq += 1

    def _merge(self, lo: int, hi: int) -> int:
        """Merge the staged rules with seq in [lo, hi); return how many distinct prefixes
        they hold."""
        row = one(
            self.conn,
            query("merge_chunk"),
            {
                "run_id": self.run_id,
                "account_id": self.account_id,
                "observed_at": self.clock(),
                "lo": lo,
                "hi": hi,
                "has_rules": self._has_rules,
            },
        )
        self.merged_seq = hi
        self._has_rules = True  # (it may have written some; probing is always right)
        self.inserted += row.inserted
        self.updated += row.updated
        self.revived += row.revived
        self.state_changes += row.state_changes
        self.history_rows += row.history_rows
        return int(row.listed)

    def attempt(self, step: Callable[[], None]) -> None:
        """Run ``step``; if it raises, undo what it staged and merged, then re-raise."""
        self.conn.execute("SAVEPOINT attempt")
        saved = {name: getattr(self, name) for name in _TOTALS}
        try:
            step()
        except BaseException:
            self.conn.execute("ROLLBACK TO SAVEPOINT attempt")
            for name, value in saved.items():
                setattr(self, name, value)
            raise
        self.conn.execute("RELEASE SAVEPOINT attempt")

    def deletion_candidates(self) -> list[str]:
        """Live rules the listing does not hold: what finishing would delete (less those that
        rules asked for by prefix later bring back)."""
        # Without live rules before the run, the live rules are the ones it listed.
        self._candidates = [] if self.unchanged or not self._compare else list(self._missing)
        return self._candidates

    def finish(
        self,
        *,
        account: str,
        complete: bool,
        allow_mass_delete: bool,
        max_delete_fraction: float,
        outcome: RunOutcome,
    ) -> tuple[MergeCounts, RunOutcome]:
        """Apply the deletions of a complete listing, record the snapshot, close the run and
        commit.

        If the delete guard holds deletions back, the run becomes ``partial`` with a message,
        and the snapshot is not marked complete.
        """
        conn = self.conn
        candidates = self._candidates
        if candidates is None:
            candidates = self.deletion_candidates() if complete else []
        candidates = [prefix for prefix in candidates if prefix not in self._confirmed]
        observed_at = self.clock()
        deletions = Deletions()
        if complete and candidates:
            found = one(
                conn,
                query("apply_deletions"),
                {
                    "run_id": self.run_id,
                    "account_id": self.account_id,
                    "observed_at": observed_at,
                    "candidates": candidates,
                    "live_rules": self._live_rules,
                    "allow_mass_delete": allow_mass_delete,
                    "max_delete_fraction": max_delete_fraction,
                },
            )
            deletions = Deletions(**found._asdict())
        counts = MergeCounts(
            rules_seen=self.seen,
            inserted=self.inserted,
            updated=self.updated,
            deleted=deletions.deleted,
            state_changes=self.state_changes + deletions.state_changes,
            history_rows=self.history_rows + deletions.history_rows,
            would_delete=deletions.would_delete,
            live_rules=deletions.live_rules,
            deletions_allowed=deletions.deletions_allowed,
        )
        if complete and not counts.deletions_allowed:
            held = (
                f"{counts.would_delete} of {counts.live_rules} live rules are missing from "
                "the listing; deletions held back (more than sync.max_delete_fraction). If "
                f"they really are gone: qrsync sync --account {shlex.quote(account)} "
                "--allow-mass-delete"
            )
            outcome = replace(
                outcome, status="partial", complete=False, message=_join(outcome.message, held)
            )
        # The digests describe the account's rules only if they now equal the listing: complete,
        # no rule staged besides it (found by prefix), no prefix listed twice.
        keep = (
            outcome.complete
            and self._listing is not None
            and not self.unchanged
            and self.rows_in == self._listing_rows == self.seen
        )
        wrote = counts.inserted + counts.updated + counts.deleted > 0
        if self.fence is not None:
            self.fence(conn)
        conn.execute(
            query("finish_run"),
            {
                "digests": self._listing if keep else None,
                "digest_rows": digests.GROUP_ROWS,
                "drop_digests": wrote and not keep,
                "run_id": self.run_id,
                "account_id": self.account_id,
                "observed_at": observed_at,
                "qrcodejump_open": outcome.qrcodejump_open,
                "qrcodejump_pub_quota": outcome.qrcodejump_pub_quota,
                "total_count": outcome.total_count,
                "rules_seen": counts.rules_seen,
                "complete": outcome.complete,
                "status": outcome.status,
                "api_calls": outcome.api_calls,
                "pages": outcome.pages,
                "inserted": counts.inserted,
                "updated": counts.updated,
                "unchanged": counts.unchanged,
                "deleted": counts.deleted,
                "state_changes": counts.state_changes,
                "message": outcome.message,
                "finished_at": self.clock(),
            },
        )
        conn.commit()
        if self.on_close is not None:
            self.on_close(self.run_id)
        return counts, outcome


def _staged_row(run_id: int, seq: int, rule: Rule) -> tuple[object, ...]:
    prefix, path, state, open_version, permit_sub_rule, debug_urls = rule
    urls = list(debug_urls) if debug_urls is not None else None
    return (run_id, seq, prefix, path, state, open_version, permit_sub_rule, urls)


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


def database_error(exc: psycopg.Error) -> DatabaseError:
    """One line for people out of a psycopg error."""
    return DatabaseError(f"database error: {first_line(exc)}")
