"""Alembic environment: migrate qrsync's schema on the connection qrsync hands over.

`qrsync db upgrade` passes an open connection in ``config.attributes["connection"]`` and the
schema name in ``config.attributes["schema"]``; run standalone, the URL comes from
``QRSYNC_DATABASE_URL``. Objects are created unqualified under ``search_path = <schema>``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, text

from qrsync.store.engine import normalize_url, quote_ident
from qrsync.store.schema import metadata

config = context.config


def _migrate(connection: Connection, schema: str) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"))
    connection.execute(text(f"SET search_path TO {quote_ident(schema)}"))
    connection.commit()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=False,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    schema = config.attributes.get("schema") or os.environ.get("QRSYNC_SCHEMA", "qrsync")
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection, schema)
        return
    url = os.environ.get("QRSYNC_DATABASE_URL")
    if not url:
        raise SystemExit("set QRSYNC_DATABASE_URL, or run migrations with `qrsync db upgrade`")
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        _migrate(conn, schema)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; use `qrsync db upgrade`")
run_migrations_online()
