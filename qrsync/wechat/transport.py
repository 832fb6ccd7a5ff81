"""HTTP for the WeChat client, on libcurl (pycurl): pooled keep-alive connections, the
environment's proxies read once per host, TLS always verified, and every answer bounded in size
and time.

Why libcurl and not urllib3 or requests: a request costs about 0.09 ms of CPU through libcurl
against 0.27 ms through urllib3 (whose answers go through http.client's header parser) and
0.8 ms through requests (merging settings, re-reading the proxy variables, hooks, cookies); and
libcurl lets the other threads run during the whole exchange instead of between each read.
A fleet of 10,000 accounts makes 10,000 requests a sync: that difference was a third of its CPU
(README, "Why libcurl"). requests stays for the simulator's admin client, the notification
channels and the tests.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import orjson
import pycurl

from qrsync.errors import TransportError
from qrsync.masking import mask

logger = logging.getLogger("qrsync.http")

MAX_BODY_BYTES = 32 * 1024 * 1024
"""The largest answer read: several times the largest real one (10,000 rules, about 5 MB);
anything longer is cut off and the request fails instead of filling memory."""

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
"""Where a company's own certificate authorities may already be configured for Python tools."""

_ABORTED = -1
"""What a libcurl callback returns to stop the transfer (it then fails with CURLE_WRITE_ERROR)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = ""

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class _Body:
    """An answer's body as libcurl hands it over, chunk by chunk, refused as soon as it proves
    to be larger than MAX_BODY_BYTES (one that says so in its Content-Length is refused by
    libcurl before it is read: ``MAXFILESIZE_LARGE``)."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    too_long: bool = False

    def write(self, chunk: bytes) -> int | None:
        self.size += len(chunk)
        if self.size > MAX_BODY_BYTES:
            self.too_long = True
            return _ABORTED
        self.parts.append(chunk)
        return None


