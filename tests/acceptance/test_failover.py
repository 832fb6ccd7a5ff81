"""Issue 13: the database fails over or turns read-only mid-run, or refuses connections.

Simulated on the test's own database only: `ALTER DATABASE ... SET default_transaction_read_only`
(a promoted standby's old primary, a replica in recovery) or `ALLOW_CONNECTIONS false` (a
database going away), each with its sessions terminated so that new ones meet the change. A run
that meets it fails with one line naming the account and a hint, changes no rule, leaves no run
'running' once writes work again; a daemon keeps its schedule, stays live (/livez), is not
ready (/readyz, /healthz) while it lasts, and syncs again once the database is back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from crash_helpers import account
from helpers import OA, OA_MP, OA_SECRET, oa_account, scalar, toml_config, wait_for
from tokenfaults_helpers import live_rules, rule_tables, truth

from qrsync.store.runs import DEAD_RUN_GRACE_S

__all__ = ["account"]  # the fixture

READ_ONLY = "read_only"
REFUSED = "refused"


class Outage:
    """Turns the test's own database read-only or refusing, from the server's admin database."""

    def __init__(self, server_url: str, db: Any) -> None:
        self.db = db
        self.name = db.info.dbname
        self.admin = psycopg.connect(server_url, autocommit=True)

    def _terminate_sessions(self) -> None:
        # Every session of the database but the test's own, which reads the tables throughout.
        self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> %s",
            (self.name, self.db.info.backend_pid),
        )

    def start(self, mode: str) -> None:
        if mode == READ_ONLY:
            self.admin.execute(
                f'ALTER DATABASE "{self.name}" SET default_transaction_read_only = on'
            )
        else:
            self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self._terminate_sessions()

    def end(self) -> None:
        self.admin.execute(f'ALTER DATABASE "{self.name}" RESET default_transaction_read_only')
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def close(self) -> None:
        self.end()
        self.admin.close()


@pytest.fixture
def outage(server_url: str, db: Any) -> Iterator[Outage]:
    control = Outage(server_url, db)
    yield control
    control.close()


def _runs(db: Any) -> list[tuple[int, str]]:
    return [(int(i), str(s)) for i, s in db.execute("SELECT id, status FROM sync_runs ORDER BY id")]


def _assert_one_clean_line(text: str) -> None:
    assert "Traceback" not in text and OA_SECRET not in text
    assert len(text.strip().splitlines()) == 1, text


@pytest.mark.parametrize("mode", [READ_ONLY, REFUSED])
def test_one_shot_sync_against_a_database_that_takes_no_writes_exits_2_and_writes_nothing(
    account: Any, qrsync: Any, db: Any, outage: Outage, mode: str
) -> None:
    before, runs = rule_tables(db), _runs(db)
    outage.start(mode)
    result = qrsync("sync")
    assert result.exit_code == 2, result.output
    _assert_one_clean_line(result.output)
    if mode == READ_ONLY:
        assert "read-only transaction" in result.output
        assert "hint: the database failed over or is in recovery" in result.output
    else:
        assert "not currently accepting connections" in result.output
        assert "hint: the database is down" in result.output
    assert rule_tables(db) == before and _runs(db) == runs
    outage.end()
    assert qrsync("sync").exit_code == 0
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)


@pytest.mark.parametrize("mode", [READ_ONLY, REFUSED])
def test_database_lost_mid_run_fails_the_run_cleanly_and_the_next_run_closes_it(
    account: Any, qrsync: Any, db: Any, outage: Outage, mode: str
) -> None:
    """The outage starts while the run lists (page 3 is held): its sessions are terminated and
    new ones are read-only or refused. The run fails with one line and a hint; what it could
    not record is closed by the next run once writes work again."""
    before = rule_tables(db)
    account.admin.add_fault(endpoint="qrcodejumpget", page_num=3, times=1, delay_s=2)
    calls = len(account.admin.calls(endpoint="qrcodejumpget"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(qrsync.config_path), "sync"],
        env={**os.environ, "OA_SECRET": OA_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for(
        lambda: any(
            c["page_num"] == 2 for c in account.admin.calls(endpoint="qrcodejumpget")[calls:]
        ),
        "the run to be answered page 2",
    )
    outage.start(mode)
    out, _ = proc.communicate(timeout=60)
    code, err = proc.returncode, out.decode()
    assert code == 1, err
    assert "Traceback" not in err and OA_SECRET not in err
    failure = next((x for x in err.splitlines() if "account 'oa': database" in x), err)
    assert "hint: the database" in failure and "\\n" not in failure
    if mode == READ_ONLY:  # its failure could not be recorded: the database was read-only
        assert "database is read-only: cannot execute" in failure
    assert rule_tables(db) == before
    outage.end()
    # Not recordable while it lasted: the run may still say 'running'; the next run of the
    # account closes it once it is older than the dead-run grace.
    wait_for(
        lambda: (
            scalar(
                db,
                "SELECT count(*) FROM sync_runs WHERE status = 'running'"
                " AND started_at > now() - make_interval(secs => %s)",
                DEAD_RUN_GRACE_S + 0.5,
            )
            == 0
        ),
        "the failed run to be older than the dead-run grace",
    )
    assert qrsync("sync").exit_code == 0
    statuses = [status for _, status in _runs(db)]
    assert statuses[-2:] == ["failed", "succeeded"] and "running" not in statuses
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)


# --- the daemon through an outage ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        answer = requests.get(url, timeout=10)
    except requests.RequestException:
        return 0, ""
    return answer.status_code, answer.text


@contextmanager
def _daemon(config: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "qrsync", "--config", str(config), "daemon"),
                *("--name", "r1", "--http-port", str(port), "--log-format", "json"),
            ],
            env={**os.environ, "OA_SECRET": OA_SECRET},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _answer_starting(url: str, reason: str) -> tuple[int, str] | None:
    status, text = _get(url)
    return (status, text) if text.startswith(reason) else None


def _succeeded(db: Any) -> int:
    return int(scalar(db, "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'"))


@pytest.mark.slow
def test_daemon_stays_live_is_not_ready_during_an_outage_and_catches_up(
    account: Any, qrsync: Any, db: Any, outage: Outage, tmp_path: Path
) -> None:
    config = qrsync.write_config(
        toml_config(
            account.url,
            oa_account(),
            api="requests_per_second = 100",
            sync="page_size = 50",
            extra='[daemon]\nschedule = "@every 2s"\nlease_s = 2\nshutdown_grace_s = 10\n',
        )
    )
    log = tmp_path / "r1.log"
    with _daemon(config, log) as (proc, base):
        wait_for(lambda: _get(f"{base}/readyz")[0] == 200, "/readyz to answer 200", 60)
        assert _get(f"{base}/healthz")[0] == 200  # the older name of /readyz
        assert _get(f"{base}/livez") == (200, "live: replica r1\n")
        for mode, reason in [
            (READ_ONLY, "not ready: database is read-only"),
            (REFUSED, "not ready: database not answering"),
        ]:
            wait_for(lambda: _succeeded(db), "a scheduled run to succeed", 60)
            outage.start(mode)
            logged = len(log.read_text())
            status, text = wait_for(
                lambda r=reason: _answer_starting(f"{base}/readyz", r),
                f"/readyz to say '{reason}'",
                60,
            )
            synced = _succeeded(db)
            assert status == 503 and text.count("\n") == 1 and "hint: the database" in text
            assert _get(f"{base}/healthz")[0] == 503
            assert _get(f"{base}/livez")[0] == 200  # no restart for a database outage
            # A few slots go by: the daemon keeps ticking, stays live, and syncs nothing.
            wait_for(
                lambda n=logged: (
                    "account 'oa': cannot claim the slot: database" in log.read_text()[n:]
                ),
                "a slot to meet the outage",
                60,
            )
            assert proc.poll() is None and _get(f"{base}/livez")[0] == 200
            outage.end()
            back = scalar(db, "SELECT now()")
            wait_for(lambda: _get(f"{base}/readyz")[0] == 200, "/readyz to be 200 again", 60)
            wait_for(lambda n=synced: _succeeded(db) > n, "a slot to sync after the outage", 60)
            # A run the outage cut short is closed (the lease's takeover or the next run).
            wait_for(
                lambda t=back: (
                    not scalar(
                        db,
                        "SELECT count(*) FROM sync_runs WHERE status = 'running'"
                        " AND started_at < %s",
                        t,
                    )
                ),
                "no run of the outage left 'running'",
                60,
            )
            # The next slot after the outage lists and applies in full: the rules are exact.
            wait_for(
                lambda: live_rules(db, "oa") == truth(account, OA, OA_MP),
                "the mirror to equal the simulator",
                30,
            )
        assert "Traceback" not in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
