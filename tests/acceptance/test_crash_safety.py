"""Issue 7, process faults: a `qrsync sync` killed with SIGKILL at each step of its run.

The real command runs as a child process and is held at one step: the listing (a page the
simulator delays), staging (the test locks ``staged_rules`` against writes: the listing, COPYed
into its transaction's own ``listed_rules``, waits to stage what changed), the merge (it locks
``rules``) or the closing statement just before COMMIT (it locks ``account_snapshots``). The
process is killed there; afterwards the rule tables are exactly as before the run (never half
written), and the next run closes the killed run's row as abandoned and leaves the mirror equal
to the simulator's rules.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest
from crash_helpers import account, locked, start_sync, wait_for
from helpers import OA, OA_MP, blocked_backend, scalar
from tokenfaults_helpers import last_run, live_rules, rule_tables, truth

__all__ = ["account"]  # the fixture


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
    "staging": ("staged_rules", "Compare the run's listing"),
    "merge": ("rules", "Apply the staged rules"),
    "commit": ("account_snapshots", "Record the listing's snapshot"),
}


def _kill_while_listing(sim: Any, config: Any, db: Any) -> list[int]:
    # Page 3 is held for 30 s (the client gives up after api.timeout_s, 10 s): once page 2 is
    # answered the run is waiting for page 3, in its listing, for the next 10 s.
    sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, delay_s=30)
    proc = start_sync(config)
    wait_for(
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
        # waits 3 s for page 3 (page 2 answered), so that it is held where it stages only.
        sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, delay_s=3)
        proc = start_sync(config)
        wait_for(
            lambda: any(c["page_num"] == 2 for c in sim.admin.calls(endpoint="qrcodejumpget")),
            "page 2",
        )
    else:
        proc = None
    with locked(database_url, table):
        if proc is None:
            proc = start_sync(config)
        pid = wait_for(lambda: blocked_backend(db, statement), f"the run to wait in {step}")
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
    wait_for(lambda: _backends_gone(db, pids), "the killed run's backend to end")

    killed = last_run(db, "oa")
    assert killed["status"] == "running"
    assert scalar(db, "SELECT count(*) FROM sync_runs") == runs_before + 1
    assert rule_tables(db) == before, f"killed in {step}: the rule tables changed"
    assert scalar(db, "SELECT count(*) FROM staged_rules") == 0

    # A run whose run lock is free is dead however young: the next run closes it at once.
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


def test_run_started_right_after_a_sigkill_closes_the_killed_run(
    account: Any, qrsync: Any, db: Any
) -> None:
    """A sync killed mid-listing and another of the same account started at once: the new one
    succeeds and closes the killed one as failed (its process died), none left running."""
    account.admin.clear_calls()
    _kill_while_listing(account, qrsync.config_path, db)
    killed = last_run(db, "oa")
    assert killed["status"] == "running"
    again = start_sync(qrsync.config_path)  # a new process, straight after the kill
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err.decode()
    closed = db.execute(
        "SELECT status, abandoned, error FROM sync_runs WHERE id = %s", (killed["id"],)
    ).fetchone()
    assert closed is not None
    assert closed[0] == "failed" and closed[1] is True
    assert "the process running it ended before the run did" in closed[2]
    assert last_run(db, "oa")["status"] == "succeeded"
    assert scalar(db, "SELECT count(*) FROM sync_runs WHERE status = 'running'") == 0
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)


def test_a_live_run_is_not_taken_for_dead(account: Any, qrsync: Any, db: Any) -> None:
    """A run held in its listing keeps its run lock, however long: another run of the account
    waits for it instead of closing it."""
    account.admin.add_fault(endpoint="qrcodejumpget", page_num=2, delay_s=3)
    slow = start_sync(qrsync.config_path)
    try:
        wait_for(
            lambda: any(c["page_num"] == 2 for c in account.admin.calls(endpoint="qrcodejumpget")),
            "page 2",
        )
        time.sleep(1.0)  # well into its listing, still alive
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
