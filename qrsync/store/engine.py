"""Connecting to PostgreSQL: URL handling, the engine, the schema on every connection.

qrsync accepts ``postgresql://`` and ``postgres://`` URLs as well as the SQLAlchemy form
``postgresql+psycopg://`` and always drives psycopg 3. Every new connection gets
``search_path = <database.schema>`` so that the named SQL in ``queries.sql`` stays unqualified.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from qrsync.errors import DatabaseError


def normalize_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver, whatever PostgreSQL spelling it came in."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    if url.startswith("postgresql+") and not url.startswith("postgresql+psycopg://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith("postgresql+psycopg://"):
        raise DatabaseError(
            f"database URL must be a PostgreSQL URL (postgresql://...), not '{masked_url(url)}'"
        )
    return url


def masked_url(url: str) -> str:
    """The URL with its password replaced, fit for printing."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def first_line(exc: Exception) -> str:
    """The first line of what the database said (psycopg's error under SQLAlchemy's), for a
    one-line message."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else original.__class__.__name__


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def make_engine(url: str, schema: str, *, pool_size: int = 5, **kwargs: Any) -> Engine:
    """An engine whose connections all work in ``schema``; the pool fits ``pool_size`` workers."""
    engine = create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        **kwargs,
    )
    search_path = f"SET search_path TO {quote_ident(schema)}"

    @event.listens_for(engine, "connect")
    def _set_search_path(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        with dbapi_connection.cursor() as cursor:
            cursor.execute(search_path)
        dbapi_connection.autocommit = autocommit

    return engine
