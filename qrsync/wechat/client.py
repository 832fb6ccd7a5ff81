"""The one HTTP edge to WeChat: pooled connections, per-account rate limit, retries, errcodes.

Only this module and its transport (:mod:`qrsync.wechat.transport`) see libcurl's errors;
they leave as :mod:`qrsync.errors` types with every token and secret masked. Retry policy (SPEC
behaviour 5): -1, 886001, HTTP 5xx, timeouts and resets are retried with exponential backoff and
jitter up to ``api.max_retries``; 44990 is backed off for at least the 1-second window and
retried; token errors are left to the caller, which fetches a fresh token and retries once
(:meth:`ApiCaller.call`).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from qrsync.config import ApiConfig
from qrsync.errors import (
    AccountError,
    MalformedResponse,
    RateLimited,
    TokenRejected,
    TransportError,
)
from qrsync.wechat.errcodes import api_error
from qrsync.wechat.transport import Answer, Exchanges, Transport, snippet

if TYPE_CHECKING:
    from pyrate_limiter import Limiter

logger = logging.getLogger("qrsync.wechat")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
"""The range of WeChat's errcodes and counts, and of the integer columns that keep them."""

Observer = Callable[[str, int | None], None]
"""Told of every HTTP attempt: (endpoint, errcode or None for a transport failure)."""

USER_AGENT = "qrsync (+https://github.com/qrsync/qrsync)"
RATE_LIMIT_WINDOW_S = 1.0
WINDOW_MARGIN = 1.1
"""The client's window is 10 % longer than WeChat's second: 100 ms for network jitter."""
MIN_PACING_MS = 2


@dataclass(frozen=True)
class EndpointLimit:
    """A token or platform endpoint's own documented limit: ``calls`` per ``period_s`` per
    AppID, or none at all (``calls`` 0)."""

    calls: int
    period_s: float


NO_RATE_LIMIT = EndpointLimit(0, 0.0)
ENDPOINT_LIMITS: dict[str, EndpointLimit] = {
    # REFERENCE.md "Tokens" and WeChat's page of the endpoint (developers.weixin.qq.com/doc/
    # offiaccount/Basic_Information/getStableAccessToken.html): 10,000 calls a minute.
    "stable_token": EndpointLimit(10_000, 60.0),
    # The third-party platform's pages (developers.weixin.qq.com/doc/oplatform/openApi/
    # OpenApiDoc/ticket-token/getComponentAccessToken.html, .../getAuthorizerAccessToken.html,
    # .../authorization-management/getAuthorizerList.html and getAuthorizerInfo.html) document
    # no per-second or per-minute limit, only a daily quota shown in the platform's console
    # ("cache the token: avoid reaching the daily limit"); the 5 requests a second of the
    # rule endpoints is not theirs. Only sync.concurrency bounds them.
    "api_component_token": NO_RATE_LIMIT,
    "api_authorizer_token": NO_RATE_LIMIT,
    "api_get_authorizer_list": NO_RATE_LIMIT,
    "api_get_authorizer_info": NO_RATE_LIMIT,
}
"""Endpoints not held to ``api.requests_per_second`` (the rule endpoints' 5 a second per
account, REFERENCE.md "Rate limit"), each with the limit its own documentation gives."""


def _limiter_of(calls: int, period_s: float) -> Limiter:
    """At most ``calls`` in any window of ``period_s`` (plus the 10 % margin for jitter) for
    each caller AppID (the name it acquires with). One limiter serves every caller: a limiter
    per AppID would start a leak thread for each, thousands for a platform's fleet. Its buckets
    are not leaked by pyrate-limiter's thread either, which visits every bucket every few
    milliseconds (10 µs a second per AppID that was ever called, a tenth of a core for 10,000),
    but each as it is used: a bucket holds at most ``calls`` items anyway."""
    # Imported here: a process whose rate limits are all off never needs it.
    from pyrate_limiter import BucketFactory, InMemoryBucket, Limiter, Rate, RateItem

    rates = [Rate(calls, math.ceil(1000 * WINDOW_MARGIN * period_s))]

    class PerCaller(BucketFactory):
        def __init__(self) -> None:
            self._clock = InMemoryBucket(rates)  # (its clock only; never leaked)
            self._buckets: dict[str, InMemoryBucket] = {}
            self._lock = threading.Lock()

        def wrap_item(self, name: str, weight: int = 1) -> RateItem:
            now: int = self._clock.now()  # type: ignore[no-untyped-call]
            return RateItem(name, now, weight=weight)

        def get(self, item: RateItem) -> InMemoryBucket:
            bucket = self._buckets.get(item.name)
            if bucket is None:
                with self._lock:
                    bucket = self._buckets.get(item.name)
                    if bucket is None:
                        bucket = self._buckets[item.name] = InMemoryBucket(rates)
            bucket.leak(item.timestamp)  # (what fell out of the window: at most ``calls``)
            return bucket

    return Limiter(PerCaller(), buffer_ms=0)


