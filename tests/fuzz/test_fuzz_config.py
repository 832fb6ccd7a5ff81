"""Issue 7, fuzzing: generated configuration files (SPEC "Configuration") either load, as a
configuration qrsync can run with, or are refused with exit code 2 and one line naming the file
(and the account and key at fault), never with a traceback, never writing anything, and never
showing a secret (SPEC behaviour 7).

Documents are built as data and written as TOML by a small writer of our own (so that every
value TOML can hold, of every wrong type, can be put under every key); raw bytes and damaged
TOML cover what is not TOML at all. The loader is called directly for most examples (fast) and
the real CLI for the rest.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from qrsync.config import Config, load_config
from qrsync.errors import ConfigError

SECRET_WRITTEN = "fuzz-secret-written-in-the-file-5e2f"
"""Put where a secret would go if the user ignored "secrets are never written in the file"."""
SECRET_IN_ENV = "fuzz-secret-in-the-environment-93ab"
SECRET_IN_FILE = "fuzz-secret-in-a-file-7d1c"
SECRETS = (SECRET_WRITTEN, SECRET_IN_ENV, SECRET_IN_FILE)
SET_VARIABLE, BLANK_VARIABLE, UNSET_VARIABLE = "QRSYNC_FUZZ_SECRET", "QRSYNC_FUZZ_BLANK", "NOT_SET"
ENVIRONMENT = {SET_VARIABLE: SECRET_IN_ENV, BLANK_VARIABLE: "  \n"}
SECRET_FILE = "secret.txt"  # beside the configuration file, holding SECRET_IN_FILE

LOADER_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI_SETTINGS = settings(LOADER_SETTINGS, max_examples=100)

# --- values --------------------------------------------------------------------------------

SPECIMENS = (
    "二维码",
    "🧧",
    "\u202eevil",
    "line\nbreak",
    "tab\t",
    "\x1b[2J",
    "nul\x00",
    "",
    " ",
    '"quoted"',
    "back\\slash",
    "x" * 5000,
)
text = st.one_of(st.text(max_size=12), st.sampled_from(SPECIMENS))
numbers = st.one_of(
    st.integers(-5, 1000),
    st.sampled_from((0, -1, 2**63 - 1, -(2**63), 0.0001, 1e308, -0.0, 0.5, 1.5)),
    st.floats(),
)
moments = st.sampled_from(
    (
        dt.datetime(1979, 5, 27, 7, 32, tzinfo=dt.UTC),
        dt.datetime(1979, 5, 27, 7, 32),
        dt.date(1979, 5, 27),
        dt.time(7, 32),
    )
)
scalars = st.one_of(st.booleans(), numbers, text, moments)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=5,
)
SECRET_URLS = (
    f"postgresql://qrsync:{SECRET_WRITTEN}@db.internal/qrsync",
    f"https://user:{SECRET_WRITTEN}@tokens.internal/token",
)
SECRETISH_KEYS = (
    "secret",
    "appsecret",
    "token",
    "access_token",
    "refresh_token",
    "verify_ticket",
    "authorization",
    "password",
    "token_key",
)

# Each known key: (values the loader must take, values of the right type it must refuse).
Field = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]
whole = st.integers
positive = st.one_of(st.integers(1, 100), st.floats(0.1, 1000))
bad_numbers = st.sampled_from((0, -1, -0.5, 2**63 - 1, -(2**63), 1e308, 0.05, 1.5))
SECTIONS: dict[str, dict[str, Field]] = {
    "database": {
        "url": (
            st.sampled_from(("postgresql+psycopg://qrsync@db.internal/qrsync", SECRET_URLS[0])),
            st.sampled_from(("", " ")),
        ),
        "schema": (
            st.sampled_from(("qrsync", "reports_1", "二维码")),
            st.sampled_from(("1st", "bad-name", "", "x;drop", "a b")),
        ),
    },
    "api": {
        "base_url": (
            st.sampled_from(("https://api.weixin.qq.com", "http://127.0.0.1:9/", SECRET_URLS[1])),
            st.sampled_from(("ftp://x", "", "api.weixin.qq.com")),
        ),
        "timeout_s": (positive, bad_numbers),
        "requests_per_second": (positive, bad_numbers),
        "max_retries": (whole(0, 10), st.sampled_from((-1, 1.5))),
        "retry_backoff_s": (st.floats(0, 10), st.sampled_from((-1, -0.001))),
        "ca_bundle": (st.just(SECRET_FILE), st.sampled_from(("missing.pem", "/nonexistent"))),
    },
    "sync": {
        "concurrency": (whole(1, 64), st.sampled_from((0, -1, 2.0))),
        "page_size": (whole(1, 200), st.sampled_from((0, 201, 500, -1, 50.0))),
        "max_delete_fraction": (st.floats(0, 1), st.sampled_from((-0.1, 1.01, 2, 1e308))),
    },
    "daemon": {
        "schedule": (
            st.sampled_from(("*/15 * * * *", "0 0 * * * *", "@every 30s")),
            st.one_of(st.sampled_from(("every day", "61 * * * *", "@every 0s")), text),
        ),
        "timezone": (
            st.sampled_from(("UTC", "Asia/Shanghai")),
            st.one_of(st.just("Mars/Olympus"), text),
        ),
        "lease_s": (whole(1, 3600), st.sampled_from((0, -1))),
        "shutdown_grace_s": (whole(0, 600), st.sampled_from((-1, 0.5))),
        "http_port": (whole(0, 65535), st.sampled_from((-1, 65536, 2**40))),
    },
}
ACCOUNT_NAMES = ("brand-mp", "brand-oa", "shop", "二维码 🧧", "\u202eevil", "tab\there", "a\nb")
APPIDS = st.sampled_from(("wx1111111111111111", "wx2222222222222222"))


def _secret_ref(draw: st.DrawFn, base: str) -> dict[str, str]:
    """One of ``{base}_env`` (set) or ``{base}_file`` (present), as the loader wants."""
    if draw(st.booleans()):
        return {f"{base}_env": SET_VARIABLE}
    return {f"{base}_file": SECRET_FILE}


@st.composite
def valid_accounts(draw: st.DrawFn, name: str, component: bool) -> dict[str, Any]:
    kind = draw(st.sampled_from(("miniprogram", "service_account")))
    account: dict[str, Any] = {"name": name, "kind": kind, "appid": draw(APPIDS)}
    if kind == "service_account":
        account["miniprogram_appid"] = draw(APPIDS)
    if draw(st.booleans()):
        account["schedule"] = draw(st.sampled_from(("0 * * * *", "@every 1m")))
    if draw(st.booleans()):
        account["enabled"] = draw(st.booleans())
    sources = ("stable_token", "central", "static") + (("component",) if component else ())
    source = draw(st.sampled_from(sources))
    token: dict[str, Any] = {"source": source}
    if source == "stable_token":
        token |= _secret_ref(draw, "secret")
    elif source == "central":
        token["url"] = draw(st.sampled_from(("http://tokens.internal/t/wx1", SECRET_URLS[1])))
        if draw(st.booleans()):
            token |= _secret_ref(draw, "authorization")
    elif source == "static":
        token |= _secret_ref(draw, "token")
    else:
        token |= _secret_ref(draw, "refresh_token")
    account["token"] = token
    return account


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A configuration the loader must take: some sections, some keys, every value valid."""
    document: dict[str, Any] = {}
    for section, fields in SECTIONS.items():
        if draw(st.booleans()):
            document[section] = {
                key: draw(valid) for key, (valid, _) in fields.items() if draw(st.booleans())
            }
    if draw(st.booleans()):
        document["security"] = _secret_ref(draw, "token_key")
    component = draw(st.booleans())
    if component:
        document["component"] = {
            "appid": "wxcomponent",
            **_secret_ref(draw, "appsecret"),
            **_secret_ref(draw, "verify_ticket"),
        }
    names = draw(st.lists(st.sampled_from(ACCOUNT_NAMES), unique=True, max_size=3))
    if names:
        document["accounts"] = [draw(valid_accounts(name, component)) for name in names]
    return document


