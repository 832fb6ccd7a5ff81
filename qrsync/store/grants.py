"""`qrsync db grant-readonly ROLE`: what a BI tool's role may read, and nothing more.

The role gets USAGE on the schema and SELECT on every view and on the tables users rely on;
the token tables (``tokens``, ``authorizer_refresh_tokens``) and staging stay out of reach.
Run it again after `qrsync db upgrade` so that new views are granted too.
"""

from __future__ import annotations

from qrsync.errors import UsageError
from qrsync.store.engine import Engine, quote_ident, scalars
from qrsync.store.queries import query

READABLE_TABLES = (
    "accounts",
    "rules",
    "rule_debug_urls",
    "rule_state_changes",
    "rule_past_versions",
    "account_snapshots",
    "sync_runs",
)
SECRET_TABLES = ("tokens", "authorizer_refresh_tokens", "staged_rules")


def readable_objects(engine: Engine, schema: str) -> list[str]:
    """The user tables and every view of the schema."""
    with engine.transaction() as conn:
        views = scalars(
            conn,
            (
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %(schema)s AND c.relkind = 'v' ORDER BY 1"
            ),
            {"schema": schema},
        )
        return [*READABLE_TABLES, *views]


def grant_readonly(engine: Engine, schema: str, role: str) -> list[str]:
    """Grant ``role`` read access to the views and user tables; return what was granted."""
    objects = readable_objects(engine, schema)
    quoted_role, quoted_schema = quote_ident(role), quote_ident(schema)
    with engine.transaction() as conn:
        if conn.execute(query("role_exists"), {"role": role}).fetchone() is None:
            raise UsageError(
                f"role '{role}' does not exist: create it first, e.g. "
                f"CREATE ROLE {quoted_role} LOGIN PASSWORD '...'; (see docs/analysts.md)"
            )
        conn.execute(f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}")
        names = ", ".join(f"{quoted_schema}.{quote_ident(name)}" for name in objects)
        conn.execute(f"GRANT SELECT ON {names} TO {quoted_role}")
        secrets = ", ".join(f"{quoted_schema}.{quote_ident(name)}" for name in SECRET_TABLES)
        conn.execute(f"REVOKE ALL ON {secrets} FROM {quoted_role}")
    return objects
