"""`qrsync accounts discover`: a third-party platform's authorizers become accounts by themselves.

The platform's authorizer list (``api_get_authorizer_list``, 500 a call, REFERENCE.md "A
third-party platform's authorizers") is read to its end. An authorizer that is new, whose
``auth_time`` changed (it authorised again), that came back, or that was not synced last time is
looked at with ``api_get_authorizer_info``:

- a mini program (``MiniProgramInfo`` present) with permission set 18 becomes one account,
  ``mp-<appid>``;
- a verified service account (``service_type_info.id`` 2, ``verify_type_info.id`` not -1) with
  permission set 3 becomes one account per mini program ``/cgi-bin/wxopen/wxamplinkget`` lists
  as linked (status 1), ``oa-<appid>-<mini program appid>``;
- anything else (a subscription account, an unverified service account, a personal mini
  program, a permission set missing, no linked mini program, an errcode on the way) is
  recorded with its reason, never synced, and looked at again at the next discovery.

An authorizer synced last time whose ``auth_time`` did not change keeps its accounts without a
call. Accounts of authorizers gone from the list, or no longer syncable, are disabled (history
kept), and enabled again when they come back. An AppID pair the configuration file or the
latest import already has is not made a second account. A discovery that would disable more
than ``sync.max_delete_fraction`` of the enabled discovered accounts (or all) is refused until
confirmed, as an import is: a truncated list must not switch a platform off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from qrsync.config import AccountConfig, ComponentConfig, Config, TokenConfig, seed_fingerprint
from qrsync.errors import AccountError, QrsyncError, UsageError
from qrsync.imports import describe_changes
from qrsync.masking import mask, one_line, register_secret
from qrsync.model import FetchedToken
from qrsync.store import discoveries
from qrsync.store.accounts import (
    AuthorizerRecord,
    AuthorizerSeen,
    DefinedAccount,
    accounts_defined_elsewhere,
    discovered_accounts,
    discovered_authorizers,
    write_discovery,
)
from qrsync.store.discoveries import DiscoveryCounts
from qrsync.store.encryption import sealer_for
from qrsync.store.engine import Engine
from qrsync.store.tokens import PgTokenCache
from qrsync.wechat.client import WeChatClient
from qrsync.wechat.tokens import AUTHORIZER_LIST_MAX_PAGES, TokenCache, TokenProviders

logger = logging.getLogger("qrsync.discovery")

REQUIRED_SET = {"miniprogram": 18, "service_account": 3}
"""The permission set qrcodejumpget needs, by account kind (REFERENCE.md; else 61007)."""
SERVICE_ACCOUNT = 2
"""``service_type_info.id`` of a service account (0 and 1: subscription accounts)."""
UNVERIFIED = -1
PERSONAL_PRINCIPAL = "个人"
"""``principal_name`` of a personal mini program, which WeChat answers 85075 (REFERENCE.md)."""
LINKED = 1
"""wxamplinkget's ``status`` of a mini program whose link is in force."""
PLATFORM_ERRCODES = frozenset({40170, 61004, 61006})
"""Errcodes about the platform, not one authorizer: the discovery stops at the first."""
HINTS: dict[int, str] = {
    61003: "it has not authorised the platform (or withdrew); it is looked at again next time",
    61004: "the caller's IP is not on the platform's allow-list (open platform settings); "
    "add this machine's address",
    61006: "the component_verify_ticket is invalid or stale; check the platform's callback",
    61007: "the platform lacks the permission set this API needs; ask the authorizer's "
    "administrator to authorise it again with every set the platform asks for",
    40170: "api_get_authorizer_list was asked for more than 500 authorizers a call",
    48001: "this API is not open to this account (e.g. an unverified service account)",
}


def account_name(kind: str, appid: str, miniprogram_appid: str | None) -> str:
    """The stable name of a discovered account: ``mp-<appid>`` for a mini program,
    ``oa-<appid>-<mini program appid>`` for a service account's rules of one linked mini
    program (documented in docs/accounts-discovery.md; never change it: history hangs on it)."""
    if kind == "miniprogram":
        return f"mp-{appid}"
    return f"oa-{appid}-{miniprogram_appid}"


