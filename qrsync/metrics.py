"""Prometheus metrics of a daemon replica (prometheus-client), served on GET /metrics.

Counters and the histogram are what this replica did (runs, durations, API calls, takeovers);
the gauges of rules, quota and last success describe the shared database and are read from it
at scrape time (cached briefly), so every replica reports the same truth.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qrsync import __version__
from qrsync.store.engine import Engine
from qrsync.store.notifications import pending_by_channel
from qrsync.store.queries import query

STATE_NAMES = {1: "unpublished", 2: "published"}
SKIP_REASONS = ("done", "busy")
"""Why a replica skips a slot: another replica ran it, or the account is still busy."""
DATABASE_GAUGES_TTL_S = 15.0


class Metrics:
    """The replica's metrics; :meth:`api_call` is an observer for the WeChat client."""

    def __init__(self, engine: Engine | None = None) -> None:
        # No `_created` series beside every counter and histogram: a timestamp per label set
        # that dashboards never use and every Prometheus stores (prometheus-client's switch is
        # process-wide; qrsync exports nothing else).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.build = Info(
            "qrsync_build", "The qrsync version this replica runs.", registry=self.registry
        )
        self.build.info({"version": __version__, "python": platform.python_version()})
        self.runs = Counter(
            "qrsync_runs",
            "Sync runs finished by this replica, by account and status.",
            ["account", "status"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "qrsync_run_duration_seconds",
            "Duration of sync runs finished by this replica, by account.",
            ["account"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.api_calls = Counter(
            "qrsync_api_calls",
            "HTTP requests to WeChat, by endpoint and errcode (none: no answer).",
            ["endpoint", "errcode"],
            registry=self.registry,
        )
        self.takeovers = Counter(
            "qrsync_lease_takeovers",
            "Runs of other replicas closed as abandoned when this replica took an account over.",
            registry=self.registry,
        )
        self.slots_skipped = Counter(
            "qrsync_slots_skipped",
            "Slots this replica did not run: done elsewhere, or the account was busy.",
            ["reason"],
            registry=self.registry,
        )
        for reason in SKIP_REASONS:  # a series from the start: rate() needs a zero before
            self.slots_skipped.labels(reason)
        self.schedule_period = Gauge(
            "qrsync_schedule_period_seconds",
            "Time between two schedule slots of each enabled account (for staleness alerts).",
            ["account"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "qrsync_notifications",
            "Notifications (one event for one channel) this replica delivered (sent) or tried "
            "to and will retry (failed), by channel.",
            ["channel", "status"],
            registry=self.registry,
        )
        if engine is not None:
            self.registry.register(DatabaseGauges(engine))

    def publish_schedules(self, periods: Mapping[str, timedelta]) -> None:
        """The accounts' schedule periods, replacing the last ones (accounts come and go)."""
        self.schedule_period.clear()
        for account, period in periods.items():
            self.schedule_period.labels(account).set(period.total_seconds())

    def notification(self, channel: str, status: str, count: int) -> None:
        self.notifications.labels(channel, status).inc(count)

    def api_call(self, endpoint: str, errcode: int | None) -> None:
        self.api_calls.labels(endpoint, "none" if errcode is None else str(errcode)).inc()


class DatabaseGauges(Collector):
    """Rules by state, quota left and last success per account, read from the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at = 0.0

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at > DATABASE_GAUGES_TTL_S:
                try:
                    self._cached = self._read()
                except psycopg.Error:
                    self._cached = []  # /readyz reports the database; metrics stay served
                self._read_at = time.monotonic()
            yield from self._cached

    def _read(self) -> list[Metric]:
        rules = GaugeMetricFamily(
            "qrsync_rules", "Live rules per account and state.", labels=["account", "state"]
        )
        quota = GaugeMetricFamily(
            "qrsync_quota_left", "Publishes left this month (latest listing).", labels=["account"]
        )
        success = GaugeMetricFamily(
            "qrsync_last_success_timestamp_seconds",
            "When the account's last successful run finished (Unix time).",
            labels=["account"],
        )
        pending = GaugeMetricFamily(
            "qrsync_notifications_pending",
            "Notifications not delivered yet, per configured channel.",
            labels=["channel"],
        )
        oldest = GaugeMetricFamily(
            "qrsync_notifications_oldest_pending_age_seconds",
            "Age of the oldest notification not delivered yet, per channel (0: none pending).",
            labels=["channel"],
        )
        for channel, count, age in pending_by_channel(self.engine):
            pending.add_metric([channel], count)
            oldest.add_metric([channel], age)
        with self.engine.transaction() as conn:
            for row in conn.execute(query("metrics_rules_by_state")):
                state = STATE_NAMES.get(row.state, str(row.state))
                rules.add_metric([row.account, state], row.rules)
            for row in conn.execute(query("metrics_accounts")):
                if row.quota is not None:
                    quota.add_metric([row.account], row.quota)
                if row.last_success is not None:
                    success.add_metric([row.account], row.last_success.timestamp())
        return [rules, quota, success, pending, oldest]
