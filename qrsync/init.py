"""`qrsync init`: a first configuration for the three usual cases, commented, with no secret in
it, and the environment variables to set beside it.

The file is what the README's "Configuration" describes, cut to what the case needs; what the
user must fill in is either given as an option or left as a value that fails `qrsync check` with
a message saying so (an AppID of zeros), never as a silent default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qrsync.errors import UsageError

Case = Literal["miniprogram", "service_account", "platform"]
CASES: tuple[Case, ...] = ("miniprogram", "service_account", "platform")

PLACEHOLDER_APPID = "wx0000000000000000"
"""Stands for an AppID not given: WeChat answers 40013 (invalid AppID) to it, which `qrsync
check` reports naming the account."""
DEFAULT_DATABASE_URL = "postgresql://qrsync@localhost:5432/qrsync"


@dataclass(frozen=True)
class InitOptions:
    case: Case
    name: str | None = None
    appid: str | None = None
    miniprogram_appid: str | None = None
    database_url: str | None = None
    embedded: bool = False
    api_base_url: str | None = None


@dataclass(frozen=True)
class Variable:
    """An environment variable the configuration names, and what to put in it."""

    name: str
    holds: str


@dataclass(frozen=True)
class Written:
    path: Path
    variables: tuple[Variable, ...]


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def render(options: InitOptions) -> tuple[str, tuple[Variable, ...]]:
    """The configuration's text for ``options``, and the variables it names."""
    parts = [_header(options), _database(options), _api(options), _sync_and_daemon()]
    variables: list[Variable] = []
    if options.case == "platform":
        text, names = _platform(options)
    elif options.case == "service_account":
        text, names = _service_account(options)
    else:
        text, names = _miniprogram(options)
    parts.append(text)
    variables += names
    return "\n".join(parts), tuple(variables)


