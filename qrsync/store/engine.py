"""Connecting to PostgreSQL: URL handling, a pool of psycopg connections, the schema in every
transaction.

qrsync accepts ``postgresql://`` and ``postgres://`` URLs as well as the SQLAlchemy form
``postgresql+psycopg://`` and always drives psycopg 3. Every transaction begins with
``set_config('search_path', <database.schema>, true)`` (``SET LOCAL``) so that the named SQL in
``queries.sql`` stays unqualified. Nothing is kept in the session: behind PgBouncer in
transaction pooling mode each transaction may run on another server connection, so a session's
``SET`` would be lost or leak into other clients, and server-side prepared statements (psycopg
prepares a statement run 5 times) would be missing; they are turned off (``prepare_threshold``).

The commands talk to psycopg through :class:`Engine` and :class:`Connection`, a small subset of
SQLAlchemy's API (``engine.begin()``, ``conn.execute(query, {"name": ...})``, ``.one()``,
``.scalars()``, ...) without SQLAlchemy: importing SQLAlchemy and building its engine took
0.16 s of the 0.36 s every ``qrsync`` command spent starting (README, "Stack"). SQLAlchemy and
Alembic remain for the schema and its migrations (:mod:`qrsync.store.migrate`).
"""

from __future__ import annotations

import re
import threading
from collections import namedtuple
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from types import TracebackType
from typing import Any, Protocol

import psycopg
from psycopg.rows import RowMaker, namedtuple_row, tuple_row

from qrsync.errors import DatabaseError
from qrsync.masking import mask

CHECKOUT_TIMEOUT_S = 30.0
"""How long a thread waits for a pooled connection before giving up (as SQLAlchemy's pool)."""

CONNECTIONS_PER_RUN = 2
"""Connections an account's run holds at once: its run lock's transaction, open for the whole
run, and its listing's transaction (:class:`qrsync.store.runs.RunStore`)."""

SHARED_CONNECTIONS = 4
"""Connections beside the runs' for the short transactions: the token cache and its refreshes,
quota holds, run bookkeeping, the accounts, the daemon's leases, /metrics and /healthz."""


def connection_budget(concurrency: int) -> int:
    """The most connections a process syncing ``concurrency`` accounts at once opens:
    ``2 * concurrency + 4`` (:data:`CONNECTIONS_PER_RUN`, :data:`SHARED_CONNECTIONS`).
    Connections are opened when needed, so fewer accounts than ``concurrency`` open fewer."""
    return CONNECTIONS_PER_RUN * concurrency + SHARED_CONNECTIONS


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


# --- statements ----------------------------------------------------------------------------------


class TextLike(Protocol):
    """SQLAlchemy's ``text()`` clause, as tests and Alembic code may hand one over."""

    text: str


_TOKENS = re.compile(r"('(?:[^']|'')*')|(--[^\n]*)|(?<![:\w]):(\w+)|(%)")


@lru_cache(maxsize=512)
def bind_style(sql: str) -> str:
    """``sql`` with its ``:name`` parameters in psycopg's ``%(name)s`` style (and ``%``
    doubled); string literals, comments and ``::`` casts are left alone."""

    def replace(match: re.Match[str]) -> str:
        if match.group(3):
            return f"%({match.group(3)})s"
        return match.group(0).replace("%", "%%")

    return _TOKENS.sub(replace, sql)


def _sql(statement: str | TextLike) -> str:
    return statement if isinstance(statement, str) else statement.text


# --- results -------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> Any:
    # (rename: a column named twice, or not an identifier, gets a positional name)
    return namedtuple("Row", names, rename=True)


def named_row(cursor: psycopg.Cursor[Any]) -> RowMaker[Any]:
    """Rows as named tuples (``row.id``, ``row[0]``), as SQLAlchemy's rows read."""
    if cursor.description is None:
        return tuple
    maker: RowMaker[Any] = _row_class(tuple(column.name for column in cursor.description))._make
    return maker


