"""Read and validate the TOML configuration into frozen dataclasses (SPEC "Configuration").

Everything is checked before the database is touched: an unknown key, a wrong type, a duplicate
account name, a missing environment variable or file each raise :class:`ConfigError` naming the
file, the account and the key. Secrets never sit in the file: ``*_env`` names an environment
variable and ``*_file`` a file holding the value (surrounding whitespace stripped).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from qrsync.errors import ConfigError
from qrsync.masking import mask, register_secret
from qrsync.schedules import ScheduleError, time_zone
from qrsync.schedules import validate as validate_schedule

AccountKind = Literal["miniprogram", "service_account"]
TokenSourceName = Literal["stable_token", "central", "static", "component"]
ACCOUNT_KINDS: tuple[str, ...] = ("miniprogram", "service_account")
TOKEN_SOURCES: tuple[str, ...] = ("stable_token", "central", "static", "component")
AuthorizerTokens = Literal["component", "central"]
MAX_PAGE_SIZE = 200
DEFAULT_PATH = Path("qrsync.toml")
DEFAULT_DISCOVER_SCHEDULE = "7 * * * *"
"""Hourly, at minute 7 (not on the hour, when many platforms' own jobs run)."""
AUTHORIZER_TOKENS: tuple[str, ...] = ("component", "central")
logger = logging.getLogger("qrsync.config")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives (an environment variable or a file); read when needed, never logged."""

    kind: Literal["env", "file"]
    name: str

    def read(self) -> str:
        """Return the secret's current value (a file may be rewritten, e.g. a verify ticket)."""
        if self.kind == "env":
            value = os.environ.get(self.name)
            if value is None or not value.strip():
                raise LookupError(f"environment variable {self.name} is not set")
        else:
            try:
                value = Path(self.name).read_text(encoding="utf-8")
            except OSError as exc:
                raise LookupError(f"cannot read file {self.name}: {exc.strerror}") from exc
            if not value.strip():
                raise LookupError(f"file {self.name} is empty")
            _warn_if_others_may_read(self.name)
        value = value.strip()
        register_secret(value)
        return value

    def describe(self) -> str:
        return f"${self.name}" if self.kind == "env" else self.name


_WARNED: set[str] = set()


def _warn_if_others_may_read(path: str) -> None:
    """A secret file that other users may read is said once per process (not an error: some
    platforms mount secrets that way on purpose)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077 and path not in _WARNED:
        _WARNED.add(path)
        logger.warning(
            "secret file %s may be read by other users (mode %s); chmod 600 %s",
            path,
            oct(mode & 0o777)[2:],
            path,
            extra={"action": "secret_file_mode"},
        )


def seed_fingerprint(seed: str) -> str:
    """Identifies an authorizer refresh token seed without storing it twice: a new seed means
    the merchant authorised again, and replaces whatever token is stored."""
    return hashlib.sha256(seed.encode()).hexdigest()


@dataclass(frozen=True)
class DatabaseConfig:
    url: str | None = None
    schema: str = "qrsync"
    embedded: bool = False
    """The embedded PostgreSQL (qrsync.store.embedded), used only when asked for: without a
    url and without this, commands that need the database refuse to run."""


DATABASE_URL_SCHEMES = ("postgresql://", "postgres://", "postgresql+")
"""What qrsync connects to (psycopg 3 whatever driver a SQLAlchemy URL names)."""
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL cuts longer names (NAMEDATALEN - 1) instead of refusing them."""


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = "https://api.weixin.qq.com"
    timeout_s: float = 10.0
    requests_per_second: float = 5.0
    max_retries: int = 5
    retry_backoff_s: float = 0.5
    ca_bundle: str | None = None
    """Certificate authorities (a PEM file) to verify WeChat's TLS with instead of the usual
    ones, e.g. behind a company's TLS-inspecting proxy. Verification itself cannot be off."""


@dataclass(frozen=True)
class SecurityConfig:
    token_key: SecretRef | None = None
    """Fernet key(s) sealing stored tokens (qrsync.store.encryption); None: stored in clear."""


@dataclass(frozen=True)
class SyncConfig:
    concurrency: int = 8
    page_size: int = 200
    max_delete_fraction: float = 0.5


@dataclass(frozen=True)
class DaemonConfig:
    schedule: str = "*/15 * * * *"
    timezone: str = "UTC"
    lease_s: int = 60
    shutdown_grace_s: int = 30
    http_port: int = 9108


@dataclass(frozen=True)
class ComponentConfig:
    """A third-party platform (服务商) acting for the accounts whose token source is component."""

    appid: str
    appsecret: SecretRef
    verify_ticket: SecretRef
    discover: bool = False
    """Find the platform's authorizers by itself (``qrsync accounts discover``, and the daemon
    on ``discover_schedule``)."""
    discover_schedule: str = DEFAULT_DISCOVER_SCHEDULE
    """When every daemon replica schedules a discovery (exactly one of them runs each slot)."""
    authorizer_tokens: AuthorizerTokens = "component"
    """Where discovered accounts get their tokens: ``component`` (qrsync refreshes them with the
    platform's refresh tokens) or ``central`` (the platform's own token service, which already
    refreshes them: a second refresher would race it, WeChat rotating refresh tokens)."""
    authorizer_token_url: str | None = None
    """``central``: the token service's URL, ``{appid}`` standing for the authorizer's AppID."""
    authorizer_token_authorization: SecretRef | None = None

    def authorizer_token(self, appid: str) -> TokenConfig:
        """The token configuration of a discovered account of authorizer ``appid``."""
        if self.authorizer_tokens == "central":
            assert self.authorizer_token_url is not None
            return TokenConfig(
                source="central",
                url=self.authorizer_token_url.replace("{appid}", appid),
                authorization=self.authorizer_token_authorization,
            )
        return TokenConfig(source="component")


@dataclass(frozen=True)
class TokenConfig:
    source: TokenSourceName
    secret: SecretRef | None = None
    url: str | None = None
    token: SecretRef | None = None
    refresh_token: SecretRef | None = None
    authorization: SecretRef | None = None


@dataclass(frozen=True)
class AccountConfig:
    name: str
    kind: AccountKind
    appid: str
    token: TokenConfig
    miniprogram_appid: str | None = None
    schedule: str | None = None
    enabled: bool = True


NOTIFY_KINDS: tuple[str, ...] = ("wecom", "dingtalk", "feishu", "lark", "slack", "webhook")
SIGNED_KINDS: tuple[str, ...] = ("dingtalk", "feishu", "lark", "webhook")
"""The kinds whose receivers check a signature made with a secret (WeCom and Slack robots:
the URL's key is the only credential)."""
NOTIFY_EVENTS: tuple[str, ...] = (
    "rule_published",
    "rule_unpublished",
    "rule_deleted",
    "rule_restored",
    "rule_path_changed",
    "rule_waiting",
    "quota_low",
    "account_failing",
    "account_recovered",
    "deletions_held",
    "authorization_needed",
)
CHANNEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class NotifyConfig:
    """A ``[[notify]]`` channel: where events go (the URL is a secret: it holds the robot's
    key), which events of which accounts, and the thresholds of the derived events."""

    name: str
    kind: str
    url: SecretRef
    secret: SecretRef | None = None
    events: tuple[str, ...] = NOTIFY_EVENTS
    accounts: tuple[str, ...] = ("*",)
    failing_runs: int = 3
    waiting_days: float = 7.0
    quota_below: int = 10


@dataclass(frozen=True)
class Config:
    path: str
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    component: ComponentConfig | None = None
    accounts: tuple[AccountConfig, ...] = ()
    notify: tuple[NotifyConfig, ...] = ()
    from_file: bool = True
    """False when no file was found and these are the defaults (no accounts)."""

    def channel(self, name: str) -> NotifyConfig:
        for channel in self.notify:
            if channel.name == name:
                return channel
        names = ", ".join(c.name for c in self.notify) or "none"
        raise ConfigError(
            f"no notification channel named '{name}' (configured: {names})",
            file=self.path,
            key="notify",
        )

    def account(self, name: str) -> AccountConfig:
        for account in self.accounts:
            if account.name == name:
                return account
        names = ", ".join(a.name for a in self.accounts) or "none"
        raise ConfigError(
            f"no account named '{name}' (configured: {names})", file=self.path, key="accounts"
        )


def resolve_path(
    explicit: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """``--config``, else ``$QRSYNC_CONFIG``, else ``./qrsync.toml``; and whether the path was
    named by the user (False for the implicit default)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit), True
    if env.get("QRSYNC_CONFIG"):
        return Path(env["QRSYNC_CONFIG"]), True
    return DEFAULT_PATH, False


def load_config(
    path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    check_secrets: bool = True,
    missing_ok: bool = False,
) -> Config:
    """Read, validate and return the configuration at ``path``.

    ``check_secrets`` False skips checking that the shared secrets ([component], [security],
    api.ca_bundle) exist, for commands that never call WeChat (reports, status, migrations): a
    dashboard host needs no secrets. An account's own secret is never checked here: it is read
    when its token is needed, and a missing one fails that account's runs only.
    ``missing_ok`` turns a missing file into the defaults (no accounts), for the implicit
    ``./qrsync.toml`` of commands that need no accounts (e.g. ``qrsync db url``).
    """
    env = os.environ if environ is None else environ
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return replace(_Parser(file, env, check_secrets).config({}), from_file=False)
        raise ConfigError(
            "configuration file not found (give --config PATH or set QRSYNC_CONFIG)", file=file
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror}", file=file) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    return _Parser(file, env, check_secrets).config(document)


class _Parser:
    """Walks the TOML document; every complaint names the file, the account and the key."""

    def __init__(self, file: str, environ: Mapping[str, str], check_secrets: bool) -> None:
        self.file = file
        self.environ = environ
        self.check_secrets = check_secrets
        self.timezone = "UTC"

    def fail(self, problem: str, key: str, account: str | None = None) -> ConfigError:
        return ConfigError(problem, file=self.file, account=account, key=key)

    def config(self, doc: dict[str, Any]) -> Config:
        sections = {
            "database",
            "api",
            "sync",
            "daemon",
            "security",
            "component",
            "accounts",
            "notify",
        }
        self.only(doc, sections, "")
        database = self.database(self.table(doc, "database"))
        api = self.api(self.table(doc, "api"))
        sync = self.sync(self.table(doc, "sync"))
        daemon = self.daemon(self.table(doc, "daemon"))
        security = self.security(self.table(doc, "security"))
        component = self.component(doc["component"]) if "component" in doc else None
        accounts_raw = doc.get("accounts", [])
        if not isinstance(accounts_raw, list) or not all(isinstance(a, dict) for a in accounts_raw):
            raise self.fail("must be an array of tables ([[accounts]])", "accounts")
        accounts: list[AccountConfig] = []
        seen: set[str] = set()
        for index, item in enumerate(accounts_raw):
            account = self.account(item, index, component)
            if account.name in seen:
                raise self.fail(
                    "duplicate account name (names must be unique)", "name", account.name
                )
            seen.add(account.name)
            accounts.append(account)
        return Config(
            path=self.file,
            database=database,
            api=api,
            sync=sync,
            daemon=daemon,
            security=security,
            component=component,
            accounts=tuple(accounts),
            notify=self.channels(doc.get("notify", [])),
        )

    # --- sections ---------------------------------------------------------------------------

    def database(self, t: dict[str, Any]) -> DatabaseConfig:
        self.only(t, {"url", "schema", "embedded"}, "database")
        in_file = self.opt_str(t, "url", "database")
        from_environment = self.environ.get("QRSYNC_DATABASE_URL")
        url = from_environment or in_file
        if url and not url.startswith(DATABASE_URL_SCHEMES):
            where = (
                "environment variable QRSYNC_DATABASE_URL (it overrides database.url)"
                if from_environment
                else "database.url"
            )
            raise self.fail(
                "must be a PostgreSQL URL (postgresql://, postgres:// or postgresql+psycopg://), "
                f"not '{mask(url)}'",
                where,
            )
        embedded = t.get("embedded", False)
        if not isinstance(embedded, bool):
            raise self.fail(
                f"must be true or false, not {_describe(embedded)}", "database.embedded"
            )
        if embedded and url:
            given = "database.url" if in_file else "QRSYNC_DATABASE_URL"
            raise self.fail(
                f"embedded = true and {given} both name a database: keep one ({given} for "
                "your PostgreSQL, embedded = true for the embedded one)",
                "database.embedded",
            )
        schema = self.opt_str(t, "schema", "database") or "qrsync"
        self.check_schema(schema)
        return DatabaseConfig(url=url, schema=schema, embedded=embedded)

    def check_schema(self, schema: str) -> None:
        """A schema qrsync may create and own: PostgreSQL's own are refused by the server only
        after a traceback's worth of work, and a long name would be cut (and created cut)."""
        if not schema.replace("_", "").isalnum() or schema[0].isdigit():
            raise self.fail(
                "must be a plain identifier (letters, digits, underscore)", "database.schema"
            )
        if schema.lower() in SYSTEM_SCHEMAS or schema.lower().startswith("pg_"):
            raise self.fail(
                f"'{schema}' is a PostgreSQL system schema (names starting pg_ are reserved): "
                'choose a schema of qrsync\'s own, e.g. "qrsync"',
                "database.schema",
            )
        size = len(schema.encode("utf-8"))
        if size > MAX_IDENTIFIER_BYTES:
            raise self.fail(
                f"is {size} bytes long; PostgreSQL names are at most {MAX_IDENTIFIER_BYTES} bytes",
                "database.schema",
            )

    def api(self, t: dict[str, Any]) -> ApiConfig:
        keys = {
            "base_url",
            "timeout_s",
            "requests_per_second",
            "max_retries",
            "retry_backoff_s",
            "ca_bundle",
        }
        self.only(t, keys, "api")
        d = ApiConfig()
        base_url = self.opt_str(t, "base_url", "api") or d.base_url
        if not base_url.startswith(("http://", "https://")):
            raise self.fail("must start with http:// or https://", "api.base_url")
        return ApiConfig(
            base_url=base_url.rstrip("/"),
            timeout_s=self.number(t, "timeout_s", "api", d.timeout_s, minimum=0.1),
            requests_per_second=self.number(
                t, "requests_per_second", "api", d.requests_per_second, minimum=0.1
            ),
            max_retries=self.integer(t, "max_retries", "api", d.max_retries, minimum=0),
            retry_backoff_s=self.number(t, "retry_backoff_s", "api", d.retry_backoff_s, minimum=0),
            ca_bundle=self.ca_bundle(t),
        )

    def ca_bundle(self, t: dict[str, Any]) -> str | None:
        path = self.opt_str(t, "ca_bundle", "api")
        if path is None:
            return None
        if not Path(path).is_absolute():
            path = str((Path(self.file).parent / path).resolve())
        if self.check_secrets and not Path(path).is_file():
            raise self.fail(
                f"file {path} not found (a PEM file of CA certificates)", "api.ca_bundle"
            )
        return path

    def security(self, t: dict[str, Any]) -> SecurityConfig:
        self.only(t, {"token_key_env", "token_key_file"}, "security")
        key = self.secret(t, "token_key", "security", None, check=self.check_secrets)
        return SecurityConfig(token_key=key)

    def sync(self, t: dict[str, Any]) -> SyncConfig:
        self.only(t, {"concurrency", "page_size", "max_delete_fraction"}, "sync")
        d = SyncConfig()
        fraction = self.number(t, "max_delete_fraction", "sync", d.max_delete_fraction, minimum=0)
        if fraction > 1:
            raise self.fail("must be between 0 and 1", "sync.max_delete_fraction")
        return SyncConfig(
            concurrency=self.integer(t, "concurrency", "sync", d.concurrency, minimum=1),
            page_size=self.integer(
                t, "page_size", "sync", d.page_size, minimum=1, maximum=MAX_PAGE_SIZE
            ),
            max_delete_fraction=fraction,
        )

    def daemon(self, t: dict[str, Any]) -> DaemonConfig:
        keys = {"schedule", "timezone", "lease_s", "shutdown_grace_s", "http_port"}
        self.only(t, keys, "daemon")
        d = DaemonConfig()
        timezone = self.opt_str(t, "timezone", "daemon") or d.timezone
        try:
            time_zone(timezone)
        except ScheduleError as exc:
            raise self.fail(str(exc), "daemon.timezone") from None
        schedule = self.opt_str(t, "schedule", "daemon") or d.schedule
        self.check_schedule(schedule, timezone, "daemon.schedule")
        self.timezone = timezone
        return DaemonConfig(
            schedule=schedule,
            timezone=timezone,
            lease_s=self.integer(t, "lease_s", "daemon", d.lease_s, minimum=1),
            shutdown_grace_s=self.integer(
                t, "shutdown_grace_s", "daemon", d.shutdown_grace_s, minimum=0
            ),
            http_port=self.integer(t, "http_port", "daemon", d.http_port, minimum=0, maximum=65535),
        )

    def component(self, t: Any) -> ComponentConfig:
        if not isinstance(t, dict):
            raise self.fail("must be a table ([component])", "component")
        keys = {
            "appid",
            "appsecret_env",
            "appsecret_file",
            "verify_ticket_env",
            "verify_ticket_file",
            "discover",
            "discover_schedule",
            "authorizer_tokens",
            "authorizer_token_url",
            "authorizer_token_authorization_env",
            "authorizer_token_authorization_file",
        }
        self.only(t, keys, "component")
        appid = self.req_str(t, "appid", "component")
        check = self.check_secrets
        appsecret = self.secret(t, "appsecret", "component", None, check=check)
        ticket = self.secret(t, "verify_ticket", "component", None, check=check)
        if appsecret is None or ticket is None:
            missing = "appsecret" if appsecret is None else "verify_ticket"
            raise self.fail(f"{missing}_env or {missing}_file is required", f"component.{missing}")
        discover = t.get("discover", False)
        if not isinstance(discover, bool):
            raise self.fail(
                f"must be true or false, not {_describe(discover)}", "component.discover"
            )
        schedule = self.opt_str(t, "discover_schedule", "component") or DEFAULT_DISCOVER_SCHEDULE
        self.check_schedule(schedule, self.timezone, "component.discover_schedule")
        tokens = self.opt_str(t, "authorizer_tokens", "component") or "component"
        if tokens not in AUTHORIZER_TOKENS:
            raise self.fail(
                f"must be component or central, not '{tokens}'", "component.authorizer_tokens"
            )
        url = self.opt_str(t, "authorizer_token_url", "component")
        authorization = self.secret(
            t, "authorizer_token_authorization", "component", None, check=False
        )
        if tokens == "central":
            if url is None or not url.startswith(("http://", "https://")) or "{appid}" not in url:
                raise self.fail(
                    'authorizer_tokens = "central" needs the token service\'s URL, http:// or '
                    "https://, with {appid} where the authorizer's AppID goes",
                    "component.authorizer_token_url",
                )
        elif url is not None or authorization is not None:
            raise self.fail(
                'goes with authorizer_tokens = "central"',
                "component.authorizer_token_url"
                if url is not None
                else "component.authorizer_token_authorization",
            )
        return ComponentConfig(
            appid=appid,
            appsecret=appsecret,
            verify_ticket=ticket,
            discover=discover,
            discover_schedule=schedule,
            authorizer_tokens=tokens,  # type: ignore[arg-type]
            authorizer_token_url=url,
            authorizer_token_authorization=authorization,
        )

    def account(
        self, t: dict[str, Any], index: int, component: ComponentConfig | None
    ) -> AccountConfig:
        label = f"accounts[{index}]"
        name_raw = t.get("name")
        if not isinstance(name_raw, str) or not name_raw.strip():
            raise self.fail("every account needs a name (a non-empty string)", f"{label}.name")
        name = name_raw
        keys = {"name", "kind", "appid", "miniprogram_appid", "schedule", "enabled", "token"}
        self.only(t, keys, "", name)
        kind = self.req_str(t, "kind", "", name)
        if kind not in ACCOUNT_KINDS:
            raise self.fail(
                f"must be one of {', '.join(ACCOUNT_KINDS)}, not '{kind}'", "kind", name
            )
        appid = self.req_str(t, "appid", "", name)
        mp_appid = self.opt_str(t, "miniprogram_appid", "", name)
        if kind == "service_account" and not mp_appid:
            raise self.fail(
                "a service_account needs the linked mini program's appid (sent as appid)",
                "miniprogram_appid",
                name,
            )
        if kind == "miniprogram" and mp_appid:
            raise self.fail(
                "only a service_account has a miniprogram_appid", "miniprogram_appid", name
            )
        enabled = t.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self.fail("must be true or false", "enabled", name)
        token = self.token(t.get("token"), name, component)
        return AccountConfig(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            appid=appid,
            miniprogram_appid=mp_appid,
            schedule=self.account_schedule(t, name),
            enabled=enabled,
            token=token,
        )

    def channels(self, raw: Any) -> tuple[NotifyConfig, ...]:
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail("must be an array of tables ([[notify]])", "notify")
        channels: list[NotifyConfig] = []
        for index, t in enumerate(raw):
            channel = self.channel(t, index)
            if any(c.name == channel.name for c in channels):
                raise self.fail(
                    "duplicate channel name (names must be unique)",
                    f"notify '{channel.name}'.name",
                )
            channels.append(channel)
        return tuple(channels)

    def channel(self, t: dict[str, Any], index: int) -> NotifyConfig:
        name = t.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(
                'every channel needs a name (a non-empty string, e.g. "ops-dingtalk")',
                f"notify[{index}].name",
            )
        if not set(name) <= CHANNEL_NAME_CHARS:
            raise self.fail(
                "must be letters, digits, '-', '_' or '.' (it names the channel in the CLI, "
                f"the tables and the metrics), not {name!r}",
                f"notify[{index}].name",
            )
        section = f"notify '{name}'"
        keys = {
            "name",
            "kind",
            "url_env",
            "url_file",
            "secret_env",
            "secret_file",
            "events",
            "accounts",
            "failing_runs",
            "waiting_days",
            "quota_below",
        }
        if "url" in t:
            raise self.fail(
                "the URL holds the robot's key, a secret never written in the file: use "
                "url_env or url_file",
                f"{section}.url",
            )
        self.only(t, keys, section)
        kind = self.req_str(t, "kind", section)
        if kind not in NOTIFY_KINDS:
            raise self.fail(
                f"must be one of {', '.join(NOTIFY_KINDS)}, not '{kind}'", f"{section}.kind"
            )
        url = self.secret(t, "url", section, None, check=self.check_secrets)
        if url is None:
            raise self.fail(
                "url_env or url_file is required (the receiver's URL, which holds its key)",
                f"{section}.url",
            )
        if self.check_secrets:
            value = url.read() if url.kind == "file" else self.environ[url.name].strip()
            if not value.startswith(("http://", "https://")):
                raise self.fail(
                    f"{url.describe()} must hold an http:// or https:// URL",
                    f"{section}.url_{url.kind}",
                )
        secret = self.secret(t, "secret", section, None, check=self.check_secrets)
        if secret is not None and kind not in SIGNED_KINDS:
            raise self.fail(
                f"a {kind} robot signs nothing (its URL's key is its credential): remove "
                f"secret_{secret.kind}",
                f"{section}.secret_{secret.kind}",
            )
        d = NotifyConfig(name=name, kind=kind, url=url)
        return NotifyConfig(
            name=name,
            kind=kind,
            url=url,
            secret=secret,
            events=self.names(t, "events", section, NOTIFY_EVENTS, d.events),
            accounts=self.names(t, "accounts", section, None, d.accounts),
            failing_runs=self.integer(t, "failing_runs", section, d.failing_runs, minimum=1),
            waiting_days=self.positive(t, "waiting_days", section, d.waiting_days),
            quota_below=self.integer(t, "quota_below", section, d.quota_below, minimum=0),
        )

    def names(
        self,
        t: dict[str, Any],
        key: str,
        section: str,
        allowed: tuple[str, ...] | None,
        default: tuple[str, ...],
    ) -> tuple[str, ...]:
        """A non-empty list of strings (of ``allowed`` ones, when given), duplicates dropped."""
        value = t.get(key)
        if value is None:
            return default
        where = _join(section, key)
        if not isinstance(value, list) or not value:
            raise self.fail(f"must be a non-empty list of strings, not {_describe(value)}", where)
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"must hold non-empty strings, not {_describe(item)}", where)
            if allowed is not None and item not in allowed:
                raise self.fail(
                    f"unknown event '{item}'; expected some of {', '.join(allowed)}", where
                )
        return tuple(dict.fromkeys(value))

    def positive(self, t: dict[str, Any], key: str, section: str, default: float) -> float:
        value = self.number(t, key, section, default, minimum=0)
        if value <= 0:
            raise self.fail(f"must be more than 0, not {value}", _join(section, key))
        return value

    def token(self, t: Any, account: str, component: ComponentConfig | None) -> TokenConfig:
        if not isinstance(t, dict):
            raise self.fail(
                'is required, e.g. token = { source = "stable_token", secret_env = "NAME" }',
                "token",
                account,
            )
        source = self.req_str(t, "source", "token", account)
        if source not in TOKEN_SOURCES:
            raise self.fail(
                f"must be one of {', '.join(TOKEN_SOURCES)}, not '{source}'",
                "token.source",
                account,
            )
        allowed = {
            "stable_token": {"secret_env", "secret_file"},
            "central": {"url", "authorization_env", "authorization_file"},
            "static": {"token_env", "token_file"},
            "component": {"refresh_token_env", "refresh_token_file"},
        }[source]
        self.only(t, allowed | {"source"}, "token", account)
        # An account's secret is read when its token is needed, not here: a variable or file
        # missing for one account fails that account's runs only (the others still sync).
        check = False
        if source == "stable_token":
            secret = self.secret(t, "secret", "token", account, check=check)
            if secret is None:
                raise self.fail("secret_env or secret_file is required", "token.secret", account)
            return TokenConfig(source="stable_token", secret=secret)
        if source == "central":
            url = self.req_str(t, "url", "token", account)
            if not url.startswith(("http://", "https://")):
                raise self.fail("must start with http:// or https://", "token.url", account)
            auth = self.secret(t, "authorization", "token", account, check=check)
            return TokenConfig(source="central", url=url, authorization=auth)
        if source == "static":
            token = self.secret(t, "token", "token", account, check=check)
            if token is None:
                raise self.fail("token_env or token_file is required", "token.token", account)
            return TokenConfig(source="static", token=token)
        if component is None:
            raise self.fail(
                "source 'component' needs a [component] section (the platform's appid, "
                "appsecret and verify ticket)",
                "token.source",
                account,
            )
        refresh = self.secret(t, "refresh_token", "token", account, check=check)
        if refresh is None:
            raise self.fail(
                "refresh_token_env or refresh_token_file is required (it seeds the first run)",
                "token.refresh_token",
                account,
            )
        return TokenConfig(source="component", refresh_token=refresh)

    # --- values -----------------------------------------------------------------------------

    def check_schedule(
        self, expression: str, timezone: str, key: str, account: str | None = None
    ) -> None:
        try:
            validate_schedule(expression, timezone)
        except ScheduleError as exc:
            raise self.fail(str(exc), key, account) from None

    def account_schedule(self, t: dict[str, Any], account: str) -> str | None:
        expression = self.opt_str(t, "schedule", "", account)
        if expression is not None:
            self.check_schedule(expression, self.timezone, "schedule", account)
        return expression

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f"must be a table ([{key}])", key)
        return value

    def only(
        self, t: dict[str, Any], allowed: set[str], section: str, account: str | None = None
    ) -> None:
        for key in t:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                hint = ""
                if key in {"secret", "appsecret", "token", "refresh_token", "verify_ticket"} or (
                    key.endswith(("secret", "token")) and isinstance(t[key], str)
                ):
                    hint = f" (secrets are never written in the file: use {key}_env or {key}_file)"
                raise self.fail(
                    f"unknown key{hint}; expected one of {', '.join(sorted(allowed))}",
                    where,
                    account,
                )

    def opt_str(
        self, t: dict[str, Any], key: str, section: str, account: str | None = None
    ) -> str | None:
        value = t.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(
                f"must be a string, not {_describe(value)}", _join(section, key), account
            )
        if not value.strip():
            raise self.fail("must not be empty", _join(section, key), account)
        return value

    def req_str(self, t: dict[str, Any], key: str, section: str, account: str | None = None) -> str:
        value = self.opt_str(t, key, section, account)
        if value is None:
            raise self.fail("is required", _join(section, key), account)
        return value

    def integer(
        self,
        t: dict[str, Any],
        key: str,
        section: str,
        default: int,
        *,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"must be a whole number, not {_describe(value)}", _join(section, key))
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"{minimum} to {maximum}"
            raise self.fail(f"must be {bounds}, not {value}", _join(section, key))
        return value

    def number(
        self, t: dict[str, Any], key: str, section: str, default: float, *, minimum: float
    ) -> float:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"must be a number, not {_describe(value)}", _join(section, key))
        if not math.isfinite(value):
            raise self.fail(f"must be a finite number, not {value}", _join(section, key))
        if value < minimum:
            raise self.fail(f"must be at least {minimum}, not {value}", _join(section, key))
        return float(value)

    def secret(
        self,
        t: dict[str, Any],
        base: str,
        section: str,
        account: str | None,
        *,
        check: bool = True,
    ) -> SecretRef | None:
        env_key, file_key = f"{base}_env", f"{base}_file"
        if env_key in t and file_key in t:
            raise self.fail(
                f"give {env_key} or {file_key}, not both", _join(section, base), account
            )
        ref: SecretRef | None = None
        if env_key in t:
            ref = SecretRef("env", self.req_str(t, env_key, section, account))
            key = _join(section, env_key)
        elif file_key in t:
            path = self.req_str(t, file_key, section, account)
            if not Path(path).is_absolute():
                path = str((Path(self.file).parent / path).resolve())
            ref = SecretRef("file", path)
            key = _join(section, file_key)
        if ref is not None and check:
            try:
                if ref.kind == "env":
                    value = self.environ.get(ref.name)
                    if value is None or not value.strip():
                        raise LookupError(f"environment variable {ref.name} is not set")
                    register_secret(value.strip())
                else:
                    ref.read()
            except LookupError as exc:
                raise self.fail(str(exc), key, account) from None
        return ref


def _join(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _describe(value: Any) -> str:
    type_name = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
    return f"{type_name} ({value!r})" if isinstance(value, str | int | float) else type_name
