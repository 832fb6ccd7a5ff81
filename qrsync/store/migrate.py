"""`qrsync db upgrade / current / downgrade`: Alembic, run on qrsync's database and schema.

Alembic works on SQLAlchemy connections: each command opens one (without a pool) on the URL of
qrsync's :class:`~qrsync.store.engine.Engine`, which the other commands use without SQLAlchemy.
As the engine's, every transaction of that connection (each migration has its own) begins by
setting its own search_path, and nothing is prepared on the server: behind PgBouncer in
transaction pooling mode each transaction may run on another server connection.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event
from sqlalchemy import Engine as AlchemyEngine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from qrsync.errors import DatabaseError, UsageError
from qrsync.store.engine import SET_SEARCH_PATH, Engine, first_line, normalize_url, quote_ident

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
"""The Alembic scripts, shipped inside the package (a wheel, the container image), so that
`qrsync db upgrade` works wherever qrsync is installed; alembic.ini at the repository root is
only for running ``alembic`` by hand."""


def _alembic_config(stdout: io.StringIO | None = None) -> AlembicConfig:
    cfg = AlembicConfig(stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, schema: str, revision: str = "head") -> None:
    """Migrate ``schema`` up to ``revision`` (creating the schema if need be)."""
    _run(engine, schema, lambda cfg: command.upgrade(cfg, revision))


def downgrade(engine: Engine, schema: str, revision: str) -> None:
    """Migrate ``schema`` down to ``revision`` ("base" drops every qrsync table)."""
    _run(engine, schema, lambda cfg: command.downgrade(cfg, revision))


def current(engine: Engine, schema: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with alchemy_connection(engine, schema) as conn:
        context = MigrationContext.configure(conn, opts={"version_table_schema": schema})
        return context.get_current_revision()


def _run(engine: Engine, schema: str, action: object) -> None:
    cfg = _alembic_config()
    try:
        with alchemy_connection(engine, schema) as conn:
            cfg.attributes["connection"] = conn
            cfg.attributes["schema"] = schema
            action(cfg)  # type: ignore[operator]
    except DBAPIError as exc:  # each migration is a transaction: the failed one left nothing
        reason = first_line(exc)
        hint = ""
        if isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
            hint = (
                f"; the role must own schema '{schema}' (CREATE SCHEMA {quote_ident(schema)} "
                "AUTHORIZATION <role>, as a superuser) or may create schemas in the database"
            )
        raise DatabaseError(f"migration of schema '{schema}' failed: {reason}{hint}") from None
        conn.commit()


@contextmanager
def alchemy_connection(engine: Engine, schema: str | None = None) -> Iterator[Connection]:
    """A SQLAlchemy connection to ``engine``'s database whose every transaction works in
    ``schema`` (default: the engine's), for Alembic."""
    alchemy = alchemy_engine(engine.url, schema or engine.schema)
    try:
        with alchemy.connect() as conn:
            yield conn
    finally:
        alchemy.dispose()


def alchemy_engine(url: str, schema: str) -> AlchemyEngine:
    """A SQLAlchemy engine (no pool, no server-side prepared statements) whose every
    transaction begins with ``SET LOCAL search_path`` to ``schema``."""
    alchemy = create_engine(
        normalize_url(url), poolclass=NullPool, connect_args={"prepare_threshold": None}
    )
    search_path = quote_ident(schema)

    @event.listens_for(alchemy, "begin")
    def _in_schema(conn: Connection) -> None:
        # On the driver's connection: SQLAlchemy's is still beginning its transaction. psycopg
        # begins the database's with this statement.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(SET_SEARCH_PATH, (search_path,))
        finally:
            cursor.close()

    return alchemy


# --- revisions asked for on the command line ----------------------------------------------------


def known_revisions() -> list[str]:
    """Every migration this code knows, oldest first."""
    script = ScriptDirectory.from_config(_alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def check_revision(revision: str, *, allow_base: bool = False) -> str:
    """``revision`` if it names a migration ("head", "base" for a downgrade, or an id), else
    :class:`UsageError` listing the known ones: Alembic's own error is a traceback, raised
    after the schema was created."""
    known = known_revisions()
    keywords = ("head", "base") if allow_base else ("head",)
    if revision in known or revision in keywords:
        return revision
    if not known:
        listed = "none"
    else:  # numbered one after the other: the first and the last say them all
        listed = f"{known[0]} ... {known[-1]} (head)" if len(known) > 1 else f"{known[0]} (head)"
    also = " or base" if allow_base else ""
    raise UsageError(f"unknown revision '{revision}'; known: {listed}{also}")


def check_upgrade(engine: Engine, schema: str, revision: str) -> None:
    """Refuse, before anything is written, an upgrade to an unknown or older revision."""
    check_revision(revision)
    at = current(engine, schema)
    if at is not None and revision != "head" and _position(revision) < _position(at):
        raise UsageError(
            f"schema '{schema}' is at revision {at}, newer than {revision}: to go back, run "
            f"`qrsync db downgrade {revision}`"
        )


def check_downgrade(engine: Engine, schema: str, revision: str) -> None:
    """Refuse, before anything is written (the schema is not even created), a downgrade of a
    database that was never migrated, or to an unknown or newer revision."""
    check_revision(revision, allow_base=True)
    at = current(engine, schema)
    if at is None:
        raise UsageError(
            f"schema '{schema}': database is not at any revision yet; nothing to downgrade"
        )
    if revision not in ("head", "base") and _position(revision) > _position(at):
        raise UsageError(
            f"schema '{schema}' is at revision {at}, older than {revision}: run "
            f"`qrsync db upgrade {revision}` instead"
        )


def _position(revision: str) -> int:
    return known_revisions().index(revision)
