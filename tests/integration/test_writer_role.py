"""qrsync as the writer role of docs/security.md (not a superuser, owning its schema only): it
migrates and syncs; a process opens at most ``2 * sync.concurrency + 4`` connections (README
"Replicas"), which a CONNECTION LIMIT on the role enforces (a process that opened one more than
its budget would fail a run); a server refusing a connection is said in one line per account,
naming the database and what to do; a role that may not create the schema is told how."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import QrsyncRunner
from helpers import mp_account, mp_world, rule, toml_config

from qrsync.store.engine import connection_budget

ACCOUNTS = 12


@pytest.fixture
def writer(empty_database_url: str) -> Iterator[tuple[str, str]]:
    """A login role (not a superuser: CONNECTION LIMIT does not bind superusers) owning the
    schema ``qrsync`` of an empty database, as docs/security.md sets the writer up; returns
    the role and its URL."""
    role = f"qrsync_budget_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE SCHEMA qrsync AUTHORIZATION "{role}"')
        admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{info["dbname"]}" TO "{role}"')
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    try:
        yield role, f"postgresql://{role}@{host}:{port}/{info['dbname']}"
    finally:
        with psycopg.connect(empty_database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            admin.execute(f'DROP OWNED BY "{role}" CASCADE')
            admin.execute(f'DROP ROLE "{role}"')


def _limit(admin_url: str, role: str, connections: int) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT {connections}')


def _migrated_fleet(
    tmp_path: Path,
    admin_url: str,
    writer: tuple[str, str],
    simulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
    *,
    limit: int,
) -> QrsyncRunner:
    """The fleet configured for the writer at ``concurrency``, migrated as the writer; then
    the writer's CONNECTION LIMIT set to ``limit``."""
    role, url = writer
    qrsync = QrsyncRunner(tmp_path, url, monkeypatch)
    _fleet(simulator, qrsync, monkeypatch, concurrency)
    assert qrsync("db", "upgrade").exit_code == 0
    _limit(admin_url, role, limit)
    return qrsync


def _fleet(simulator: Any, qrsync: QrsyncRunner, monkeypatch: pytest.MonkeyPatch, c: int) -> None:
    blocks = []
    for i in range(ACCOUNTS):
        appid = f"wx20000000000000{i:02d}"
        simulator.admin.add_account(mp_world(appid=appid, secret=f"budget-secret-{i:02d}"))
        simulator.admin.put_rules(appid, [rule(f"https://{i}.example.com/r{n}") for n in range(5)])
        monkeypatch.setenv(f"BUDGET_SECRET_{i}", f"budget-secret-{i:02d}")
        blocks.append(mp_account(f"mp{i:02d}", appid, secret_env=f"BUDGET_SECRET_{i}"))
    qrsync.write_config(
        toml_config(
            simulator.url,
            "".join(blocks),
            api="requests_per_second = 100",
            sync=f"concurrency = {c}",
        )
    )


def test_a_sync_stays_within_its_connection_budget(
    tmp_path: Path,
    empty_database_url: str,
    writer: tuple[str, str],
    fast_simulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    concurrency = 4
    qrsync = _migrated_fleet(
        tmp_path,
        empty_database_url,
        writer,
        fast_simulator,
        monkeypatch,
        concurrency,
        limit=connection_budget(concurrency),
    )
    for _ in range(2):  # a first listing, then a compared one
        result = qrsync("sync")
        assert result.exit_code == 0, result.output
    with psycopg.connect(empty_database_url) as direct:
        statuses = direct.execute(
            "SELECT status, count(*) FROM qrsync.sync_runs GROUP BY 1"
        ).fetchall()
    assert statuses == [("succeeded", 2 * ACCOUNTS)]


def test_a_refused_connection_fails_the_account_in_one_line(
    tmp_path: Path,
    empty_database_url: str,
    writer: tuple[str, str],
    fast_simulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role = writer[0]
    # a run holds one connection and, for its 'running' row, briefly another
    qrsync = _migrated_fleet(
        tmp_path, empty_database_url, writer, fast_simulator, monkeypatch, 6, limit=3
    )
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    failed = [line for line in result.output.splitlines() if ": failed: " in line]
    assert failed, result.output
    for line in failed:
        assert "the server refused a connection to database" in line, line
        assert f'too many connections for role "{role}"' in line, line
        opens = f"this process opens at most {connection_budget(6)}"
        assert opens in line and "lower sync.concurrency" in line, line
    with psycopg.connect(empty_database_url) as direct:
        running = direct.execute(
            "SELECT count(*) FROM qrsync.sync_runs WHERE status = 'running'"
        ).fetchone()
    assert running == (0,), "no run left running"


def test_a_role_that_may_not_create_the_schema_is_told_how(
    tmp_path: Path,
    empty_database_url: str,
    writer: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _role, url = writer
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA qrsync")
    qrsync = QrsyncRunner(tmp_path, url, monkeypatch)
    qrsync.write_config("")
    result = qrsync("db", "upgrade")
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert "migration of schema 'qrsync' failed: permission denied for database" in message
    assert 'CREATE SCHEMA "qrsync" AUTHORIZATION <role>' in message
    with psycopg.connect(empty_database_url) as direct:
        created = direct.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'qrsync'"
        ).fetchone()
    assert created == (0,)
