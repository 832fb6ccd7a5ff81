"""Access tokens from the four sources (SPEC "Configuration", REFERENCE.md "Tokens").

- ``stable_token``: the account's AppID and secret, ``POST /cgi-bin/stable_token`` (preferred:
  other programs using the same AppID keep their token).
- ``central``: a company's token service (中控) answering ``{"access_token", "expires_in"?}``.
- ``static``: a token handed in through the environment or a file, used as it is.
- ``component``: a third-party platform: verify ticket -> component_access_token ->
  authorizer_access_token through the authorizer refresh token, which WeChat may rotate; a
  rotated refresh token is saved (and committed) before the new access token is used. A stored
  refresh token WeChat refuses (61023) is looked up in the platform's authorizer list, which
  holds every authorizer's current one: a rotation whose answer was lost on the network (and not
  retried within the old token's 5 minutes) never makes the merchant authorise again.

Tokens are cached in the database through a :class:`TokenCache` (see qrsync.store.tokens) that
refreshes under a PostgreSQL lock, so N processes refreshing at once call WeChat once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from qrsync.config import (
    AccountConfig,
    ComponentConfig,
    SecretRef,
    TokenConfig,
    seed_fingerprint,
)
from qrsync.errors import AccountError, TokenError, TokenRejected
from qrsync.masking import register_secret
from qrsync.model import FetchedToken
from qrsync.wechat.client import WeChatClient

logger = logging.getLogger("qrsync.tokens")

MEMO_S = 60.0
"""How long a process reuses the token it last read without asking the shared cache again."""
CENTRAL_DEFAULT_EXPIRES_S = 900
"""A central service that does not say ``expires_in`` is asked again after 10 minutes."""
REFRESH_TOKEN_INVALID = 61023
"""api_authorizer_token's answer to a refresh token it does not (or no longer) accept."""
AUTHORIZER_LIST_PAGE = 500
"""api_get_authorizer_list answers at most 500 authorizers a call (40170 above; REFERENCE.md)."""
AUTHORIZER_LIST_MAX_PAGES = 2000
"""How many pages (a million authorizers) are read looking for one authorizer, at most."""


class TokenCache(Protocol):
    """Where tokens are shared between threads and processes (implemented in qrsync.store)."""

    def get(self, key: str) -> str | None:
        """A cached token that may still be reused, or None."""

    def at_hand(self, key: str) -> str | None:
        """A reusable token read ahead (``prime``), or None: never a database round trip."""

    def refresh(
        self, key: str, fetch: Callable[[str | None], FetchedToken], failed: str | None
    ) -> str:
        """Under a lock: return the cached token unless missing, stale or ``failed``; else call
        ``fetch(failed)``, store its token (replacing the old one) and return it."""

    def load_refresh_token(
        self, component_appid: str, authorizer_appid: str
    ) -> tuple[str, str] | None:
        """The stored authorizer refresh token and the fingerprint of the seed it came from."""

    def save_refresh_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str, seed_fingerprint: str
    ) -> None:
        """Save (and commit at once) an authorizer refresh token."""


def _read(ref: SecretRef, key: str, account: str) -> str:
    """The secret ``ref`` of the configuration key ``key`` (e.g. ``token.secret``, said with its
    ``_env`` / ``_file`` ending); a missing one fails this account's run only."""
    try:
        return ref.read()
    except LookupError as exc:
        raise TokenError(f"{key}_{ref.kind}: {exc}", account=account) from None


TICKET_LIFETIME_S = 12 * 3600
"""WeChat pushes a component_verify_ticket every 10 minutes, and each is good for 12 hours."""


def _read_ticket(ref: SecretRef, account: str) -> str:
    """The verify ticket; one in a file older than it can be valid means the callback that
    writes it has stopped, which is said at once instead of WeChat's bare 61006."""
    ticket = _read(ref, "component.verify_ticket", account)
    if ref.kind == "file":
        try:
            age = time.time() - os.stat(ref.name).st_mtime
        except OSError:
            age = 0.0
        if age > TICKET_LIFETIME_S:
            raise TokenError(
                f"the component_verify_ticket in {ref.name} was written {age / 3600:.0f} h ago "
                "and a ticket lasts 12 h: the callback that stores WeChat's pushes (every 10 "
                "minutes) has stopped; fix it, then sync again",
                account=account,
            )
    return ticket


