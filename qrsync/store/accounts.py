"""Mirror the configured accounts into the ``accounts`` table, and read them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from qrsync.config import AccountConfig, SecretRef, TokenConfig, seed_fingerprint
from qrsync.errors import UsageError
from qrsync.store.encryption import TokenSealer
from qrsync.store.engine import Conn, Engine, dicts, scalars
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
    with engine.transaction() as conn:
        conn.execute(query("mirror_accounts"), params)
        disabled = scalars(conn, query("disable_removed_accounts"), {"names": params["names"]})
        disabled_names = tuple(disabled)
        ids = {row.name: row.id for row in conn.execute(query("account_ids"))}
    return MirrorResult(ids=ids, disabled=disabled_names)


def account_ids(engine: Engine) -> dict[str, int]:
    """Every account's id by name, as the database holds them."""
    with engine.transaction() as conn:
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
    source: str
    live_rules: int
    last_run_id: int | None
    last_status: str | None
    last_run_at: datetime | None
    last_finished_at: datetime | None
    last_rules_seen: int | None
    last_error: str | None


def list_accounts(engine: Engine) -> list[AccountOverview]:
    with engine.transaction() as conn:
        rows = dicts(conn, query("list_accounts"))
    return [AccountOverview(**row) for row in rows]


@dataclass(frozen=True)
class ImportResult:
    written: tuple[str, ...]
    disabled: tuple[str, ...]


def config_account_names(engine: Engine, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that belong to the configuration file's accounts in the database."""
    with engine.transaction() as conn:
        return _config_account_names(conn, names)


def _config_account_names(conn: Conn, names: Sequence[str]) -> list[str]:
    return list(scalars(conn, query("config_account_names"), {"names": list(names)}))


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
    with engine.transaction() as conn:
        taken = _config_account_names(conn, names)
        if taken:  # (checked before, with lines, by the CLI; this guards a race with a mirror)
            raise UsageError(
                f"account '{taken[0]}' belongs to the configuration file; an import may not "
                "redefine it (rename it in the CSV, or remove it from the file)"
            )
        written = scalars(
            conn,
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
                "secret_envs": [a.token.secret.name if a.token.secret else None for a in accounts],
                "token_envs": [a.token.token.name if a.token.token else None for a in accounts],
            },
        )
        disabled = scalars(conn, query("disable_unimported_accounts"), {"names": names})
        disabled_names = tuple(disabled)
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
    with engine.transaction() as conn:
        rows = conn.execute(query("imported_accounts")).fetchall()
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


# --- discovery (qrsync accounts discover) --------------------------------------------------------


def discovered_accounts(engine: Engine) -> list[AccountConfig]:
    """The accounts discovery made, enabled or not, as configurations the sync can use: their
    token source is component, their refresh token is stored (never in a file)."""
    with engine.transaction() as conn:
        rows = conn.execute(query("discovered_accounts")).fetchall()
    return [
        AccountConfig(
            name=row.name,
            kind=row.kind,
            appid=row.appid,
            token=TokenConfig(source="component"),
            miniprogram_appid=row.miniprogram_appid,
            schedule=row.schedule,
            enabled=row.enabled,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class DefinedAccount:
    """An account of the configuration file or of the latest import (``source``)."""

    name: str
    appid: str
    miniprogram_appid: str | None
    source: str


def accounts_defined_elsewhere(engine: Engine) -> list[DefinedAccount]:
    """The file's and the import's accounts, which discovery never makes twice."""
    with engine.transaction() as conn:
        rows = dicts(conn, query("accounts_defined_elsewhere"))
    return [DefinedAccount(**row) for row in rows]


@dataclass(frozen=True)
class AuthorizerRecord:
    """What discovery saw of one authorizer of a platform."""

    authorizer_appid: str
    kind: str | None
    nick_name: str | None
    auth_time: int | None
    listed: bool
    synced: bool
    reason: str | None
    errcode: int | None
    first_seen_at: datetime
    checked_at: datetime


def discovered_authorizers(engine: Engine, component_appid: str) -> list[AuthorizerRecord]:
    with engine.transaction() as conn:
        rows = dicts(conn, query("discovered_authorizers"), {"component_appid": component_appid})
        return [AuthorizerRecord(**row) for row in rows]


@dataclass(frozen=True)
class UnsyncedAuthorizer:
    """A listed authorizer that is not synced, and why (``qrsync accounts``)."""

    component_appid: str
    authorizer_appid: str
    kind: str | None
    nick_name: str | None
    reason: str | None
    errcode: int | None
    checked_at: datetime


def unsynced_authorizers(engine: Engine) -> list[UnsyncedAuthorizer]:
    with engine.transaction() as conn:
        rows = dicts(conn, query("all_discovered_authorizers"))
    return [UnsyncedAuthorizer(**row) for row in rows]


@dataclass(frozen=True)
class AuthorizerSeen:
    """One listed authorizer as one discovery leaves it (kind and name None: as before)."""

    appid: str
    kind: str | None
    nick_name: str | None
    auth_time: int | None
    synced: bool
    reason: str | None
    errcode: int | None


@dataclass(frozen=True)
class DiscoveryWrite:
    written: tuple[str, ...]
    disabled: tuple[str, ...]


def write_discovery(
    engine: Engine,
    component_appid: str,
    accounts: Sequence[AccountConfig],
    disable: Sequence[str],
    authorizers: Sequence[AuthorizerSeen],
    refresh_tokens: dict[str, str],
    sealer: TokenSealer | None = None,
    *,
    token_source: str = "component",
) -> DiscoveryWrite:
    """Write one discovery in one transaction: upsert (and enable) its accounts, disable those
    named, record every listed authorizer (and unlist the others), store the refresh tokens
    from the list as imported seeds are (sealed; one rotated since the same listed value was
    stored is kept)."""
    sealer = sealer or TokenSealer()
    with engine.transaction() as conn:
        written = scalars(
            conn,
            query("discover_accounts"),
            {
                "names": [a.name for a in accounts],
                "kinds": [a.kind for a in accounts],
                "appids": [a.appid for a in accounts],
                "miniprogram_appids": [a.miniprogram_appid for a in accounts],
                "token_source": token_source,
            },
        )
        disabled = scalars(conn, query("disable_discovered_accounts"), {"names": list(disable)})
        disabled_names = tuple(disabled)
        conn.execute(
            query("record_discovered_authorizers"),
            {
                "component_appid": component_appid,
                "appids": [a.appid for a in authorizers],
                "kinds": [a.kind for a in authorizers],
                "nick_names": [a.nick_name for a in authorizers],
                "auth_times": [a.auth_time for a in authorizers],
                "synceds": [a.synced for a in authorizers],
                "reasons": [a.reason for a in authorizers],
                "errcodes": [a.errcode for a in authorizers],
            },
        )
        conn.execute(
            query("unlist_discovered_authorizers"),
            {"component_appid": component_appid, "appids": [a.appid for a in authorizers]},
        )
        for appid, listed in refresh_tokens.items():
            conn.execute(
                query("seed_refresh_token"),
                {
                    "component_appid": component_appid,
                    "authorizer_appid": appid,
                    "refresh_token": sealer.seal(listed),
                    "seed_fingerprint": seed_fingerprint(listed),
                },
            )
        conn.execute(query("ensure_leases"))
    return DiscoveryWrite(written=tuple(written), disabled=disabled_names)