@dataclass(frozen=True)
class Listed:
    """One entry of the platform's authorizer list."""

    appid: str
    refresh_token: str
    auth_time: int | None


@dataclass(frozen=True)
class Finding:
    """What one discovery concluded about one listed authorizer."""

    appid: str
    kind: str | None
    nick_name: str | None
    auth_time: int | None
    accounts: tuple[AccountConfig, ...] = ()
    reason: str | None = None
    errcode: int | None = None
    looked_at: bool = True
    """False: synced before and unchanged, so not asked about again."""

    @property
    def failed(self) -> bool:
        """An errcode or a bad answer stopped the look: its accounts are left as they are."""
        return self.errcode is not None or (self.reason is not None and self.kind is None)

    def seen(self) -> AuthorizerSeen:
        return AuthorizerSeen(
            appid=self.appid,
            kind=self.kind,
            nick_name=self.nick_name,
            auth_time=self.auth_time,
            synced=self.reason is None,
            reason=self.reason,
            errcode=self.errcode,
        )


@dataclass(frozen=True)
class DiscoveryPlan:
    """What a discovery would change, compared with the discovered accounts in the database."""

    listed: int
    findings: tuple[Finding, ...]
    accounts: tuple[AccountConfig, ...]
    """The accounts discovery keeps enabled (after the file's and the import's are left out)."""
    added: tuple[str, ...]
    enabled_again: tuple[str, ...]
    updated: tuple[str, ...]
    disabled: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped: tuple[str, ...]
    """One line per account left out because the file or the import already has it."""
    enabled_before: int
    refresh_tokens: dict[str, str] = field(repr=False)

    def mass_disable(self, max_fraction: float) -> bool:
        """Would disable all the enabled discovered accounts, or more than ``max_fraction``."""
        n = len(self.disabled)
        return n > 0 and (n == self.enabled_before or n > max_fraction * self.enabled_before)

    @property
    def not_synced(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.reason is not None)

    @property
    def failed(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.failed)


class DiscoveryCache:
    """The token cache discovery uses: the shared one, except that an authorizer's refresh
    token is the one the list gave when the stored one came from another (or none). A dry run
    keeps the access tokens it fetches in memory; a refresh token WeChat rotates while
    discovery looks is saved even then, since the old one dies within minutes."""

    def __init__(self, shared: TokenCache, component_appid: str, *, dry_run: bool) -> None:
        self._shared = shared
        self._component_appid = component_appid
        self._dry_run = dry_run
        self._listed: dict[str, str] = {}
        self._fetched: dict[str, str] = {}

    def offer(self, appid: str, refresh_token: str) -> None:
        self._listed[appid] = refresh_token

    def get(self, key: str) -> str | None:
        return self._fetched.get(key) or self._shared.get(key)

    def at_hand(self, key: str) -> str | None:
        return self._fetched.get(key) or self._shared.at_hand(key)

    def refresh(
        self, key: str, fetch: Callable[[str | None], FetchedToken], failed: str | None
    ) -> str:
        if not self._dry_run:
            return self._shared.refresh(key, fetch, failed)
        cached = self.get(key)
        if cached is not None and cached != failed:
            return cached
        token = fetch(failed).access_token
        self._fetched[key] = token
        return token

    def load_refresh_token(
        self, component_appid: str, authorizer_appid: str
    ) -> tuple[str, str] | None:
        stored = self._shared.load_refresh_token(component_appid, authorizer_appid)
        listed = self._listed.get(authorizer_appid)
        if listed is None or component_appid != self._component_appid:
            return stored
        fingerprint = seed_fingerprint(listed)
        if stored is not None and stored[1] == fingerprint:
            return stored  # the same listed token seeded it: the stored one may be newer
        return listed, fingerprint

    def save_refresh_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str, seed_fingerprint: str
    ) -> None:
        self._shared.save_refresh_token(
            component_appid, authorizer_appid, refresh_token, seed_fingerprint
        )


