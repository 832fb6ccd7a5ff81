"""`qrsync daemon` as real processes: three replicas, one database, a replica killed mid-run.

Every (account, slot) is synced once (a takeover after the kill aside), never by two replicas
at once; the token endpoint is called once per account for all replicas; SIGTERM drains;
/metrics parses and /healthz answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

ACCOUNTS = 100
SCHEDULE = "@every 3s"
LEASE_S = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fleet(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    accounts = []
    for i in range(ACCOUNTS):
        appid = f"wx{i:016d}"
        simulator.admin.add_account(
            {
                "appid": appid,
                "kind": "miniprogram",
                "secret": f"secret-{i:03d}",
                "rule_sets": [{"count": 5 + i % 7}],
            }
        )
        monkeypatch.setenv(f"FLEET_SECRET_{i}", f"secret-{i:03d}")
        accounts.append(
            f'[[accounts]]\nname = "fleet-{i:03d}"\nkind = "miniprogram"\nappid = "{appid}"\n'
            f'token = {{ source = "stable_token", secret_env = "FLEET_SECRET_{i}" }}\n'
        )
    config = qrsync.write_config(
        f'[api]\nbase_url = "{simulator.url}"\nretry_backoff_s = 0.05\n'
        f"[sync]\nconcurrency = 8\n"
        f'[daemon]\nschedule = "{SCHEDULE}"\nlease_s = {LEASE_S}\nshutdown_grace_s = 10\n'
        f"http_port = 0\n\n" + "".join(accounts)
    )
    return config


@pytest.fixture
def replicas(fleet: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    procs: dict[str, Any] = {}
    env = dict(os.environ)
    for name in ("r1", "r2", "r3"):
        port = _free_port()
        log = open(tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qrsync",
                "--config",
                str(fleet),
                "daemon",
                "--name",
                name,
                "--http-port",
                str(port),
                "--log-format",
                "json",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs[name] = {"proc": proc, "port": port, "log": log, "path": tmp_path / f"{name}.log"}
    yield procs
    for entry in procs.values():
        if entry["proc"].poll() is None:
            entry["proc"].kill()
            entry["proc"].wait(timeout=30)
        entry["log"].close()


def _running_of(db: Any, replica: str) -> int | None:
    row = db.execute(
        "SELECT id FROM sync_runs WHERE replica = %s AND status = 'running' LIMIT 1", (replica,)
    ).fetchone()
    return None if row is None else int(row[0])


@pytest.mark.slow
def test_three_replicas_one_killed(replicas: dict[str, Any], db: Any, simulator: Any) -> None:
    health = f"http://127.0.0.1:{replicas['r1']['port']}/healthz"
    _wait_for(lambda: _get_ok(health), 60, "replica r1 to answer /healthz")
    _wait_for(
        lambda: (
            db.execute(
                "SELECT count(DISTINCT account_id) FROM sync_runs WHERE status = 'succeeded'"
            ).fetchone()[0]
            == ACCOUNTS
        ),
        60,
        "every account to be synced once",
    )
    victim_run = _wait_for(lambda: _running_of(db, "r3"), 30, "r3 to be in the middle of a run")
    replicas["r3"]["proc"].send_signal(signal.SIGKILL)
    replicas["r3"]["proc"].wait(timeout=10)
    # Another replica takes the account over once r3's lease has expired.
    closed = _wait_for(
        lambda: db.execute(
            "SELECT status, abandoned, error FROM sync_runs WHERE id = %s AND status <> 'running'",
            (victim_run,),
        ).fetchone(),
        LEASE_S + 20,
        "the run r3 left behind to be closed",
    )
    assert closed[0] == "failed" and closed[1] is True
    assert closed[2] == "abandoned by replica r3 (its lease expired)"
    time.sleep(4)  # a few more slots with two replicas

    metrics = requests.get(f"http://127.0.0.1:{replicas['r1']['port']}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    for name in (
        "qrsync_runs",
        "qrsync_run_duration_seconds",
        "qrsync_api_calls",
        "qrsync_rules",
        "qrsync_quota_left",
        "qrsync_last_success_timestamp_seconds",
        "qrsync_lease_takeovers",
    ):
        assert name in families, name

    for name in ("r1", "r2"):
        replicas[name]["proc"].send_signal(signal.SIGTERM)
    for name in ("r1", "r2"):
        assert replicas[name]["proc"].wait(timeout=60) == 0, replicas[name]["path"].read_text()

    # Once per slot: no (account, slot) with two runs that were not abandoned.
    doubles = db.execute(
        "SELECT account_id, scheduled_for, count(*) FROM sync_runs WHERE NOT abandoned"
        " GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert doubles == []
    # Never twice at once: each account's runs follow one another.
    overlaps = db.execute(
        "SELECT a.id, b.id FROM sync_runs a JOIN sync_runs b"
        " ON a.account_id = b.account_id AND a.id < b.id"
        " WHERE b.started_at < COALESCE(a.finished_at, 'infinity')"
        "   AND a.started_at < COALESCE(b.finished_at, 'infinity')"
    ).fetchall()
    assert overlaps == []
    # SIGTERM drained: nothing of r1 or r2 is left running; every run is scheduled.
    assert (
        db.execute(
            "SELECT count(*) FROM sync_runs WHERE status = 'running' AND replica <> 'r3'"
        ).fetchone()[0]
        == 0
    )
    assert (
        db.execute(
            "SELECT count(*) FROM sync_runs WHERE scheduled_for IS NULL OR trigger <> 'schedule'"
        ).fetchone()[0]
        == 0
    )
    slots = db.execute("SELECT count(DISTINCT scheduled_for) FROM sync_runs").fetchone()[0]
    assert slots >= 3
    # Three replicas, one token fetch per account.
    assert simulator.admin.stats()["stable_token"] == ACCOUNTS
    replicas_seen = {r[0] for r in db.execute("SELECT DISTINCT replica FROM sync_runs")}
    assert replicas_seen == {"r1", "r2", "r3"}


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