class Result:
    """The rows of one statement (read at once: its cursor is closed before this is returned,
    so that no result of the server's outlives the statement), read the ways qrsync reads
    them."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def all(self) -> list[Any]:
        return self._rows

    fetchall = all

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None

    fetchone = first

    def one_or_none(self) -> Any | None:
        if len(self._rows) > 1:
            raise psycopg.ProgrammingError(f"expected at most one row, got {len(self._rows)}")
        return self.first()

    def one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise psycopg.ProgrammingError("expected one row, got none")
        return row

    def scalar(self) -> Any | None:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any | None:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> Rows:
        return Rows([row[0] for row in self._rows])

    def mappings(self) -> Rows:
        return Rows([row._asdict() for row in self._rows])


class Rows(list[Any]):
    """A list with SQLAlchemy's ``.all()``."""

    def all(self) -> list[Any]:
        return list(self)


# --- connections ---------------------------------------------------------------------------------


class Transaction:
    """``with conn.begin():`` commits at the end, or rolls back if the block raises."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._conn.commit()
        else:
            self._conn.rollback()


class Connection:
    """One pooled psycopg connection; a transaction begins with the first statement, which
    first sets the transaction's search_path to the engine's schema."""

    def __init__(self, engine: Engine, raw: psycopg.Connection[Any]) -> None:
        self.engine = engine
        self._raw = raw
        self._closed = False

    @property
    def driver_connection(self) -> psycopg.Connection[Any]:
        """The psycopg connection, in a transaction already working in the schema (for COPY)."""
        self._begin_in_schema()
        return self._raw

    def _begin_in_schema(self) -> None:
        raw = self._raw
        if raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            raw.execute(SET_SEARCH_PATH, (self.engine.search_path,))

    def execute(
        self, statement: str | TextLike, parameters: Mapping[str, Any] | None = None
    ) -> Result:
        """Run a statement with ``:name`` parameters."""
        sql = _sql(statement)
        if parameters:
            return self._run(bind_style(sql), parameters)
        return self._run(sql, None)

    def exec_driver_sql(self, sql: str) -> Result:
        """Run SQL as it is (no parameters; several statements allowed)."""
        return self._run(sql, None)

    def _run(self, sql: str, parameters: Mapping[str, Any] | None) -> Result:
        with self.driver_connection.cursor(row_factory=named_row) as cursor:
            cursor.execute(sql, parameters)
            rows = cursor.fetchall() if cursor.description is not None else []
            return Result(rows, cursor.rowcount)

    def begin(self) -> Transaction:
        return Transaction(self)

    def commit(self) -> None:
        self._raw.commit()

    def rollback(self) -> None:
        self._raw.rollback()

    def close(self) -> None:
        if not self._closed:  # (closing twice must not hand the connection back twice)
            self._closed = True
            self.engine.pool.give_back(self._raw)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Pool:
    """At most ``size`` connections, idle ones reused (last in, first out) after a ping."""

    def __init__(self, connect: Any, size: int) -> None:
        self._connect = connect
        self.size = size
        self._idle: list[psycopg.Connection[Any]] = []
        self._out = 0
        self._lock = threading.Condition()

    def checkedout(self) -> int:
        return self._out

    def take(self) -> psycopg.Connection[Any]:
        with self._lock:
            if not self._lock.wait_for(
                lambda: self._idle or self._out < self.size, timeout=CHECKOUT_TIMEOUT_S
            ):
                raise psycopg.OperationalError(
                    f"all {self.size} database connections stayed busy for "
                    f"{CHECKOUT_TIMEOUT_S:.0f} s"
                )
            idle = self._idle.pop() if self._idle else None
            self._out += 1
        try:
            if idle is not None and _alive(idle):
                return idle
            if idle is not None:
                idle.close()
            return self._connect()  # type: ignore[no-any-return]
        except BaseException:
            with self._lock:
                self._out -= 1
                self._lock.notify()
            raise

    def give_back(self, raw: psycopg.Connection[Any]) -> None:
        try:
            if not raw.closed and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raw.rollback()
        except psycopg.Error:
            raw.close()
        with self._lock:
            self._out -= 1
            if not raw.closed:
                self._idle.append(raw)
            self._lock.notify()

    def dispose(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for raw in idle:
            raw.close()


def _alive(raw: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection still answers (the server may have restarted meanwhile)."""
    if raw.closed:
        return False
    # A session opened while the database was read-only (a failover, a standby, or
    # default_transaction_read_only set) stays so: a fresh one sees whether writes work again.
    # PostgreSQL 14+ reports both settings to the client on every change, no round trip.
    if "on" in (
        raw.info.parameter_status("default_transaction_read_only"),
        raw.info.parameter_status("in_hot_standby"),
    ):
        return False
    try:  # an empty query: one round trip, no transaction begun
        return raw.pgconn.exec_(b"").status == psycopg.pq.ExecStatus.EMPTY_QUERY
    except psycopg.Error:
        return False