def read_authorizer_list(tokens: TokenProviders, label: str) -> list[Listed]:
    """Every authorizer of the platform, paged by 500 to ``total_count`` (bounded)."""
    found: dict[str, Listed] = {}
    offset = 0
    for _ in range(AUTHORIZER_LIST_MAX_PAGES):
        total, entries = tokens.authorizer_list_page(offset, label)
        for entry in entries:
            appid = entry.get("authorizer_appid")
            refresh = entry.get("refresh_token")
            if not isinstance(appid, str) or not appid:
                continue
            if not isinstance(refresh, str) or not refresh:
                raise AccountError(
                    f"api_get_authorizer_list listed {appid} without a refresh_token; nothing "
                    "written"
                )
            register_secret(refresh)
            auth_time = entry.get("auth_time")
            found[appid] = Listed(
                appid,
                refresh,
                auth_time
                if isinstance(auth_time, int) and not isinstance(auth_time, bool)
                else None,
            )
        offset += len(entries)
        if not entries or offset >= total:
            return list(found.values())
    raise AccountError(
        f"api_get_authorizer_list did not end after {AUTHORIZER_LIST_MAX_PAGES} pages; nothing "
        "written"
    )


def _errcode_text(exc: AccountError) -> str:
    """What an errcode met on the way says, with discovery's hint (without the authorizer)."""
    errcode = exc.errcode
    if errcode is None:
        return _without_account(exc)
    endpoint = getattr(exc, "endpoint", None) or getattr(exc.__cause__, "endpoint", "WeChat")
    rid = getattr(exc, "rid", None) or getattr(exc.__cause__, "rid", None)
    hint = HINTS.get(errcode)
    text = f"WeChat answered {errcode} to {endpoint}"
    text += f" ({hint})" if hint else f" ({_without_account(exc)})"
    if rid:
        text += f" rid: {rid}"
    return text


def _without_account(exc: AccountError) -> str:
    text = str(exc)
    if exc.account and text.startswith(f"account '{exc.account}': "):
        return text[len(f"account '{exc.account}': ") :]
    return text


def _ids(items: object, key: str) -> list[int]:
    found = []
    for item in items if isinstance(items, list) else []:
        scope = item.get(key) if isinstance(item, dict) else None
        ident = scope.get("id") if isinstance(scope, dict) else None
        if isinstance(ident, int) and not isinstance(ident, bool):
            found.append(ident)
    return found


def _type_id(info: dict[str, Any], key: str) -> int | None:
    value = info.get(key)
    ident = value.get("id") if isinstance(value, dict) else None
    return ident if isinstance(ident, int) and not isinstance(ident, bool) else None


def _token_of(tokens: TokenProviders, appid: str) -> TokenConfig:
    """A discovered account's token: the platform's refresh token (component), or the
    platform's own token service (central) when ``[component] authorizer_tokens`` says so."""
    component = tokens.component
    return TokenConfig(source="component") if component is None else (
        component.authorizer_token(appid)
    )  # fmt: skip


def _account(
    tokens: TokenProviders, kind: str, appid: str, miniprogram_appid: str | None
) -> AccountConfig:
    return AccountConfig(
        name=account_name(kind, appid, miniprogram_appid),
        kind=kind,  # type: ignore[arg-type]
        appid=appid,
        token=_token_of(tokens, appid),
        miniprogram_appid=miniprogram_appid,
    )


