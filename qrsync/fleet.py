"""A sync of many accounts: their listings in flight at once from one thread.

Most runs of a fleet find nothing new, and a run that holds a thread and a database connection
while it waits for its answer costs more CPU than the answer itself (the GIL handed back and
forth, a transaction kept open). So an account that may be unchanged (its last complete listing
is known and small, its token at hand) is listed from the thread that runs the fleet, up to
``sync.concurrency`` at a time through libcurl's multi interface
(:class:`qrsync.wechat.transport.Exchanges`), and compared with the digests of its last complete
listing before any run is opened. Equal, its run is recorded with others in a batch
(:mod:`qrsync.store.unchanged`). Anything else (a change, an error, an account whose run could
not be recorded, an account that is not listed here at all) runs the ordinary way
(:meth:`qrsync.sync.Syncer.sync_account`) in a thread of the pool, with the pages already
listed and how its last call failed, so that no call is made twice and every retry is counted
as before.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

from qrsync.errors import AccountError, TransportError
from qrsync.model import Page
from qrsync.store.digests import digested
from qrsync.store.runs import database_error
from qrsync.store.unchanged import MAX_RULES, Expectation, UnchangedRun
from qrsync.wechat.client import CallCounter
from qrsync.wechat.listing import (
    ENDPOINT,
    PATH,
    ListingTally,
    ServicePages,
    judge_listing,
    parse_page,
    total_count_note,
)
from qrsync.wechat.transport import Answer, Exchanges, Request

if TYPE_CHECKING:
    from qrsync.sync import RunResult, Syncer, SyncRequest

logger = logging.getLogger("qrsync.sync")

UNCHANGED_BATCH = 64
"""Unchanged listings recorded by one transaction (three statements for all of them)."""
WAIT_S = 0.05
"""The longest the fleet's thread waits for an answer before looking at its other work."""
RATE_LIMITED_WAIT_S = 0.1
"""How long a page that WeChat's per-account rate limit holds back waits before it is tried."""


@dataclass
class Listed:
    """What was listed before an account's run opened, handed to its ordinary run: the pages
    (None: list again), and how the first call of the run failed (``prior``), already counted
    in ``counter`` and ``tally``."""

    counter: CallCounter
    tally: ListingTally
    pages: list[Page] | None = None
    prior: AccountError | None = None
    resume: ServicePages | None = None
    """Where a service account's listing stopped (the page whose call failed): its run goes on
    from there, after ``pages``."""


@dataclass
class _Listing:
    """An account being listed by the fleet's thread."""

    index: int
    request: SyncRequest
    expected: Expectation
    token: str
    listed: Listed
    started: float
    started_at: datetime
    service: ServicePages | None  # None: a mini program's one answer
    pages: list[Page] = field(default_factory=list)
    rules: int = 0

    @property
    def name(self) -> str:
        return self.request.account.name


@dataclass(frozen=True)
class _Pending:
    """An unchanged listing waiting in the batch to be recorded."""

    listing: _Listing
    run: UnchangedRun


