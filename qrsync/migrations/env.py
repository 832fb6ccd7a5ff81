"""Alembic environment: migrate qrsync's schema on the connection qrsync hands over.

`qrsync db upgrade` passes an open connection in ``config.attributes["connection"]`` and the
schema name in ``config.attributes["schema"]``; run standalone, the URL comes from
``QRSYNC_DATABASE_URL``. Objects are created unqualified under ``search_path = <schema>``, which
the connection sets at the start of each transaction (:func:`qrsync.store.migrate.alchemy_engine`):
each migration runs in its own (``transaction_per_migration``), and behind PgBouncer in
transaction pooling mode a session's ``SET`` would not reach the next one.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, text

from qrsync.store.engine import quote_ident
from qrsync.store.migrate import alchemy_engine
from qrsync.store.schema import metadata

config = context.config


def _migrate(connection: Connection, schema: str) -> None:
    # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists: a
    # writer role given a schema of its own (docs/security.md) has no such right.
    exists = connection.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"), {"schema": schema}
    ).first()
    if exists is None:
        connection.execute(text(f"CREATE SCHEMA {quote_ident(schema)}"))
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
    engine = alchemy_engine(url, schema)
    with engine.connect() as conn:
        _migrate(conn, schema)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; use `qrsync db upgrade`")
run_migrations_online()
