"""Mirror the configured accounts into the ``accounts`` table, and read them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from qrsync.config import AccountConfig, SecretRef, TokenConfig, seed_fingerprint
from qrsync.errors import UsageError
from qrsync.store.encryption import TokenSealer
from qrsync.store.engine import Connection, Engine
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


@dataclass(frozen=True)
class ImportResult:
    written: tuple[str, ...]
    disabled: tuple[str, ...]


def config_account_names(engine: Engine, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that belong to the configuration file's accounts in the database."""
    with engine.connect() as conn:
        return _config_account_names(conn, names)


def _config_account_names(conn: Connection, names: Sequence[str]) -> list[str]:
    return list(conn.execute(query("config_account_names"), {"names": list(names)}).scalars())


def import_accounts(
    engine: Engine,
    accounts: Sequence[AccountConfig],
    refresh_tokens: dict[str, str],
    component_appid: str | None,
    sealer: TokenSealer | None = None,
) -> ImportResult:
    """Write an import in one transaction: upsert its accounts, disable the imported ones it no
    longer lists, seed refresh tokens. Names of the configuration file's accounts are refused."""
    sealer = sealer or TokenSealer()
    names = [a.name for a in accounts]
    with engine.begin() as conn:
        taken = _config_account_names(conn, names)
        if taken:  # (checked before, with lines, by the CLI; this guards a race with a mirror)
            raise UsageError(
                f"account '{taken[0]}' belongs to the configuration file; an import may not "
                "redefine it (rename it in the CSV, or remove it from the file)"
            )
        written = (
            conn.execute(
                query("import_accounts"),
                {
                    "names": names,
                    "kinds": [a.kind for a in accounts],
                    "appids": [a.appid for a in accounts],
                    "miniprogram_appids": [a.miniprogram_appid for a in accounts],
                    "token_sources": [a.token.source for a in accounts],
                    "schedules": [a.schedule for a in accounts],
                    "enableds": [a.enabled for a in accounts],
                    "central_urls": [a.token.url for a in accounts],
                    "secret_envs": [
                        a.token.secret.name if a.token.secret else None for a in accounts
                    ],
                    "token_envs": [a.token.token.name if a.token.token else None for a in accounts],
                },
            )
            .scalars()
            .all()
        )
        disabled = conn.execute(query("disable_unimported_accounts"), {"names": names})
        disabled_names = tuple(disabled.scalars())
        if refresh_tokens and component_appid is None:
            raise UsageError(
                "the import has refresh tokens but the configuration has no [component] section"
            )
        appid_of = {a.name: a.appid for a in accounts}
        for name, seed in refresh_tokens.items():
            conn.execute(
                query("seed_refresh_token"),
                {
                    "component_appid": component_appid,
                    "authorizer_appid": appid_of[name],
                    "refresh_token": sealer.seal(seed),
                    "seed_fingerprint": seed_fingerprint(seed),
                },
            )
        conn.execute(query("ensure_leases"))
    return ImportResult(written=tuple(written), disabled=disabled_names)


def imported_accounts(engine: Engine) -> list[AccountConfig]:
    """The accounts of the latest imports, as configurations the sync can use."""
    with engine.connect() as conn:
        rows = conn.execute(query("imported_accounts")).all()
    accounts = []
    for row in rows:
        token = TokenConfig(
            source=row.token_source,
            url=row.central_url,
            secret=SecretRef("env", row.secret_env) if row.secret_env else None,
            token=SecretRef("env", row.token_env) if row.token_env else None,
        )
        accounts.append(
            AccountConfig(
                name=row.name,
                kind=row.kind,
                appid=row.appid,
                token=token,
                miniprogram_appid=row.miniprogram_appid,
                schedule=row.schedule,
                enabled=row.enabled,
            )
        )
    return accounts