class Fleet:
    """One sync of many accounts (see the module's docstring); :meth:`run` once."""

    def __init__(
        self,
        syncer: Syncer,
        requests: Sequence[SyncRequest],
        expected: dict[int, Expectation],
        *,
        on_start: Callable[[SyncRequest], None] | None = None,
        on_finish: Callable[[RunResult], None] | None = None,
        on_page: Callable[[SyncRequest, ListingTally], None] | None = None,
    ) -> None:
        self.syncer = syncer
        self.client = syncer.client
        self.requests = requests
        self.expected = expected
        self.on_start = on_start
        self.on_finish = on_finish
        self.on_page = on_page
        concurrency = max(1, min(syncer.config.sync.concurrency, len(requests)))
        # An account takes a slot from its start until its listing is done here, or its
        # ordinary run ends: at most sync.concurrency accounts are synced at once.
        self._slots = threading.Semaphore(concurrency)
        # (One more thread than slots: the batches are recorded there.)
        self._pool = ThreadPoolExecutor(concurrency + 1, thread_name_prefix="qrsync-sync")
        self._results: list[RunResult | None] = [None] * len(requests)
        self._batch: list[_Pending] = []
        self._held_back: list[tuple[float, int, _Listing]] = []  # (when, order, listing)
        self._order = itertools.count()
        self._futures: list[Future[None]] = []

    # --- the fleet's thread ---------------------------------------------------------------

    def run(self) -> list[RunResult]:
        """Sync every account; the results in the order given."""
        waiting = deque(enumerate(self.requests))
        exchanges = self.client.exchanges()
        try:
            while waiting or exchanges or self._held_back:
                idle = not exchanges and not self._held_back
                while waiting and self._take_slot(wait=idle):
                    index, request = waiting.popleft()
                    self._start(index, request, exchanges)
                    idle = False
                self._send_held_back(exchanges)
                if exchanges:
                    for listing, outcome in exchanges.wait(self._wait_s()):
                        self._answered(listing, outcome, exchanges)
                elif self._held_back and not waiting:
                    time.sleep(self._wait_s())
            self._record_batch()
            for future in self._futures:
                future.result()
        except BaseException:
            # Ctrl-C: start nothing new; the listings in flight here are dropped (no run was
            # opened for them); ordinary runs in progress stop at their next page and are
            # closed as failed ("interrupted") with no rule changed.
            self.syncer.stop()
            exchanges.close()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._record_batch(in_pool=False)
            raise
        finally:
            exchanges.close()
            self._pool.shutdown(wait=True)
        return [result for result in self._results if result is not None]

    def _take_slot(self, *, wait: bool) -> bool:
        return self._slots.acquire(timeout=WAIT_S) if wait else self._slots.acquire(False)

    def _wait_s(self) -> float:
        if not self._held_back:
            return WAIT_S
        return min(WAIT_S, max(0.0, self._held_back[0][0] - time.monotonic()))

    def _start(self, index: int, request: SyncRequest, exchanges: Exchanges) -> None:
        """List the account here if it may be unchanged, else hand it to the pool."""
        if self.on_start is not None:
            self.on_start(request)
        listing = self._listing(index, request)
        if listing is None:
            self._ordinary(index, request, None)
            return
        self._send(listing, exchanges)

    def _listing(self, index: int, request: SyncRequest) -> _Listing | None:
        syncer, account = self.syncer, request.account
        expected = self.expected.get(request.account_id)
        if (
            expected is None
            or request.prefixes
            or request.allow_mass_delete
            or request.guard is not None
            or syncer.is_held(account.appid)
            or syncer.stopping
        ):
            return None
        try:
            token = syncer.token_source(account).at_hand()
        except AccountError:
            return None  # (said by its run)
        if token is None:
            return None  # fetched by its run, which holds the token's lock meanwhile
        on_page = None if self.on_page is None else functools.partial(self.on_page, request)
        tally = ListingTally(on_page=on_page)
        service = None
        if account.kind != "miniprogram":
            assert account.miniprogram_appid is not None
            service = ServicePages(account.miniprogram_appid, syncer.config.sync.page_size, tally)
        return _Listing(
            index=index,
            request=request,
            expected=expected,
            token=token,
            listed=Listed(CallCounter(syncer.observer), tally),
            started=time.monotonic(),
            started_at=syncer.clock(),
            service=service,
        )

    def _send(self, listing: _Listing, exchanges: Exchanges) -> None:
        """Ask for the listing's next answer, unless the account's rate limit holds it back."""
        if not self.client.may_call_now(ENDPOINT, listing.request.account.appid):
            when = time.monotonic() + RATE_LIMITED_WAIT_S
            heapq.heappush(self._held_back, (when, next(self._order), listing))
            return
        body = {} if listing.service is None else listing.service.body()
        request = Request(
            "POST",
            self.client.base_url + PATH,
            ENDPOINT,
            listing.name,
            params={"access_token": listing.token},
            body=body,
        )
        exchanges.start(request, listing)

    def _send_held_back(self, exchanges: Exchanges) -> None:
        now = time.monotonic()
        while self._held_back and self._held_back[0][0] <= now:
            _when, _order, listing = heapq.heappop(self._held_back)
            self._send(listing, exchanges)

    def _answered(
        self, listing: _Listing, outcome: Answer | TransportError, exchanges: Exchanges
    ) -> None:
        """Take one answer of a listing: ask for the next page, or finish the listing."""
        account = listing.name
        counter = listing.listed.counter
        try:
            if isinstance(outcome, TransportError):
                raise outcome
            payload = self.client.payload(outcome, ENDPOINT, account)
            if listing.service is None:
                page = parse_page(payload, 1, account)
                listing.listed.tally.add(page)
                more = False
            else:
                page, more = listing.service.take(payload, account)
        except AccountError as exc:
            counter(ENDPOINT, exc.errcode)
            # Its run goes on from the call that failed (a later page: after the pages so far).
            listing.listed.resume = listing.service if listing.pages else None
            self._hand_over(listing, pages=listing.pages or None, prior=exc)
            return
        counter(ENDPOINT, 0)
        listing.pages.append(page)
        listing.rules += len(page.rules)
        if listing.rules > 2 * MAX_RULES:
            # Grown past what is held here: its run goes on from the next page, staging as it
            # lists.
            listing.listed.resume = listing.service
            self._hand_over(listing, pages=listing.pages, prior=None)
        elif more:
            self._send(listing, exchanges)
        elif self._unchanged(listing):
            self._slots.release()
            self._add(listing)
        else:
            self._hand_over(listing, pages=listing.pages, prior=None)

    def _unchanged(self, listing: _Listing) -> bool:
        """The listing is complete, consistent and equal to the last complete one."""
        tally, expected = listing.listed.tally, listing.expected
        if listing.service is None:
            if tally.short_pages:
                return False
        elif judge_listing(tally, expected.rules_seen):
            return False
        groups = digested(rule for page in listing.pages for rule in page.rules)
        return tuple(group.digest for group in groups) == expected.digests

    def _add(self, listing: _Listing) -> None:
        tally = listing.listed.tally
        last = tally.last
        request = listing.request
        run = UnchangedRun(
            account_id=request.account_id,
            expectation=listing.expected,
            trigger=request.trigger,
            scheduled_for=request.scheduled_for,
            replica=request.replica,
            started_at=listing.started_at,
            observed_at=self.syncer.clock(),
            api_calls=listing.listed.counter.calls,
            pages=tally.pages,
            **tally.snapshot(),
            message=(
                total_count_note(listing.expected.rules_seen, last.total_count)
                if listing.service is None and last is not None
                else None
            ),
        )
        self._batch.append(_Pending(listing, run))
        if len(self._batch) >= UNCHANGED_BATCH:
            self._record_batch()

    def _record_batch(self, *, in_pool: bool = True) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if in_pool:
            self._futures.append(self._pool.submit(self._record, batch))
        else:
            self._record(batch)

    def _hand_over(
        self, listing: _Listing, *, pages: list[Page] | None, prior: AccountError | None
    ) -> None:
        listing.listed.pages = pages
        listing.listed.prior = prior
        self._ordinary(listing.index, listing.request, listing.listed)

    # --- the pool's threads ---------------------------------------------------------------

    def _ordinary(self, index: int, request: SyncRequest, listed: Listed | None) -> None:
        """Run the account the ordinary way in the pool (its slot is let go when it ends)."""
        self._futures.append(self._pool.submit(self._run_ordinary, index, request, listed))

    def _run_ordinary(self, index: int, request: SyncRequest, listed: Listed | None) -> None:
        try:
            on_page = None
            if listed is None and self.on_page is not None:
                on_page = functools.partial(self.on_page, request)
            result = self.syncer.sync_account(request, on_page=on_page, listed=listed)
            self._settle(index, result)
        finally:
            self._slots.release()

    def _record(self, batch: list[_Pending]) -> None:
        """Record a batch of unchanged listings; a listing that could not be (its account
        busy or changed meanwhile, or the database failing) is run the ordinary way, with its
        pages, here (its slot was let go: it is one of a few)."""
        syncer = self.syncer
        try:
            recorded = syncer.unchanged.record([p.run for p in batch], finished_at=syncer.clock())
        except psycopg.Error as exc:
            logger.warning(
                "%d unchanged listings could not be recorded together (%s); each is recorded "
                "on its own",
                len(batch),
                database_error(exc),
                extra={"action": "unchanged_batch_failed"},
            )
            recorded = {}
        for pending in batch:
            listing, run = pending.listing, pending.run
            request = listing.request
            record = recorded.get(request.account_id)
            if record is None:
                listing.listed.pages = listing.pages
                result = syncer.sync_account(request, listed=listing.listed)
                self._settle(listing.index, result)
                continue
            if record.closed_dead_runs:
                syncer.log_dead_runs(listing.name, record.closed_dead_runs)
            result = syncer.unchanged_result(request, record.run_id, run, listing.started)
            self._settle(listing.index, result)

    def _settle(self, index: int, result: RunResult) -> None:
        self._results[index] = result
        if self.on_finish is not None:
            self.on_finish(result)