def _expires_in(payload: dict[str, Any], endpoint: str, account: str, default: int) -> int:
    value = payload.get("expires_in", default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TokenError(f"{endpoint} answered an invalid expires_in {value!r}", account=account)
    return value


def _token_field(payload: dict[str, Any], name: str, endpoint: str, account: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise TokenError(f"{endpoint} answered without {name}", account=account)
    register_secret(value)
    return value


class CachedTokenProvider:
    """A token provider over the shared cache: get() reuses, refresh(failed) replaces.

    The token last read is also kept in memory for :data:`MEMO_S`, so that the pages of a
    listing do not each ask the database (a cached token is reusable for at least 5 more
    minutes, and a token WeChat rejects is replaced through :meth:`refresh` at once).
    """

    def __init__(self, key: str, cache: TokenCache, fetch: Callable[[str | None], FetchedToken]):
        self.key = key
        self._cache = cache
        self._fetch = fetch
        self._memo: tuple[str, float] | None = None

    def get(self) -> str:
        token = self._memorised()
        if token is not None:
            return token
        token = self._cache.get(self.key)
        if token is None:
            token = self._cache.refresh(self.key, self._fetch, None)
        return self._remember(token)

    def refresh(self, failed: str) -> str:
        self._memo = None
        return self._remember(self._cache.refresh(self.key, self._fetch, failed))

    def at_hand(self) -> str | None:
        """The token if it can be had without a round trip (in memory, or read ahead)."""
        token = self._memorised()
        if token is not None:
            return token
        token = self._cache.at_hand(self.key)
        return None if token is None else self._remember(token)

    def _memorised(self) -> str | None:
        memo = self._memo
        return memo[0] if memo is not None and time.monotonic() < memo[1] else None

    def _remember(self, token: str) -> str:
        register_secret(token)
        self._memo = (token, time.monotonic() + MEMO_S)
        return token


class StaticTokenProvider:
    """A token given by the user: used as it is; a rejection cannot be mended here."""

    def __init__(self, ref: SecretRef, account: str) -> None:
        self._ref = ref
        self._account = account

    def get(self) -> str:
        return _read(self._ref, "token.token", self._account)

    def at_hand(self) -> str | None:
        try:
            return self.get()
        except AccountError:
            return None  # (said by the account's run)

    def refresh(self, failed: str) -> str:
        token = self.get()
        if token == failed:
            raise TokenError(
                f"WeChat rejected the static token from {self._ref.describe()}; put a valid "
                'token there, or use source = "stable_token"',
                account=self._account,
            )
        return token


def cache_key(account: AccountConfig, component: ComponentConfig | None) -> str:
    """The ``tokens`` row ``account``'s token is cached under; accounts sharing an AppID (or a
    central URL) share it. A static token has a key but is never cached."""
    token = account.token
    if token.source == "central":
        return f"central:{token.url}"
    if token.source == "component":
        if component is None:
            raise TokenError(
                "token source component needs a [component] table", account=account.name
            )
        return f"authorizer:{component.appid}:{account.appid}"
    return f"{token.source}:{account.appid}"


def cached_under(account: AccountConfig, component: ComponentConfig | None) -> str | None:
    """:func:`cache_key`, or None where no token can be cached: a static token, a component
    account without its [component] table."""
    if account.token.source == "static":
        return None
    if account.token.source == "component" and component is None:
        return None
    return cache_key(account, component)


class TokenProviders:
    """Builds one token provider per (source, AppID) and shares it between accounts."""

    def __init__(
        self, client: WeChatClient, cache: TokenCache, component: ComponentConfig | None
    ) -> None:
        self.client = client
        self.cache = cache
        self.component = component
        self._providers: dict[str, CachedTokenProvider | StaticTokenProvider] = {}
        self._lock = threading.Lock()

    def prime(self, accounts: Sequence[AccountConfig]) -> None:
        """Read the reusable cached tokens of ``accounts`` in one go (a sync of many accounts)."""
        prime: Callable[[Sequence[str]], None] | None = getattr(self.cache, "prime", None)
        if prime is None:  # (a cache that reads nothing ahead)
            return
        keys = {cached_under(account, self.component) for account in accounts}
        prime(sorted(key for key in keys if key is not None))

    def for_account(self, account: AccountConfig) -> CachedTokenProvider | StaticTokenProvider:
        token = account.token
        key = self._key(account)
        with self._lock:
            provider = self._providers.get(key)
            if provider is None:
                provider = self._build(key, account, token)
                self._providers[key] = provider
            return provider

    def check_token(self, account: AccountConfig) -> tuple[str, str]:
        """A token for ``account`` had from its source with the secrets as configured now, and
        how, for ``qrsync check``: a token cached in the database would hide a wrong secret
        until it expires. Nothing others use is invalidated: stable_token without
        force_refresh gives the AppID's current token back; a central service is asked as
        usual; the platform's component token is refreshed through the shared cache (as every
        refresh is) and the authorizer's comes from the cache, whose refresh token must never
        be spent outside its lock."""
        token = account.token
        name = account.name
        if token.source == "stable_token":
            assert token.secret is not None
            secret = _read(token.secret, "token.secret", name)
            fetched = self._stable_token_call(account, secret, force=False)
            return fetched.access_token, "stable_token accepted the AppSecret"
        if token.source == "central":
            return self._central(account).access_token, f"{token.url} answered a token"
        if token.source == "static":
            assert token.token is not None
            return _read(token.token, "token.token", name), "the static token is set"
        self._key(account)  # a [component] table is needed
        cached = self.cache.get(self._component_key())
        self._component_token(name, cached)
        access = self.for_account(account).get()
        return access, "the platform's secret and verify ticket gave a component token"

    def permission_sets(self, account: AccountConfig) -> list[int]:
        """The permission sets (func_info) a component account granted the platform, from
        api_get_authorizer_info (REFERENCE.md: qrcodejumpget needs set 18 for mini-program rules
        and set 3 for service-account rules)."""
        component = self.component
        if component is None or account.token.source != "component":
            return []
        payload = self._platform_request(
            "/cgi-bin/component/api_get_authorizer_info",
            "api_get_authorizer_info",
            account.name,
            {"component_appid": component.appid, "authorizer_appid": account.appid},
        )
        info = payload.get("authorization_info")
        if isinstance(info, dict) and isinstance(info.get("authorizer_refresh_token"), str):
            # WeChat puts the authorizer's refresh token in this answer: a secret.
            register_secret(info["authorizer_refresh_token"])
        granted = info.get("func_info") if isinstance(info, dict) else None
        sets = []
        for item in granted if isinstance(granted, list) else []:
            scope = item.get("funcscope_category") if isinstance(item, dict) else None
            ident = scope.get("id") if isinstance(scope, dict) else None
            if isinstance(ident, int) and not isinstance(ident, bool):
                sets.append(ident)
        return sets

    def _key(self, account: AccountConfig) -> str:
        return cache_key(account, self.component)

    def _build(
        self, key: str, account: AccountConfig, token: TokenConfig
    ) -> CachedTokenProvider | StaticTokenProvider:
        name = account.name
        if token.source == "static":
            assert token.token is not None
            return StaticTokenProvider(token.token, name)
        if token.source == "stable_token":
            assert token.secret is not None
            secret = token.secret
            return CachedTokenProvider(
                key, self.cache, lambda failed: self._stable_token(account, secret, failed)
            )
        if token.source == "central":
            return CachedTokenProvider(key, self.cache, lambda _failed: self._central(account))
        return CachedTokenProvider(key, self.cache, lambda _failed: self._authorizer_token(account))

    # --- stable_token -------------------------------------------------------------------------

    def _stable_token(
        self, account: AccountConfig, secret_ref: SecretRef, failed: str | None
    ) -> FetchedToken:
        """Within its validity stable_token gives the same token back; if that is the one that
        just failed, ask once more with force_refresh (limited by WeChat to 20 a day)."""
        secret = _read(secret_ref, "token.secret", account.name)
        fetched = self._stable_token_call(account, secret, force=False)
        if failed is not None and fetched.access_token == failed:
            logger.warning(
                "account '%s': stable_token gave back the rejected token; forcing a refresh",
                account.name,
                extra={"action": "token_force_refresh", "account": account.name},
            )
            fetched = self._stable_token_call(account, secret, force=True)
        return fetched

    def _stable_token_call(
        self, account: AccountConfig, secret: str, *, force: bool
    ) -> FetchedToken:
        endpoint = "stable_token"
        payload = self._token_request(
            "/cgi-bin/stable_token",
            endpoint,
            account.name,
            account.appid,
            {
                "grant_type": "client_credential",
                "appid": account.appid,
                "secret": secret,
                "force_refresh": force,
            },
        )
        return FetchedToken(
            _token_field(payload, "access_token", endpoint, account.name),
            _expires_in(payload, endpoint, account.name, 7200),
        )

    # --- central ------------------------------------------------------------------------------

    def _central(self, account: AccountConfig) -> FetchedToken:
        token = account.token
        assert token.url is not None
        headers = {}
        if token.authorization is not None:
            headers["Authorization"] = _read(
                token.authorization, "token.authorization", account.name
            )
        endpoint = "central token service"
        try:
            payload = self.client.request(
                "GET",
                token.url,
                endpoint=endpoint,
                account=account.name,
                caller=None,
                headers=headers,
            )
        except AccountError as exc:
            raise _token_error(exc, account.name) from None
        return FetchedToken(
            _token_field(payload, "access_token", endpoint, account.name),
            _expires_in(payload, endpoint, account.name, CENTRAL_DEFAULT_EXPIRES_S),
        )

    # --- component (third-party platform) -----------------------------------------------------

    def _component_key(self) -> str:
        assert self.component is not None
        return f"component:{self.component.appid}"

    def _component_token(self, account: str, failed: str | None) -> str:
        key = self._component_key()
        if failed is None:
            cached = self.cache.get(key)
            if cached is not None:
                register_secret(cached)
                return cached
        token = self.cache.refresh(key, lambda _f: self._component_call(account), failed)
        register_secret(token)
        return token

    def _component_call(self, account: str) -> FetchedToken:
        component = self.component
        assert component is not None
        endpoint = "api_component_token"
        payload = self._token_request(
            "/cgi-bin/component/api_component_token",
            endpoint,
            account,
            component.appid,
            {
                "component_appid": component.appid,
                "component_appsecret": _read(component.appsecret, "component.appsecret", account),
                "component_verify_ticket": _read_ticket(component.verify_ticket, account),
            },
        )
        return FetchedToken(
            _token_field(payload, "component_access_token", endpoint, account),
            _expires_in(payload, endpoint, account, 7200),
        )

    def _authorizer_token(self, account: AccountConfig) -> FetchedToken:
        component = self.component
        assert component is not None
        refresh_token, fingerprint = self._refresh_token(account)
        endpoint = "api_authorizer_token"
        try:
            payload = self._authorizer_call(account, refresh_token)
        except TokenError as exc:
            if exc.errcode != REFRESH_TOKEN_INVALID:
                raise
            refresh_token = self._recover_refresh_token(account, refresh_token, fingerprint, exc)
            payload = self._authorizer_call(account, refresh_token)  # once: no loop
        access = _token_field(payload, "authorizer_access_token", endpoint, account.name)
        rotated = payload.get("authorizer_refresh_token")
        if isinstance(rotated, str) and rotated and rotated != refresh_token:
            register_secret(rotated)
            # Saved and committed before the new access token is used: the old refresh token
            # dies within minutes, and only the platform's authorizer list could give it back.
            self.cache.save_refresh_token(component.appid, account.appid, rotated, fingerprint)
            logger.info(
                "account '%s': authorizer refresh token rotated and saved",
                account.name,
                extra={"action": "refresh_token_rotated", "account": account.name},
            )
        return FetchedToken(access, _expires_in(payload, endpoint, account.name, 7200))

    def _refresh_token(self, account: AccountConfig) -> tuple[str, str]:
        """The authorizer refresh token to present and the fingerprint of the seed it came from:
        the stored one, or the configuration's seed on a first run or after a new seed."""
        component = self.component
        assert component is not None
        stored = self.cache.load_refresh_token(component.appid, account.appid)
        if account.token.refresh_token is None:
            # An imported account: its seed went straight into the database at import.
            if stored is None:
                raise TokenError(
                    "no authorizer refresh token stored for this account: import it with a "
                    "refresh_token (qrsync accounts import)",
                    account=account.name,
                )
            refresh_token, fingerprint = stored
        else:
            seed = _read(account.token.refresh_token, "token.refresh_token", account.name)
            fingerprint = seed_fingerprint(seed)
            if stored is None or stored[1] != fingerprint:
                # First run, or the configuration holds a new seed (authorised again).
                self.cache.save_refresh_token(component.appid, account.appid, seed, fingerprint)
                refresh_token = seed
            else:
                refresh_token = stored[0]
        register_secret(refresh_token)
        return refresh_token, fingerprint

    def _authorizer_call(self, account: AccountConfig, refresh_token: str) -> dict[str, Any]:
        component = self.component
        assert component is not None
        body = {
            "component_appid": component.appid,
            "authorizer_appid": account.appid,
            "authorizer_refresh_token": refresh_token,
        }
        return self._platform_request(
            "/cgi-bin/component/api_authorizer_token", "api_authorizer_token", account.name, body
        )

    def _platform_request(
        self, path: str, endpoint: str, account: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A call with the platform's component_access_token; a rejected one is replaced and
        the call made once more. ``account``: the name errors carry."""
        component = self.component
        assert component is not None

        def call(ct: str) -> dict[str, Any]:
            return self._token_request(
                path,
                endpoint,
                account,
                component.appid,
                body,
                params={"component_access_token": ct},
            )

        component_token = self._component_token(account, None)
        try:
            return call(component_token)
        except TokenError as exc:
            if not isinstance(exc.__cause__, TokenRejected):
                raise
            return call(self._component_token(account, component_token))

    def _recover_refresh_token(
        self, account: AccountConfig, refused: str, fingerprint: str, error: TokenError
    ) -> str:
        """WeChat refused the stored refresh token (61023): most likely it rotated it in an
        answer that was lost, and the old one's 5 minutes are over. The platform's authorizer
        list holds the current one: save it (committed at once, as a rotated one is) and return
        it. Fails as ``error`` did, saying why, when the list has no other token for the
        authorizer; fails without asking for a new authorisation when the list cannot be read."""
        component = self.component
        assert component is not None
        try:
            listed = self._listed_refresh_token(account)
        except TokenError as exc:
            failure = TokenError(
                "WeChat refused the stored authorizer refresh token (61023) and the platform's "
                f"authorizer list, which holds its current one, could not be read: "
                f"{_detail(exc)}; the next run looks it up again",
                account=account.name,
            )
            failure.errcode = exc.errcode
            raise failure from exc
        if listed is None or listed == refused:
            why = (
                "it does not list this authorizer (the authorisation was revoked)"
                if listed is None
                else "it lists the refused one"
            )
            failure = TokenError(
                f"{_detail(error)}; the platform's authorizer list no longer has a valid refresh "
                f"token for it: {why}",
                account=account.name,
            )
            failure.errcode = error.errcode
            raise failure from error
        self.cache.save_refresh_token(component.appid, account.appid, listed, fingerprint)
        logger.warning(
            "account '%s': WeChat refused the stored authorizer refresh token (61023); the "
            "platform's authorizer list had its current one, which is saved and used",
            account.name,
            extra={"action": "refresh_token_recovered", "account": account.name},
        )
        return listed

    def _listed_refresh_token(self, account: AccountConfig) -> str | None:
        """The authorizer's current refresh token from api_get_authorizer_list, paged by 500
        until it is found or ``total_count`` is reached; None when it is not listed."""
        component = self.component
        assert component is not None
        endpoint = "api_get_authorizer_list"
        offset = 0
        for _ in range(AUTHORIZER_LIST_MAX_PAGES):
            payload = self._platform_request(
                "/cgi-bin/component/api_get_authorizer_list",
                endpoint,
                account.name,
                {
                    "component_appid": component.appid,
                    "offset": offset,
                    "count": AUTHORIZER_LIST_PAGE,
                },
            )
            total = payload.get("total_count")
            entries = payload.get("list")
            if (
                isinstance(total, bool)
                or not isinstance(total, int)
                or not isinstance(entries, list)
            ):
                raise TokenError(
                    f"{endpoint} answered without a numeric total_count and a list",
                    account=account.name,
                )
            for entry in entries:
                if isinstance(entry, dict) and entry.get("authorizer_appid") == account.appid:
                    value = entry.get("refresh_token")
                    if not isinstance(value, str) or not value:
                        raise TokenError(
                            f"{endpoint} listed {account.appid} without a refresh_token",
                            account=account.name,
                        )
                    register_secret(value)
                    return value
            offset += len(entries)
            if not entries or offset >= total:
                return None
        raise TokenError(
            f"{endpoint} did not end after {AUTHORIZER_LIST_MAX_PAGES} pages",
            account=account.name,
        )

    # --- discovery (qrsync accounts discover) -------------------------------------------------

    def authorizer_list_page(self, offset: int, label: str) -> tuple[int, list[dict[str, Any]]]:
        """One page of api_get_authorizer_list (at most 500 a call, REFERENCE.md): its
        ``total_count`` and its entries; every refresh token in it is registered as a secret.
        ``label``: what errors name (the platform)."""
        component = self.component
        assert component is not None
        endpoint = "api_get_authorizer_list"
        payload = self._platform_request(
            "/cgi-bin/component/api_get_authorizer_list",
            endpoint,
            label,
            {"component_appid": component.appid, "offset": offset, "count": AUTHORIZER_LIST_PAGE},
        )
        total = payload.get("total_count")
        entries = payload.get("list")
        if isinstance(total, bool) or not isinstance(total, int) or not isinstance(entries, list):
            raise TokenError(
                f"{endpoint} answered without a numeric total_count and a list", account=label
            )
        for entry in entries:
            value = entry.get("refresh_token") if isinstance(entry, dict) else None
            if isinstance(value, str) and value:
                register_secret(value)
        return total, [entry for entry in entries if isinstance(entry, dict)]

    def authorizer_info(self, authorizer_appid: str, label: str) -> dict[str, Any]:
        """api_get_authorizer_info's whole answer for one authorizer (REFERENCE.md); the
        refresh token it carries is registered as a secret."""
        component = self.component
        assert component is not None
        payload = self._platform_request(
            "/cgi-bin/component/api_get_authorizer_info",
            "api_get_authorizer_info",
            label,
            {"component_appid": component.appid, "authorizer_appid": authorizer_appid},
        )
        info = payload.get("authorization_info")
        if isinstance(info, dict) and isinstance(info.get("authorizer_refresh_token"), str):
            register_secret(info["authorizer_refresh_token"])
        return payload

    def linked_miniprograms(self, account: AccountConfig) -> list[dict[str, Any]]:
        """The mini programs linked to a service account, from ``/cgi-bin/wxopen/wxamplinkget``
        with its (authorizer) access token (REFERENCE.md); a rejected token is replaced once."""
        provider = self.for_account(account)
        endpoint = "wxamplinkget"

        def call(token: str) -> dict[str, Any]:
            return self.client.request(
                "POST",
                "/cgi-bin/wxopen/wxamplinkget",
                endpoint=endpoint,
                account=account.name,
                caller=account.appid,
                params={"access_token": token},
                body={},
            )

        token = provider.get()
        try:
            payload = call(token)
        except TokenRejected:
            payload = call(provider.refresh(token))
        wxopens = payload.get("wxopens")
        items = wxopens.get("items") if isinstance(wxopens, dict) else None
        if not isinstance(items, list):
            raise TokenError(f"{endpoint} answered without wxopens.items", account=account.name)
        return [item for item in items if isinstance(item, dict)]

    # --- shared -------------------------------------------------------------------------------

    def _token_request(
        self,
        path: str,
        endpoint: str,
        account: str,
        caller: str,
        body: dict[str, Any],
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            return self.client.request(
                "POST",
                path,
                endpoint=endpoint,
                account=account,
                caller=caller,
                params=params,
                body=body,
            )
        except AccountError as exc:
            raise _token_error(exc, account) from exc


def _token_error(exc: AccountError, account: str) -> TokenError:
    """A failure of a token endpoint as a TokenError that keeps WeChat's errcode."""
    error = TokenError(_detail(exc), account=account)
    error.errcode = exc.errcode
    return error


def _detail(exc: AccountError) -> str:
    """The message of an account error without its "account 'x': " prefix (re-prefixed later)."""
    text = str(exc)
    if exc.account and text.startswith(f"account '{exc.account}': "):
        return text[len(f"account '{exc.account}': ") :]
    return text
