"""`qrsync db upgrade / current / downgrade`: Alembic, run on qrsync's database and schema.

Alembic works on SQLAlchemy connections: each command opens one (without a pool) on the URL of
qrsync's :class:`~qrsync.store.engine.Engine`, which the other commands use without SQLAlchemy.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from qrsync.errors import DatabaseError
from qrsync.store.engine import Engine, normalize_url, quote_ident

ROOT = Path(__file__).resolve().parents[2]


def _alembic_config(stdout: io.StringIO | None = None) -> AlembicConfig:
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise DatabaseError(
            f"cannot find the migrations ({ini} is missing): install qrsync from its repository "
            "(make install)"
        )
    cfg = AlembicConfig(str(ini), stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
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
    with alchemy_connection(engine) as conn:
        conn.execute(text(f"SET search_path TO {quote_ident(schema)}"))
        context = MigrationContext.configure(conn, opts={"version_table_schema": schema})
        return context.get_current_revision()


def _run(engine: Engine, schema: str, action: object) -> None:
    cfg = _alembic_config()
    with alchemy_connection(engine) as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["schema"] = schema
        action(cfg)  # type: ignore[operator]
        conn.commit()


@contextmanager
def alchemy_connection(engine: Engine) -> Iterator[Connection]:
    """A SQLAlchemy connection to ``engine``'s database, working in its schema, for Alembic."""
    alchemy = create_engine(normalize_url(engine.url), poolclass=NullPool)
    try:
        with alchemy.connect() as conn:
            conn.execute(text(f"SET search_path TO {quote_ident(engine.schema)}"))
            conn.commit()
            yield conn
    finally:
        alchemy.dispose()