def look_at(tokens: TokenProviders, listed: Listed) -> Finding:
    """Ask WeChat what one authorizer is, and which accounts it gives (or why none). Raises
    :class:`AccountError` only for an errcode about the whole platform."""
    appid = listed.appid
    label = f"authorizer {appid}"
    try:
        payload = tokens.authorizer_info(appid, label)
    except AccountError as exc:
        return _failure(listed, exc)
    info = payload.get("authorizer_info")
    granted = payload.get("authorization_info")
    if not isinstance(info, dict) or not isinstance(granted, dict):
        return Finding(
            appid,
            None,
            None,
            listed.auth_time,
            reason="api_get_authorizer_info answered without authorizer_info and "
            "authorization_info",
        )
    nick = info.get("nick_name") if isinstance(info.get("nick_name"), str) else None
    sets = _ids(granted.get("func_info"), "funcscope_category")

    def skip(kind: str, reason: str) -> Finding:
        return Finding(appid, kind, nick, listed.auth_time, reason=reason)

    if "MiniProgramInfo" in info:
        if info.get("principal_name") == PERSONAL_PRINCIPAL:
            return skip(
                "miniprogram",
                f"a personal mini program (principal {PERSONAL_PRINCIPAL}): WeChat answers "
                "85075 to its rule calls; QR-code jump rules are for mini programs of a "
                "company or organisation",
            )
        if REQUIRED_SET["miniprogram"] not in sets:
            return skip(
                "miniprogram",
                "permission set 18 (mini-program QR-code jump rules) not granted to the "
                "platform; ask its administrator to authorise it again with set 18",
            )
        return Finding(
            appid,
            "miniprogram",
            nick,
            listed.auth_time,
            (_account(tokens, "miniprogram", appid, None),),
        )
    service_type = _type_id(info, "service_type_info")
    if service_type != SERVICE_ACCOUNT:
        return skip(
            "subscription_account",
            f"a subscription account (service_type_info {service_type}): QR-code jump rules "
            "belong to service accounts and mini programs",
        )
    if _type_id(info, "verify_type_info") == UNVERIFIED:
        return skip(
            "service_account",
            "an unverified service account (verify_type_info -1): WeChat answers 48001 to its "
            "rule calls until it is verified",
        )
    if REQUIRED_SET["service_account"] not in sets:
        return skip(
            "service_account",
            "permission set 3 (service-account QR-code jump rules) not granted to the "
            "platform; ask its administrator to authorise it again with set 3",
        )
    # Its authorizer token, under the name errors should carry (no account has it yet).
    probe = AccountConfig(
        name=label, kind="service_account", appid=appid, token=_token_of(tokens, appid)
    )
    try:
        items = tokens.linked_miniprograms(probe)
    except AccountError as exc:
        failure = _failure(listed, exc)
        return Finding(
            appid, "service_account", nick, listed.auth_time, reason=failure.reason,
            errcode=failure.errcode,
        )  # fmt: skip
    linked = sorted(
        {
            item["appid"]
            for item in items
            if isinstance(item.get("appid"), str)
            and item["appid"]
            and item.get("status", LINKED) == LINKED
        }
    )
    if not linked:
        return skip(
            "service_account",
            "links no mini program (wxamplinkget): its rules are per linked mini program; "
            "link one, and the next discovery finds it",
        )
    return Finding(
        appid,
        "service_account",
        nick,
        listed.auth_time,
        tuple(_account(tokens, "service_account", appid, mp) for mp in linked),
    )


def _failure(listed: Listed, exc: AccountError) -> Finding:
    if exc.errcode in PLATFORM_ERRCODES:
        raise AccountError(f"authorizer {listed.appid}: {_errcode_text(exc)}; discovery "
                           "stopped, nothing written") from exc  # fmt: skip
    return Finding(
        listed.appid, None, None, listed.auth_time, reason=_errcode_text(exc),
        errcode=exc.errcode if exc.errcode is not None else -1,
    )  # fmt: skip


