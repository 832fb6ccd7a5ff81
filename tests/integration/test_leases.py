"""Slot claims and leases between replicas, on a real database (SPEC behaviour 8)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from qrsync.errors import RunInterrupted
from qrsync.store.engine import Engine, scalar
from qrsync.store.leases import Lease, LeaseStore

SLOT = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


@pytest.fixture
def account_id(engine: Engine) -> int:
    with engine.transaction() as conn:
        account = scalar(
            conn,
            "INSERT INTO accounts (name, kind, appid, token_source)"
            " VALUES ('a', 'miniprogram', 'wx1', 'static') RETURNING id",
        )
    LeaseStore(engine, "r0", 60).ensure_rows()
    return int(account)


def _start_run(engine: Engine, account_id: int, replica: str) -> int:
    with engine.transaction() as conn:
        return int(
            scalar(
                conn,
                "INSERT INTO sync_runs (account_id, trigger, scheduled_for, replica)"
                " VALUES (%(a)s, 'schedule', %(s)s, %(r)s) RETURNING id",
                {"a": account_id, "s": SLOT, "r": replica},
            )
        )


def test_only_one_replica_wins_a_slot(engine: Engine, account_id: int) -> None:
    first = LeaseStore(engine, "r1", 60).claim(account_id, SLOT)
    second = LeaseStore(engine, "r2", 60).claim(account_id, SLOT)
    assert first.granted and not second.granted
    assert second.holder == "r1" and not second.done


def test_a_finished_slot_is_not_run_again(engine: Engine, account_id: int) -> None:
    r1 = LeaseStore(engine, "r1", 60)
    claim = r1.claim(account_id, SLOT)
    assert claim.epoch is not None
    run = _start_run(engine, account_id, "r1")
    with engine.transaction() as conn:
        conn.execute("UPDATE sync_runs SET status = 'succeeded' WHERE id = %(r)s", {"r": run})
    r1.release(Lease(account_id, claim.epoch, "r1"))
    again = LeaseStore(engine, "r2", 60).claim(account_id, SLOT)
    assert not again.granted and again.done


def test_expired_lease_is_taken_over_and_its_run_closed(
    engine: Engine, db: Any, account_id: int
) -> None:
    r1 = LeaseStore(engine, "r1", 60)
    claim = r1.claim(account_id, SLOT)
    assert claim.epoch is not None
    lease = Lease(account_id, claim.epoch, "r1")
    run = _start_run(engine, account_id, "r1")
    r1.attach(lease, run)
    db.execute("UPDATE account_leases SET lease_until = now() - interval '1 second'")
    takeover = LeaseStore(engine, "r2", 60).claim(account_id, SLOT)
    assert takeover.granted and takeover.abandoned_runs == 1
    status, abandoned, error = db.execute(
        "SELECT status, abandoned, error FROM sync_runs WHERE id = %s", (run,)
    ).fetchone()
    assert (status, abandoned) == ("failed", True)
    assert error == "abandoned by replica r1 (its lease expired)"
    # The old holder is fenced: its renewal and its merge are refused.
    assert r1.renew([lease]) == set()
    with engine.transaction() as conn, pytest.raises(RunInterrupted):
        r1.fence(conn, lease)


def test_renewal_keeps_the_lease(engine: Engine, db: Any, account_id: int) -> None:
    r1 = LeaseStore(engine, "r1", 60)
    claim = r1.claim(account_id, SLOT)
    assert claim.epoch is not None
    lease = Lease(account_id, claim.epoch, "r1")
    assert r1.renew([lease]) == {account_id}
    with engine.transaction() as conn:
        r1.fence(conn, lease)
    assert not LeaseStore(engine, "r2", 60).claim(account_id, SLOT).granted


def test_takeover_closes_a_run_its_holder_had_not_attached_yet(
    engine: Engine, db: Any, account_id: int
) -> None:
    assert LeaseStore(engine, "r1", 60).claim(account_id, SLOT).granted
    run = _start_run(engine, account_id, "r1")  # r1 dies before attaching it to the lease
    db.execute("UPDATE account_leases SET lease_until = now() - interval '1 second'")
    assert LeaseStore(engine, "r2", 60).claim(account_id, SLOT).abandoned_runs == 1
    assert db.execute("SELECT status FROM sync_runs WHERE id = %s", (run,)).fetchone() == (
        "failed",
    )
