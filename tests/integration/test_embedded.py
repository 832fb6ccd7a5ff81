"""The embedded PostgreSQL (``[database] embedded = true``): started, reused, kept, stopped;
never stopped under psql."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

QRSYNC = [sys.executable, "-m", "qrsync"]


EMBEDDED = "[database]\nembedded = true\n"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The data home; the tests run in ``tmp_path``, whose qrsync.toml asks for the embedded
    PostgreSQL. The data home is not under pytest's base directory: run as root, the package
    runs PostgreSQL as another user, who must reach it, and a pytest session started meanwhile
    makes its own base directory private again (the cause of a rare "pg_ctl exited 1")."""
    data = Path(tempfile.mkdtemp(prefix="qrsync-embedded-test-"))
    data.chmod(0o755)
    (tmp_path / "qrsync.toml").write_text(EMBEDDED, encoding="utf-8")
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


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
    assert first.stderr == "", "asked for in the configuration: nothing to warn about"
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
from qrsync.cli import _exit_on_sigterm, _notice
signal.signal(signal.SIGTERM, _exit_on_sigterm)  # as qrsync's main() does
app = App.load(None, notify=_notice)  # as the CLI loads it
app.engine()
print(app.psql_url, flush=True)
for _ in range(600):
    time.sleep(0.1)
"""


def _holding_the_server(home: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """A migrated embedded database, and a qrsync process holding its server; returns the
    process and the URL psql would use."""
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
    url = waiter.stdout.readline().strip()
    assert url.startswith("postgresql"), waiter.stderr.read() if waiter.stderr else ""
    return waiter, url


def test_sigterm_stops_the_embedded_server(home: Path, tmp_path: Path) -> None:
    waiter, _ = _holding_the_server(home, tmp_path)
    assert _servers(home), "the server runs while a qrsync process holds it"
    waiter.send_signal(signal.SIGTERM)
    waiter.wait(timeout=60)
    assert waiter.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while _servers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers(home) == []


def test_the_last_qrsync_process_leaves_the_server_up_while_psql_is_connected(
    home: Path, tmp_path: Path
) -> None:
    waiter, url = _holding_the_server(home, tmp_path)
    try:
        with psycopg.connect(url, autocommit=True) as psql:  # as psql would connect
            waiter.send_signal(signal.SIGTERM)
            _, stderr = waiter.communicate(timeout=60)
            assert "stays up: 1 other client(s) connected" in stderr, stderr
            assert _servers(home), "the server must stay up under psql"
            # psql keeps working, and so do later qrsync commands, which leave it up too
            assert psql.execute("SELECT count(*) FROM qrsync.accounts").fetchone() == (0,)
            current = _run(home, "db", "current", cwd=tmp_path)
            assert current.returncode == 0, current.stderr
            assert psql.execute("SELECT 1").fetchone() == (1,)
        # psql gone: the next qrsync command to exit stops it
        assert _run(home, "db", "current", cwd=tmp_path).returncode == 0
        assert _servers(home) == []
    finally:
        _run(home, "db", "stop", cwd=tmp_path)


def test_db_url_keeps_the_server_up_across_later_commands(home: Path, tmp_path: Path) -> None:
    url = _run(home, "db", "url", cwd=tmp_path).stdout.strip()
    try:
        with psycopg.connect(url, autocommit=True) as psql:
            for command in (("db", "upgrade"), ("status",), ("db", "current")):
                done = _run(home, *command, cwd=tmp_path)
                assert done.returncode == 0, (command, done.stderr)
                assert psql.execute("SELECT 1").fetchone() == (1,)
        assert _run(home, "db", "current", cwd=tmp_path).returncode == 0
        assert _servers(home), "kept up by db url until db stop, psql or not"
    finally:
        _run(home, "db", "stop", cwd=tmp_path)
    assert _servers(home) == []
