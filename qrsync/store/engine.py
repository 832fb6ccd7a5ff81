"""Connecting to PostgreSQL: URL handling, a pool of psycopg connections (psycopg_pool), the
schema in every transaction.

qrsync accepts ``postgresql://`` and ``postgres://`` URLs as well as the SQLAlchemy form
``postgresql+psycopg://`` and always drives psycopg 3. Every transaction begins with
``set_config('search_path', <database.schema>, true)`` (``SET LOCAL``) so that the named SQL in
``queries.sql`` stays unqualified. Nothing is kept in the session: behind PgBouncer in
transaction pooling mode each transaction may run on another server connection, so a session's
``SET`` would be lost or leak into other clients, and server-side prepared statements (psycopg
prepares a statement run 5 times) would be missing; they are turned off (``prepare_threshold``).

The commands use psycopg's own API, as procrastinate's psycopg connector does: a pooled
connection whose rows are named tuples (``namedtuple_row``), statements from ``queries.sql``
with ``%(name)s`` parameters::

    with engine.transaction() as conn:
        row = conn.execute(query("token_get"), {"key": key}).fetchone()

SQLAlchemy and Alembic remain for the schema and its migrations (:mod:`qrsync.store.migrate`);
importing SQLAlchemy and building its engine took 0.16 s of every command's start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from psycopg.rows import dict_row, scalar_row
from psycopg_pool import ConnectionPool, PoolTimeout

from qrsync.errors import DatabaseError
from qrsync.masking import mask

Conn = psycopg.Connection[Any]
"""A pooled connection: rows are named tuples (``row.id``, ``row[0]``)."""

logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
"""The pool's own warnings (a failed connection attempt, retried) are said once, in the error
of the operation that needed the connection (:meth:`Engine.checkout`), not as log lines."""

CHECKOUT_TIMEOUT_S = 30.0
"""How long a thread waits for a pooled connection before giving up."""

SHARED_CONNECTIONS = 2
"""Connections beside the runs' one each, for the short transactions: a run's 'running' row,
the token cache and its refreshes, quota holds, the daemon's leases, /metrics and /healthz."""

IDLE_PING_S = 5.0
"""A pooled connection idle for longer is pinged before it is handed out (the server may have
restarted meanwhile); one just given back is not, which saves a round trip per transaction."""


def connection_budget(concurrency: int) -> int:
    """The most connections a process syncing ``concurrency`` accounts at once opens:
    ``concurrency + 2`` (each run holds one connection, its transaction, for its whole
    duration; :data:`SHARED_CONNECTIONS` more serve the short transactions). Connections are
    opened when needed, so fewer accounts than ``concurrency`` open fewer."""
    return concurrency + SHARED_CONNECTIONS


_REFUSED = (
    "too many clients already",  # max_connections
    "too many connections for",  # a role's or a database's CONNECTION LIMIT
    "remaining connection slots are reserved",
    "no more connections allowed",  # PgBouncer's max_client_conn
)