def discover(
    tokens: TokenProviders,
    component: ComponentConfig,
    remembered: Sequence[AuthorizerRecord],
    current: Sequence[AccountConfig],
    elsewhere: Sequence[DefinedAccount],
    cache: DiscoveryCache,
    notify: Callable[[str], None],
    workers: int = 1,
) -> DiscoveryPlan:
    """Read the platform's list, look at what changed (``workers`` authorizers at a time), and
    plan the accounts (nothing written). ``remembered``: what the last discovery saw;
    ``current``: the discovered accounts in the database; ``elsewhere``: the file's and the
    import's accounts."""
    label = f"platform {component.appid}"
    try:
        listed = read_authorizer_list(tokens, label)
    except AccountError as exc:
        if exc.errcode is not None:
            raise AccountError(
                f"platform {component.appid}: {_errcode_text(exc)}; nothing written"
            ) from exc
        raise
    before = {r.authorizer_appid: r for r in remembered}
    by_appid: dict[str, list[AccountConfig]] = {}
    for account in current:
        by_appid.setdefault(account.appid, []).append(account)
    findings: list[Finding | None] = []
    to_look: list[tuple[int, Listed]] = []
    for entry in listed:
        cache.offer(entry.appid, entry.refresh_token)
        seen = before.get(entry.appid)
        kept = tuple(a for a in by_appid.get(entry.appid, []) if a.enabled)
        if (
            seen is not None
            and seen.listed
            and seen.synced
            and seen.auth_time == entry.auth_time
            and kept
        ):
            findings.append(
                Finding(entry.appid, seen.kind, seen.nick_name, entry.auth_time, kept,
                        looked_at=False)
            )  # fmt: skip
            continue
        to_look.append((len(findings), entry))
        findings.append(None)
    # Authorizers are looked at ``workers`` at a time (each look is one to three calls, none of
    # them held to a per-second limit); a platform errcode stops the rest.
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="qrsync-look") as pool:
        futures = [(index, pool.submit(look_at, tokens, entry)) for index, entry in to_look]
        try:
            for index, future in futures:
                finding = future.result()
                if finding.failed:
                    notify(f"authorizer {finding.appid}: {finding.reason}")
                findings[index] = finding
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    looked = [finding for finding in findings if finding is not None]
    assert len(looked) == len(listed)
    return _plan(listed, looked, current, elsewhere)


def _plan(
    listed: Sequence[Listed],
    findings: Sequence[Finding],
    current: Sequence[AccountConfig],
    elsewhere: Sequence[DefinedAccount],
) -> DiscoveryPlan:
    pairs = {(d.appid, d.miniprogram_appid): d for d in elsewhere}
    names = {d.name: d for d in elsewhere}
    where = {"config": "the configuration file", "import": "an import"}
    wanted: dict[str, AccountConfig] = {}
    skipped: list[str] = []
    for finding in findings:
        for account in finding.accounts:
            other = pairs.get((account.appid, account.miniprogram_appid)) or names.get(account.name)
            if other is not None:
                pair = account.appid + (
                    f"/{account.miniprogram_appid}" if account.miniprogram_appid else ""
                )
                owner = f"account '{other.name}' of {where.get(other.source, other.source)}"
                skipped.append(f"{account.name}: skipped: {pair} is already {owner}")
                continue
            wanted[account.name] = account
    failed = {f.appid for f in findings if f.failed}
    held = {a.name for a in current if a.appid in failed}  # left as they are
    now = {a.name: a for a in current}
    added, again, updated, unchanged = [], [], [], []
    for name, account in wanted.items():
        existing = now.get(name)
        if existing is None:
            added.append(name)
        elif not existing.enabled:
            again.append(name)
        elif (existing.kind, existing.appid, existing.miniprogram_appid) != (
            account.kind,
            account.appid,
            account.miniprogram_appid,
        ):
            updated.append(name)
        else:
            unchanged.append(name)
    disabled = [
        a.name for a in current if a.enabled and a.name not in wanted and a.name not in held
    ]
    synced_appids = {f.appid for f in findings if f.reason is None}
    return DiscoveryPlan(
        listed=len(listed),
        findings=tuple(findings),
        accounts=tuple(wanted.values()),
        added=tuple(added),
        enabled_again=tuple(again),
        updated=tuple(updated),
        disabled=tuple(disabled),
        unchanged=tuple(unchanged),
        skipped=tuple(skipped),
        enabled_before=sum(a.enabled for a in current),
        refresh_tokens={e.appid: e.refresh_token for e in listed if e.appid in synced_appids},
    )


