"""Schedule expressions and their slots: every replica must compute the same ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qrsync.schedules import Schedule, ScheduleError, spread_offset, validate

NOW = datetime(2026, 11, 25, 2, 7, 33, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expression", "latest", "following"),
    [
        ("*/15 * * * *", "2026-11-25 02:00:00", "2026-11-25 02:15:00"),
        ("*/10 * * * * *", "2026-11-25 02:07:30", "2026-11-25 02:07:40"),
        ("@every 30s", "2026-11-25 02:07:30", "2026-11-25 02:08:00"),
        ("@every 5m", "2026-11-25 02:05:00", "2026-11-25 02:10:00"),
        ("@every 1h", "2026-11-25 02:00:00", "2026-11-25 03:00:00"),
        ("0 9 * * 1", "2026-11-23 09:00:00", "2026-11-30 09:00:00"),
        ("0 9 * * 0", "2026-11-22 09:00:00", "2026-11-29 09:00:00"),
        ("0 9 * * 7", "2026-11-22 09:00:00", "2026-11-29 09:00:00"),
        ("0 9 * * 1-5", "2026-11-24 09:00:00", "2026-11-25 09:00:00"),
        ("0 9 * * mon", "2026-11-23 09:00:00", "2026-11-30 09:00:00"),
    ],
)
def test_slots(expression: str, latest: str, following: str) -> None:
    schedule = Schedule(expression)
    assert schedule.latest_slot(NOW) == datetime.fromisoformat(latest + "+00:00")
    assert schedule.next_slot(NOW) == datetime.fromisoformat(following + "+00:00")


def test_cron_in_a_time_zone() -> None:
    schedule = Schedule("0 9 * * *", "Asia/Shanghai")
    assert schedule.latest_slot(NOW) == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 +08


def test_a_slot_is_its_own_latest_slot() -> None:
    schedule = Schedule("@every 7s")
    slot = schedule.next_slot(NOW)
    assert schedule.latest_slot(slot) == slot


@pytest.mark.parametrize(
    "expression", ["every day", "61 * * * *", "* * * *", "@every 0s", "@every 5d", "0 9 * * 8"]
)
def test_invalid_expressions(expression: str) -> None:
    with pytest.raises(ScheduleError):
        validate(expression)


def test_unknown_time_zone() -> None:
    with pytest.raises(ScheduleError, match="time zone"):
        validate("0 9 * * *", "Mars/Olympus")


def test_spread_is_fixed_per_account_and_over_most_of_the_period() -> None:
    period = timedelta(seconds=10)
    offsets = [spread_offset(f"account-{i}", period) for i in range(200)]
    assert all(0 <= o <= 8 for o in offsets)
    assert len({round(o, 2) for o in offsets}) > 100
    assert spread_offset("account-7", period) == spread_offset("account-7", period)
    assert spread_offset("a", timedelta(hours=1)) <= 720
    # A quarter hour's fleet starts over its first 12 minutes: no tenth of them is crowded.
    quarter = [spread_offset(f"mp-{i}", timedelta(minutes=15)) for i in range(10_000)]
    tenths = [sum(1 for o in quarter if k * 72 <= o < (k + 1) * 72) for k in range(10)]
    assert max(tenths) <= 1_200 and max(quarter) <= 720
