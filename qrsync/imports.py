"""`qrsync accounts import FILE.csv`: accounts that live in the database, not in the file.

For platforms (服务商) whose authorizer accounts come and go: the CSV lists them, the config file
keeps only defaults (and the [component] section). Columns (a header row first):

    name, kind, appid, miniprogram_appid, token_source, schedule, enabled,
    refresh_token, central_url, secret_env, token_env

Only name, kind and appid are required; token_source defaults to ``component``. A component
account's ``refresh_token`` seeds its first token (stored in the database, never printed;
re-importing the same value keeps a token WeChat rotated since). ``secret_env``/``token_env``
name environment variables, as ``*_env`` does in the config file. Every row is checked before
anything is written; every bad row is reported with its line and column.

An import is compared with the imported accounts the database holds (:func:`plan_import`): one
that would disable more than ``sync.max_delete_fraction`` of the enabled ones, or all of them,
is refused until confirmed, as a listing that would delete most rules is (SPEC behaviour 2): a
truncated or empty export must not switch a platform's authorizers off.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qrsync.config import (
    ACCOUNT_KINDS,
    TOKEN_SOURCES,
    AccountConfig,
    Config,
    SecretRef,
    TokenConfig,
)
from qrsync.errors import ConfigError, UsageError
from qrsync.masking import register_secret
from qrsync.schedules import ScheduleError
from qrsync.schedules import validate as validate_schedule

if TYPE_CHECKING:
    from qrsync.store.engine import Engine

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
MAX_LISTED = 20
"""How many names (or bad rows) one line lists before saying how many more there are."""


@dataclass(frozen=True)
class ImportedAccount:
    """One row of an import: the account, and its refresh token seed if it has one."""

    account: AccountConfig
    refresh_token: str | None = None
    line: int = 0
    """Its line in the file, for messages."""


@dataclass(frozen=True)
class ImportFile:
    """A checked import: its accounts, and warnings that do not stop it (unset variables)."""

    accounts: tuple[ImportedAccount, ...]
    warnings: tuple[str, ...]


class _BadRow(Exception):
    """One bad cell; collected so that every bad row is reported at once."""


def read_import_text(path: str) -> str:
    """The file's text; ``-`` reads standard input (e.g. an export piped straight in)."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it as UTF-8 text: {exc}", file=path) from None


def read_import(
    text: str,
    file: str,
    *,
    timezone: str = "UTC",
    component_config: str | None = None,
) -> ImportFile:
    """Parse and check the whole file. ``component_config``: the configuration file's path when
    it has no [component] table (component rows are then refused). Raise :class:`ConfigError`
    naming every bad row."""
    reader = csv.DictReader(text.removeprefix("\ufeff").splitlines())
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
    warnings: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        row = {key.strip(): (value or "").strip() for key, value in raw.items() if key}
        where = f"{file}:{line}"
        try:
            imported = replace(_row(row, where, timezone, component_config), line=line)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        name = imported.account.name
        if name in seen:
            problems.append(str(ConfigError("duplicate account name", file=where, account=name)))
            continue
        seen.add(name)
        accounts.append(imported)
        warnings += _unset_variables(imported.account, where)
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise UsageError(
            f"{file}: {len(problems)} bad row(s), nothing imported (fix them and import again): "
            f"{listed}{more}"
        )
    return ImportFile(tuple(accounts), tuple(warnings))


def _unset_variables(account: AccountConfig, where: str) -> list[str]:
    """A variable unset here may be set where qrsync sync runs: said, not refused; until it is
    set, that account's runs fail (and only that account's)."""
    found = []
    for column, ref in (("secret_env", account.token.secret), ("token_env", account.token.token)):
        if ref is not None and not os.environ.get(ref.name, "").strip():
            found.append(
                f"{where}: account '{account.name}': {column}: environment variable {ref.name} "
                "is not set here; the account is imported, and its runs fail until it is set "
                "where qrsync sync runs"
            )
    return found


def _row(
    row: dict[str, str], where: str, timezone: str, component_config: str | None
) -> ImportedAccount:
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
    if source == "component" and component_config is not None:
        raise fail(
            f"token source component needs a [component] table in {component_config}",
            "token_source",
        )
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
    for column, owner in TOKEN_COLUMNS.items():
        if owner == source and not row.get(column):
            if source == "component":
                raise fail(
                    "token_source component needs the authorizer refresh token that seeds its "
                    "first token (empty here)",
                    column,
                )
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


def name_clashes(rows: Sequence[ImportedAccount], taken: set[str], file: str) -> UsageError | None:
    """The error naming every row (file and line) whose name belongs to the configuration
    file's accounts (``taken``), or None: an import may not redefine them."""
    clashes = [f"{file}:{r.line}: '{r.account.name}'" for r in rows if r.account.name in taken]
    if not clashes:
        return None
    listed = ", ".join(clashes[:MAX_LISTED])
    more = f", and {len(clashes) - MAX_LISTED} more" if len(clashes) > MAX_LISTED else ""
    return UsageError(
        f"{len(clashes)} account name(s) of the import belong to the configuration file "
        f"({listed}{more}); an import may not redefine them: rename them in the CSV, or remove "
        "them from the configuration file; nothing imported"
    )


