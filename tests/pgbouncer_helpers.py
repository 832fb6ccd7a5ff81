"""A real PgBouncer (Debian's ``pgbouncer``) in transaction pooling mode in front of the test
server, and a noisy neighbour: another client of the same pool that keeps changing its own
session's state, which PgBouncer hands on with the server connection."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import require_tool

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def require_pgbouncer() -> str:
    """The binary; skipped when missing, except in CI (``CI=true``), where it fails."""
    return str(require_tool(Path(PGBOUNCER), "pgbouncer"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_pgbouncer(
    server_host: str,
    server_port: int,
    *,
    pool_size: int,
    settings: Mapping[str, str | int] | None = None,
) -> Iterator[int]:
    """PgBouncer on a free 127.0.0.1 port (returned), ``pool_mode = transaction``, at most
    ``pool_size`` server connections per database and user. ``server_host`` is a host name or
    address, or a Unix socket directory (``/...``) the ``postgres`` user can reach;
    ``settings`` are further ``[pgbouncer]`` settings (e.g. ``server_login_retry``)."""
    binary = require_pgbouncer()
    # (its own directory under /tmp: the pgbouncer user must reach it; pytest's are private)
    workdir = Path(tempfile.mkdtemp(prefix="qrsync-pgbouncer-"))
    port = _free_port()
    (workdir / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={server_host} port={server_port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmin_pool_size = 0\n"
        "reserve_pool_size = 0\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "query_wait_timeout = 60\n"
        + "".join(f"{key} = {value}\n" for key, value in (settings or {}).items()),
        encoding="utf-8",
    )
    command = [binary, str(ini)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(workdir, "postgres")
        for path in workdir.iterdir():
            shutil.chown(path, "postgres")
        command = [binary, "-u", "postgres", str(ini)]
    # Its log goes to a file: a pipe nobody reads would fill up and block PgBouncer mid-test.
    log_path = workdir / "pgbouncer.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                output = log_path.read_text(encoding="utf-8", errors="replace")
                pytest.fail(f"pgbouncer exited at start: {output.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("pgbouncer did not listen within 15 s")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def through(url: str, port: int) -> str:
    """``url`` (a database on 127.0.0.1:5432) reached through PgBouncer on ``port``."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    user = info.get("user", "postgres")
    return f"postgresql://{user}@127.0.0.1:{port}/{info['dbname']}"


class NoisyNeighbour:
    """Another client of the pool, in autocommit, setting ``search_path`` and
    ``statement_timeout`` in its session over and over (at most ``rounds`` times). With
    ``reconnect``, a connection the server dropped (a restart) is opened again, at most
    ``reconnect`` times."""

    def __init__(self, url: str, rounds: int = 2000, *, reconnect: int = 0) -> None:
        self.url = url
        self.rounds = rounds
        self.reconnect = reconnect
        self.reconnected = 0
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self.done < self.rounds:
                try:
                    self._rounds()
                except psycopg.OperationalError:
                    if self.reconnected >= self.reconnect:
                        raise
                    self.reconnected += 1
                    time.sleep(0.2)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _rounds(self) -> None:
        with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
            while self.done < self.rounds:
                if self._stop.is_set():
                    return
                conn.execute("SET search_path TO public")
                conn.execute("SET statement_timeout = '10min'")
                self.done += 1
                time.sleep(0.002)

    def __enter__(self) -> NoisyNeighbour:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, f"the noisy client failed: {self.error}"
        assert self.done > 0, "the noisy client never ran"