def normalize_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver (SQLAlchemy's form, for Alembic), whatever
    PostgreSQL spelling it came in."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    if url.startswith("postgresql+") and not url.startswith("postgresql+psycopg://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith("postgresql+psycopg://"):
        raise DatabaseError(
            f"database URL must be a PostgreSQL URL (postgresql://...), not '{mask(url)}'"
        )
    return url


def libpq_url(url: str) -> str:
    """``url`` as libpq (psycopg) reads it: ``postgresql://...``."""
    return "postgresql://" + normalize_url(url).split("://", 1)[1]


def first_line(exc: BaseException) -> str:
    """The first line of what the database said, for a one-line message."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else original.__class__.__name__


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


SET_SEARCH_PATH = "SELECT set_config('search_path', %s, true)"
"""The first statement of every transaction: its search_path (``SET LOCAL``), which a pooler
in transaction mode keeps with the transaction."""


def first_line_refusal(exc: BaseException | str) -> str | None:
    """What the server said when it refused a connection for want of slots, else None."""
    text = str(exc)
    for marker in _REFUSED:
        at = text.find(marker)
        if at >= 0:
            return text[at:].splitlines()[0].strip()
    return None


@lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> Any:
    # (rename: a column named twice, or not an identifier, gets a positional name)
    return namedtuple("Row", names, rename=True)


def named_row(cursor: Any) -> Any:
    """psycopg's ``namedtuple_row``, except that a column named twice (``count(*), count(*)``)
    or not an identifier gets a positional name instead of failing."""
    if cursor.description is None:
        return tuple
    return _row_class(tuple(column.name for column in cursor.description))._make


def _read_only(conn: Conn) -> bool:
    # A session opened while the database was read-only (a failover, a standby, or
    # default_transaction_read_only set) stays so: a fresh one sees whether writes work again.
    # PostgreSQL 14+ reports both settings to the client on every change, no round trip.
    return "on" in (
        conn.info.parameter_status("default_transaction_read_only"),
        conn.info.parameter_status("in_hot_standby"),
    )


class Engine:
    """Connections to one database, every transaction working in ``schema``; at most
    ``pool_size`` connections open at once (a psycopg_pool ``ConnectionPool``)."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        self.url = libpq_url(url)
        self.schema = schema
        self.search_path = quote_ident(schema)
        self.pool_size = pool_size
        self._returned: WeakKeyDictionary[Conn, float] = WeakKeyDictionary()  # when given back
        self._last_refusal: tuple[str, float] | None = None
        self._pool: ConnectionPool[Conn] | None = None
        self._opening = threading.Lock()
        self._out = 0
        self._suspect_until = 0.0  # until then every pooled connection is pinged (one broke)

    # --- the pool ---------------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Conn]:
        """The pool, opened at first use (a command that never reaches the database opens no
        connection and starts no pool thread)."""
        pool = self._pool
        if pool is None:
            with self._opening:
                if self._pool is None:
                    self._pool = self._open_pool()
                pool = self._pool
        return pool

    def _open_pool(self) -> ConnectionPool[Conn]:
        engine = self

        class _Connection(psycopg.Connection[Any]):
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().connect(*args, **kwargs)
                except psycopg.OperationalError as exc:
                    engine._last_refusal = (first_line(exc), time.monotonic())
                    raise

        return ConnectionPool(
            self.url,
            connection_class=_Connection,
            # No server-side prepared statements: behind PgBouncer in transaction mode the
            # next execution may reach a server connection that never prepared it.
            kwargs={"prepare_threshold": None, "row_factory": named_row},
            min_size=0,
            max_size=self.pool_size,
            configure=self._configure,
            check=self._check,
            reset=self._reset,
            timeout=CHECKOUT_TIMEOUT_S,
            max_idle=300.0,
            reconnect_timeout=CHECKOUT_TIMEOUT_S,
            name="qrsync",
            open=True,
        )

    def _check(self, conn: Conn) -> None:
        """Refuse (the pool then opens another) a pooled connection that is read-only, or that
        does not answer after being idle for long or after another connection broke. A new
        connection is taken as it is: if the database is read-only, the statement says so."""
        returned = self._returned.get(conn)
        if returned is None:  # just opened
            return
        if _read_only(conn):
            conn.close()  # (a connection that fails the check but is open goes back to the pool)
            raise psycopg.OperationalError("the session is read-only")
        now = time.monotonic()
        if now - returned < IDLE_PING_S and now >= self._suspect_until:
            return
        # An empty query: one round trip, no transaction begun.
        if conn.pgconn.exec_(b"").status != psycopg.pq.ExecStatus.EMPTY_QUERY:
            conn.close()
            raise psycopg.OperationalError("the connection does not answer")

    def _configure(self, conn: Conn) -> None:
        self._returned.pop(conn, None)

    def _reset(self, conn: Conn) -> None:
        self._returned[conn] = time.monotonic()

    def checkout(self) -> Conn:
        """A pooled connection, to give back with :meth:`give_back` (a run holds one for its
        whole duration); raises :class:`psycopg.OperationalError` with one clear line when the
        server refuses connections or none is free in time."""
        deadline = time.monotonic() + CHECKOUT_TIMEOUT_S
        asked = time.monotonic()
        while True:
            try:
                conn = self.pool.getconn(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            except PoolTimeout:
                refusal = self._last_refusal
                if refusal is not None and refusal[1] >= asked - 1.0:
                    raise self._refused(refusal[0]) from None
                if time.monotonic() >= deadline:
                    raise psycopg.OperationalError(
                        f"all {self.pool_size} database connections stayed busy for "
                        f"{CHECKOUT_TIMEOUT_S:.0f} s"
                    ) from None
            else:
                with self._opening:
                    self._out += 1
                return conn

    def _refused(self, said: str) -> psycopg.OperationalError:
        reason = first_line_refusal(said)
        if reason is None:
            return psycopg.OperationalError(said)
        return psycopg.OperationalError(
            f"the server refused a connection to database '{self.database}' ({reason}; "
            f"this process opens at most {self.pool_size}): lower sync.concurrency, or "
            "raise max_connections or the role's CONNECTION LIMIT, or put PgBouncer in "
            "front of the database"
        )

    def suspect(self) -> None:
        """A connection broke: the server may have restarted or terminated every session, the
        idle ones too, so each is pinged before it is handed out for a while."""
        self._suspect_until = time.monotonic() + IDLE_PING_S

    def give_back(self, conn: Conn) -> None:
        """Return a connection from :meth:`checkout`; what it did not commit is rolled back."""
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                conn.close()
        if conn.closed or conn.broken:
            self.suspect()
        with self._opening:
            self._out -= 1
        self.pool.putconn(conn)

    # --- transactions -----------------------------------------------------------------------

    def begin_in_schema(self, conn: Conn) -> None:
        """Begin a transaction on ``conn`` working in the schema (the first statement begins
        it: psycopg is not in autocommit)."""
        conn.execute(SET_SEARCH_PATH, (self.search_path,))

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection, given back at the end of the block (what it did not commit
        is rolled back); each transaction begins with :meth:`begin_in_schema`."""
        conn = self.checkout()
        try:
            yield conn
        finally:
            self.give_back(conn)

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """A connection in a transaction working in the schema, committed at the end of the
        block (rolled back if it raises)."""
        with self.connection() as conn:
            self.begin_in_schema(conn)
            yield conn
            conn.commit()

    @property
    def database(self) -> str:
        """The database name of the URL, for messages."""
        return str(psycopg.conninfo.conninfo_to_dict(self.url).get("dbname") or "?")

    def checked_out(self) -> int:
        """Connections handed out and not given back yet (tests check none is forgotten)."""
        with self._opening:
            return self._out

    def dispose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5.0)


def make_engine(url: str, schema: str, *, pool_size: int = 10) -> Engine:
    """An engine whose transactions all work in ``schema``, opening at most ``pool_size``
    connections (exactly that: a command syncing accounts asks :func:`connection_budget`);
    a thread wanting one more waits for one to be given back."""
    return Engine(url, schema, pool_size=pool_size)


# --- reading rows in the other shapes qrsync wants (psycopg's row factories) ----------------------


def scalar(conn: Conn, sql: str, params: Any = None) -> Any | None:
    """The first column of the first row, or None without a row."""
    with conn.cursor(row_factory=scalar_row) as cursor:
        return cursor.execute(sql, params).fetchone()


def scalars(conn: Conn, sql: str, params: Any = None) -> list[Any]:
    """The first column of every row."""
    with conn.cursor(row_factory=scalar_row) as cursor:
        return cursor.execute(sql, params).fetchall()


def dicts(conn: Conn, sql: str, params: Any = None) -> list[dict[str, Any]]:
    """Every row as a dict of its columns."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(sql, params).fetchall()


def one(conn: Conn, sql: str, params: Any = None) -> Any:
    """The one row a statement always returns (an aggregate, an UPDATE ... RETURNING of a row
    known to exist)."""
    row = conn.execute(sql, params).fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the statement returned no row")
    return row
