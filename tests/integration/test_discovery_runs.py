"""discovery_runs against a real PostgreSQL: one claim per (platform, slot), a discovery still
running keeps later slots from starting a second one beside it, and one left 'running' by a
replica that died is closed as abandoned by the next claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import rows

from qrsync.store import discoveries
from qrsync.store.discoveries import DiscoveryCounts
from qrsync.store.engine import Engine

PLATFORM = "wx00000000000000c1"
SLOT = datetime(2026, 12, 3, 10, 7, tzinfo=UTC)


def test_one_replica_claims_each_slot(engine: Engine, db: Any) -> None:
    first = discoveries.claim_slot(engine, PLATFORM, SLOT, "r1")
    assert first is not None
    assert discoveries.claim_slot(engine, PLATFORM, SLOT, "r2") is None
    discoveries.finish(engine, first, "succeeded", DiscoveryCounts(10, 2, 0, 1, 3))
    assert discoveries.claim_slot(engine, PLATFORM, SLOT, "r2") is None  # done is done
    other = discoveries.claim_slot(engine, "wx00000000000000c2", SLOT, "r2")
    assert other is not None  # another platform's slot is its own
    later = discoveries.claim_slot(engine, PLATFORM, SLOT + timedelta(hours=1), "r2")
    assert later is not None
    assert rows(db, "SELECT replica, trigger FROM discovery_runs ORDER BY id") == [
        ("r1", "schedule"),
        ("r2", "schedule"),
        ("r2", "schedule"),
    ]


def test_a_running_discovery_holds_the_next_slots_until_it_is_stale(
    engine: Engine, db: Any
) -> None:
    running = discoveries.claim_slot(engine, PLATFORM, SLOT, "r1")
    assert running is not None
    next_slot = SLOT + timedelta(hours=1)
    assert discoveries.claim_slot(engine, PLATFORM, next_slot, "r2") is None
    db.execute(
        "UPDATE discovery_runs SET started_at = now() - interval '2 hours' WHERE id = %s",
        (running,),
    )
    claimed = discoveries.claim_slot(engine, PLATFORM, next_slot, "r2")
    assert claimed is not None
    status, error = rows(db, "SELECT status, error FROM discovery_runs WHERE id = %s", running)[0]
    assert status == "failed" and error.startswith("abandoned: still running after 3600 s")
    last = discoveries.last_discoveries(engine)
    assert [(r.id, r.replica, r.status) for r in last] == [(claimed, "r2", "running")]


def test_the_command_records_its_discovery_without_a_slot(engine: Engine, db: Any) -> None:
    run = discoveries.start(engine, PLATFORM, "cli", None)
    discoveries.finish(
        engine, run, "failed", DiscoveryCounts(), 61004, "WeChat answered 61004 (allow-list)"
    )
    assert rows(db, "SELECT trigger, scheduled_for, status, errcode FROM discovery_runs") == [
        ("cli", None, "failed", 61004)
    ]
    assert discoveries.succeeded_count(engine) == 0
