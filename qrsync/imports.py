"""`qrsync accounts import FILE.csv`: accounts that live in the database, not in the file.

For platforms (服务商) whose authorizer accounts come and go: the CSV lists them, the config file
keeps only defaults (and the [component] section). Columns (a header row first):

    name, kind, appid, miniprogram_appid, token_source, schedule, enabled,
    refresh_token, central_url, secret_env, token_env

Only name, kind and appid are required; token_source defaults to ``component``. A component
account's ``refresh_token`` seeds its first token (stored in the database, never printed;
re-importing the same value keeps a token WeChat rotated since). ``secret_env``/``token_env``
name environment variables, as ``*_env`` does in the config file. Every row is checked before
anything is written; an error names the file, the line and the column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from qrsync.config import ACCOUNT_KINDS, TOKEN_SOURCES, AccountConfig, SecretRef, TokenConfig
from qrsync.errors import ConfigError
from qrsync.masking import register_secret
from qrsync.schedules import ScheduleError
from qrsync.schedules import validate as validate_schedule

COLUMNS = (
    "name",
    "kind",
    "appid",
    "miniprogram_appid",
    "token_source",
    "schedule",
    "enabled",
    "refresh_token",
    "central_url",
    "secret_env",
    "token_env",
)
TOKEN_COLUMNS = {
    "refresh_token": "component",
    "central_url": "central",
    "secret_env": "stable_token",
    "token_env": "static",
}
"""Each token column, and the token source it belongs to."""
TRUE = {"", "1", "true", "yes", "y"}
FALSE = {"0", "false", "no", "n"}


@dataclass(frozen=True)
class ImportedAccount:
    """One row of an import: the account, and its refresh token seed if it has one."""

    account: AccountConfig
    refresh_token: str | None = None


def read_import(path: Path, timezone: str = "UTC") -> list[ImportedAccount]:
    """Parse and validate the whole file; raise :class:`ConfigError` at the first bad cell."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it as UTF-8 text: {exc}", file=file) from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise ConfigError(
            f"unknown column {unknown[0]!r}; expected some of {', '.join(COLUMNS)}",
            file=file,
            key="header",
        )
    for required in ("name", "kind", "appid"):
        if required not in header:
            raise ConfigError(f"the header needs a '{required}' column", file=file, key="header")
    accounts: list[ImportedAccount] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        row = {key.strip(): (value or "").strip() for key, value in raw.items() if key}
        imported = _row(row, f"{file}:{line}", timezone)
        if imported.account.name in seen:
            raise ConfigError(
                "duplicate account name", file=f"{file}:{line}", account=imported.account.name
            )
        seen.add(imported.account.name)
        accounts.append(imported)
    return accounts


def _row(row: dict[str, str], where: str, timezone: str) -> ImportedAccount:
    name = row.get("name", "")

    def fail(problem: str, column: str) -> ConfigError:
        return ConfigError(problem, file=where, account=name or None, key=column)

    if not name:
        raise fail("every account needs a name", "name")
    kind = row.get("kind", "")
    if kind not in ACCOUNT_KINDS:
        raise fail(f"must be one of {', '.join(ACCOUNT_KINDS)}, not '{kind}'", "kind")
    appid = row.get("appid", "")
    if not appid:
        raise fail("is required", "appid")
    mp = row.get("miniprogram_appid") or None
    if kind == "service_account" and not mp:
        raise fail("a service_account needs the linked mini program's appid", "miniprogram_appid")
    if kind == "miniprogram" and mp:
        raise fail("only a service_account has a miniprogram_appid", "miniprogram_appid")
    source = row.get("token_source") or "component"
    if source not in TOKEN_SOURCES:
        raise fail(f"must be one of {', '.join(TOKEN_SOURCES)}, not '{source}'", "token_source")
    schedule = row.get("schedule") or None
    if schedule is not None:
        try:
            validate_schedule(schedule, timezone)
        except ScheduleError as exc:
            raise fail(str(exc), "schedule") from None
    enabled_text = row.get("enabled", "").lower()
    if enabled_text not in TRUE | FALSE:
        raise fail(f"must be true or false, not '{row.get('enabled')}'", "enabled")
    refresh = row.get("refresh_token") or None
    if refresh:
        register_secret(refresh)
    for column, owner in TOKEN_COLUMNS.items():
        if row.get(column) and owner != source:
            raise fail(f"does not go with token_source {source}", column)
        if owner == source and source != "component" and not row.get(column):
            raise fail(f"token_source {source} needs the {column} column", column)
    token = TokenConfig(
        source=source,  # type: ignore[arg-type]
        url=row.get("central_url") or None,
        secret=SecretRef("env", row["secret_env"]) if row.get("secret_env") else None,
        token=SecretRef("env", row["token_env"]) if row.get("token_env") else None,
    )
    account = AccountConfig(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        appid=appid,
        token=token,
        miniprogram_appid=mp,
        schedule=schedule,
        enabled=enabled_text in TRUE,
    )
    return ImportedAccount(account, refresh)
