"""Deliver the outbox: every daemon replica sweeps it in a thread, and a one-shot `qrsync sync`
(or `qrsync notify deliver`) once at its end.

A sweep takes each channel in turn, in one transaction per channel:

1. the channel's sender lock (a transaction-level advisory lock): one process sends to a
   channel at a time, whatever the number of replicas, so its rate limit holds;
2. the claim: the channel's due notifications, ``FOR UPDATE SKIP LOCKED``;
3. how many messages the platform takes now (its per-minute limit less what the channel was
   sent in the last minute, counted in ``notify_messages``), and the events composed into at
   most that many messages (digests, cut with "and N more", by :mod:`qrsync.notify.channels`);
4. each message sent, then recorded (sent, or failed and backed off) in the transaction that
   claimed its events, committed at the end.

So a notification is sent once per channel in normal operation; a process killed after the
claim and before sending leaves it pending (the claim dies with the transaction), and one
killed after sending and before the commit leaves it pending too: it is sent again (at least
once). A failed delivery is retried with exponential backoff (capped), forever: a receiver down
for a day gets everything when it is back, in digests within its limits.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import requests

from qrsync.config import NotifyConfig
from qrsync.errors import ConfigError, DatabaseError
from qrsync.masking import mask, one_line
from qrsync.notify.channels import (
    KIND_LIMITS,
    Answer,
    Channel,
    Event,
    Message,
    compose,
    send,
    test_message,
)
from qrsync.store.engine import Engine, first_line
from qrsync.store.notifications import (
    ChannelTransaction,
    Claimed,
    channel_transaction,
    record_stale_accounts,
    record_waiting_rules,
)

logger = logging.getLogger("qrsync.notify")

MAX_EVENTS_PER_SWEEP = 2000
"""Events claimed per channel and sweep (the rest wait for the next sweep)."""
MAX_MESSAGES_PER_SWEEP = 10
"""Messages sent per channel and sweep: bounds how long a claim is held."""
WAITING_EVERY_S = 60.0
"""How often a process looks for rules waiting longer than a channel's waiting_days (and, in a
daemon, for accounts without a success for failing_runs periods of their schedule)."""
BACKOFF_S = 10.0
MAX_BACKOFF_S = 600.0
"""A failed delivery is tried again after 10 s, 20 s, 40 s ... at most 10 minutes (jittered)."""
REFUSED_BACKOFF_S = 600.0
"""A message refused for good (bad signature, bad URL) is tried again after this: the
configuration has to change first."""
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ChannelOutcome:
    """What one sweep did for one channel."""

    channel: str
    sent: int = 0
    failed: int = 0
    messages: int = 0
    error: str | None = None


@dataclass
class Sweep:
    """What one sweep did."""

    outcomes: list[ChannelOutcome] = field(default_factory=list)
    waiting: int = 0
    stale: int = 0

    @property
    def sent(self) -> int:
        return sum(o.sent for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.failed for o in self.outcomes)


def more_hint(channel: str) -> str:
    """Where a digest cut with "and N more" tells people to look."""
    return f"qrsync notify status --channel {channel}"


def open_channel(config: NotifyConfig, file: str) -> Channel:
    """The channel with its URL and secret read (both registered as secrets: masked)."""
    try:
        url = config.url.read()
    except LookupError as exc:
        key = f"notify '{config.name}'.url_{config.url.kind}"
        raise ConfigError(str(exc), file=file, key=key) from None
    secret = None
    if config.secret is not None:
        try:
            secret = config.secret.read()
        except LookupError as exc:
            key = f"notify '{config.name}'.secret_{config.secret.kind}"
            raise ConfigError(str(exc), file=file, key=key) from None
    return Channel(name=config.name, kind=config.kind, url=url, secret=secret)


def event_of(claimed: Claimed) -> Event:
    return Event(
        id=claimed.event_id,
        kind=claimed.kind,
        account=claimed.account,
        prefix=claimed.prefix,
        occurred_at=claimed.occurred_at.astimezone(UTC),
        details=claimed.details,
    )


class Notifier:
    """Sweeps the outbox for the configured channels (one per process; thread-safe enough for
    one sweeping thread)."""

    def __init__(
        self,
        engine: Engine,
        channels: Sequence[NotifyConfig],
        *,
        config_file: str,
        replica: str,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        on_delivery: Callable[[str, str, int], None] | None = None,
        timeout_s: float = TIMEOUT_S,
        schedule_periods: Mapping[str, float] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        """``schedule_periods`` (seconds per account, a daemon's schedules): an account
        without a success for ``failing_runs`` of its periods is failing too. ``stopping``: the
        process is shutting down; no further message is sent (what was not sent stays
        pending)."""
        self.engine = engine
        self.channels = tuple(channels)
        self.config_file = config_file
        self.replica = replica
        self.session = session or requests.Session()
        self.clock = clock
        self.sleep = sleep
        self.on_delivery = on_delivery
        self.timeout_s = timeout_s
        self.schedule_periods = dict(schedule_periods or {})
        self.stopping = stopping
        self._waiting_checked = float("-inf")

    def close(self) -> None:
        self.session.close()

    def sweep(self) -> Sweep:
        """Deliver what is due on every channel, once; database errors are logged, not raised
        (the next sweep tries again)."""
        result = Sweep()
        if not self.channels:
            return result
        if time.monotonic() - self._waiting_checked >= WAITING_EVERY_S:
            try:
                result.waiting = record_waiting_rules(self.engine)
                if self.schedule_periods:
                    result.stale = record_stale_accounts(self.engine, self.schedule_periods)
                self._waiting_checked = time.monotonic()
            except psycopg.Error as exc:
                logger.error(
                    "cannot look for waiting rules and stale accounts: %s",
                    first_line(exc),
                    extra={"action": "notify_waiting_failed"},
                )
        for config in self.channels:
            if self.stopping():
                break
            try:
                outcome = self.deliver(config)
            except psycopg.Error as exc:
                outcome = ChannelOutcome(config.name, error=f"database error: {first_line(exc)}")
                logger.error(
                    "channel '%s': cannot deliver: %s",
                    config.name,
                    outcome.error,
                    extra={"action": "notify_failed", "channel": config.name},
                )
            result.outcomes.append(outcome)
        return result

    def deliver(self, config: NotifyConfig) -> ChannelOutcome:
        """One channel: claim what is due, compose, send, record (see the module docstring)."""
        limits = KIND_LIMITS[config.kind]
        with channel_transaction(self.engine, config.name) as tx:
            if not tx.lock():
                return ChannelOutcome(config.name)  # another process is sending to it
            claimed = tx.claim(MAX_EVENTS_PER_SWEEP)
            if not claimed:
                return ChannelOutcome(config.name)
            recent = tx.sent_lately()
            budget = min(limits.per_minute - recent.last_minute, MAX_MESSAGES_PER_SWEEP)
            if budget <= 0:
                return ChannelOutcome(config.name)  # the platform's minute is used up
            try:
                channel = open_channel(config, self.config_file)
            except ConfigError as exc:
                return self._refused(tx, config.name, claimed, str(exc))
            events = [event_of(c) for c in claimed]
            messages = compose(
                channel, events, max_messages=budget, more_hint=more_hint(config.name)
            )
            return self._send_all(tx, channel, messages, recent.last_sent_at, limits.per_second)

    def _send_all(
        self,
        tx: ChannelTransaction,
        channel: Channel,
        messages: Sequence[Message],
        last_sent_at: datetime | None,
        per_second: float | None,
    ) -> ChannelOutcome:
        sent = failed = 0
        error: str | None = None
        gap = 1.0 / per_second if per_second else 0.0
        last = last_sent_at
        for index, message in enumerate(messages):
            if self.stopping():
                break  # (the rest stays pending: not tried, not backed off)
            if gap and last is not None:
                wait = gap - (self.clock() - last).total_seconds()
                if wait > 0:
                    self.sleep(min(wait, gap))
            answer = self._send(channel, message)
            last = self.clock()
            if answer.ok:
                tx.record(
                    message.event_ids,
                    ok=True,
                    http_status=answer.status,
                    detail=one_line(mask(answer.detail)),
                    replica=self.replica,
                )
                sent += len(message.event_ids)
                logger.info(
                    "channel '%s': sent %s",
                    channel.name,
                    one_line(mask(message.summary)),
                    extra={"action": "notify_sent", "channel": channel.name},
                )
                self._count(channel.name, "sent", len(message.event_ids))
                continue
            # The receiver refused or failed: this message's events and the ones not sent yet
            # wait for the next attempt (backed off), none is dropped.
            error = f"channel '{channel.name}': {answer.detail}"
            rest = [i for m in messages[index:] for i in m.event_ids]
            retry_after = answer.retry_after_s or (0.0 if answer.retryable else REFUSED_BACKOFF_S)
            tx.record(
                rest,
                ok=False,
                http_status=answer.status,
                detail=one_line(mask(answer.detail)),
                replica=self.replica,
                retry_after_s=retry_after,
                backoff_s=BACKOFF_S,
                max_backoff_s=MAX_BACKOFF_S,
            )
            failed = len(rest)
            logger.error(
                "%s (%d notifications wait for the next attempt)",
                one_line(mask(error)),
                failed,
                extra={"action": "notify_failed", "channel": channel.name},
            )
            self._count(channel.name, "failed", failed)
            break
        return ChannelOutcome(
            channel.name, sent=sent, failed=failed, messages=len(messages), error=error
        )

    def _refused(
        self, tx: ChannelTransaction, name: str, claimed: Sequence[Claimed], problem: str
    ) -> ChannelOutcome:
        """The channel cannot be sent to (its URL or secret cannot be read): its notifications
        wait, backed off, for the configuration to be fixed."""
        ids = [c.event_id for c in claimed]
        tx.record(
            ids,
            ok=False,
            http_status=None,
            detail=one_line(mask(problem)),
            replica=self.replica,
            retry_after_s=REFUSED_BACKOFF_S,
        )
        logger.error(
            "channel '%s': %s", name, problem, extra={"action": "notify_failed", "channel": name}
        )
        self._count(name, "failed", len(ids))
        return ChannelOutcome(name, failed=len(ids), error=problem)

    def _send(self, channel: Channel, message: Message) -> Answer:
        return send(self.session, channel, message, now=self.clock(), timeout_s=self.timeout_s)

    def _count(self, channel: str, status: str, count: int) -> None:
        if self.on_delivery is not None and count:
            self.on_delivery(channel, status, count)


def send_test(
    config: NotifyConfig, *, config_file: str, timeout_s: float = TIMEOUT_S
) -> tuple[Channel, Answer]:
    """``qrsync notify test``: a test message to the channel, and what its receiver answered."""
    channel = open_channel(config, config_file)
    now = datetime.now(UTC)
    with requests.Session() as session:
        answer = send(
            session, channel, test_message(channel, now=now), now=now, timeout_s=timeout_s
        )
    return channel, answer


def deliver_now(notifier: Notifier) -> Sweep:
    """One sweep, for a one-shot command; a database that fails is an error of the command."""
    try:
        return notifier.sweep()
    except psycopg.Error as exc:  # (sweep logs per channel; this is what escapes it)
        raise DatabaseError(f"cannot deliver notifications: {first_line(exc)}") from None


def deliver_once(
    engine: Engine, channels: Sequence[NotifyConfig], *, config_file: str, replica: str
) -> Sweep | None:
    """One sweep by a one-shot command (`qrsync sync` at its end, `qrsync notify deliver`);
    None without channels."""
    if not channels:
        return None
    notifier = Notifier(engine, channels, config_file=config_file, replica=replica)
    try:
        return deliver_now(notifier)
    finally:
        notifier.close()


def one_shot_replica() -> str:
    """How a one-shot command signs the messages it sends (``notify_messages.replica``)."""
    return f"cli-{socket.gethostname()}-{os.getpid()}"
