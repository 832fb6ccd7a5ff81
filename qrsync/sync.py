"""Sync one account end to end, or many with bounded concurrency.

The stages (STYLE.md): listing (pages from the API, :mod:`qrsync.wechat.listing`) -> staging
(COPY, :class:`qrsync.store.runs.RunStore`) -> merge (one transaction). A failure anywhere before
the merge leaves every rule as it was and closes the run as failed (SPEC behaviour 3). The daemon
calls :meth:`Syncer.sync_account` too.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import chain
from queue import Full, Queue
from typing import Any, Protocol

import psycopg

from qrsync.config import MAX_PAGE_SIZE, AccountConfig, Config
from qrsync.errors import (
    AccountError,
    ApiError,
    DatabaseError,
    MalformedResponse,
    QuotaHeld,
    RunInterrupted,
    TokenError,
    TransportError,
)
from qrsync.fleet import Fleet, Listed
from qrsync.masking import mask, one_line
from qrsync.model import Page
from qrsync.store.digests import GROUP_ROWS
from qrsync.store.encryption import sealer_for
from qrsync.store.engine import Conn, Engine
from qrsync.store.runs import (
    ListingWriter,
    OpenRun,
    QuotaHold,
    RunOutcome,
    RunStore,
    database_error,
)
from qrsync.store.tokens import PgTokenCache
from qrsync.store.unchanged import Expectation, UnchangedRun, UnchangedRuns
from qrsync.wechat.client import ApiCaller, CallCounter, Observer, TokenProvider, WeChatClient
from qrsync.wechat.errcodes import DAILY_QUOTA, QUOTA_USED_UP, quota_resets_at
from qrsync.wechat.listing import (
    ListingTally,
    judge_listing,
    miniprogram_listing,
    prefix_listing,
    service_account_listing,
    total_count_note,
)
from qrsync.wechat.tokens import TokenProviders

logger = logging.getLogger("qrsync.sync")
recovery_logger = logging.getLogger("qrsync.recovery")
"""Runs found dead and closed: shown even where the CLI hushes the per-run log lines."""

MAX_ERROR_CHARS = 1000
"""A run's error is one line of at most this many characters (logs, output, sync_runs.error)."""

LISTING_ATTEMPTS = 3
"""A paged listing that is not consistent is tried again, twice (SPEC behaviour 2)."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class RunResult:
    """How one account's run ended, for the CLI summary, --json and the daemon."""

    account: str
    run_id: int | None
    status: str
    api_calls: int = 0
    pages: int = 0
    rules_seen: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    state_changes: int = 0
    total_count: int | None = None
    qrcodejump_pub_quota: int | None = None
    errcode: int | None = None
    error: str | None = None
    message: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "partial")