SET_SEARCH_PATH = "SELECT set_config('search_path', %s, true)"
"""The first statement of every transaction: its search_path (``SET LOCAL``), which a pooler
in transaction mode keeps with the transaction."""


class Engine:
    """Connections to one database, every transaction working in ``schema``; at most
    ``pool_size`` connections open at once."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        self.url = libpq_url(url)
        self.schema = schema
        self.search_path = quote_ident(schema)
        self.pool = Pool(self._new_connection, pool_size)

    def _new_connection(self) -> psycopg.Connection[Any]:
        try:
            # No server-side prepared statements: behind PgBouncer in transaction mode the next
            # execution may reach a server connection that never prepared it.
            return psycopg.connect(self.url, prepare_threshold=None)
        except psycopg.OperationalError as exc:
            reason = first_line_refusal(exc)
            if reason is None:
                raise
            raise psycopg.OperationalError(
                f"the server refused a connection to database '{self.database}' ({reason}; "
                f"this process opens at most {self.pool.size}): lower sync.concurrency, or "
                "raise max_connections or the role's CONNECTION LIMIT, or put PgBouncer in "
                "front of the database"
            ) from None

    @property
    def database(self) -> str:
        """The database name of the URL, for messages."""
        return str(psycopg.conninfo.conninfo_to_dict(self.url).get("dbname") or "?")

    def connect(self) -> Connection:
        return Connection(self, self.pool.take())

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end of the block (rolled back if it
        raises)."""
        with self.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A psycopg connection in a transaction working in the schema, its rows named tuples
        (``namedtuple_row``), committed at the end of the block (rolled back if it raises).
        Statements are psycopg's own: ``conn.execute(query("name"), {"param": ...})`` with
        ``%(param)s`` placeholders, ``.fetchone()``, ``.fetchall()``."""
        raw = self.pool.take()
        try:
            raw.row_factory = namedtuple_row
            with raw.transaction():
                raw.execute(SET_SEARCH_PATH, (self.search_path,))
                yield raw
        finally:
            raw.row_factory = tuple_row
            self.pool.give_back(raw)

    def dispose(self) -> None:
        self.pool.dispose()


def make_engine(url: str, schema: str, *, pool_size: int = 10) -> Engine:
    """An engine whose transactions all work in ``schema``, opening at most ``pool_size``
    connections (exactly that: a command syncing accounts asks :func:`connection_budget`);
    a thread wanting one more waits for one to be given back."""
    return Engine(url, schema, pool_size=pool_size)


def first_line_refusal(exc: BaseException) -> str | None:
    """What the server said when it refused a connection for want of slots, else None."""
    text = str(exc)
    for marker in _REFUSED:
        at = text.find(marker)
        if at >= 0:
            return text[at:].splitlines()[0].strip()
    return None