class Transport:
    """Sends one HTTP request and reads its whole answer, or raises :class:`TransportError`
    (retryable for timeouts, resets and refused connections).

    libcurl handles are pooled like connections: a request takes an idle one (its connection
    kept alive) or makes one, and gives it back; at most ``pool_size`` wait idle."""

    def __init__(
        self,
        *,
        timeout_s: float,
        pool_size: int,
        user_agent: str,
        ca_bundle: str | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._user_agent = f"User-Agent: {user_agent}"
        self._ca_bundle = ca_bundle or _environment_ca_bundle() or certifi.where()
        self._max_idle = max(pool_size, 4)
        self._proxies = urllib.request.getproxies()
        self._proxy_of: dict[str, str] = {}  # scheme://netloc -> proxy URL, "" for direct
        self._idle: list[pycurl.Curl] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for handle in idle:
            handle.close()

    def _take(self) -> pycurl.Curl:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        handle = pycurl.Curl()
        timeout_ms = max(1, round(self.timeout_s * 1000))
        for option, value in (
            (pycurl.NOSIGNAL, 1),  # (threads: no SIGALRM for timeouts)
            (pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
            (pycurl.FOLLOWLOCATION, 0),
            (pycurl.SSL_VERIFYPEER, 1),
            (pycurl.SSL_VERIFYHOST, 2),
            (pycurl.CAINFO, self._ca_bundle),
            (pycurl.CONNECTTIMEOUT_MS, timeout_ms),
            (pycurl.MAXFILESIZE_LARGE, MAX_BODY_BYTES),
            # The whole exchange, body included: an answer that drips a byte at a time never
            # trips a socket's timeout.
            (pycurl.TIMEOUT_MS, timeout_ms),
        ):
            handle.setopt(option, value)
        return handle

    def _give_back(self, handle: pycurl.Curl) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(handle)
                return
        handle.close()

    def _proxy(self, url: str) -> str:
        """The proxy the environment names for ``url``'s host (HTTPS_PROXY, HTTP_PROXY,
        NO_PROXY, as Python reads them), decided once per host; "" for a direct connection."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        proxy = self._proxy_of.get(key)
        if proxy is None:
            proxy = self._proxies.get(parts.scheme) or ""
            if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
                proxy = ""
            self._proxy_of[key] = proxy
        return proxy

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
        request = Request(method, url, endpoint, account, params, body, headers)
        handle = self._take()
        try:
            received = self._prepare(handle, request)
            handle.perform()
        except pycurl.error as exc:
            failure = self._failure(exc, handle, received, request)
            handle.close()  # (its connection may hold the rest of a broken answer)
            raise failure from None
        except BaseException:
            handle.close()
            raise
        answer = self._answer(handle, received, request)
        self._give_back(handle)
        return answer

    def _prepare(self, handle: pycurl.Curl, request: Request) -> _Body:
        """Set ``handle`` up for ``request``; the body it will receive."""
        lines = [self._user_agent, "Expect:"]  # (no 100-continue round trip for a body)
        lines += [f"{name}: {value}" for name, value in (request.headers or {}).items()]
        handle.setopt(pycurl.URL, request.target)
        handle.setopt(pycurl.PROXY, self._proxy(request.url))
        if request.method == "POST":
            data = b""
            if request.body is not None:
                data = orjson.dumps(request.body)
                lines.append("Content-Type: application/json")
            handle.setopt(pycurl.POSTFIELDS, data)
        elif request.method == "GET":
            handle.setopt(pycurl.HTTPGET, 1)
        else:
            raise ValueError(f"unsupported HTTP method {request.method}")
        handle.setopt(pycurl.HTTPHEADER, lines)
        # (Only the body goes through Python: each callback takes the GIL back from the other
        # threads; the status and Content-Type are asked for once it is done.)
        received = _Body()
        handle.setopt(pycurl.WRITEFUNCTION, received.write)
        return received

    def _answer(self, handle: pycurl.Curl, received: _Body, request: Request) -> Answer:
        status = handle.getinfo(pycurl.RESPONSE_CODE)
        content_type = handle.getinfo(pycurl.CONTENT_TYPE) or ""
        if logger.isEnabledFor(logging.DEBUG):  # (-vv; masked like every line)
            logger.debug(
                "%s %s: HTTP %d, %d bytes",
                request.method,
                request.target,
                status,
                received.size,
                extra={"action": "http_request", "endpoint": request.endpoint},
            )
        return Answer(status, b"".join(received.parts), content_type)

    def exchanges(self) -> Exchanges:
        """Many requests at once from one thread (see :class:`Exchanges`)."""
        return Exchanges(self)

    def _failure(
        self, exc: pycurl.error, handle: pycurl.Curl, received: _Body, request: Request
    ) -> TransportError:
        code, message = exc.args if len(exc.args) == 2 else (None, str(exc))
        return self._failed(code, str(message), handle, received, request)

    def _failed(
        self, code: int | None, message: str, handle: pycurl.Curl, received: _Body, request: Request
    ) -> TransportError:
        endpoint, account, url = request.endpoint, request.account, request.url
        if code == pycurl.E_FILESIZE_EXCEEDED and not received.size:
            return TransportError(
                f"{endpoint}: answer refused: its Content-Length is over the limit of "
                f"{MAX_BODY_BYTES:,} bytes",
                account=account,
                retryable=False,
            )
        if received.too_long or code == pycurl.E_FILESIZE_EXCEEDED:
            return TransportError(
                f"{endpoint}: answer longer than {MAX_BODY_BYTES:,} bytes; cut off",
                account=account,
                retryable=False,
            )
        if code == pycurl.E_OPERATION_TIMEDOUT:
            if received.size:
                return TransportError(
                    f"{endpoint}: still answering when the timeout ran out; cut off",
                    account=account,
                )
            return TransportError(
                f"{endpoint} timed out after {self.timeout_s:g} s", account=account
            )
        if code in (pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL):
            return TransportError(
                f"{endpoint}: request failed ({snippet(message, 160)})",
                account=account,
                retryable=False,
            )
        return TransportError(
            f"{endpoint}: {connection_problem(message)} ({host_of(url)})", account=account
        )


@dataclass(frozen=True)
class Request:
    """One HTTP request to make."""

    method: str
    url: str
    endpoint: str
    account: str | None
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None

    @property
    def target(self) -> str:
        """The URL with its query (an access token, masked wherever it is shown)."""
        if not self.params:
            return self.url
        return f"{self.url}{'&' if '?' in self.url else '?'}{urlencode(self.params)}"


class Exchanges:
    """Many requests in flight at once, driven by the one thread that calls :meth:`wait`
    (libcurl's multi interface): no thread per request, so no handing of the GIL back and forth
    for each of them. Used for a fleet's listings (:mod:`qrsync.fleet`); each request is sent
    once, and what to do with a failure is the caller's business."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._multi = pycurl.CurlMulti()
        self._flying: dict[int, tuple[pycurl.Curl, _Body, Request, Any]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._flying)

    def start(self, request: Request, tag: Any) -> None:
        """Send ``request``; :meth:`wait` gives its answer back with ``tag``."""
        handle = self._transport._take()
        try:
            received = self._transport._prepare(handle, request)
        except BaseException:
            handle.close()
            raise
        self._flying[id(handle)] = (handle, received, request, tag)
        self._multi.add_handle(handle)

    def wait(self, timeout_s: float) -> list[tuple[Any, Answer | TransportError]]:
        """Move the requests on, waiting at most ``timeout_s`` for one to end; the answers (or
        failures) of those that ended, with their tags."""
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        ended = self._ended()
        if not ended and self._flying:
            self._multi.select(timeout_s)
            while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            ended = self._ended()
        return ended

    def _ended(self) -> list[tuple[Any, Answer | TransportError]]:
        ended: list[tuple[Any, Answer | TransportError]] = []
        while True:
            queued, done, failed = self._multi.info_read()
            for handle in done:
                self._multi.remove_handle(handle)
                handle, received, request, tag = self._flying.pop(id(handle))
                ended.append((tag, self._transport._answer(handle, received, request)))
                self._transport._give_back(handle)
            for handle, code, message in failed:
                self._multi.remove_handle(handle)
                handle, received, request, tag = self._flying.pop(id(handle))
                failure = self._transport._failed(code, message, handle, received, request)
                handle.close()
                ended.append((tag, failure))
            if not queued:
                return ended

    def close(self) -> None:
        """Abandon the requests still in flight (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        for handle, _received, _request, _tag in self._flying.values():
            self._multi.remove_handle(handle)
            handle.close()
        self._flying.clear()
        self._multi.close()


def _environment_ca_bundle() -> str | None:
    for name in CA_BUNDLE_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


_CONNECTION_PROBLEMS = (
    ("refused", "connection refused"),
    ("could not resolve", "host name not resolved"),
    ("empty reply", "connection closed without an answer"),
    ("transfer closed", "connection closed in the middle of the answer"),
    ("broken pipe", "connection reset"),
    ("name or service not known", "host name not resolved"),
    ("failed to resolve", "host name not resolved"),
    ("nodename nor servname", "host name not resolved"),
    ("timed out", "connection timed out"),
    ("reset by peer", "connection reset"),
    ("certificate", "TLS certificate not accepted"),
    ("ssl", "TLS handshake failed"),
)


def connection_problem(message: str) -> str:
    """A short, human reason out of libcurl's error message."""
    text = message.lower()
    for needle, problem in _CONNECTION_PROBLEMS:
        if needle in text:
            return problem
    return f"connection failed: {snippet(message, 160)}"


def host_of(url: str) -> str:
    """scheme://host:port of a URL: enough to say where, never a path or a query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def snippet(text: str, limit: int = 80) -> str:
    """One masked line of at most ``limit`` characters out of an answer or an error."""
    flat = " ".join(text.split())
    return mask(flat if len(flat) <= limit else flat[: limit - 1] + "…")
