"""HTTP for the WeChat client, on urllib3: pooled keep-alive connections, the environment's
proxies read once per host, TLS always verified, and every answer bounded in size and time.

Why urllib3 and not requests (which is built on it): requests spends about 0.8 ms of CPU on
each request (merging settings, re-reading the proxy variables, hooks, cookies) against 0.4 ms
here; a 100,000-rule listing is 500 requests, and that difference was a third of its fetch time
(README, "Why urllib3"). requests stays for the simulator's admin client and the tests.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import orjson
import urllib3
from urllib3.exceptions import HTTPError, LocationValueError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from qrsync.errors import TransportError
from qrsync.masking import mask

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest answer read: several times the largest real one (10,000 rules, about 5 MB);
anything longer is cut off and the request fails instead of filling memory."""
READ_CHUNK = 256 * 1024

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
"""Where a company's own certificate authorities may already be configured for Python tools."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = ""

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Transport:
    """Sends one HTTP request and reads its whole answer, or raises :class:`TransportError`
    (retryable for timeouts, resets and refused connections)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        pool_size: int,
        user_agent: str,
        ca_bundle: str | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._headers = {"User-Agent": user_agent}
        self._pool_options: dict[str, Any] = {
            "maxsize": max(pool_size, 4),
            "block": False,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": ca_bundle or _environment_ca_bundle() or certifi.where(),
            "retries": False,
            "timeout": urllib3.Timeout(connect=timeout_s, read=timeout_s),
        }
        self._proxies = urllib.request.getproxies()
        self._managers: dict[str, urllib3.PoolManager] = {}
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}  # by URL before its query
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()
            self._pools.clear()

    def _open(
        self, method: str, url: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> urllib3.BaseHTTPResponse:
        """Send the request; a direct connection goes straight to the host's connection pool
        (the manager's URL parsing and pool lookup cost more CPU than the rest of a call)."""
        manager = self._manager(url)
        if type(manager) is not urllib3.PoolManager:  # a proxy: its manager routes
            return manager.request(
                method, target, body=body, headers=headers, preload_content=False, redirect=False
            )
        parts = urlsplit(target)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        pool = self._pools.get(url)
        if pool is None:
            pool = manager.connection_from_url(url)
            self._pools[url] = pool
        return pool.urlopen(
            method,
            path,
            body=body,
            headers=headers,
            preload_content=False,
            redirect=False,
            assert_same_host=False,
        )

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The pool for ``url``'s host: direct, or through the proxy the environment names for
        it (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), decided once per host."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            manager = self._managers.get(key)
            if manager is None:
                proxy = self._proxies.get(parts.scheme)
                host = parts.hostname or ""
                if proxy and not urllib.request.proxy_bypass(host):
                    manager = urllib3.ProxyManager(proxy, **self._pool_options)
                else:
                    manager = urllib3.PoolManager(**self._pool_options)
                self._managers[key] = manager
            return manager

    def send(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        account: str | None,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        target = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}" if params else url
        all_headers = {**self._headers, **(headers or {})}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            all_headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + self.timeout_s
        try:
            response = self._open(method, url, target, data, all_headers)
            try:
                content = _read_bounded(response, deadline)
            except BaseException:
                response.close()  # the rest of this answer must not meet the next request
                raise
            finally:
                response.release_conn()
        except _TooLong as exc:
            raise TransportError(
                f"{endpoint}: {exc}", account=account, retryable=exc.retryable
            ) from None
        except LocationValueError as exc:
            raise TransportError(
                f"{endpoint}: request failed ({reason(exc)})", account=account, retryable=False
            ) from None
        except (HTTPError, OSError) as exc:
            # urllib3 derives a refused connection from its TimeoutError: not a timeout.
            if isinstance(exc, Urllib3Timeout | TimeoutError) and not isinstance(
                exc, NewConnectionError
            ):
                problem = f"{endpoint} timed out after {self.timeout_s:g} s"
            else:
                problem = f"{endpoint}: {connection_problem(exc)} ({host_of(url)})"
            raise TransportError(problem, account=account) from None
        return Answer(response.status, content, response.headers.get("Content-Type", ""))


class _TooLong(Exception):
    """An answer larger than MAX_BODY_BYTES, or still arriving at the deadline."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _read_bounded(response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
    """The answer's body, at most MAX_BODY_BYTES and read by the deadline (an answer that
    drips a byte at a time never trips the socket's timeout)."""
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _TooLong(
            f"answer of {int(length):,} bytes refused (limit {MAX_BODY_BYTES:,})",
            retryable=False,
        )
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(READ_CHUNK)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLong(f"answer longer than {MAX_BODY_BYTES:,} bytes; cut off", retryable=False)
        parts.append(chunk)
        if time.monotonic() > deadline:
            raise _TooLong("still answering when the timeout ran out; cut off", retryable=True)


def _environment_ca_bundle() -> str | None:
    for name in CA_BUNDLE_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


_CONNECTION_PROBLEMS = (
    ("refused", "connection refused"),
    ("name or service not known", "host name not resolved"),
    ("failed to resolve", "host name not resolved"),
    ("nodename nor servname", "host name not resolved"),
    ("timed out", "connection timed out"),
    ("reset by peer", "connection reset"),
    ("remotedisconnected", "connection closed without an answer"),
    ("connection aborted", "connection closed without an answer"),
    ("incompleteread", "connection closed in the middle of the answer"),
    ("connection broken", "connection closed in the middle of the answer"),
    ("certificate", "TLS certificate not accepted"),
    ("ssl", "TLS handshake failed"),
)


def connection_problem(exc: BaseException) -> str:
    """A short, human reason out of urllib3's nested connection errors."""
    text = f"{type(exc).__name__} {exc}".lower()
    for needle, problem in _CONNECTION_PROBLEMS:
        if needle in text:
            return problem
    return f"connection failed: {reason(exc)}"


def host_of(url: str) -> str:
    """scheme://host:port of a URL: enough to say where, never a path or a query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else exc.__class__.__name__
    return snippet(text, 160)


def snippet(text: str, limit: int = 80) -> str:
    """One masked line of at most ``limit`` characters out of an answer or an error."""
    flat = " ".join(text.split())
    return mask(flat if len(flat) <= limit else flat[: limit - 1] + "…")