@dataclass(frozen=True)
class ImportPlan:
    """What an import would change, compared with the imported accounts in the database."""

    added: tuple[str, ...]
    updated: tuple[str, ...]
    disabled: tuple[str, ...]
    unchanged: tuple[str, ...]
    enabled_before: int
    """Imported accounts enabled now: the base of the mass-disable guard."""

    def mass_disable(self, max_fraction: float) -> bool:
        """Would disable all the enabled imported accounts, or more than ``max_fraction``."""
        n = len(self.disabled)
        return n > 0 and (n == self.enabled_before or n > max_fraction * self.enabled_before)


def plan_import(current: Sequence[AccountConfig], rows: Sequence[ImportedAccount]) -> ImportPlan:
    """Compare an import with ``current`` (the database's imported accounts, enabled or not).
    A changed refresh token seed alone is not an update of the account's row."""
    by_name = {a.name: a for a in current}
    listed = {r.account.name for r in rows}
    added, updated, unchanged = [], [], []
    for row in rows:
        before = by_name.get(row.account.name)
        if before is None:
            added.append(row.account.name)
        elif before != row.account:
            updated.append(row.account.name)
        else:
            unchanged.append(row.account.name)
    disabled = [a.name for a in current if a.enabled and a.name not in listed]
    return ImportPlan(
        added=tuple(added),
        updated=tuple(updated),
        disabled=tuple(disabled),
        unchanged=tuple(unchanged),
        enabled_before=sum(a.enabled for a in current),
    )


def mass_disable_refusal(plan: ImportPlan, file: str, max_fraction: float) -> UsageError:
    """The one line that refuses an import disabling too many accounts."""
    return UsageError(
        f"{file}: this import would disable {len(plan.disabled)} of the "
        f"{plan.enabled_before} enabled imported accounts (more than sync.max_delete_fraction = "
        f"{max_fraction:g}, or all of them); nothing written. Check the file (--dry-run lists "
        "the changes), then rerun with --allow-mass-disable to apply it"
    )


def describe_plan(plan: ImportPlan) -> list[str]:
    """Lines for --dry-run: each kind of change with its count and (up to a limit) names."""
    return describe_changes(
        (
            ("add", plan.added),
            ("update", plan.updated),
            ("disable", plan.disabled),
            ("unchanged", plan.unchanged),
        )
    )


def describe_changes(changes: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """``  add: 2: a, b``: each kind of change with its count and (up to a limit) names; for
    the dry runs of imports and discovery."""
    lines = []
    for label, names in changes:
        text = f"  {label}: {len(names)}"
        if names:
            text += ": " + ", ".join(names[:MAX_LISTED])
            if len(names) > MAX_LISTED:
                text += f", and {len(names) - MAX_LISTED} more"
        lines.append(text)
    return lines


# --- one import, end to end ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImportOutcome:
    """An import done (or, dry, planned): its plan, its JSON summary (with ``written`` when
    applied), and what was written."""

    label: str
    accounts: int
    plan: ImportPlan
    summary: dict[str, Any]
    applied: bool
    written: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()


def run_import(
    config: Config,
    ready_engine: Callable[[], Engine],
    csv_file: str,
    *,
    dry_run: bool = False,
    allow_mass_disable: bool = False,
    notify: Callable[[str], None] = lambda _line: None,
) -> ImportOutcome:
    """Read and check the whole CSV file (``-``: standard input), plan it against the imported
    accounts, and apply it unless ``dry_run``; an import disabling too many accounts is refused
    without ``allow_mass_disable``. Nothing is written unless every row is good, and the
    database (``ready_engine``) is not asked before the file is read."""
    from qrsync.store.accounts import config_account_names, import_accounts, imported_accounts
    from qrsync.store.encryption import sealer_for

    label = "<stdin>" if csv_file == "-" else csv_file
    checked = read_import(
        read_import_text(csv_file),
        label,
        timezone=config.daemon.timezone,
        component_config=None if config.component else config.path,
    )
    for warning in checked.warnings:
        notify(f"warning: {warning}")
    rows = checked.accounts
    engine = ready_engine()
    taken = {a.name for a in config.accounts} | set(
        config_account_names(engine, [r.account.name for r in rows])
    )
    clash = name_clashes(rows, taken, label)
    if clash is not None:
        raise clash
    plan = plan_import(imported_accounts(engine), rows)
    fraction = config.sync.max_delete_fraction
    summary: dict[str, Any] = {
        "file": label,
        "accounts": len(rows),
        "dry_run": dry_run,
        "added": list(plan.added),
        "updated": list(plan.updated),
        "disabled": list(plan.disabled),
        "unchanged": list(plan.unchanged),
        "needs_allow_mass_disable": plan.mass_disable(fraction),
        "warnings": list(checked.warnings),
    }
    if dry_run:
        return ImportOutcome(label, len(rows), plan, summary, applied=False)
    if plan.mass_disable(fraction) and not allow_mass_disable:
        raise mass_disable_refusal(plan, label, fraction)
    component = config.component.appid if config.component else None
    result = import_accounts(
        engine,
        [r.account for r in rows],
        {r.account.name: r.refresh_token for r in rows if r.refresh_token},
        component,
        sealer_for(config),
    )
    return ImportOutcome(
        label,
        len(rows),
        plan,
        {**summary, "written": list(result.written)},
        applied=True,
        written=tuple(result.written),
        disabled=tuple(result.disabled),
    )
