"""`qrsync db grant-readonly ROLE`: a BI role reads every view, never a token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

VIEWS = [
    "current_rules",
    "publications",
    "quota_daily",
    "sync_health",
    "unpublished_rules",
    "account_latest_snapshot",
]


@pytest.fixture
def role(database_url: str) -> Iterator[str]:
    name = f"bi_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'bi-password'")
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def _as(database_url: str, role: str) -> str:
    url = make_url(database_url).set(username=role, password="bi-password")
    return url.render_as_string(hide_password=False)


def test_readonly_role_reads_views_but_not_tokens(
    qrsync: Any, database_url: str, role: str
) -> None:
    qrsync.write_config("")
    result = qrsync("db", "grant-readonly", role)
    assert result.exit_code == 0, result.output
    assert "token tables stay closed" in result.output
    with psycopg.connect(database_url) as owner:
        views = [
            v
            for (v,) in owner.execute(
                "SELECT viewname FROM pg_views WHERE schemaname = 'qrsync'"
            ).fetchall()
        ]
    assert set(VIEWS) <= set(views)
    with psycopg.connect(_as(database_url, role), autocommit=True) as conn:
        for view in views:
            conn.execute(f"SELECT * FROM qrsync.{view} LIMIT 1")
        conn.execute("SELECT * FROM qrsync.rules LIMIT 1")
        for secret in ("tokens", "authorizer_refresh_tokens"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM qrsync.{secret}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM qrsync.rules")


def test_unknown_role_is_refused_with_the_sql_to_create_it(qrsync: Any) -> None:
    qrsync.write_config("")
    result = qrsync("db", "grant-readonly", "nobody_like_this")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "CREATE ROLE" in result.stderr