class RunGuard(Protocol):
    """What a scheduler adds to a run: a lease to hold (see qrsync.store.leases)."""

    def attach(self, run_id: int) -> None:
        """The run's row exists: record it with the lease."""

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if the run must stop (lease lost)."""

    def fence(self, conn: Conn) -> None:
        """Inside the merge transaction: raise unless the run may still write."""


@dataclass(frozen=True)
class SyncRequest:
    """What to do for one account: which one, why, and the options of this run."""

    account: AccountConfig
    account_id: int
    trigger: str = "cli"
    scheduled_for: datetime | None = None
    replica: str | None = None
    prefixes: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    guard: RunGuard | None = None


class Syncer:
    """Everything a run needs, built once per process and shared by its threads."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        client: WeChatClient | None = None,
        clock: Clock = utc_now,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.client = client or WeChatClient(config.api, pool_size=config.sync.concurrency * 2)
        self.runs = RunStore(engine)
        self.unchanged = UnchangedRuns(engine)
        cache = PgTokenCache(engine, sealer_for(config))
        self.tokens = TokenProviders(self.client, cache, config.component)
        self.clock = clock
        self.observer = observer
        # AppIDs whose quota is used up, as read by sync_many (None: not read, e.g. the daemon)
        self._held: frozenset[str] | None = None
        self._stopping = threading.Event()
        self._stop_reason = "interrupted"

    def close(self) -> None:
        self.client.close()

    # --- many accounts ------------------------------------------------------------------------

    def sync_many(
        self,
        requests: Sequence[SyncRequest],
        *,
        on_start: Callable[[SyncRequest], None] | None = None,
        on_finish: Callable[[RunResult], None] | None = None,
        on_page: Callable[[SyncRequest, ListingTally], None] | None = None,
    ) -> list[RunResult]:
        """Sync the accounts ``sync.concurrency`` at a time (as one fleet: :mod:`qrsync.fleet`);
        results in the order given. ``on_page`` is told after every page of every listing (a
        progress display)."""
        if len(requests) == 1:
            (request,) = requests
            if on_start is not None:
                on_start(request)
            pages = None if on_page is None else functools.partial(on_page, request)
            result = self.sync_account(request, on_page=pages)
            if on_finish is not None:
                on_finish(result)
            return [result]
        expected = self._prime(requests)
        fleet = Fleet(
            self, requests, expected, on_start=on_start, on_finish=on_finish, on_page=on_page
        )
        return fleet.run()

    def _prime(self, requests: Sequence[SyncRequest]) -> dict[int, Expectation]:
        """Read the cached tokens, the quota holds and the last complete listings of many
        accounts at once (three statements instead of three per account); each run still
        checks its own hold under its lock, and an unchanged listing its digests."""
        self.tokens.prime([request.account for request in requests])
        now = self.clock()
        self._held = frozenset(
            hold["appid"] for hold in self.runs.quota_holds(now) if hold["standing"]
        )
        return self.unchanged.expectations([request.account_id for request in requests])

    def is_held(self, appid: str) -> bool:
        """Whether ``appid``'s quota is used up, as read by :meth:`sync_many` (unknown: True,
        so that its run checks it)."""
        return self._held is None or appid in self._held

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, reason: str = "interrupted") -> None:
        """Ask runs in progress to stop before their next page (they change nothing)."""
        self._stop_reason = reason
        self._stopping.set()

    # --- one account --------------------------------------------------------------------------

    def sync_account(
        self,
        request: SyncRequest,
        *,
        on_page: Callable[[ListingTally], None] | None = None,
        listed: Listed | None = None,
    ) -> RunResult:
        """List one account's rules and apply them; never raises for the account's own
        failures (they are recorded on the run), only when the database itself fails.
        ``listed``: what was listed before the run opened (:mod:`qrsync.fleet`)."""
        account = request.account
        started = time.monotonic()
        log_extra: dict[str, object] = {
            "account": account.name,
            "slot": request.scheduled_for.isoformat() if request.scheduled_for else None,
            "replica": request.replica,
        }
        token_error = self._warm_token(account) if listed is None else None
        try:
            run = self.runs.open_run(
                request.account_id,
                account.appid,
                trigger=request.trigger,
                started_at=self.clock(),
                scheduled_for=request.scheduled_for,
                replica=request.replica,
            )
        except psycopg.Error as exc:
            error = database_error(exc)
            return RunResult(
                account.name, None, "failed", error=f"account '{account.name}': {error}"
            )
        run_id = run.run_id
        log_extra["run_id"] = run_id
        if request.guard is not None:
            request.guard.attach(run_id)
        logger.info(
            "account '%s': run %d started",
            account.name,
            run_id,
            extra={"action": "run_started", **log_extra},
        )
        counter = CallCounter(self.observer) if listed is None else listed.counter
        tally = ListingTally(on_page=on_page) if listed is None else listed.tally
        if listed is not None and listed.pages is None:
            tally.restart()  # (listed again from its first page)
        try:
            if token_error is not None:
                raise token_error
            result = self._run(request, run, counter, tally, listed)
        except (AccountError, DatabaseError, psycopg.Error) as exc:
            # psycopg's own errors come straight from COPY, which runs on the driver's cursor.
            if isinstance(exc, psycopg.Error):
                exc = database_error(exc)
            errcode = exc.errcode if isinstance(exc, AccountError) else None
            message = str(exc)
            if not message.startswith(f"account '{account.name}'"):
                message = f"account '{account.name}': {message}"
            if isinstance(exc, ApiError) and exc.errcode in QUOTA_USED_UP:
                message += self._hold_quota(account, exc.errcode, run_id)
            message = one_line(mask(message))
            if len(message) > MAX_ERROR_CHARS:  # an errmsg or a prefix may be kilobytes long
                message = message[: MAX_ERROR_CHARS - 1] + "…"
            try:
                self.runs.fail_run(
                    run_id,
                    errcode=errcode,
                    error=message,
                    api_calls=counter.calls,
                    pages=tally.pages,
                    finished_at=self.clock(),
                    abandoned=isinstance(exc, RunInterrupted),
                )
            except psycopg.Error as db_exc:
                message += f" (and the run could not be recorded: {database_error(db_exc)})"
            logger.warning("%s", message, extra={"action": "run_failed", **log_extra})
            return RunResult(
                account.name,
                run_id,
                "failed",
                api_calls=counter.calls,
                pages=tally.pages,
                errcode=errcode,
                error=message,
                duration_s=time.monotonic() - started,
            )
        result = replace(result, duration_s=time.monotonic() - started)
        self._log_finished(request, result)
        return result

    @staticmethod
    def _log_finished(request: SyncRequest, result: RunResult) -> None:
        logger.info(
            "account '%s': run %d %s: %d rules, %d new, %d changed, %d deleted",
            result.account,
            result.run_id,
            result.status,
            result.rules_seen,
            result.inserted,
            result.updated,
            result.deleted,
            extra={
                "action": "run_finished",
                "account": result.account,
                "slot": request.scheduled_for.isoformat() if request.scheduled_for else None,
                "replica": request.replica,
                "run_id": result.run_id,
            },
        )

    def unchanged_result(
        self, request: SyncRequest, run_id: int, run: UnchangedRun, started: float
    ) -> RunResult:
        """The result of a run recorded with others because its listing was unchanged
        (:mod:`qrsync.fleet`), logged as every run's end is."""
        rules = run.expectation.rules_seen
        result = RunResult(
            account=request.account.name,
            run_id=run_id,
            status="succeeded",
            api_calls=run.api_calls,
            pages=run.pages,
            rules_seen=rules,
            unchanged=rules,
            total_count=run.total_count,
            qrcodejump_pub_quota=run.qrcodejump_pub_quota,
            message=run.message,
            duration_s=time.monotonic() - started,
        )
        self._log_finished(request, result)
        return result

    @staticmethod
    def log_dead_runs(account: str, closed: int) -> None:
        recovery_logger.warning(
            "account '%s': closed %d earlier run(s) left open by a process that ended "
            "(sync_runs.abandoned); they had written nothing",
            account,
            closed,
            extra={"action": "dead_runs_closed", "account": account},
        )

    def _hold_quota(self, account: AccountConfig, errcode: int, run_id: int) -> str:
        """Record that the account's AppID is not to be called until its quota resets; return
        what to add to the run's error."""
        now = self.clock()
        hold = QuotaHold(errcode, now, quota_resets_at(errcode, now))
        try:
            self.runs.hold_quota(account.appid, hold, run_id)
        except psycopg.Error as exc:
            return f"; the hold could not be recorded: {database_error(exc)}"
        return f"; {account.appid} is not called again until {_when(hold.until)}"

    def _warm_token(self, account: AccountConfig) -> AccountError | psycopg.Error | None:
        """Get the account's token before its run holds a connection (a token fetched from
        WeChat holds one while it is refreshed under its lock); a failure is the run's, and is
        returned to be recorded on it. Only where the holds were read (:meth:`_prime`): a held
        AppID is not called, not even for a token, so an unknown one gets its token in its run,
        after its hold is checked (:meth:`_check_quota`)."""
        if self.is_held(account.appid):
            return None
        try:
            self.token_source(account).get()
        except (AccountError, psycopg.Error) as exc:
            return exc
        return None

    def token_source(self, account: AccountConfig) -> TokenProvider:
        if account.token.source == "component" and self.config.component is None:
            # An imported component account outlives the [component] table it needs.
            raise TokenError(
                f"token source component needs a [component] table in {self.config.path}",
                account=account.name,
            )
        return self.tokens.for_account(account)

    def _check_quota(self, account: AccountConfig, state: Any) -> None:
        """Raise if the account's AppID is held: its quota is used up (45009, 45011)."""
        if state.hold_errcode is not None:
            what = "daily" if state.hold_errcode == DAILY_QUOTA else "per-minute"
            since, until = state.held_since, state.held_until
            raise QuotaHeld(
                f"not called: WeChat said the {what} API quota of {account.appid} was used up "
                f"({state.hold_errcode} at {_when(since)}); calls resume at {_when(until)} "
                f"(`qrsync quota release {account.appid}` calls it again at once)",
                account=account.name,
                errcode=state.hold_errcode,
            )

    def _run(
        self,
        request: SyncRequest,
        run: OpenRun,
        counter: CallCounter,
        tally: ListingTally,
        listed: Listed | None,
    ) -> RunResult:
        account = request.account
        self._check_quota(account, run.state)
        api = ApiCaller(
            client=self.client,
            tokens=self.token_source(account),
            account=account.name,
            caller=account.appid,
            counter=counter,
            prior=None if listed is None else listed.prior,
        )
        fence = request.guard.fence if request.guard is not None else None
        run_id = run.run_id
        with self.runs.listing(run, request.account_id, clock=self.clock, fence=fence) as w:
            if run.closed_dead_runs:
                self.log_dead_runs(account.name, run.closed_dead_runs)
            complete, status, notes = self._list(request, api, w, tally, listed)
            outcome = RunOutcome(
                status=status,
                api_calls=counter.calls,
                pages=tally.pages,
                **tally.snapshot(),
                complete=complete,
                message="; ".join(notes) or None,
            )
            counts, outcome = w.finish(
                account=account.name,
                complete=complete,
                allow_mass_delete=request.allow_mass_delete,
                max_delete_fraction=self.config.sync.max_delete_fraction,
                outcome=outcome,
            )
        return RunResult(
            account=account.name,
            run_id=run_id,
            status=outcome.status,
            api_calls=outcome.api_calls,
            pages=outcome.pages,
            rules_seen=counts.rules_seen,
            inserted=counts.inserted,
            updated=counts.updated,
            unchanged=counts.unchanged,
            deleted=counts.deleted,
            state_changes=counts.state_changes,
            total_count=outcome.total_count,
            qrcodejump_pub_quota=outcome.qrcodejump_pub_quota,
            message=outcome.message,
        )

    def _list(
        self,
        request: SyncRequest,
        api: ApiCaller,
        writer: ListingWriter,
        tally: ListingTally,
        listed: Listed | None,
    ) -> tuple[bool, str, list[str]]:
        """Stage and merge the account's listing (begun already if ``listed``); return
        (complete, status, notes)."""
        account = request.account
        notes: list[str] = []
        if request.prefixes:
            wanted = len(set(request.prefixes))
            pages = self._prefix_pages(api, account, request.prefixes, tally)
            self._stage(writer, pages, request, listing=False)
            notes.append(f"refreshed {writer.seen} of {wanted} prefixes (get_type 1)")
            if wanted > writer.seen:
                notes.append(f"{wanted - writer.seen} not found (nothing deleted)")
            return False, "succeeded", notes
        if account.kind == "miniprogram":
            given = None if listed is None else listed.pages
            first = iter(given) if given is not None else miniprogram_listing(api, tally)
            self._stage(writer, first, request, paged=False)
            page = tally.last
            total = page.total_count if page else None
            if tally.short_pages:
                notes.append(
                    f"{'; '.join(tally.short_pages)}: applied what was listed, deleted nothing"
                )
                return False, "partial", notes
            note = total_count_note(writer.seen, total)
            if note is not None:
                notes.append(note)
            return True, "succeeded", notes
        assert account.miniprogram_appid is not None
        problems: list[str] = []
        for attempt in range(1, LISTING_ATTEMPTS + 1):
            if attempt > 1:
                tally.restart()
                writer.restart()
            given = None if listed is None or attempt > 1 else listed.pages
            resume = None if listed is None or attempt > 1 else listed.resume
            if given is None or resume is not None:
                more = service_account_listing(
                    api, account.miniprogram_appid, self.config.sync.page_size, tally, resume
                )
                pages = more if given is None else chain(given, more)
            else:
                pages = iter(given)
            self._stage(writer, pages, request, paged=given is None or resume is not None)
            problems = judge_listing(tally, writer.seen)
            if not problems:
                break
            logger.warning(
                "account '%s': listing %d of %d not consistent: %s",
                account.name,
                attempt,
                LISTING_ATTEMPTS,
                "; ".join(problems),
                extra={
                    "action": "listing_inconsistent",
                    "account": account.name,
                    "run_id": writer.run_id,
                },
            )
        if problems:
            notes.append(
                f"listing not consistent after {LISTING_ATTEMPTS} attempts ("
                + "; ".join(problems)
                + "): applied what was seen, deleted nothing"
            )
            return False, "partial", notes
        unverified = self._verify_deletions(api, request, writer, tally)
        if unverified:
            notes.append(unverified)
        return True, "succeeded", notes

    def _prefix_pages(
        self,
        api: ApiCaller,
        account: AccountConfig,
        prefixes: Sequence[str],
        tally: ListingTally,
    ) -> Iterator[Page]:
        """Service accounts: get_type 1. Mini programs: their one listing call, filtered, since
        the ordinary-QR mode has no documented per-prefix form."""
        wanted = list(dict.fromkeys(prefixes))
        if account.kind == "service_account":
            assert account.miniprogram_appid is not None
            yield from prefix_listing(api, account.miniprogram_appid, wanted, tally)
            return
        keep = set(wanted)
        for page in miniprogram_listing(api, tally):
            yield replace(page, rules=tuple(r for r in page.rules if r.prefix in keep))

    def _verify_deletions(
        self, api: ApiCaller, request: SyncRequest, writer: ListingWriter, tally: ListingTally
    ) -> str | None:
        """Ask for the rules a consistent listing lacks by prefix (get_type 1) before deleting.

        Page drift can hide a rule while keeping every count right (one rule deleted on an
        earlier page shifts another past the pager while one is added at the end); a rule that
        get_type 1 still returns is staged as seen, so only rules really gone are deleted. If
        WeChat cannot answer that question, the consistent listing decides, as SPEC behaviour 2
        says; the returned note says so.
        """
        mp_appid = request.account.miniprogram_appid
        assert mp_appid is not None
        candidates = writer.deletion_candidates()
        if not candidates:
            return None
        pages = prefix_listing(api, mp_appid, candidates, tally)
        listed = tally.last  # the snapshot describes the listing, not the get_type 1 answers
        try:
            writer.attempt(lambda: self._stage(writer, pages, request, listing=False))
        except (ApiError, TransportError, MalformedResponse) as exc:
            logger.warning(
                "account '%s': could not confirm %d deletions by prefix (%s); the consistent "
                "listing decides",
                request.account.name,
                len(candidates),
                exc,
                extra={"action": "deletions_unconfirmed", "account": request.account.name},
            )
            return f"{len(candidates)} deletions not confirmed by prefix (get_type 1 failed)"
        finally:
            tally.last = listed
        return None

    def _stage(
        self,
        writer: ListingWriter,
        pages: Iterator[Page],
        request: SyncRequest,
        *,
        listing: bool = True,
        paged: bool = True,
    ) -> None:
        """Stage and merge the pages as they arrive, the next pages being fetched meanwhile
        (memory: a few pages). ``listing``: the account's listing, not rules asked by prefix.
        ``paged``: more than one answer may come (a mini program's listing is one answer:
        nothing to fetch meanwhile, and no thread to start for it)."""
        if paged:
            pages = prefetched(pages)
        writer.stage(self._checked(pages, request.guard), listing=listing)

    def _checked(self, pages: Iterator[Page], guard: RunGuard | None) -> Iterator[Page]:
        """Stop between pages when the run must (lease lost, shutdown)."""
        for page in pages:
            if guard is not None:
                guard.check()
            if self._stopping.is_set():
                raise RunInterrupted(
                    f"{self._stop_reason} before the listing was complete; nothing changed"
                )
            yield page


PREFETCH_PAGES = 2 * GROUP_ROWS // MAX_PAGE_SIZE
"""Pages fetched ahead while a group of rules is digested and staged: the pager does not wait
for the database."""


def prefetched(pages: Iterator[Page], depth: int = PREFETCH_PAGES) -> Iterator[Page]:
    """Iterate ``pages`` in a background thread, at most ``depth`` pages ahead, so that fetching
    (network) and staging (database) overlap; the producer's exception is raised here."""
    queue: Queue[tuple[Page | None, BaseException | None]] = Queue(maxsize=depth)
    abandon = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not abandon.is_set():
                    try:
                        queue.put((page, None), timeout=0.2)
                        break
                    except Full:
                        continue
                if abandon.is_set():
                    return
            queue.put((None, None))
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put((None, exc))

    thread = threading.Thread(target=produce, name="qrsync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            page, error = queue.get()
            if error is not None:
                raise error
            if page is None:
                return
            yield page
    finally:
        abandon.set()
        thread.join(timeout=30)
