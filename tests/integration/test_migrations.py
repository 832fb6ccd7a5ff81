"""Migrations: up from empty gives exactly the schema.py metadata; down removes everything."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from qrsync.store import migrate
from qrsync.store.engine import make_engine, one, scalar, scalars
from qrsync.store.schema import HEAD_REVISION, metadata

VIEWS = {
    "current_rules",
    "publications",
    "quota_daily",
    "sync_health",
    "unpublished_rules",
    "account_latest_snapshot",
    "deletions",
}


def _objects(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'v')",
            (schema,),
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_from_empty_matches_the_metadata(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, "qrsync")
    try:
        migrate.upgrade(engine, "qrsync")
        with migrate.alchemy_connection(engine) as conn:
            context = MigrationContext.configure(conn)
            diff = compare_metadata(context, metadata)
        # Comments live in the migrations (with the views'); everything else must match.
        kinds = {"modify_comment", "add_table_comment", "remove_table_comment"}
        structural = [d for d in diff if not (isinstance(d, list) and d[0][0] in kinds)]
        structural = [d for d in structural if not (isinstance(d, tuple) and d[0] in kinds)]
        assert structural == []
    finally:
        engine.dispose()


def test_each_migration_goes_down_and_up_again(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, "qrsync")
    try:
        migrate.upgrade(engine, "qrsync")
        for revision in ("0005", "0004", "0003", "0002", "0001"):
            migrate.downgrade(engine, "qrsync", revision)
            assert migrate.current(engine, "qrsync") == revision
        migrate.upgrade(engine, "qrsync")
        assert migrate.current(engine, "qrsync") == migrate.head_revision()
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, "analytics")
    try:
        migrate.upgrade(engine, "analytics")
        assert migrate.current(engine, "analytics") == migrate.head_revision()
        assert VIEWS | {t for t in metadata.tables} <= _objects(empty_database_url, "analytics")
        migrate.downgrade(engine, "analytics", "base")
        assert migrate.current(engine, "analytics") is None
        assert _objects(empty_database_url, "analytics") == {"alembic_version"}
        migrate.upgrade(engine, "analytics")
        assert migrate.current(engine, "analytics") == migrate.head_revision()
    finally:
        engine.dispose()


def test_every_view_and_its_columns_have_comments(engine: Any) -> None:
    with engine.transaction() as conn:
        for view in VIEWS:
            comment = scalar(
                conn,
                "SELECT obj_description(CAST(%(v)s AS regclass), 'pg_class')",
                {"v": f"qrsync.{view}"},
            )
            assert comment, view
            uncommented = one(
                conn,
                "SELECT count(*) FILTER (WHERE col_description(a.attrelid, a.attnum) IS NULL),"
                " count(*) FROM pg_attribute a WHERE a.attrelid = CAST(%(v)s AS regclass)"
                " AND a.attnum > 0",
                {"v": f"qrsync.{view}"},
            )
            assert uncommented[0] == 0, f"{view}: {uncommented[0]} columns without a comment"


def test_db_commands_through_the_cli(qrsync: Any, empty_database_url: str) -> None:
    qrsync.write_config(f'[database]\nurl = "{empty_database_url}"\n', with_database=False)
    assert "empty" in qrsync("db", "current").output
    up = qrsync("db", "upgrade")
    assert up.exit_code == 0 and f"upgraded from empty to {HEAD_REVISION}" in up.output
    again = qrsync("db", "upgrade")
    assert f"already at revision {HEAD_REVISION}" in again.output
    down = qrsync("db", "downgrade", "base")
    assert down.exit_code == 0 and "base" in down.output
    url = qrsync("db", "url")
    assert url.output.strip().startswith("postgresql://")


def test_plain_postgresql_urls_are_accepted(empty_database_url: str) -> None:
    for spelling in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        url = empty_database_url.replace("postgresql://", spelling, 1)
        engine = make_engine(url, "qrsync")
        with engine.transaction() as conn:
            assert scalar(conn, "SELECT 1") == 1
        engine.dispose()


def test_every_column_of_the_user_tables_has_a_comment(engine: Any) -> None:
    tables = [
        "accounts",
        "rules",
        "rule_debug_urls",
        "rule_state_changes",
        "rule_versions",
        "account_snapshots",
        "sync_runs",
    ]
    with engine.transaction() as conn:
        missing = scalars(
            conn,
            "SELECT c.relname || '.' || a.attname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'qrsync' AND c.relname = ANY(%(tables)s) AND a.attnum > 0"
            " AND NOT a.attisdropped AND col_description(a.attrelid, a.attnum) IS NULL",
            {"tables": tables},
        )
    assert missing == []


def test_the_head_revision_constant_is_alembics_head() -> None:

    assert migrate.head_revision() == HEAD_REVISION


def _refused(result: Any, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"qrsync: {message}"
    assert "Traceback" not in result.output


def _schema_exists(url: str, schema: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


KNOWN = f"known: 0001 ... {HEAD_REVISION} (head)"


def test_unknown_revisions_are_refused_and_nothing_is_created(
    qrsync: Any, empty_database_url: str
) -> None:
    qrsync.write_config(f'[database]\nurl = "{empty_database_url}"\n', with_database=False)
    _refused(qrsync("db", "upgrade", "9999"), f"unknown revision '9999'; {KNOWN}")
    _refused(qrsync("db", "downgrade", "zzz"), f"unknown revision 'zzz'; {KNOWN} or base")
    assert not _schema_exists(empty_database_url, "qrsync")


def test_downgrade_of_an_empty_database_creates_nothing(
    qrsync: Any, empty_database_url: str
) -> None:
    qrsync.write_config(f'[database]\nurl = "{empty_database_url}"\n', with_database=False)
    _refused(
        qrsync("db", "downgrade", "0005"),
        "schema 'qrsync': database is not at any revision yet; nothing to downgrade",
    )
    assert not _schema_exists(empty_database_url, "qrsync")


def test_migrating_the_wrong_way_is_refused_and_changes_nothing(
    qrsync: Any, empty_database_url: str
) -> None:
    qrsync.write_config(f'[database]\nurl = "{empty_database_url}"\n', with_database=False)
    assert qrsync("db", "upgrade", "0005").exit_code == 0
    _refused(
        qrsync("db", "upgrade", "0003"),
        "schema 'qrsync' is at revision 0005, newer than 0003: to go back, run "
        "`qrsync db downgrade 0003`",
    )
    _refused(
        qrsync("db", "downgrade", "0007"),
        "schema 'qrsync' is at revision 0005, older than 0007: run `qrsync db upgrade 0007` "
        "instead",
    )
    assert qrsync("db", "current").output.startswith("0005")
    assert qrsync("db", "downgrade", "0003").exit_code == 0
    assert qrsync("db", "current").output.startswith("0003")


def test_db_current_as_json(qrsync: Any) -> None:
    qrsync.write_config("")
    assert qrsync("db", "upgrade").exit_code == 0
    current = json.loads(qrsync("db", "current", "--json").stdout)
    assert current == {
        "schema": "qrsync",
        "current": HEAD_REVISION,
        "head": HEAD_REVISION,
        "up_to_date": True,
    }