def _places(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every table of the document a mutation may change: sections, accounts, their tokens."""
    places = [document, *(v for v in document.values() if isinstance(v, dict))]
    for account in document.get("accounts", []):
        places.append(account)
        if isinstance(account.get("token"), dict):
            places.append(account["token"])
    return places


@st.composite
def hostile_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one to three things wrong: a wrong value or type, a key missing,
    an unknown key, a secret written in the file, a duplicate account name."""
    document = draw(valid_documents())
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from(_places(document)))
        how = draw(
            st.sampled_from(
                ("wrong", "retype", "drop", "unknown", "secret", "same name", "no secret")
            )
        )
        known = [key for key in place if place is not document or key != "accounts"]
        if how == "wrong" and place is not document:
            section = next((s for s, t in document.items() if t is place), None)
            fields = SECTIONS.get(section or "", {})
            if fields:
                key = draw(st.sampled_from(sorted(fields)))
                place[key] = draw(fields[key][1])
        elif how == "retype" and known:
            place[draw(st.sampled_from(sorted(known)))] = draw(anything)
        elif how == "drop" and known:
            del place[draw(st.sampled_from(sorted(known)))]
        elif how == "unknown":
            place[draw(text)] = draw(anything)
        elif how == "secret":
            place[draw(st.sampled_from(SECRETISH_KEYS))] = SECRET_WRITTEN
        elif how == "same name" and len(document.get("accounts", [])) > 1:
            document["accounts"][-1]["name"] = document["accounts"][0]["name"]
        elif how == "no secret":
            for key in place:
                if key.endswith("_env"):
                    place[key] = draw(st.sampled_from((UNSET_VARIABLE, BLANK_VARIABLE)))
                elif key.endswith("_file"):
                    place[key] = draw(st.sampled_from(("missing.txt", "/nonexistent", ".")))
    return document


