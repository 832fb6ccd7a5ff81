"""`qrsync daemon` as real processes: three replicas, one database, a replica killed mid-run.

Every (account, slot) is synced once (a takeover after the kill aside), never by two replicas
at once; the token endpoint is called once per account for all replicas; SIGTERM drains;
/metrics parses and /healthz answers.
"""

from __future__ import annotations

import json
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
from helpers import kill_mid_run, wait_for
from prometheus_client.parser import text_string_to_metric_families
from tokenfaults_helpers import assert_no_secret_shown

ACCOUNTS = 100
SCHEDULE = "@every 3s"
LEASE_S = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    return wait_for(predicate, what, timeout_s)


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
    victim_run = kill_mid_run(replicas["r3"]["proc"], db, "r3")
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
    assert_no_secret_shown(simulator, db, [metrics])  # labels hold names, never secrets
    page = requests.get(f"http://127.0.0.1:{replicas['r1']['port']}/", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "Needs attention" in page.text and "Publish queue" in page.text  # the report
    assert_no_secret_shown(simulator, db, [page.text])
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    for name in (
        "qrsync_runs",
        "qrsync_run_duration_seconds",
        "qrsync_api_calls",
        "qrsync_rules",
        "qrsync_quota_left",
        "qrsync_last_success_timestamp_seconds",
        "qrsync_lease_takeovers",
        "qrsync_build_info",
        "qrsync_schedule_period_seconds",
    ):
        assert name in families, name
    durations = families["qrsync_run_duration_seconds"].samples
    assert durations and {s.labels["account"] for s in durations} <= {
        f"fleet-{i:03d}" for i in range(ACCOUNTS)
    }
    assert "_created" not in metrics
    periods = {
        s.labels["account"]: s.value for s in families["qrsync_schedule_period_seconds"].samples
    }
    assert periods == {f"fleet-{i:03d}": 3.0 for i in range(ACCOUNTS)}  # SCHEDULE, @every 3s

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
    # Logs: JSON lines, each run with its account, run id, slot and replica; no secret.
    for name in ("r1", "r2"):
        text = replicas[name]["path"].read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        finished = [line for line in lines if line.get("action") == "run_finished"]
        assert finished, name
        for line in lines:  # each field once, under one name; run ids are numbers
            assert {"timestamp", "level", "logger", "message"} <= line.keys(), line
            assert not {"asctime", "levelname"} & line.keys(), line
            assert isinstance(line.get("run_id", 0), int), line
        for line in finished:
            assert {"account", "run_id", "slot", "replica"} <= line.keys()
        assert not any(f"secret-{i:03d}" in text for i in range(ACCOUNTS))
        tokens = [row[0] for row in db.execute("SELECT access_token FROM tokens")]
        assert tokens and not any(token in text for token in tokens)


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start(
    config: Path,
    name: str,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qrsync",
            "--config",
            str(config),
            "daemon",
            "--name",
            name,
            "--http-port",
            str(port),
            "--log-format",
            "json",
        ],
        env=env or dict(os.environ),
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def _small_fleet(
    simulator: Any,
    qrsync: Any,
    monkeypatch: pytest.MonkeyPatch,
    schedule: str,
    names: list[str],
    disabled: tuple[str, ...] = (),
) -> Path:
    blocks = []
    for i, name in enumerate(names):
        appid = f"wx7{i:015d}"
        simulator.admin.add_account(
            {
                "appid": appid,
                "kind": "miniprogram",
                "secret": f"s-{name}",
                "rule_sets": [{"count": 3}],
            }
        )
        monkeypatch.setenv(f"SECRET_{i}", f"s-{name}")
        blocks.append(
            f'[[accounts]]\nname = "{name}"\nkind = "miniprogram"\nappid = "{appid}"\n'
            f"enabled = {'false' if name in disabled else 'true'}\n"
            f'token = {{ source = "stable_token", secret_env = "SECRET_{i}" }}\n'
        )
    return qrsync.write_config(
        f'[api]\nbase_url = "{simulator.url}"\n[daemon]\nschedule = "{schedule}"\n'
        f"lease_s = 5\nshutdown_grace_s = 5\n\n" + "".join(blocks)
    )


def _runs(db: Any, name: str) -> int:
    return int(
        db.execute(
            "SELECT count(*) FROM sync_runs r JOIN accounts a ON a.id = r.account_id"
            " WHERE a.name = %s AND r.status = 'succeeded'",
            (name,),
        ).fetchone()[0]
    )


@pytest.mark.slow
def test_a_missed_slot_is_run_once_at_start(
    simulator: Any, qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _small_fleet(simulator, qrsync, monkeypatch, "0 0 1 1 *", ["a", "b", "c"])
    proc, port = _start(config, "r1", tmp_path / "r1.log")
    _wait_for(lambda: all(_runs(db, n) == 1 for n in "abc"), 60, "the missed slot to run")
    assert _stop(proc) == 0
    slots = db.execute("SELECT DISTINCT scheduled_for FROM sync_runs").fetchall()
    assert len(slots) == 1 and slots[0][0].month == 1 and slots[0][0].day == 1
    # A second start finds the slot done: nothing runs again.
    proc, port = _start(config, "r2", tmp_path / "r2.log")
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    _wait_for(
        lambda: 'qrsync_slots_skipped_total{reason="done"} 3.0' in _text(metrics_url),
        60,
        "the second replica to find the slot done",
    )
    assert _stop(proc) == 0
    assert [_runs(db, n) for n in "abc"] == [1, 1, 1]


@pytest.mark.slow
def test_sighup_reload_adds_and_pauses_accounts(
    simulator: Any, qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_fleet(simulator, qrsync, monkeypatch, "@every 2s", ["a", "b", "c"], disabled=("c",))
    config = qrsync.config_path
    proc, _ = _start(config, "r1", tmp_path / "r1.log")
    try:
        _wait_for(lambda: _runs(db, "a") >= 1 and _runs(db, "b") >= 1, 60, "a and b to sync")
        assert _runs(db, "c") == 0
        _small_fleet(simulator, qrsync, monkeypatch, "@every 2s", ["a", "b", "c"], disabled=("b",))
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: _runs(db, "c") >= 1, 60, "c to sync after the reload")
        paused_at = _runs(db, "b")
        _wait_for(lambda: _runs(db, "c") >= 3, 60, "a few more slots")
        assert _runs(db, "b") <= paused_at + 1  # a run already queued may finish
    finally:
        assert _stop(proc) == 0


def _text(url: str) -> str:
    try:
        return requests.get(url, timeout=2).text
    except requests.RequestException:
        return ""


@pytest.mark.slow
def test_healthz_says_503_when_the_database_stops(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRSYNC_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    config = tmp_path / "embedded.toml"
    config.write_text(
        f'[database]\nembedded = true\n[api]\nbase_url = "{simulator.url}"\n'
        '[daemon]\nschedule = "@every 5s"\n'
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "qrsync", "--config", str(config), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    proc, port = _start(config, "r1", tmp_path / "r1.log", env=env)
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        _wait_for(lambda: _get_ok(health), 60, "/healthz to answer 200")
        stop = subprocess.run(
            [sys.executable, "-m", "qrsync", "--config", str(config), "db", "stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stop.returncode == 0, stop.stderr
        _wait_for(lambda: _status(health) == 503, 60, "a 503")
        assert "database not answering" in requests.get(health, timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=10).status_code
    except requests.RequestException:
        return 0
