"""The helpers of `make bench`'s fleet case (bench/fleet.py, bench/run.py): the fleet it builds,
the configuration qrsync reads, the schedule the daemon idles on, the table it keeps."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from qrsync.config import load_config
from qrsync.schedules import Schedule
from qrsync.simulator.world import Settings, World

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(BENCH))
    try:
        import fleet
        import run

        yield fleet, run
    finally:
        sys.path.remove(str(BENCH))


def test_the_fleet_is_nine_mini_programs_in_ten(bench: tuple[ModuleType, ModuleType]) -> None:
    fleet, _ = bench
    accounts = fleet.fleet_accounts(100)
    kinds = [a.kind for a in accounts]
    assert kinds.count("miniprogram") == 90 and kinds.count("service_account") == 10
    assert len({a.name for a in accounts}) == 100
    services = [a for a in accounts if a.kind == "service_account"]
    assert len({a.miniprogram_appid for a in services}) == 10  # a mini program of its own each


def test_the_simulated_world_has_the_fleets_rules(bench: tuple[ModuleType, ModuleType]) -> None:
    fleet, _ = bench
    accounts = fleet.fleet_accounts(20)
    world = World(fleet.world(accounts), 1, Settings())
    for a in accounts:
        assert len(world.books[(a.appid, a.miniprogram_appid)]) == a.rules


def test_qrsync_reads_the_fleets_configuration(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    fleet, _ = bench
    accounts = fleet.fleet_accounts(20)
    path = fleet.write_config(
        tmp_path / "fleet.toml",
        "postgresql://postgres@127.0.0.1:5432/unused",
        "http://127.0.0.1:1",
        accounts,
        32,
        schedules={accounts[0].name: "@every 30s"},
    )
    config = load_config(path, {"BENCH_SECRET": "x"})
    assert config.sync.concurrency == 32
    assert [a.name for a in config.accounts] == [a.name for a in accounts]
    assert config.accounts[0].schedule == "@every 30s"
    assert config.accounts[1].schedule == fleet.NEVER


def test_the_idle_schedule_has_no_slot_to_catch_up_nor_to_fire(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    fleet, _ = bench
    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert Schedule(fleet.NEVER).latest_slot(now) is None
    assert Schedule(fleet.NEVER).next_slot(now).year == 2044


def test_spread_measures(bench: tuple[ModuleType, ModuleType]) -> None:
    fleet, _ = bench
    even = [i / 100 for i in range(100)]
    assert fleet.busiest_tenth(even) == pytest.approx(0.1)
    assert fleet.busiest_tenth([0.01, 0.02, 0.5, 0.99]) == pytest.approx(0.5)
    assert fleet.quantile(even, 0.9) == pytest.approx(0.89, abs=0.01)


def test_fleet_only_keeps_the_other_rows_of_results_md(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, run = bench
    (tmp_path / "RESULTS.md").write_text(
        "# qrsync benchmark\n\n2026-11-25 15:38 UTC · 2 cores, 23 GiB, CPython 3.11.7 · "
        "PostgreSQL 15.20 (Debian) · full sizes\n\n"
        "| case | what it measures | value | goal | result |\n|---|---|---|---|---|\n"
        "| initial ingest | wall ÷ F | 1.76 | ≤ 2.0 | PASS |\n"
        "| fleet overhead, 10 accounts | statements | 7.0 | ≤ 10 | PASS |\n"
        "| fleet no-op sync, 10 accounts | CPU | 9 ms | ≤ 1 ms | FAIL |\n"
        "| daemon, 10 accounts | share | 0.5 | ≤ 0.25 | FAIL |\n"
    )
    rows, meta = run.earlier_rows(tmp_path)
    assert [r.case for r in rows] == ["initial ingest"]
    assert rows[0].passed is True
    assert meta is not None and meta["date"] == "2026-11-25 15:38 UTC" and not meta["quick"]
