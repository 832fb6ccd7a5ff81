"""qrsync behind a real PgBouncer in transaction pooling mode, with another client of the same
pool changing its session's search_path all along: every transaction qrsync begins sets its
own (``SET LOCAL``), nothing is prepared on the server, no lock outlives its transaction."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import QrsyncRunner
from helpers import mp_account, mp_world, rule, toml_config
from pgbouncer_helpers import NoisyNeighbour, require_pgbouncer, running_pgbouncer, through

from qrsync.simulator import RunningSimulator
from qrsync.store.revision import HEAD_REVISION

POOL_SIZE = 12
"""Server connections PgBouncer shares among all clients (qrsync needs up to
``2 * concurrency + 4`` per process at its peak; three processes at concurrency 1 fit)."""

APPIDS = [f"wx10000000000000{i:02d}" for i in (31, 32, 33)]


@pytest.fixture
def bouncer_port(server_url: str) -> Iterator[int]:
    require_pgbouncer()
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    with running_pgbouncer(
        str(info.get("host", "127.0.0.1")),
        int(info.get("port", 5432)),
        pool_size=POOL_SIZE,
    ) as port:
        yield port


def _runner(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> QrsyncRunner:
    return QrsyncRunner(tmp_path, url, monkeypatch)


def test_migrations_up_down_and_current_through_pgbouncer(
    tmp_path: Path, empty_database_url: str, bouncer_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    bounced = through(empty_database_url, bouncer_port)
    qrsync = _runner(tmp_path, bounced, monkeypatch)
    qrsync.write_config("")
    with NoisyNeighbour(bounced):
        first = qrsync("db", "upgrade")
        assert first.exit_code == 0, first.output
        assert HEAD_REVISION in qrsync("db", "current").output
        down = qrsync("db", "downgrade", "base")
        assert down.exit_code == 0, down.output
        again = qrsync("db", "upgrade")
        assert again.exit_code == 0, again.output
        current = qrsync("db", "current")
    assert current.exit_code == 0 and HEAD_REVISION in current.output, current.output
    with psycopg.connect(empty_database_url) as direct:
        where = direct.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables"
            " WHERE table_schema IN ('qrsync', 'public') GROUP BY 1"
        ).fetchall()
        version = direct.execute("SELECT version_num FROM qrsync.alembic_version").fetchall()
    assert dict(where).get("public") is None, where  # nothing landed in the wrong schema
    assert dict(where)["qrsync"] > 5
    assert version == [(HEAD_REVISION,)]


def _fleet(simulator: RunningSimulator, qrsync: QrsyncRunner, env: dict[str, str]) -> Path:
    blocks = []
    for i, appid in enumerate(APPIDS):
        secret = f"secret-{i}-value"
        simulator.admin.add_account(mp_world(appid=appid, secret=secret))
        simulator.admin.put_rules(
            appid, [rule(f"https://{i}.example.com/p{n}", state=1 + n % 2) for n in range(30)]
        )
        env[f"PGB_SECRET_{i}"] = secret
        blocks.append(mp_account(f"mp{i}", appid, secret_env=f"PGB_SECRET_{i}"))
    return qrsync.write_config(
        toml_config(simulator.url, "".join(blocks), sync="concurrency = 1\n")
    )


def test_one_shot_syncs_at_once_through_pgbouncer(
    tmp_path: Path,
    database_url: str,
    bouncer_port: int,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounced = through(database_url, bouncer_port)
    qrsync = _runner(tmp_path, bounced, monkeypatch)
    env = dict(os.environ)
    config = _fleet(simulator, qrsync, env)
    command = [sys.executable, "-m", "qrsync", "--config", str(config), "sync"]
    with NoisyNeighbour(bounced):
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out + err).decode()
        assert b"Traceback" not in err
    with psycopg.connect(database_url) as direct:
        runs = direct.execute(
            "SELECT a.name, r.status, count(*) FROM qrsync.sync_runs r"
            " JOIN qrsync.accounts a ON a.id = r.account_id GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
        live = direct.execute(
            "SELECT a.name, count(*) FROM qrsync.rules r JOIN qrsync.accounts a"
            " ON a.id = r.account_id WHERE r.deleted_at IS NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert runs == [(f"mp{i}", "succeeded", 3) for i in range(3)]
    assert live == [(f"mp{i}", 30) for i in range(3)]
    # Nine runs at once needed each account's token once: the lock on its refresh held.
    for appid in APPIDS:
        assert len(simulator.admin.calls(endpoint="stable_token", appid=appid)) == 1


def test_report_and_grant_readonly_through_pgbouncer(
    tmp_path: Path,
    database_url: str,
    bouncer_port: int,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounced = through(database_url, bouncer_port)
    qrsync = _runner(tmp_path, bounced, monkeypatch)
    env: dict[str, str] = {}
    _fleet(simulator, qrsync, env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    role = f"bi_pgb_{os.getpid()}"
    with psycopg.connect(database_url, autocommit=True) as direct:
        direct.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        with NoisyNeighbour(bounced):
            synced = qrsync("sync")
            assert synced.exit_code == 0, synced.output
            report = qrsync("report")
            granted = qrsync("db", "grant-readonly", role)
        assert report.exit_code == 0, report.output
        assert "mp0" in report.output and "mp2" in report.output
        assert granted.exit_code == 0, granted.output
        with psycopg.connect(database_url) as direct:
            can_read = direct.execute(
                "SELECT has_table_privilege(%s, 'qrsync.rules', 'SELECT'),"
                " has_table_privilege(%s, 'qrsync.tokens', 'SELECT')",
                (role, role),
            ).fetchone()
        assert can_read == (True, False)
    finally:
        with psycopg.connect(database_url, autocommit=True) as direct:
            direct.execute(f'DROP OWNED BY "{role}"')
            direct.execute(f'DROP ROLE "{role}"')
