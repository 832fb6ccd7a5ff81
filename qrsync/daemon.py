"""`qrsync daemon`: run the schedules until SIGTERM or SIGINT (SPEC behaviours 6 and 8).

Every replica schedules every account (APScheduler 3, one job per distinct schedule), and, with
``[component] discover = true``, the platform's discovery on ``discover_schedule``: every replica
fires it, the one whose row in ``discovery_runs`` goes in first for the slot discovers, and every
replica sees the discovery succeed within seconds and starts (or stops) syncing the accounts it
found (or disabled) without a restart. When a
schedule fires, its slot is the fire time (coalesced: after downtime, only the latest missed
slot); each account starts at a fixed offset into the slot so that a fleet does not hit the API
at once, claims (account, slot) in PostgreSQL, and only the winner syncs, holding a lease that a
background thread renews. SIGTERM stops claiming, lets runs finish within
``daemon.shutdown_grace_s``, then abandons the rest cleanly; SIGHUP reloads the configuration.
GET / serves the status page for people (:mod:`qrsync.status_page`); GET /metrics serves
Prometheus metrics; GET /livez says whether the process still schedules
(no database access: a liveness probe must not restart pods during a database outage), GET
/readyz (and its older name /healthz) whether it can also sync: the database answers and takes
writes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qrsync.app import App
from qrsync.config import AccountConfig, ComponentConfig, Config
from qrsync.errors import (
    READ_ONLY_HINT,
    UNREACHABLE_HINT,
    DatabaseError,
    QrsyncError,
    RunInterrupted,
)
from qrsync.health import schedule_periods
from qrsync.masking import mask, one_line
from qrsync.metrics import Metrics
from qrsync.notify.delivery import Notifier
from qrsync.schedules import Schedule, spread_offset
from qrsync.status_page import StatusPage
from qrsync.store import discoveries
from qrsync.store.accounts import account_ids
from qrsync.store.engine import Conn, Engine, first_line, one
from qrsync.store.leases import Lease, LeaseStore
from qrsync.sync import RunResult, Syncer, SyncRequest

logger = logging.getLogger("qrsync.daemon")

HEALTH_TIMEOUT_S = 3.0
NOTIFY_EVERY_S = 2.0
"""How often a replica sweeps the notifications outbox (each channel's rate limit is kept in
the database, whatever the number of replicas)."""
NOTIFY_JOIN_S = 60.0
ACCOUNTS_REFRESH_S = 60.0
DISCOVERY_POLL_S = 5.0
"""How often a replica asks whether a discovery (its own or another replica's, or `qrsync
accounts discover`) succeeded since it last read the accounts: one count(*) a few seconds."""
DISCOVERY_JOB = "discover"
DISCOVERY_WORKERS = 2
"""Authorizers a daemon's discovery looks at a time: it shares the database pool with the
runs, so it takes little of it (`qrsync accounts discover` looks at sync.concurrency)."""


def default_replica_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class SlotJob:
    """One account to sync for one slot, at a given monotonic time."""

    account: str
    slot: datetime


# --- leases of the runs in progress -----------------------------------------------------------


class ActiveLeases:
    """The leases this replica holds, renewed together; a lease the renewal lost is marked."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._held: dict[int, Lease] = {}
        self._lost: set[int] = set()

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.account_id] = lease
            self._lost.discard(lease.account_id)

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.account_id, None)
            self._lost.discard(lease.account_id)

    def lost(self, lease: Lease) -> bool:
        with self._lock:
            return lease.account_id in self._lost

    def renew(self) -> None:
        with self._lock:
            leases = list(self._held.values())
        kept = self.store.renew(leases)
        with self._lock:
            for lease in leases:
                if lease.account_id not in kept and lease.account_id in self._held:
                    self._lost.add(lease.account_id)
                    logger.warning(
                        "lease of account id %d lost to another replica",
                        lease.account_id,
                        extra={"action": "lease_lost"},
                    )


@dataclass
class LeaseGuard:
    """The :class:`qrsync.sync.RunGuard` of a scheduled run: hold the lease, obey its fence."""

    leases: ActiveLeases
    lease: Lease

    def attach(self, run_id: int) -> None:
        self.leases.store.attach(self.lease, run_id)

    def check(self) -> None:
        if self.leases.lost(self.lease):
            raise RunInterrupted("the lease was taken over by another replica")

    def fence(self, conn: Conn) -> None:
        self.leases.store.fence(conn, self.lease)


# --- delayed start of slot jobs -----------------------------------------------------------------


class Dispatcher:
    """Holds slot jobs until their start time, then hands them to the worker pool."""

    def __init__(self, submit: Callable[[SlotJob], None]) -> None:
        self._submit = submit
        self._heap: list[tuple[float, int, SlotJob]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="qrsync-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def add(self, job: SlotJob, delay_s: float) -> None:
        with self._cond:
            if not self._stopped:
                due = time.monotonic() + max(delay_s, 0.0)
                heapq.heappush(self._heap, (due, next(self._counter), job))
                self._cond.notify()

    def stop(self) -> int:
        """Stop dispatching; return how many jobs were still waiting (they are dropped)."""
        with self._cond:
            self._stopped = True
            dropped = len(self._heap)
            self._heap.clear()
            self._cond.notify()
        self._thread.join(timeout=5)
        return dropped

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout=timeout)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._heap)
            self._submit(job)


# --- HTTP: / (status page), /metrics, /livez, /readyz (alias /healthz) ---------------------------

READINESS_PATHS = ("/readyz", "/healthz")  # /healthz: the older name, kept for existing probes


class _Handler(BaseHTTPRequestHandler):
    daemon_ref: Daemon

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/":
            status, page = self.daemon_ref.status_page.render()
            self._reply(status, "text/html; charset=utf-8", page)
        elif path == "/metrics":
            body = generate_latest(self.daemon_ref.metrics.registry)
            self._reply(200, CONTENT_TYPE_LATEST, body)
        elif path == "/livez":
            live, detail = self.daemon_ref.liveness()
            self._reply(200 if live else 503, "text/plain; charset=utf-8", detail.encode())
        elif path in READINESS_PATHS:
            healthy, detail = self.daemon_ref.health()
            self._reply(200 if healthy else 503, "text/plain; charset=utf-8", detail.encode())
        else:
            self._reply(
                404,
                "text/plain; charset=utf-8",
                b"not found: try /, /metrics, /livez or /readyz\n",
            )

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the log; nothing to say per request."""


# --- the daemon -----------------------------------------------------------------------------------


@dataclass
class Daemon:
    config_path: str | None
    name: str = field(default_factory=default_replica_name)
    http_port: int | None = None
    notify: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._runs_lock = threading.Lock()
        self._runs: set[Future[None]] = set()
        self._scheduler: BackgroundScheduler | None = None
        self._clock_offset = timedelta(0)  # the database's clock minus ours, as last seen
        self._accounts_lock = threading.RLock()
        self._discovering = threading.Lock()
        self._discovery: threading.Thread | None = None
        self._discoveries_seen = -1

    # --- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code (0 after a clean shutdown)."""
        self._load()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.sync.concurrency, thread_name_prefix="qrsync-run"
        )
        self._dispatcher = Dispatcher(self._submit)
        self._dispatcher.start()
        http = self._start_http()
        self._schedule()
        self._catch_up()
        renewer = threading.Thread(target=self._renew_loop, name="qrsync-renew", daemon=True)
        renewer.start()
        notifier = threading.Thread(target=self._notify_loop, name="qrsync-notify", daemon=True)
        notifier.start()
        logger.info(
            "replica %s started: %d accounts, %d schedules",
            self.name,
            len(self._enabled()),
            len(self._schedules()),
            extra={"action": "daemon_started", "replica": self.name},
        )
        self._catch_up_discovery()
        refreshed = polled = time.monotonic()
        while not self._stop.wait(timeout=0.5):
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            if time.monotonic() - refreshed > ACCOUNTS_REFRESH_S:
                refreshed = polled = time.monotonic()
                self._refresh_imported()
            elif time.monotonic() - polled > DISCOVERY_POLL_S:
                polled = time.monotonic()
                if self._discovered_since():
                    refreshed = time.monotonic()
                    self._refresh_imported()
        notifier.join(timeout=NOTIFY_JOIN_S)
        self._shutdown()
        if http is not None:
            http.shutdown()
            http.server_close()
        return 0

    def _load(self) -> None:
        app = App.load(self.config_path, check_secrets=True, notify=self.notify)
        engine = app.ready_engine()
        ids = app.mirror_accounts().ids
        config = app.config
        leases = LeaseStore(engine, self.name, config.daemon.lease_s)
        leases.ensure_rows()
        self.metrics = Metrics(engine)
        self.status_page = StatusPage(engine)
        self.app, self.config, self.engine, self.ids = app, config, engine, ids
        self.accounts = app.accounts()
        self._publish_schedules()
        self.leases = ActiveLeases(leases)
        self.syncer = Syncer(config, engine, observer=self.metrics.api_call)
        self.notifier = self._notifier(config)

    def _notifier(self, config: Config) -> Notifier:
        enabled = [a for a in self.accounts if a.enabled]
        periods = schedule_periods(enabled, config.daemon, datetime.now(UTC))
        return Notifier(
            self.engine,
            config.notify,
            config_file=config.path,
            replica=self.name,
            on_delivery=self.metrics.notification,
            schedule_periods={name: p.total_seconds() for name, p in periods.items()},
            stopping=self._stop.is_set,
        )

    def _publish_schedules(self) -> None:
        enabled = [a for a in self.accounts if a.enabled]
        self.metrics.publish_schedules(
            schedule_periods(enabled, self.config.daemon, datetime.now(UTC))
        )

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "signal %s: stopping (runs in progress get %d s to finish)",
            signal.Signals(signum).name,
            self.config.daemon.shutdown_grace_s,
            extra={"action": "daemon_stopping", "replica": self.name},
        )
        self._stop.set()

    def _on_reload_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload.set()

    def _do_reload(self) -> None:
        """SIGHUP: the file again, on the same database engine (a new database.url needs a
        restart); a bad file leaves the running configuration as it was."""
        with self._accounts_lock:
            self._do_reload_locked()

    def _do_reload_locked(self) -> None:
        try:
            app = App.load(
                self.config_path, check_secrets=True, notify=self.notify, engine=self.engine
            )
            ids = app.mirror_accounts().ids
            accounts = app.accounts()
        except QrsyncError as exc:
            logger.error(
                "reload refused, keeping the running configuration: %s",
                exc,
                extra={"action": "reload_failed", "replica": self.name},
            )
            return
        self.app, self.config, self.ids, self.accounts = app, app.config, ids, accounts
        self._publish_schedules()
        self.leases.store.ensure_rows()
        # Runs in progress keep the syncer they started with.
        self.syncer = Syncer(app.config, self.engine, observer=self.metrics.api_call)
        self.notifier = self._notifier(app.config)  # (the sweeping thread picks it up)
        self._reschedule()
        logger.info(
            "configuration reloaded: %d accounts enabled",
            len(self._enabled()),
            extra={"action": "reloaded", "replica": self.name},
        )

    def _refresh_imported(self) -> None:
        """Imported and discovered accounts come and go without a SIGHUP: pick up the latest
        import or discovery. A new (or enabled again) account is queued for its schedule's
        latest slot at once (the slot's claim keeps it to one run); a disabled one is no
        longer scheduled (a run it has in progress finishes)."""
        with self._accounts_lock:
            try:
                accounts = self.app.accounts()
                ids = account_ids(self.engine)
            except (QrsyncError, psycopg.Error) as exc:
                logger.error(
                    "cannot read the accounts: %s", exc, extra={"action": "refresh_failed"}
                )
                return
            if accounts == self.accounts:
                return
            before = {a.name for a in self._enabled()}
            self.accounts, self.ids = accounts, ids
            self.leases.store.ensure_rows()
            self._publish_schedules()
            self._reschedule()
            new = {a.name for a in self._enabled()} - before
            self.notifier = self._notifier(self.config)
        logger.info(
            "accounts changed in the database: %d enabled (%d new)",
            len(self._enabled()),
            len(new),
            extra={"action": "accounts_refreshed", "replica": self.name},
        )
        if new:
            self._catch_up(only=new)

    def _discovered_since(self) -> bool:
        """Whether a discovery succeeded since the accounts were last read (any replica's)."""
        if self.config.component is None:
            return False
        try:
            seen = discoveries.succeeded_count(self.engine)
        except (psycopg.Error, QrsyncError):
            return False  # the database is away: the next poll asks again
        changed = seen != self._discoveries_seen
        self._discoveries_seen = seen
        return changed

    # --- discovery on its own schedule ----------------------------------------------------

    def _discovery_schedule(self) -> tuple[ComponentConfig, Schedule] | None:
        component = self.config.component
        if component is None or not component.discover:
            return None
        return component, Schedule(component.discover_schedule, self.config.daemon.timezone)

    def _catch_up_discovery(self) -> None:
        """At start: the discovery of the latest slot, if no replica ran it."""
        if self._discovery_schedule() is not None:
            self._fire_discovery()

    def _fire_discovery(self) -> None:
        """The discovery schedule fired: start this slot's discovery in a thread of its own
        (a platform of thousands of authorizers takes a while) unless one is running here."""
        if self._stop.is_set() or not self._discovering.acquire(blocking=False):
            return
        thread = threading.Thread(target=self._discover_slot, name="qrsync-discover", daemon=True)
        self._discovery = thread
        try:
            thread.start()
        except RuntimeError:
            self._discovering.release()
            raise

    def _discover_slot(self) -> None:
        from qrsync.discovery import run_discovery

        try:
            planned = self._discovery_schedule()
            if planned is None:
                return
            component, schedule = planned
            slot = schedule.latest_slot(self._now())
            if slot is None:
                return
            context = {"slot": slot.isoformat(), "replica": self.name}
            try:
                run_id = discoveries.claim_slot(self.engine, component.appid, slot, self.name)
            except psycopg.Error as exc:
                logger.error(
                    "platform %s: cannot claim the discovery slot: %s",
                    component.appid,
                    one_line(first_line(exc)),
                    extra={"action": "discovery_claim_failed", **context},
                )
                return
            if run_id is None:
                logger.debug(
                    "discovery slot taken by another replica",
                    extra={"action": "discovery_skipped", **context},
                )
                return
            try:
                run_discovery(
                    self.config,
                    self.engine,
                    trigger="schedule",
                    replica=self.name,
                    claimed_run=run_id,
                    workers=DISCOVERY_WORKERS,
                    notify=lambda line: logger.warning(
                        "discovery: %s", line, extra={"action": "discovery_note", **context}
                    ),
                )
            except (QrsyncError, psycopg.Error) as exc:
                logger.error(
                    "platform %s: discovery %d failed, no account changed: %s",
                    component.appid,
                    run_id,
                    one_line(mask(str(exc))),
                    extra={"action": "discovery_failed", "discovery_id": run_id, **context},
                )
                return
            self._refresh_imported()
        finally:
            self._discovering.release()

    def _shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._discovery is not None:
            # A discovery writes in one transaction at its end: let it finish within the grace.
            self._discovery.join(timeout=self.config.daemon.shutdown_grace_s)
        dropped = self._dispatcher.stop()
        with self._runs_lock:
            running = list(self._runs)
        grace = self.config.daemon.shutdown_grace_s
        _, still = wait_futures(running, timeout=grace)
        if still:
            logger.warning(
                "%d runs still in progress after %d s: abandoning them",
                len(still),
                grace,
                extra={"action": "abandon", "replica": self.name},
            )
            self.syncer.stop(f"abandoned by replica {self.name} (shutting down)")
            wait_futures(still, timeout=max(grace, 30))
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.syncer.close()
        self.engine.dispose()
        logger.info(
            "replica %s stopped (%d queued slot runs dropped)",
            self.name,
            dropped,
            extra={"action": "daemon_stopped", "replica": self.name},
        )

    # --- scheduling -----------------------------------------------------------------------------

    def _enabled(self) -> list[AccountConfig]:
        return [a for a in self.accounts if a.enabled]

    def _schedule_of(self, account: AccountConfig) -> Schedule:
        return Schedule(
            account.schedule or self.config.daemon.schedule, self.config.daemon.timezone
        )

    def _schedules(self) -> dict[Schedule, list[str]]:
        groups: dict[Schedule, list[str]] = {}
        for account in self._enabled():
            groups.setdefault(self._schedule_of(account), []).append(account.name)
        return groups

    def _schedule(self) -> None:
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.start()
        self._reschedule()

    def _reschedule(self) -> None:
        assert self._scheduler is not None
        self._scheduler.remove_all_jobs()
        for schedule in self._schedules():
            self._scheduler.add_job(
                self._fire,
                trigger=schedule.trigger(),
                args=[schedule],
                id=f"{schedule.expression}@{schedule.timezone}",
                coalesce=True,
                misfire_grace_time=None,
                max_instances=1,
            )
        planned = self._discovery_schedule()
        if planned is not None:
            self._scheduler.add_job(
                self._fire_discovery,
                trigger=planned[1].trigger(),
                id=DISCOVERY_JOB,
                coalesce=True,
                misfire_grace_time=None,
                max_instances=1,
            )

    def _now(self) -> datetime:
        """The database's time, by which slots are named (a replica whose clock is ahead or
        behind names the same slot as the others); the local clock corrected by the last
        offset seen if the database cannot be asked."""
        local = datetime.now(UTC)
        try:
            database = self.leases.store.database_now()
        except (psycopg.Error, QrsyncError) as exc:
            logger.warning(
                "replica %s: could not read the database's clock (%s); slots named from the "
                "local clock corrected by %.1f s",
                self.name,
                one_line(first_line(exc)),
                self._clock_offset.total_seconds(),
                extra={"action": "database_clock_unread", "replica": self.name},
            )
            return local + self._clock_offset
        self._clock_offset = database - local
        return database.astimezone(UTC)

    def _fire(self, schedule: Schedule) -> None:
        """A schedule fired: queue its accounts for the slot (the latest fire time)."""
        now = self._now()
        slot = schedule.latest_slot(now)
        if slot is not None:
            self._queue(schedule, slot, now)

    def _catch_up(self, only: set[str] | None = None) -> None:
        """At start (or for accounts just found): the latest slot of every schedule, run once
        if no replica ran it."""
        now = self._now()
        for schedule in self._schedules():
            slot = schedule.latest_slot(now)
            if slot is not None:
                self._queue(schedule, slot, now, only)

    def _queue(
        self, schedule: Schedule, slot: datetime, now: datetime, only: set[str] | None = None
    ) -> None:
        period = schedule.period(slot)
        elapsed = (now - slot).total_seconds()
        for name in self._schedules().get(schedule, []):
            if only is not None and name not in only:
                continue
            offset = spread_offset(name, period)
            self._dispatcher.add(SlotJob(name, slot), offset - elapsed)

    # --- one slot run ---------------------------------------------------------------------------

    def _submit(self, job: SlotJob) -> None:
        if self._stop.is_set():
            return
        future = self._pool.submit(self._run_slot, job)
        with self._runs_lock:
            self._runs.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._runs_lock:
            self._runs.discard(future)

    def _run_slot(self, job: SlotJob) -> None:
        if self._stop.is_set():
            return
        account = next((a for a in self._enabled() if a.name == job.account), None)
        account_id = self.ids.get(job.account)
        if account is None or account_id is None:
            return  # removed or paused by a reload since it was queued
        context = {"account": job.account, "slot": job.slot.isoformat(), "replica": self.name}
        try:
            claim = self.leases.store.claim(account_id, job.slot)
        except psycopg.Error as exc:
            logger.error(
                "account '%s': cannot claim the slot: %s",
                job.account,
                DatabaseError(f"database error: {first_line(exc)}"),
                extra={"action": "claim_failed", **context},
            )
            return
        if not claim.granted:
            reason = "done" if claim.done else "busy"
            self.metrics.slots_skipped.labels(reason).inc()
            logger.debug("slot skipped (%s)", reason, extra={"action": "slot_skipped", **context})
            return
        if claim.abandoned_runs:
            self.metrics.takeovers.inc(claim.abandoned_runs)
            logger.warning(
                "took account '%s' over from replica %s, whose lease expired",
                job.account,
                claim.holder,
                extra={"action": "takeover", **context},
            )
        assert claim.epoch is not None
        lease = Lease(account_id, claim.epoch, self.name)
        self.leases.add(lease)
        try:
            result = self.syncer.sync_account(
                SyncRequest(
                    account=account,
                    account_id=account_id,
                    trigger="schedule",
                    scheduled_for=job.slot,
                    replica=self.name,
                    guard=LeaseGuard(self.leases, lease),
                )
            )
            self._record(result, context)
        finally:
            self.leases.remove(lease)
            try:
                self.leases.store.release(lease)
            except psycopg.Error:
                pass  # the lease expires by itself within daemon.lease_s

    def _record(self, result: RunResult, context: dict[str, str]) -> None:
        self.metrics.runs.labels(result.account, result.status).inc()
        self.metrics.run_duration.labels(result.account).observe(result.duration_s)
        level = logging.WARNING if result.status == "failed" else logging.INFO
        logger.log(
            level,
            "run %s %s: %d rules, %d new, %d changed, %d deleted%s",
            result.run_id,
            result.status,
            result.rules_seen,
            result.inserted,
            result.updated,
            result.deleted,
            f": {result.error}" if result.error else "",
            extra={"action": "run_finished", "run_id": result.run_id, **context},
        )

    def _notify_loop(self) -> None:
        """Sweep the notifications outbox every few seconds until the daemon stops."""
        while not self._stop.wait(timeout=NOTIFY_EVERY_S):
            notifier = self.notifier
            try:
                notifier.sweep()
            except Exception:  # a sweep must never end the loop; it logs its own failures
                logger.exception("notification sweep failed", extra={"action": "notify_failed"})

    def _renew_loop(self) -> None:
        interval = max(self.config.daemon.lease_s / 3, 0.5)
        while not self._stop.wait(timeout=interval):
            try:
                self.leases.renew()
            except psycopg.Error as exc:
                logger.error("cannot renew leases: %s", exc, extra={"action": "renew_failed"})

    # --- HTTP -----------------------------------------------------------------------------------

    def _start_http(self) -> ThreadingHTTPServer | None:
        port = self.config.daemon.http_port if self.http_port is None else self.http_port
        if port == 0:
            return None
        handler = type("Handler", (_Handler,), {"daemon_ref": self})
        server = ThreadingHTTPServer(("", port), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="qrsync-http", daemon=True)
        thread.start()
        logger.info(
            "serving / (status page), /metrics, /livez and /readyz (alias /healthz) on port %d",
            server.server_address[1],
            extra={"action": "http_started", "replica": self.name},
        )
        self.http_address = server.server_address
        return server

    def liveness(self) -> tuple[bool, str]:
        """200 while the scheduler's and the dispatcher's threads are alive; never touches the
        database, so that a database outage does not get the process restarted."""
        if self._stop.is_set():
            return True, f"live: replica {self.name} is stopping\n"
        scheduler = getattr(self._scheduler, "_thread", None)
        if scheduler is None or not scheduler.is_alive():
            return False, "not live: the scheduler thread is not running\n"
        if not self._dispatcher.alive():
            return False, "not live: the dispatcher thread is not running\n"
        return True, f"live: replica {self.name}\n"

    def health(self) -> tuple[bool, str]:
        """Readiness: 200 when the scheduler runs and the database answers and takes writes
        (within a few seconds); 503 with a one-line reason otherwise."""
        if self._scheduler is None or not self._scheduler.running or self._stop.is_set():
            return False, "not ready: scheduler not running\n"
        answer: list[str] = []

        def ping(engine: Engine) -> None:
            try:
                with engine.transaction() as conn:
                    read_only, in_recovery = one(
                        conn,
                        "SELECT current_setting('transaction_read_only') = 'on',"
                        " pg_is_in_recovery()",
                    )
                if not read_only:
                    answer.append("ok")
                else:
                    where = "a standby in recovery" if in_recovery else "transaction_read_only on"
                    answer.append(f"read-only ({where})")
            except psycopg.Error as exc:
                answer.append(f"{type(exc).__name__}: {first_line(exc)}")

        probe = threading.Thread(target=ping, args=(self.engine,), daemon=True)
        probe.start()
        probe.join(timeout=HEALTH_TIMEOUT_S)
        if answer == ["ok"]:
            return True, f"ok: replica {self.name}, {len(self._enabled())} accounts\n"
        if answer and answer[0].startswith("read-only"):
            reason = f"database is {answer[0]}; {READ_ONLY_HINT}"
        else:
            what = answer[0] if answer else f"no answer within {HEALTH_TIMEOUT_S:g} s"
            reason = f"database not answering ({what}); {UNREACHABLE_HINT}"
        return False, one_line(mask(f"not ready: {reason}")) + "\n"
