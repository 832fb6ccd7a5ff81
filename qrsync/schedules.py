"""Schedule expressions and their slots (SPEC "Configuration", `daemon.schedule`).

Three forms: a 5-field cron expression (``*/15 * * * *``), a 6-field one whose first field is
seconds (``*/10 * * * * *``), and an interval (``@every 30s``, ``@every 5m``, ``@every 1h``).
A *slot* is a time the schedule fires; every replica computes the same slots (intervals count
from the Unix epoch, cron runs in ``daemon.timezone``), so that (account, slot) names one run.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVERY = re.compile(r"^@every\s+(\d+)\s*(s|m|h)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}
_LOOKBACKS = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=62),
    timedelta(days=400),
)
MAX_SPREAD_S = 720.0
"""A daily or hourly schedule's runs still start within 12 minutes of their slot."""
SPREAD_SHARE = 0.8
"""Runs start over the first 80 % of a short period (12 of a quarter hour's 15 minutes): spread
over the slot, each with a fifth of the period left before the next one."""


class ScheduleError(ValueError):
    """A schedule expression that is none of the three forms."""


@dataclass(frozen=True)
class Schedule:
    expression: str
    timezone: str = "UTC"

    def trigger(self) -> BaseTrigger:
        """The APScheduler trigger that fires at this schedule's slots."""
        every = _EVERY.match(self.expression.strip())
        if every:
            seconds = int(every.group(1)) * _UNITS[every.group(2)]
            if seconds <= 0:
                raise ScheduleError(f"'{self.expression}': the interval must be positive")
            return IntervalTrigger(seconds=seconds, start_date=EPOCH, timezone=UTC)
        fields = self.expression.split()
        zone = time_zone(self.timezone)
        try:
            if len(fields) in (5, 6):
                second = fields[0] if len(fields) == 6 else "0"
                minute, hour, day, month, day_of_week = fields[-5:]
                return CronTrigger(
                    second=second,
                    minute=minute,
                    hour=hour,
                    day=day,
                    month=month,
                    day_of_week=_cron_day_of_week(day_of_week),
                    timezone=zone,
                )
        except ValueError as exc:
            raise ScheduleError(f"'{self.expression}': {exc}") from None
        raise ScheduleError(
            f"'{self.expression}' is not a schedule: use 5-field cron (*/15 * * * *), 6-field "
            "cron whose first field is seconds (*/10 * * * * *), or @every 30s / 5m / 1h"
        )

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after ``after``."""
        fire: datetime | None = self.trigger().get_next_fire_time(
            None, after + timedelta(microseconds=1)
        )
        assert fire is not None
        return fire.astimezone(UTC)

    def latest_slot(self, now: datetime) -> datetime | None:
        """The last slot at or before ``now`` (None if the schedule never fired in 400 days)."""
        trigger = self.trigger()
        for lookback in _LOOKBACKS:
            fire: datetime | None = trigger.get_next_fire_time(None, now - lookback)
            if fire is None or fire > now:
                continue
            while True:
                following: datetime | None = trigger.get_next_fire_time(
                    fire, fire + timedelta(microseconds=1)
                )
                if following is None or following > now:
                    return fire.astimezone(UTC)
                fire = following
        return None

    def period(self, around: datetime) -> timedelta:
        """The time between the slot after ``around`` and the one after it."""
        first = self.next_slot(around)
        return self.next_slot(first) - first


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMERIC_DAYS = re.compile(r"^(\*|\d+(?:-\d+)?)(?:/(\d+))?$")


def _cron_day_of_week(field: str) -> str:
    """Translate cron's day numbers (0 or 7 Sunday, 1 Monday) into names: APScheduler 3
    counts from Monday = 0, so handing it the numbers would shift every weekly schedule."""
    parts = []
    for part in field.split(","):
        match = _NUMERIC_DAYS.match(part)
        if not match:
            parts.append(part)  # names (mon-fri), "?" etc. mean the same to APScheduler
            continue
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            if step == 1:
                parts.append("*")
                continue
            first, last = 0, 6
        elif "-" in span:
            first, last = (int(n) for n in span.split("-"))
        else:
            first = last = int(span)
        if not 0 <= first <= 7 or not 0 <= last <= 7 or first > last or step < 1:
            raise ScheduleError(f"day of week '{field}' is not 0-7")
        parts.extend(_DAY_NAMES[day] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(parts))


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``daemon.timezone``), or :class:`ScheduleError` saying what
    to write instead (a city such as "Beijing" is not a zone name)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone '{name}': use an IANA name such as Asia/Shanghai or UTC"
        ) from None


def validate(expression: str, timezone: str = "UTC") -> None:
    """Raise :class:`ScheduleError` unless ``expression`` is a valid schedule."""
    Schedule(expression, timezone).trigger()


def spread_offset(account: str, period: timedelta) -> float:
    """Seconds after the slot at which ``account`` starts: fixed per account, spread over 80 %
    of the period (at most 12 minutes), so a fleet sharing a schedule does not start at once."""
    window = min(period.total_seconds() * SPREAD_SHARE, MAX_SPREAD_S)
    if window <= 0:
        return 0.0
    return (zlib.crc32(account.encode()) % 10_000) / 10_000 * window
