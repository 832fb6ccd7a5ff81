"""The embedded PostgreSQL default (SPEC behaviour 10): started, reused, kept, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

QRSYNC = [sys.executable, "-m", "qrsync"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRSYNC_")}
    env["XDG_DATA_HOME"] = str(home)
    return env


def _run(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QRSYNC, *args], env=_env(home), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _servers(home: Path) -> list[psutil.Process]:
    """postgres server processes whose data directory is under ``home``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(home) in cmdline:
            found.append(proc)
    return found


def test_embedded_database_is_started_kept_and_stopped(home: Path, tmp_path: Path) -> None:
    first = _run(home, "db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "embedded PostgreSQL in" in first.stderr and str(home / "qrsync") in first.stderr
    assert first.stderr.count("\n") == 1, "the notice is one line"
    assert "upgraded from empty to" in first.stdout
    assert _servers(home) == [], "the server must stop when qrsync exits"
    second = _run(home, "db", "current", cwd=tmp_path)
    assert second.returncode == 0 and "up to date" in second.stdout, "data kept between runs"
    assert (home / "qrsync" / "pgdata" / "PG_VERSION").exists()
    assert _servers(home) == []


def test_db_url_leaves_the_server_up_for_psql_until_db_stop(home: Path, tmp_path: Path) -> None:
    shown = _run(home, "db", "url", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    url = shown.stdout.strip()
    assert url.startswith("postgresql://") and "qrsync db stop" in shown.stderr
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("qrsync",)
    finally:
        stopped = _run(home, "db", "stop", cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped the embedded PostgreSQL" in stopped.stdout
    assert _servers(home) == []
    again = _run(home, "db", "stop", cwd=tmp_path)
    assert "was not running" in again.stdout


def test_two_processes_at_once_share_one_server(home: Path, tmp_path: Path) -> None:
    assert _run(home, "db", "upgrade", cwd=tmp_path).returncode == 0
    procs = [
        subprocess.Popen(
            [*QRSYNC, "report", "--json"],
            env=_env(home),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outcomes
    assert _servers(home) == []
    assert _run(home, "db", "current", cwd=tmp_path).returncode == 0


WAIT_HOLDING_THE_SERVER = """
import signal, time
from qrsync.app import App
from qrsync.cli import _exit_on_sigterm
signal.signal(signal.SIGTERM, _exit_on_sigterm)  # as qrsync's main() does
App.load(None).engine()
print("ready", flush=True)
for _ in range(600):
    time.sleep(0.1)
"""


def test_sigterm_stops_the_embedded_server(home: Path, tmp_path: Path) -> None:
    assert _run(home, "db", "upgrade", cwd=tmp_path).returncode == 0
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAIT_HOLDING_THE_SERVER],
        env=_env(home),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiter.stdout is not None
    assert waiter.stdout.readline().strip() == "ready"
    assert _servers(home), "the server runs while a qrsync process holds it"
    waiter.send_signal(signal.SIGTERM)
    waiter.wait(timeout=60)
    assert waiter.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while _servers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers(home) == []