def _retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


class WeChatClient:
    """Sends requests to the WeChat API (or a simulator at ``api.base_url``) for every account.

    One instance per process: it owns the connection pool and the per-caller rate limiters, so
    that threads syncing accounts that share an AppID also share its 5 requests a second.
    """

    def __init__(
        self,
        api: ApiConfig,
        *,
        pool_size: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.base_url = api.base_url.rstrip("/")
        self._sleep = sleep
        self._transport = Transport(
            timeout_s=api.timeout_s,
            pool_size=pool_size,
            user_agent=USER_AGENT,
            ca_bundle=api.ca_bundle,
        )
        self._limiters: dict[str, Limiter | None] = {}  # by endpoint ("": the rule endpoints)
        self._limiters_lock = threading.Lock()

    def close(self) -> None:
        self._transport.close()

    # --- rate limit ---------------------------------------------------------------------------

    def _limiter(self, endpoint: str, caller: str) -> Limiter | None:
        """The limiter a request to ``endpoint`` for ``caller`` waits on: the endpoint's own
        documented limit (:data:`ENDPOINT_LIMITS`), else the caller's share of WeChat's 5
        requests a second (``api.requests_per_second``), shared by all of its rule calls."""
        own = ENDPOINT_LIMITS.get(endpoint)
        key = endpoint if own is not None else ""
        with self._limiters_lock:
            if key in self._limiters:
                return self._limiters[key]
            limiter: Limiter | None
            if own is not None:
                limiter = _limiter_of(own.calls, own.period_s) if own.calls else None
            else:
                # WeChat's own rule, 5 requests in any second, over a 1.1 s sliding window:
                # a short account (a token call and a few pages) goes in one burst instead of
                # waiting 200 ms between requests, and any six requests still arrive more
                # than a second apart unless the network's jitter exceeds 100 ms (then 44990
                # is backed off and retried).
                rps = self.api.requests_per_second
                limit = max(1, math.floor(rps))
                window_ms = math.ceil(1000 * WINDOW_MARGIN * limit / rps)
                if window_ms / limit < MIN_PACING_MS:
                    limiter = None  # hundreds a second or more: no limit worth enforcing
                else:
                    limiter = _limiter_of(limit, limit / rps)
            self._limiters[key] = limiter
            return limiter

    # --- requests -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url_or_path: str,
        *,
        endpoint: str,
        account: str | None,
        caller: str | None,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        observer: Observer | None = None,
        wechat: bool = True,
        prior: AccountError | None = None,
    ) -> dict[str, Any]:
        """Send one logical request, retrying transient failures; return the JSON object.

        ``caller`` is the AppID whose rate limit the request counts against (None: no limit,
        e.g. a company's own token service). ``wechat`` False skips errcode handling.
        ``prior``: how its first attempt, made and counted elsewhere, failed (a fleet's
        listing, :mod:`qrsync.fleet`): the retries go on from there.
        """
        url = url_or_path if "://" in url_or_path else self.base_url + url_or_path
        failed_first = [prior] if prior is not None else []

        def attempt() -> dict[str, Any]:
            if failed_first:
                raise failed_first.pop()
            if caller is not None:
                limiter = self._limiter(endpoint, caller)
                if limiter is not None:
                    limiter.try_acquire(caller, blocking=True)
            try:
                answer = self._transport.send(
                    method,
                    url,
                    endpoint=endpoint,
                    account=account,
                    params=params,
                    body=body,
                    headers=headers,
                )
                payload = self.payload(answer, endpoint, account, wechat=wechat)
            except AccountError as exc:
                if observer is not None:
                    observer(endpoint, exc.errcode)
                raise
            if observer is not None:
                observer(endpoint, 0)
            return payload

        retrying = Retrying(
            stop=stop_after_attempt(self.api.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        result: dict[str, Any] = retrying(attempt)
        return result

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter; a 44990 waits out the 1-second window first."""
        base = self.api.retry_backoff_s * (2 ** (state.attempt_number - 1))
        delay: float = min(base, 30.0) * (0.5 + random.random() / 2)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            delay = max(delay, RATE_LIMIT_WINDOW_S + random.random() * 0.25)
        return delay

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "attempt %d failed, retrying: %s",
            state.attempt_number,
            exc,
            extra={"action": "api_retry", "attempt": state.attempt_number},
        )

    def exchanges(self) -> Exchanges:
        """Many requests in flight from one thread (:class:`Exchanges`), sent once each."""
        return self._transport.exchanges()

    def may_call_now(self, endpoint: str, caller: str) -> bool:
        """Take a place in ``caller``'s rate limit for ``endpoint`` if there is one free now
        (a request sent without :meth:`request`, e.g. by :mod:`qrsync.fleet`)."""
        limiter = self._limiter(endpoint, caller)
        return limiter is None or bool(limiter.try_acquire(caller, blocking=False))

    def payload(
        self, answer: Answer, endpoint: str, account: str | None, *, wechat: bool = True
    ) -> dict[str, Any]:
        """The JSON object of a successful answer; raise what is wrong with any other (an
        HTTP status, not JSON, an errcode)."""
        status = answer.status
        if status != 200:
            retryable = status >= 500 or status == 429
            raise TransportError(
                f"{endpoint} answered HTTP {status}"
                + ("" if retryable else f": {snippet(answer.text())}"),
                account=account,
                retryable=retryable,
            )
        # The body decides, not its Content-Type: WeChat's varies (text/plain, application/json).
        try:
            payload = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            kind = snippet(answer.content_type or "none", 60)
            raise MalformedResponse(
                f"{endpoint} answered something that is not JSON (Content-Type {kind}): "
                f"{snippet(answer.text())}",
                account=account,
            ) from None
        if not isinstance(payload, dict):
            raise MalformedResponse(
                f"{endpoint} answered JSON that is not an object: {snippet(answer.text())}",
                account=account,
            )
        if not wechat:
            return payload
        errcode = payload.get("errcode", 0)
        if isinstance(errcode, bool) or not isinstance(errcode, int):
            raise MalformedResponse(
                f"{endpoint} answered a non-numeric errcode {errcode!r}", account=account
            )
        if not INT32_MIN <= errcode <= INT32_MAX:  # WeChat's are 32-bit, and so is
            raise MalformedResponse(  # sync_runs.errcode
                f"{endpoint} answered an errcode out of range ({errcode})",
                account=account,
            )
        if errcode != 0:
            errmsg = payload.get("errmsg")
            raise api_error(
                errcode,
                errmsg if isinstance(errmsg, str) else "",
                endpoint=endpoint,
                account=account,
            )
        return payload


class TokenProvider(Protocol):
    """Gives the access token of one caller AppID; see :mod:`qrsync.wechat.tokens`."""

    def get(self) -> str: ...

    def refresh(self, failed: str) -> str: ...

    def at_hand(self) -> str | None:
        """The token if it can be had without a round trip, else None."""


@dataclass
class CallCounter:
    """Counts the HTTP attempts of one run (for ``sync_runs.api_calls``) and passes them on."""

    downstream: Observer | None = None
    calls: int = 0
    by_errcode: dict[int | None, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, endpoint: str, errcode: int | None) -> None:
        with self._lock:
            self.calls += 1
            self.by_errcode[errcode] = self.by_errcode.get(errcode, 0) + 1
        if self.downstream is not None:
            self.downstream(endpoint, errcode)


@dataclass
class ApiCaller:
    """Calls WeChat endpoints as one account: its token, its caller AppID, its run's counter."""

    client: WeChatClient
    tokens: TokenProvider
    account: str
    caller: str
    counter: CallCounter = field(default_factory=CallCounter)
    prior: AccountError | None = None
    """How the first attempt of the next call failed, made and counted elsewhere (see
    :meth:`WeChatClient.request`)."""

    def call(self, path: str, body: dict[str, Any], *, endpoint: str) -> dict[str, Any]:
        """POST ``body`` to ``path``; on 40001/40014/42001 fetch a fresh token and retry once."""
        token = self.tokens.get()
        prior, self.prior = self.prior, None
        try:
            return self._post(path, body, endpoint, token, prior)
        except TokenRejected as exc:
            logger.info(
                "account '%s': token rejected (%s), fetching a fresh one",
                self.account,
                exc.errcode,
                extra={"action": "token_rejected", "account": self.account},
            )
            try:
                fresh = self.tokens.refresh(token)
            except AccountError as refresh_error:
                # e.g. a static token cannot be renewed: the run still records WeChat's errcode.
                if refresh_error.errcode is None:
                    refresh_error.errcode = exc.errcode
                raise
            return self._post(path, body, endpoint, fresh)

    def _post(
        self,
        path: str,
        body: dict[str, Any],
        endpoint: str,
        token: str,
        prior: AccountError | None = None,
    ) -> dict[str, Any]:
        return self.client.request(
            "POST",
            path,
            endpoint=endpoint,
            account=self.account,
            caller=self.caller,
            params={"access_token": token},
            body=body,
            observer=self.counter,
            prior=prior,
        )