def mass_disable_refusal(plan: DiscoveryPlan, max_fraction: float) -> UsageError:
    """The one line that refuses a discovery disabling too many accounts."""
    return UsageError(
        f"this discovery would disable {len(plan.disabled)} of the {plan.enabled_before} "
        f"enabled discovered accounts (more than sync.max_delete_fraction = {max_fraction:g}, "
        f"or all of them; the platform listed {plan.listed} authorizers); nothing written. "
        "Check the platform (--dry-run lists the changes), then rerun with --allow-mass-disable "
        "to apply it"
    )


def describe_plan(plan: DiscoveryPlan) -> list[str]:
    """Lines for people: each kind of change with its count and (up to a limit) names, then
    the authorizers not synced with their reason."""
    lines = describe_changes(
        (
            ("add", plan.added),
            ("enable again", plan.enabled_again),
            ("update", plan.updated),
            ("disable", plan.disabled),
            ("unchanged", plan.unchanged),
        )
    )
    lines += [f"  {line}" for line in plan.skipped]
    for finding in plan.not_synced:
        lines.append(f"  not synced: {finding.appid}: {finding.reason}")
    return lines


def plan_document(plan: DiscoveryPlan, dry_run: bool, max_fraction: float) -> dict[str, Any]:
    """The plan as JSON (never a refresh token)."""
    return {
        "dry_run": dry_run,
        "authorizers": plan.listed,
        "looked_at": sum(f.looked_at for f in plan.findings),
        "added": list(plan.added),
        "enabled_again": list(plan.enabled_again),
        "updated": list(plan.updated),
        "disabled": list(plan.disabled),
        "unchanged": list(plan.unchanged),
        "skipped": list(plan.skipped),
        "not_synced": [
            {"authorizer_appid": f.appid, "kind": f.kind, "reason": f.reason, "errcode": f.errcode}
            for f in plan.not_synced
        ],
        "needs_allow_mass_disable": plan.mass_disable(max_fraction),
    }


# --- one discovery, end to end -------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveryOutcome:
    """A discovery done (or, dry, planned): the plan, its JSON document (with ``written`` when
    applied), and the ``discovery_runs`` row it was recorded in (None for a dry run)."""

    plan: DiscoveryPlan
    document: dict[str, Any]
    applied: bool
    run_id: int | None

    @property
    def headline(self) -> str:
        plan = self.plan
        return (
            f"{plan.listed} authorizers, {self.document['looked_at']} looked at, "
            f"{len(plan.accounts)} accounts to sync"
        )


def platform_of(config: Config) -> ComponentConfig:
    """The configuration's [component], which discovery needs (else a one-line UsageError)."""
    if config.component is None:
        raise UsageError(
            f"{config.path}: discovery needs a [component] table (the platform's appid, "
            "appsecret_env and verify_ticket_env or _file)"
        )
    return config.component


