"""Issue 7, process faults: a `qrsync sync` killed with SIGKILL at each step of its run.

The real command runs as a child process and is held at one step: the listing (a page the
simulator delays), staging (the test locks ``staged_rules`` against writes), the merge (it locks
``rules``) or the closing statement just before COMMIT (it locks ``account_snapshots``). The
process is killed there; afterwards the rule tables are exactly as before the run (never half
written), and the next run closes the killed run's row as abandoned and leaves the mirror equal
to the simulator's rules.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from conftest import SCHEMA
from helpers import OA, OA_MP, OA_SECRET, WeChatUser, oa_account, oa_world, scalar, toml_config
from tokenfaults_helpers import last_run, live_rules, rule_tables, truth

from qrsync.store.runs import DEAD_RUN_GRACE_S

RULES = 180  # four pages of 50


@pytest.fixture
def account(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A service account synced once, then edited by a person (a publish, a delete, a new
    rule), so that the next run has something to write."""
    sim = fast_simulator
    sim.admin.add_account(oa_world())
    sim.admin.generate_rules(OA, RULES, miniprogram_appid=OA_MP, published_fraction=0.3)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    qrsync.write_config(
        toml_config(sim.url, oa_account(), api="requests_per_second = 100", sync="page_size = 50")
    )
    assert qrsync("sync").exit_code == 0
    current = sim.admin.rules(OA, OA_MP)
    user = WeChatUser(sim.url, OA, OA_SECRET, miniprogram_appid=OA_MP)
    user.publish(next(r["prefix"] for r in current if r["state"] == 1))
    user.delete(current[70]["prefix"])
    user.add("http://weixin.qq.com/q/added-before-the-crash", path="pages/new/index")
    return sim


def _wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def _locked(database_url: str, table: str) -> Iterator[None]:
    """Hold ``table`` against writes (SHARE mode: readers go on) until the block ends."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.execute(f"LOCK TABLE {table} IN SHARE MODE")
        try:
            yield
        finally:
            conn.rollback()


def _blocked_backend(db: Any, statement: str) -> int | None:
    """The pid of a backend of this database waiting for a lock in ``statement``."""
    row = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (f"%{statement}%",),
    ).fetchone()
    return None if row is None else int(row[0])


def _start_sync(config: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "sync"],
        env={**os.environ, "OA_SECRET": OA_SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()


def _backends_gone(db: Any, pids: list[int]) -> bool:
    found = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
    ).fetchone()
    return bool(found and found[0] == 0)


# The statement each step waits in, as pg_stat_activity shows it (queries.sql's comments).
STEPS = {
    "staging": ("staged_rules", "COPY staged_rules"),
    "merge": ("rules", "Apply one chunk of a staged listing"),
    "commit": ("account_snapshots", "Record the listing's snapshot"),
}


def _kill_while_listing(sim: Any, config: Any, db: Any) -> list[int]:
    # Page 3 is held for 30 s (the client gives up after api.timeout_s, 10 s): once page 2 is
    # answered the run is waiting for page 3, in its listing, for the next 10 s.
    sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, delay_s=30)
    proc = _start_sync(config)
    _wait_for(
        lambda: any(c["page_num"] == 2 for c in sim.admin.calls(endpoint="qrcodejumpget")),
        "page 2",
    )
    pids = [
        int(pid)
        for (pid,) in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'idle in transaction'"
        ).fetchall()
    ]
    _kill(proc)
    sim.admin.clear_faults()
    return pids


def _kill_in_step(step: str, sim: Any, config: Any, db: Any, database_url: str) -> list[int]:
    table, statement = STEPS[step]
    if step == "staging":
        # The run's first statements touch staged_rules too: the lock is taken while the run
        # waits 3 s for page 3 (page 2 answered), so that it is held at its COPY only.
        sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, delay_s=3)
        proc = _start_sync(config)
        _wait_for(
            lambda: any(c["page_num"] == 2 for c in sim.admin.calls(endpoint="qrcodejumpget")),
            "page 2",
        )
    else:
        proc = None
    with _locked(database_url, table):
        if proc is None:
            proc = _start_sync(config)
        pid = _wait_for(lambda: _blocked_backend(db, statement), f"the run to wait in {step}")
        _kill(proc)
    return [pid]


@pytest.mark.parametrize("step", ["listing", "staging", "merge", "commit"])
def test_sigkill_at_each_step_leaves_the_tables_whole_and_the_next_run_closes_it(
    account: Any, qrsync: Any, db: Any, database_url: str, step: str
) -> None:
    before = rule_tables(db)
    runs_before = scalar(db, "SELECT count(*) FROM sync_runs")
    account.admin.clear_calls()
    if step == "listing":
        pids = _kill_while_listing(account, qrsync.config_path, db)
    else:
        pids = _kill_in_step(step, account, qrsync.config_path, db, database_url)
    # The killed command's server process ends once it notices (after the lock it waited for).
    _wait_for(lambda: _backends_gone(db, pids), "the killed run's backend to end")

    killed = last_run(db, "oa")
    assert killed["status"] == "running"
    assert scalar(db, "SELECT count(*) FROM sync_runs") == runs_before + 1
    assert rule_tables(db) == before, f"killed in {step}: the rule tables changed"
    assert scalar(db, "SELECT count(*) FROM staged_rules") == 0

    # A run is only taken for dead once it is older than the grace a live one gets to take
    # its lock; waiting it out is not a timed assertion.
    age = scalar(
        db,
        "SELECT extract(epoch FROM now() - started_at) FROM sync_runs WHERE id = %s",
        killed["id"],
    )
    time.sleep(max(0.0, DEAD_RUN_GRACE_S + 0.2 - float(age)))
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert "closed 1 earlier run(s) left open by a process that ended" in result.output

    closed = db.execute(
        "SELECT status, abandoned, error FROM sync_runs WHERE id = %s", (killed["id"],)
    ).fetchone()
    assert closed is not None
    assert closed[0] == "failed" and closed[1] is True
    assert closed[2].startswith("abandoned: the process running it ended before the run did")
    assert last_run(db, "oa")["status"] == "succeeded"
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)
    assert scalar(db, "SELECT count(*) FROM staged_rules") == 0
    assert scalar(db, "SELECT count(*) FROM sync_runs WHERE status = 'running'") == 0


def test_a_live_run_is_not_taken_for_dead(account: Any, qrsync: Any, db: Any) -> None:
    """A run held in its listing for longer than the grace keeps its run lock: another run of
    the account waits for it instead of closing it."""
    account.admin.add_fault(endpoint="qrcodejumpget", page_num=2, delay_s=DEAD_RUN_GRACE_S + 1)
    slow = _start_sync(qrsync.config_path)
    try:
        _wait_for(
            lambda: any(c["page_num"] == 2 for c in account.admin.calls(endpoint="qrcodejumpget")),
            "page 2",
        )
        time.sleep(DEAD_RUN_GRACE_S + 0.2)  # older than the grace, still alive
        result = qrsync("sync")
        assert result.exit_code == 0, result.output
        assert slow.wait(timeout=60) == 0
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait(timeout=30)
        assert slow.stderr is not None
        slow.stderr.close()
    statuses = [s for (s,) in db.execute("SELECT status FROM sync_runs ORDER BY id").fetchall()]
    assert statuses == ["succeeded"] * 3
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)
