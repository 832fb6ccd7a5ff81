"""Mirror the configured accounts into the ``accounts`` table, and read them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from qrsync.config import AccountConfig
from qrsync.store.queries import query


@dataclass(frozen=True)
class MirrorResult:
    ids: dict[str, int]
    disabled: tuple[str, ...]


def mirror_accounts(engine: Engine, accounts: Sequence[AccountConfig]) -> MirrorResult:
    """Insert or update every configured account (matched by name) and disable those removed
    from the file; rows that did not change are not written. Two statements, any fleet size."""
    params = {
        "names": [a.name for a in accounts],
        "kinds": [a.kind for a in accounts],
        "appids": [a.appid for a in accounts],
        "miniprogram_appids": [a.miniprogram_appid for a in accounts],
        "token_sources": [a.token.source for a in accounts],
        "schedules": [a.schedule for a in accounts],
        "enableds": [a.enabled for a in accounts],
    }
    with engine.begin() as conn:
        conn.execute(query("mirror_accounts"), params)
        disabled = conn.execute(
            query("disable_removed_accounts"), {"names": params["names"]}
        ).scalars()
        disabled_names = tuple(disabled)
        ids = {row.name: row.id for row in conn.execute(query("account_ids"))}
    return MirrorResult(ids=ids, disabled=disabled_names)


def account_ids(engine: Engine) -> dict[str, int]:
    """Every account's id by name, as the database holds them."""
    with engine.connect() as conn:
        return {row.name: row.id for row in conn.execute(query("account_ids"))}


@dataclass(frozen=True)
class AccountOverview:
    id: int
    name: str
    kind: str
    appid: str
    miniprogram_appid: str | None
    token_source: str
    enabled: bool
    in_config: bool
    live_rules: int
    last_run_id: int | None
    last_status: str | None
    last_run_at: datetime | None
    last_finished_at: datetime | None
    last_rules_seen: int | None
    last_error: str | None


def list_accounts(engine: Engine) -> list[AccountOverview]:
    with engine.connect() as conn:
        rows = conn.execute(query("list_accounts")).mappings().all()
    return [AccountOverview(**row) for row in rows]
