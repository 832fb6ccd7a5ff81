"""The data behind `qrsync report` and `qrsync status`, read from the views and named queries.

A :class:`Report` is plain data (lists of dicts, one per row); the renderers in
:mod:`qrsync.render` turn it into text, JSON, CSV or a self-contained HTML page, so every format
tells the same story from one source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qrsync.store.engine import Engine, dicts
from qrsync.store.queries import query

RECENT_LIMIT = 20
QUEUE_LIMIT = 20

Row = dict[str, Any]


@dataclass(frozen=True)
class Report:
    """Everything a report shows; each list holds rows as dicts (column -> value)."""

    generated_at: datetime
    since: datetime
    account: str | None
    rules_by_state: list[Row]
    """account, kind, unpublished, published, other, deleted"""
    publish_queue: list[Row]
    """The rules waiting longest unpublished: account, prefix, path, unpublished_since, waiting"""
    publish_queue_by_account: list[Row]
    """account, waiting_rules, longest_wait"""
    publications: list[Row]
    """Recent publications: account, prefix, path, published_observed_at, wait"""
    publications_per_day: list[Row]
    """day, publications"""
    deletions: list[Row]
    """Recent deletions: account, prefix, from_state, observed_at, previous_seen_at"""
    quota: list[Row]
    """Per account: qrcodejump_pub_quota, qrcodejump_open, taken_at, quota_week_before"""
    quota_series: list[Row]
    """account, day, qrcodejump_pub_quota"""
    sync_health: list[Row]
    """Failing and stale accounts first: account, enabled, last_status, last_run_at,
    last_success_at, success_age, failure_streak, last_errcode, last_error"""
    sync_per_day: list[Row]
    """day, succeeded, partial, failed"""


def build_report(
    engine: Engine,
    *,
    since: datetime,
    account: str | None = None,
    limit: int = RECENT_LIMIT,
    now: datetime | None = None,
) -> Report:
    params = {"since": since, "account": account, "limit": limit}
    with engine.transaction() as conn:

        def rows(name: str) -> list[Row]:
            return dicts(conn, query(name), params)

        return Report(
            generated_at=now or datetime.now(UTC),
            since=since,
            account=account,
            rules_by_state=rows("report_rules_by_state"),
            publish_queue=rows("report_publish_queue"),
            publish_queue_by_account=rows("report_publish_queue_by_account"),
            publications=rows("report_publications"),
            publications_per_day=rows("report_publications_per_day"),
            deletions=rows("report_deletions"),
            quota=rows("report_quota"),
            quota_series=rows("report_quota_series"),
            sync_health=rows("sync_health"),
            sync_per_day=rows("report_sync_per_day"),
        )


def sync_health(engine: Engine, account: str | None = None) -> list[Row]:
    with engine.transaction() as conn:
        result = dicts(conn, query("sync_health"), {"account": account})
        return [dict(r) for r in result]
