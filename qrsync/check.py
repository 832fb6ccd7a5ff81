"""`qrsync check`: is this deployment ready to sync? The configuration, the database and every
account's token source, each said in one line, without syncing anything; exit 0 only when all
of it holds, so that an init container or a CI step can gate a deployment on it.

A token cached in the database would hide a wrong secret until it expires: each account's token
is had from its source with the secrets as configured now (:meth:`TokenProviders.check_token`),
in a way that invalidates no token others use. ``call`` adds one ``qrcodejumpget`` per account.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

import psycopg

from qrsync.app import App
from qrsync.config import AccountConfig
from qrsync.errors import AccountError, DatabaseError, QrsyncError
from qrsync.masking import mask, one_line
from qrsync.model import FetchedToken
from qrsync.store.encryption import sealer_for
from qrsync.store.engine import Engine, first_line, one, quote_ident, scalar, scalars
from qrsync.store.queries import query
from qrsync.store.revision import HEAD_REVISION
from qrsync.store.tokens import PgTokenCache
from qrsync.wechat.client import ApiCaller, WeChatClient
from qrsync.wechat.listing import ENDPOINT, PATH, parse_page
from qrsync.wechat.tokens import TokenCache, TokenProviders

REQUIRED_SET = {"miniprogram": 18, "service_account": 3}
"""The permission set qrcodejumpget needs, by account kind (REFERENCE.md; else 61007)."""
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


@dataclass(frozen=True)
class Finding:
    """One thing checked: what, whether it holds, and the line that says so."""

    subject: str
    ok: bool
    detail: str
    account: bool = False


def run_checks(app: App, names: Sequence[str], *, call: bool) -> list[Finding]:
    """Every check, in the order shown: the configuration, the database, then the accounts
    (failing ones first)."""
    config = app.config
    findings = [_database(app)]
    accounts, database_ok = _accounts(app, findings[0].ok)
    if names:
        accounts = tuple(app.account(name, accounts) for name in names)
    enabled = [a for a in accounts if a.enabled]
    in_file = {a.name for a in config.accounts}
    imported = sum(1 for a in accounts if a.name not in in_file)
    findings.insert(
        0,
        Finding(
            "configuration",
            True,
            f"{config.path}: {len(config.accounts)} account(s) in the file, {imported} imported; "
            f"{len(enabled)} enabled to check",
        ),
    )
    account_findings = _check_accounts(app, enabled, call=call, database_ok=database_ok)
    account_findings.sort(key=lambda f: f.ok)  # failing first, stable otherwise
    return findings + account_findings


def _accounts(app: App, database_ok: bool) -> tuple[tuple[AccountConfig, ...], bool]:
    """The accounts to check, and whether the database can serve them (a schema not created
    yet cannot: only the file's accounts are checked, and tokens are not cached)."""
    if database_ok:
        try:
            return app.accounts(), True
        except (QrsyncError, psycopg.Error):
            pass
    return app.config.accounts, False


# --- the database -------------------------------------------------------------------------------


def _database(app: App) -> Finding:
    schema = app.config.database.schema
    try:
        engine = app.engine()
        where = _where(engine)
        problem, state = _schema_state(engine, schema)
        if problem is None:
            problem = _missing_privileges(engine, schema)
    except (QrsyncError, psycopg.Error) as exc:
        return Finding("database", False, mask(one_line(first_line(exc))))
    if problem is not None:
        return Finding("database", False, f"{where}: {problem}")
    return Finding("database", True, f"{where}: {state}; the role has the privileges qrsync needs")


def _where(engine: Engine) -> str:
    with engine.transaction() as conn:
        row = one(conn, query("check_where"))
    return f"database '{row[0]}' as '{row[1]}' (PostgreSQL {row[2]})"


def _schema_state(engine: Engine, schema: str) -> tuple[str | None, str]:
    """(a problem, or None; what state the schema is in)."""
    with engine.transaction() as conn:
        rights = one(conn, query("check_database_rights"), {"schema": schema})
        if not rights.schema_exists:
            if not rights.may_create_schemas:
                return (
                    f"schema '{schema}' does not exist and the role may not create it: as a "
                    f"superuser, CREATE SCHEMA {quote_ident(schema)} AUTHORIZATION <role>",
                    "",
                )
            return None, f"schema '{schema}' not created yet (`qrsync db upgrade` creates it)"
        try:
            revision = scalar(conn, query("schema_revision"))
        except psycopg.errors.UndefinedTable:
            revision = None
    if revision is None:
        return None, f"schema '{schema}' not migrated yet (`qrsync db upgrade` migrates it)"
    if revision != HEAD_REVISION:
        return (
            f"schema '{schema}' is at revision {revision}, this qrsync needs {HEAD_REVISION}: "
            "run `qrsync db upgrade` (or run the qrsync that migrated it)",
            "",
        )
    return None, f"schema '{schema}' at revision {revision} (the newest)"


def _missing_privileges(engine: Engine, schema: str) -> str | None:
    """What the role lacks of what a sync and a migration need, or None."""
    lacking: list[str] = []
    with engine.transaction() as conn:
        rights = one(conn, query("check_database_rights"), {"schema": schema})
        if rights.schema_exists:
            if not rights.schema_usage_and_create:
                lacking.append(f"USAGE and CREATE on schema '{schema}'")
            tables = scalars(
                conn,
                query("check_tables_lacking_privileges"),
                {"schema": schema, "privileges": TABLE_PRIVILEGES},
            )
            if tables:
                lacking.append(f"{TABLE_PRIVILEGES} on {', '.join(tables[:5])}")
    if not rights.may_create_temporary:
        lacking.append("TEMPORARY on the database (resyncs compare in a temporary table)")
    if not lacking:
        return None
    return "the role lacks " + "; ".join(lacking) + " (docs/security.md)"


# --- the accounts -------------------------------------------------------------------------------


def _check_accounts(
    app: App, accounts: Sequence[AccountConfig], *, call: bool, database_ok: bool
) -> list[Finding]:
    if not accounts:
        return []
    config = app.config
    client = WeChatClient(config.api, pool_size=config.sync.concurrency * 2)
    cache: TokenCache = (
        PgTokenCache(app.engine(), sealer_for(config)) if database_ok else _WithoutDatabase()
    )
    tokens = TokenProviders(client, cache, config.component)
    try:
        workers = max(1, min(config.sync.concurrency, len(accounts)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qrsync-check") as pool:
            return list(pool.map(lambda a: _check_account(client, tokens, a, call=call), accounts))
    finally:
        client.close()


class _WithoutDatabase:
    """The token cache where the database cannot serve one: sources that need no stored token
    (stable_token, central, static) are checked all the same; a platform's authorizer, whose
    refresh token lives in the database, is not."""

    def _refuse(self) -> NoReturn:
        raise DatabaseError(
            "not checked: its token needs the database (run `qrsync db upgrade` first)"
        )

    def get(self, key: str) -> str | None:
        return None

    def at_hand(self, key: str) -> str | None:
        return None

    def refresh(
        self, key: str, fetch: Callable[[str | None], FetchedToken], failed: str | None
    ) -> str:
        if key.startswith(("component:", "authorizer:")):
            self._refuse()
        return fetch(failed).access_token

    def load_refresh_token(
        self, component_appid: str, authorizer_appid: str
    ) -> tuple[str, str] | None:
        self._refuse()

    def save_refresh_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str, seed: str
    ) -> None:
        self._refuse()


def _check_account(
    client: WeChatClient,
    tokens: TokenProviders,
    account: AccountConfig,
    *,
    call: bool,
) -> Finding:
    try:
        _, how = tokens.check_token(account)
        said = [how]
        if account.token.source == "component":
            said.append(_permission_sets(tokens, account))
        if call:
            said.append(_one_call(client, tokens, account))
    except (QrsyncError, psycopg.Error) as exc:
        return Finding(account.name, False, mask(one_line(first_line(exc))), True)
    return Finding(account.name, True, "; ".join(said), True)


def _permission_sets(tokens: TokenProviders, account: AccountConfig) -> str:
    granted = tokens.permission_sets(account)
    needed = REQUIRED_SET[account.kind]
    if needed not in granted:
        raise AccountError(
            f"has not granted the platform permission set {needed} "
            f"(granted: {', '.join(map(str, sorted(granted))) or 'none'}); WeChat would answer "
            "61007 to qrcodejumpget: ask its administrator to authorise the platform again "
            "with that set",
            account=account.name,
        )
    return f"permission set {needed} granted"


def _one_call(client: WeChatClient, tokens: TokenProviders, account: AccountConfig) -> str:
    api = ApiCaller(
        client=client, tokens=tokens.for_account(account), account=account.name,
        caller=account.appid,
    )  # fmt: skip
    if account.kind == "miniprogram":
        body: dict[str, object] = {}
    else:
        body = {"appid": account.miniprogram_appid, "get_type": 2, "page_num": 1, "page_size": 1}
    page = parse_page(api.call(PATH, body, endpoint=ENDPOINT), page_num=1, account=account.name)
    # A mini program's one answer is its whole listing, and its total_count may disagree with
    # it (REFERENCE.md); a service account's first page of one rule only has the total.
    listed = len(page.rules) if account.kind == "miniprogram" else page.total_count
    said = "?" if listed is None else f"{listed:,}"
    if account.kind == "miniprogram" and page.total_count not in (None, listed):
        said += f" (total_count says {page.total_count:,})"
    quota = (
        "" if page.qrcodejump_pub_quota is None else f", {page.qrcodejump_pub_quota} publishes left"
    )
    return f"qrcodejumpget answered: {said} rules{quota}"