documents = st.one_of(valid_documents(), hostile_documents(), hostile_documents())


# --- a TOML writer ---------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _string(value: str) -> str:
    """A TOML basic string: every control character escaped (TOML allows none but tab)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict[str, Any]) -> str:
    """Tables as [section], lists of tables as [[section]], everything else inline; plain
    values first, as TOML wants."""

    def is_table(v: Any) -> bool:
        return isinstance(v, dict)

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)

    lines = [
        f"{_key(k)} = {_value(v)}"
        for k, v in document.items()
        if not is_table(v) and not is_tables(v)
    ]
    for key, value in document.items():
        if is_table(value):
            lines += [f"[{_key(key)}]", *(f"{_key(k)} = {_value(v)}" for k, v in value.items())]
        elif is_tables(value):
            for table in value:
                lines.append(f"[[{_key(key)}]]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- raw bytes -------------------------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """Bytes that are not a configuration: random, not UTF-8, or TOML with bytes cut or put in."""
    how = draw(st.sampled_from(("random", "cut", "inserted", "latin-1")))
    if how == "random":
        return draw(st.binary(max_size=200))
    raw = to_toml(draw(documents)).encode()
    if how == "latin-1":
        return raw + "# café\n".encode("latin-1")
    at = draw(st.integers(0, len(raw)))
    if how == "cut":
        return raw[:at] + raw[at + draw(st.integers(1, 20)) :]
    return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]


contents = st.one_of(
    valid_documents().map(lambda d: (to_toml(d).encode(), True)),
    hostile_documents().map(lambda d: (to_toml(d).encode(), False)),
    hostile_documents().map(lambda d: (to_toml(d).encode(), False)),
    damaged().map(lambda raw: (raw, False)),
)
"""(the file's bytes, whether the loader must take them)"""


# --- checks ----------------------------------------------------------------------------------


def _write(tmp_path: Path, content: bytes) -> Path:
    secret = tmp_path / SECRET_FILE
    secret.write_text(f"  {SECRET_IN_FILE}\n", encoding="utf-8")
    secret.chmod(0o600)
    path = tmp_path / "qrsync.toml"
    path.write_bytes(content)
    return path


def _shows_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, "a secret is shown"


def _check_usable(config: Config) -> None:
    """What a configuration that loads promises (SPEC "Configuration"): numbers in range and
    finite, account names unique and not blank, a plain schema name."""
    api, sync, daemon = config.api, config.sync, config.daemon
    for number in (api.timeout_s, api.requests_per_second, api.retry_backoff_s):
        assert math.isfinite(number)
    assert api.timeout_s >= 0.1 and api.requests_per_second >= 0.1 and api.retry_backoff_s >= 0
    assert api.max_retries >= 0 and api.base_url.startswith(("http://", "https://"))
    assert 1 <= sync.page_size <= 200 and sync.concurrency >= 1
    assert 0 <= sync.max_delete_fraction <= 1
    assert daemon.lease_s >= 1 and daemon.shutdown_grace_s >= 0 and 0 <= daemon.http_port <= 65535
    names = [account.name for account in config.accounts]
    assert len(names) == len(set(names)) and all(name.strip() for name in names)
    assert re.fullmatch(r"\w+", config.database.schema) and not config.database.schema[0].isdigit()
    # The values of secrets are read when needed, never kept (a password in a URL the user
    # wrote is the user's: it stays, masked wherever it is shown).
    assert SECRET_IN_ENV not in repr(config) and SECRET_IN_FILE not in repr(config)


def _load(
    path: Path, check_secrets: bool, environ: Mapping[str, str] = ENVIRONMENT
) -> Config | ConfigError:
    """The loader's verdict; any other exception is a bug and fails the test as it is."""
    try:
        return load_config(path, environ, check_secrets=check_secrets)
    except ConfigError as exc:
        return exc


@LOADER_SETTINGS
@given(file=contents, check_secrets=st.booleans())
def test_generated_configuration_loads_or_is_refused_naming_the_file(
    tmp_path: Path, file: tuple[bytes, bool], check_secrets: bool
) -> None:
    content, valid = file
    path = _write(tmp_path, content)
    note(f"configuration: {content[:2000]!r}")
    verdict = _load(path, check_secrets)
    event("refused" if isinstance(verdict, ConfigError) else "loaded")
    if valid:
        assert not isinstance(verdict, ConfigError), f"a valid configuration refused: {verdict}"
    if isinstance(verdict, ConfigError):
        message = str(verdict)
        note(f"refused: {message!r}")
        assert verdict.exit_code == 2
        assert message.startswith(f"{path}: ")
        _shows_no_secret(message)
    else:
        _check_usable(verdict)


@CLI_SETTINGS
@given(file=contents)
def test_cli_refuses_what_it_cannot_run_with_exit_2_in_one_line_and_writes_nothing(
    qrsync: Any,
    db: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    file: tuple[bytes, bool],
) -> None:
    """`qrsync sync --account nope` reads and checks everything, secrets included, and then
    cannot run (there is no account 'nope'): whatever the file, exit 2 and one line."""
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(UNSET_VARIABLE, raising=False)
    monkeypatch.setenv("QRSYNC_DATABASE_URL", database_url)  # whatever database.url says
    content, valid = file
    path = _write(tmp_path, content)
    note(f"configuration: {content[:2000]!r}")
    verdict = _load(path, check_secrets=True, environ=os.environ)  # as the CLI will
    event("refused" if isinstance(verdict, ConfigError) else "loaded")
    assert not (valid and isinstance(verdict, ConfigError)), verdict
    result = qrsync("sync", "--account", "nope", config=path)
    note(f"exit {result.exit_code}: {result.output!r}")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stdout == ""
    message = result.stderr
    assert message.startswith("qrsync: ") and message.endswith("\n")
    assert len(message.splitlines()) == 1, "the error must be one line"
    if isinstance(verdict, ConfigError):
        assert message.startswith(f"qrsync: {path}: ")
    else:
        assert "no account named 'nope'" in message or "schema" in message
    _shows_no_secret(result.output)
    assert db.execute("SELECT count(*) FROM accounts").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM sync_runs").fetchone() == (0,)


# --- what the fuzzing found, pinned ----------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("api", "requests_per_second", "inf"),
        ("api", "timeout_s", "nan"),
        ("api", "timeout_s", "inf"),
        ("api", "retry_backoff_s", "nan"),
        ("sync", "max_delete_fraction", "nan"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, section: str, key: str, value: str) -> None:
    path = _write(tmp_path, f"[{section}]\n{key} = {value}\n".encode())
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{key}")):
        load_config(path, ENVIRONMENT)
