"""Notifications in the database: the channels mirrored from the configuration, the claim of
what is due, the record of each attempt, and what `qrsync notify status` and /metrics show.

Events themselves are written by triggers (revision 0015) in the transaction that records the
history they come from; this module never invents one, except ``rule_waiting``, which is a
matter of time: :func:`record_waiting_rules` derives it from the rules, once per rule version
and threshold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from qrsync.config import NotifyConfig
from qrsync.store.engine import Engine
from qrsync.store.queries import query

LOG_LIMIT = 50


def glob_pattern(glob: str) -> str:
    """An account glob (``brand-*``, ``shop-?``) as an anchored PostgreSQL regular expression."""
    parts = []
    for char in glob:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif re.fullmatch(r"\w", char):
            parts.append(char)
        else:
            parts.append("\\" + char)
    return "^" + "".join(parts) + "$"


def mirror_channels(engine: Engine, channels: Sequence[NotifyConfig]) -> None:
    """Mirror the configured channels into ``notify_channels`` (settings only, never a URL or
    a secret); a channel no longer configured stops wanting events and its undelivered ones
    are abandoned."""
    rows = [
        {
            "name": c.name,
            "kind": c.kind,
            "events": list(c.events),
            "account_patterns": [glob_pattern(g) for g in c.accounts],
            "failing_runs": c.failing_runs,
            "waiting_days": c.waiting_days,
            "quota_below": c.quota_below,
        }
        for c in channels
    ]
    with engine.transaction() as conn:
        if rows:
            conn.execute(query("notify_mirror_channels"), {"channels": json.dumps(rows)})
        conn.execute(query("notify_unconfigure_channels"), {"names": [c.name for c in channels]})


@dataclass(frozen=True)
class Claimed:
    """A notification claimed for delivery (its row locked by the claiming transaction)."""

    event_id: int
    kind: str
    account: str
    prefix: str | None
    occurred_at: datetime
    details: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class RecentSends:
    """What the channel was sent lately: its rate limit is counted on these."""

    last_minute: int
    last_sent_at: datetime | None
    now: datetime


class ChannelTransaction:
    """One channel's delivery transaction: the channel's sender lock, the claim, the record of
    each attempt. Everything it records commits together at the end of the block
    (:func:`channel_transaction`): a message is recorded as sent in the transaction that
    claimed its events."""

    def __init__(self, conn: psycopg.Connection[Any], channel: str) -> None:
        self.conn = conn
        self.channel = channel

    def lock(self) -> bool:
        """Whether this process is the channel's sender until the transaction ends."""
        row = self.conn.execute(query("notify_lock_channel"), {"channel": self.channel}).fetchone()
        return bool(row is not None and row.locked)

    def claim(self, limit: int) -> list[Claimed]:
        rows = self.conn.execute(
            query("notify_claim"), {"channel": self.channel, "limit": limit}
        ).fetchall()
        return [
            Claimed(
                event_id=row.id,
                kind=row.kind,
                account=row.account,
                prefix=row.prefix,
                occurred_at=row.occurred_at,
                details=dict(row.details or {}),
                attempts=row.attempts,
            )
            for row in rows
        ]

    def sent_lately(self) -> RecentSends:
        row = self.conn.execute(query("notify_sent_lately"), {"channel": self.channel}).fetchone()
        assert row is not None
        return RecentSends(int(row.last_minute), row.last_sent_at, row.now)

    def record(
        self,
        event_ids: Sequence[int],
        *,
        ok: bool,
        http_status: int | None,
        detail: str,
        replica: str,
        retry_after_s: float = 0.0,
        backoff_s: float = 10.0,
        max_backoff_s: float = 600.0,
    ) -> int:
        """Record an attempt: its events sent, or failed and backed off; the message's id."""
        row = self.conn.execute(
            query("notify_record_attempt"),
            {
                "channel": self.channel,
                "event_ids": list(event_ids),
                "ok": ok,
                "http_status": http_status,
                "detail": detail,
                "replica": replica,
                "retry_after_s": retry_after_s,
                "backoff_s": backoff_s,
                "max_backoff_s": max_backoff_s,
            },
        ).fetchone()
        assert row is not None
        return int(row.message_id)


@contextmanager
def channel_transaction(engine: Engine, channel: str) -> Iterator[ChannelTransaction]:
    """A transaction for delivering to ``channel``, committed at the end of the block."""
    with engine.transaction() as conn:
        yield ChannelTransaction(conn, channel)


def record_waiting_rules(engine: Engine) -> int:
    """Write the ``rule_waiting`` events that are due; how many."""
    with engine.transaction() as conn:
        return conn.execute(query("notify_record_waiting")).rowcount


def record_stale_accounts(engine: Engine, periods: Mapping[str, float]) -> int:
    """Write ``account_failing`` for the accounts without a success for ``failing_runs``
    periods of their schedule (``periods``: seconds, per account name); how many."""
    document = json.dumps([{"account": a, "period_s": s} for a, s in periods.items()])
    with engine.transaction() as conn:
        return conn.execute(query("notify_record_stale_accounts"), {"periods": document}).rowcount


def channel_status(engine: Engine) -> list[dict[str, Any]]:
    """Per channel: pending, failing, sent, the oldest pending event, the last answer."""
    with engine.transaction() as conn:
        return [row._asdict() for row in conn.execute(query("notify_status")).fetchall()]


def channel_log(engine: Engine, channel: str, limit: int = LOG_LIMIT) -> list[dict[str, Any]]:
    """A channel's latest notifications, pending first."""
    with engine.transaction() as conn:
        rows = conn.execute(
            query("notify_channel_log"), {"channel": channel, "limit": limit}
        ).fetchall()
        return [row._asdict() for row in rows]


def pending_by_channel(engine: Engine) -> list[tuple[str, int, float]]:
    """(channel, pending notifications, age in seconds of the oldest) for /metrics."""
    with engine.transaction() as conn:
        rows = conn.execute(query("metrics_notifications")).fetchall()
        return [(row.channel, int(row.pending), float(row.oldest_age_s)) for row in rows]
