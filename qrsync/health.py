"""Which accounts need attention, for ``qrsync status --check``: a cron job, a Nagios check or
a deployment gate wants an exit code, not a table to read.

An enabled account needs attention when it never synced, when its last finished run failed,
when that run was partial (an inconsistent listing, or deletions waiting for confirmation), or
when its last success is stale: older than twice its schedule's period (the daemon would have
synced it twice since), or than ``--stale-after`` when given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from qrsync.config import AccountConfig, DaemonConfig
from qrsync.render.text import fmt_age
from qrsync.schedules import Schedule

STALE_PERIODS = 2
"""A success older than this many schedule periods is stale."""


@dataclass(frozen=True)
class Attention:
    """An account that needs attention, and why, in one line."""

    account: str
    reason: str


def schedule_periods(
    accounts: Iterable[AccountConfig], daemon: DaemonConfig, now: datetime
) -> dict[str, timedelta]:
    """Per account, the time between two of its slots (its own schedule, else
    ``daemon.schedule``); the daemon exports them so that alerts can say "stale" the same way."""
    by_expression: dict[str, timedelta] = {}
    periods = {}
    for account in accounts:
        expression = account.schedule or daemon.schedule
        if expression not in by_expression:
            by_expression[expression] = Schedule(expression, daemon.timezone).period(now)
        periods[account.name] = by_expression[expression]
    return periods


def stale_limits(
    accounts: Iterable[AccountConfig], daemon: DaemonConfig, now: datetime
) -> dict[str, timedelta]:
    """Per account, the age after which its last success is stale: twice its schedule's
    period."""
    return {
        name: STALE_PERIODS * period
        for name, period in schedule_periods(accounts, daemon, now).items()
    }


def needing_attention(
    rows: Sequence[Mapping[str, Any]],
    limits: Mapping[str, timedelta],
    stale_after: timedelta | None = None,
) -> list[Attention]:
    """The enabled accounts of ``rows`` (the ``sync_health`` view) that need attention, in the
    rows' order (failing and stale first). ``stale_after`` overrides every account's limit; an
    account without a limit (not configured here) is only checked for failures."""
    found = []
    for row in rows:
        if not row["enabled"]:
            continue
        reason = _reason(row, stale_after or limits.get(row["account"]))
        if reason is not None:
            found.append(Attention(row["account"], reason))
    return found


def _reason(row: Mapping[str, Any], limit: timedelta | None) -> str | None:
    status = row["last_status"]
    if status is None:
        return "never synced"
    if status == "failed":
        streak = row["failure_streak"]
        since = (
            f"last success {fmt_age(row['success_age'])} ago"
            if row["last_success_at"] is not None
            else "never succeeded"
        )
        error = (row["last_error"] or "").strip()
        return f"failing: {streak} failed run(s), {since}" + (f": {error[:160]}" if error else "")
    if status == "partial":
        why = (row.get("last_message") or row["last_error"] or "").strip()
        return "partial: " + (why[:160] if why else "the last run was partial")
    age = row["success_age"]
    if limit is not None and age is not None and age > limit:
        return f"stale: last success {fmt_age(age)} ago (limit {fmt_age(limit)})"
    return None


def summary(attention: Sequence[Attention], checked: int) -> str:
    """One line for the end of ``qrsync status --check``."""
    if not attention:
        return f"all {checked} enabled account(s) healthy"
    listed = "; ".join(f"{a.account}: {a.reason}" for a in attention[:10])
    more = f"; and {len(attention) - 10} more" if len(attention) > 10 else ""
    return f"{len(attention)} of {checked} enabled account(s) need attention: {listed}{more}"