def write(path: Path, options: InitOptions) -> Written:
    """Write the configuration at ``path``; refuse to overwrite anything there."""
    if path.exists():
        raise UsageError(
            f"{path} exists; qrsync init never overwrites a configuration: move it away, or "
            "write elsewhere with --config PATH"
        )
    if not path.parent.exists():
        raise UsageError(f"{path}: the directory {path.parent} does not exist")
    text, variables = render(options)
    try:
        with path.open("x", encoding="utf-8") as file:  # "x": never over a file made meanwhile
            file.write(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write it: {exc.strerror}") from None
    return Written(path, variables)


def exports(variables: tuple[Variable, ...]) -> list[str]:
    """``export NAME=...`` lines, for the user to fill in and keep out of the file."""
    return [f"export {v.name}='...'   # {v.holds}" for v in variables]


# --- sections ---------------------------------------------------------------------------------


_CASE_TITLES = {
    "miniprogram": "a mini program (its ordinary QR-code rules)",
    "service_account": "a service account (its rules for a linked mini program)",
    "platform": "a third-party platform (服务商) acting for authorizer accounts",
}


def _header(options: InitOptions) -> str:
    return (
        f"# qrsync configuration for {_CASE_TITLES[options.case]},\n"
        "# written by `qrsync init`.\n"
        "#\n"
        "# Secrets are never written in this file: an option ending in _env names an environment\n"
        "# variable, one ending in _file names a file, holding the secret. Every key is in the\n"
        '# README, "Configuration". Check it with `qrsync check` before the first sync.\n'
    )


def _database(options: InitOptions) -> str:
    if options.embedded:
        return (
            "[database]\n"
            "# The embedded PostgreSQL (needs `pip install 'qrsync[embedded]'`), for trying\n"
            "# qrsync; its data lives in ~/.local/share/qrsync. For your own PostgreSQL, replace\n"
            '# this with url = "postgresql://..." (or set QRSYNC_DATABASE_URL).\n'
            "embedded = true\n"
            'schema = "qrsync"\n'
        )
    url = options.database_url or DEFAULT_DATABASE_URL
    return (
        "[database]\n"
        "# Your PostgreSQL (13 or newer); QRSYNC_DATABASE_URL overrides it. A password belongs\n"
        "# in ~/.pgpass or PGPASSWORD, not here.\n"
        f"url = {_toml(url)}\n"
        'schema = "qrsync"            # every qrsync table and view lives in this schema\n'
    )


def _api(options: InitOptions) -> str:
    base = options.api_base_url or "https://api.weixin.qq.com"
    return (
        "[api]\n"
        f"base_url = {_toml(base)}"
        + (
            "   # `qrsync simulator` answers here, for trying things\n"
            if options.api_base_url
            else "\n"
        )
        + "requests_per_second = 5      # per AppID: WeChat answers 44990 above 5 a second\n"
    )


def _sync_and_daemon() -> str:
    return (
        "[sync]\n"
        "concurrency = 8              # accounts synced at once\n"
        "max_delete_fraction = 0.5    # a listing deleting more of the live rules waits for\n"
        "                             # qrsync sync --account NAME --allow-mass-delete\n"
        "\n"
        "[daemon]                     # for `qrsync daemon`; one-shot `qrsync sync` ignores it\n"
        'schedule = "*/15 * * * *"    # 5-field cron, or "@every 30m"\n'
        'timezone = "Asia/Shanghai"   # the cron schedule\'s time zone (an IANA name)\n'
        "http_port = 9108             # /metrics, /livez, /readyz; 0 turns it off\n"
    )


def _miniprogram(options: InitOptions) -> tuple[str, list[Variable]]:
    name = options.name or "my-miniprogram"
    appid = options.appid or PLACEHOLDER_APPID
    variable = Variable(_variable(name, "SECRET"), f"the AppSecret of {appid}")
    text = (
        "[[accounts]]\n"
        f"name = {_toml(name)}{' ' * max(1, 22 - len(name))}# your handle, used by the CLI\n"
        'kind = "miniprogram"\n'
        f"appid = {_toml(appid)}{_fill_in(options.appid, 'your mini program')}\n"
        "# stable_token keeps other programs' tokens of this AppID valid\n"
        f'token = {{ source = "stable_token", secret_env = "{variable.name}" }}\n'
    )
    return text, [variable]


def _service_account(options: InitOptions) -> tuple[str, list[Variable]]:
    name = options.name or "my-service-account"
    appid = options.appid or PLACEHOLDER_APPID
    linked = options.miniprogram_appid or PLACEHOLDER_APPID
    variable = Variable(_variable(name, "SECRET"), f"the AppSecret of {appid}")
    text = (
        "[[accounts]]\n"
        f"name = {_toml(name)}\n"
        'kind = "service_account"     # "scan a service-account QR code" rules, paged\n'
        f"appid = {_toml(appid)}{_fill_in(options.appid, 'the service account (its token)')}\n"
        f"miniprogram_appid = {_toml(linked)}"
        f"{_fill_in(options.miniprogram_appid, 'the linked mini program')}\n"
        f'token = {{ source = "stable_token", secret_env = "{variable.name}" }}\n'
    )
    return text, [variable]


def _platform(options: InitOptions) -> tuple[str, list[Variable]]:
    component = options.appid or PLACEHOLDER_APPID
    secret = Variable("QRSYNC_COMPONENT_SECRET", f"the platform's AppSecret ({component})")
    refresh = Variable(
        _variable(options.name or "my-authorizer", "REFRESH_TOKEN"),
        "the authorizer's refresh token, from its authorisation (it only seeds the first run)",
    )
    name = options.name or "my-authorizer"
    authorizer = options.miniprogram_appid or PLACEHOLDER_APPID
    text = (
        "[component]                  # the platform: verify ticket -> component token\n"
        f"appid = {_toml(component)}{_fill_in(options.appid, 'the platform')}\n"
        f'appsecret_env = "{secret.name}"\n'
        "# the latest component_verify_ticket, as your callback stores it (every 10 minutes)\n"
        'verify_ticket_file = "/var/lib/qrsync/verify_ticket"\n'
        "\n"
        "# One authorizer to start with; keep hundreds in the database instead:\n"
        "#   qrsync accounts import authorizers.csv   (docs/accounts-import.md)\n"
        "[[accounts]]\n"
        f"name = {_toml(name)}\n"
        'kind = "miniprogram"         # or "service_account" with miniprogram_appid\n'
        f"appid = {_toml(authorizer)}{_fill_in(options.miniprogram_appid, 'the authorizer')}\n"
        f'token = {{ source = "component", refresh_token_env = "{refresh.name}" }}\n'
    )
    return text, [secret, refresh]


def _fill_in(given: str | None, whose: str) -> str:
    return "" if given else f"   # fill in: the AppID of {whose}"


def _variable(name: str, what: str) -> str:
    """``QRSYNC_<NAME>_<WHAT>`` from an account name."""
    stem = "".join(c if c.isalnum() else "_" for c in name.upper()).strip("_") or "ACCOUNT"
    return f"QRSYNC_{stem}_{what}"