def run_discovery(
    config: Config,
    engine: Engine,
    *,
    dry_run: bool = False,
    allow_mass_disable: bool = False,
    notify: Callable[[str], None] = lambda _line: None,
    trigger: str = "cli",
    replica: str | None = None,
    claimed_run: int | None = None,
    workers: int | None = None,
) -> DiscoveryOutcome:
    """Discover the platform's authorizers and apply the plan (unless ``dry_run``), recorded in
    a ``discovery_runs`` row: ``claimed_run`` (a daemon's slot) or one opened here. A
    discovery that fails, or would disable too many accounts without ``allow_mass_disable``,
    changes no account: its row says why, and the error is raised. ``workers``: authorizers
    looked at a time (default ``sync.concurrency``)."""
    component = platform_of(config)
    run_id = claimed_run
    if run_id is None and not dry_run:
        run_id = discoveries.start(engine, component.appid, trigger, replica)
    plan: DiscoveryPlan | None = None
    try:
        plan = _plan_discovery(
            config,
            engine,
            component,
            dry_run=dry_run,
            notify=notify,
            workers=workers or config.sync.concurrency,
        )
        fraction = config.sync.max_delete_fraction
        document = plan_document(plan, dry_run, fraction)
        if dry_run:
            return DiscoveryOutcome(plan, document, applied=False, run_id=None)
        if plan.mass_disable(fraction) and not allow_mass_disable:
            raise mass_disable_refusal(plan, fraction)
        central = component.authorizer_tokens == "central"
        result = write_discovery(
            engine,
            component.appid,
            plan.accounts,
            plan.disabled,
            [f.seen() for f in plan.findings],
            {} if central else plan.refresh_tokens,  # central: never qrsync's to refresh
            sealer_for(config),
            token_source=component.authorizer_tokens,
        )
    except BaseException as exc:
        if run_id is not None:
            _close_failed(engine, run_id, plan, exc)
        raise
    assert run_id is not None
    looked_failed = plan.failed
    error = None
    if looked_failed:
        first = looked_failed[0]
        error = one_line(
            mask(
                f"{len(looked_failed)} authorizer(s) could not be looked at (their accounts "
                f"left as they were), first {first.appid}: {first.reason}"
            )
        )
    discoveries.finish(engine, run_id, "succeeded", _counts(plan), None, error)
    logger.info(
        "discovery of platform %s: %d authorizers, %d added, %d enabled again, %d disabled, "
        "%d not synced",
        component.appid,
        plan.listed,
        len(plan.added),
        len(plan.enabled_again),
        len(plan.disabled),
        len(plan.not_synced),
        extra={"action": "discovery_finished", "discovery_id": run_id, "replica": replica},
    )
    return DiscoveryOutcome(
        plan, {**document, "written": list(result.written)}, applied=True, run_id=run_id
    )


def _plan_discovery(
    config: Config,
    engine: Engine,
    component: ComponentConfig,
    *,
    dry_run: bool,
    notify: Callable[[str], None],
    workers: int,
) -> DiscoveryPlan:
    sealer = sealer_for(config)
    cache = DiscoveryCache(PgTokenCache(engine, sealer), component.appid, dry_run=dry_run)
    client = WeChatClient(config.api, pool_size=workers + 1)
    try:
        return discover(
            TokenProviders(client, cache, component),
            component,
            discovered_authorizers(engine, component.appid),
            discovered_accounts(engine),
            accounts_defined_elsewhere(engine),
            cache,
            notify,
            workers,
        )
    finally:
        client.close()


def _counts(plan: DiscoveryPlan | None) -> DiscoveryCounts:
    if plan is None:
        return DiscoveryCounts()
    return DiscoveryCounts(
        authorizers=plan.listed,
        added=len(plan.added),
        enabled=len(plan.enabled_again),
        disabled=len(plan.disabled),
        unsyncable=len(plan.not_synced),
    )


def _close_failed(
    engine: Engine, run_id: int, plan: DiscoveryPlan | None, exc: BaseException
) -> None:
    """Record a failed discovery (its errcode, its error masked on one line); a database that
    cannot take it leaves the row 'running', which the next discovery's row supersedes."""
    errcode = getattr(exc, "errcode", None) or getattr(exc.__cause__, "errcode", None)
    text = str(exc) if isinstance(exc, QrsyncError) else f"{type(exc).__name__}: {exc}"
    try:
        discoveries.finish(
            engine,
            run_id,
            "failed",
            DiscoveryCounts(authorizers=plan.listed) if plan is not None else DiscoveryCounts(),
            errcode if isinstance(errcode, int) else None,
            one_line(mask(text)) or type(exc).__name__,
        )
    except Exception as failure:  # the database went away too: say so, keep the first error
        logger.error(
            "cannot record the failed discovery %d: %s",
            run_id,
            one_line(mask(str(failure))),
            extra={"action": "discovery_record_failed", "discovery_id": run_id},
        )
