"""The simulator's HTTP layer: WeChat's endpoints and the ``/sim/`` admin API on stdlib http.server.

One lock guards the world; it is never held while a request sleeps (latency, delay faults) or
while an answer is encoded and sent, so a slow request does not stall the others.

WeChat endpoints: ``POST /cgi-bin/stable_token``, ``GET /cgi-bin/token``,
``GET /central/token/<appid>`` (a central token service), ``POST /cgi-bin/component/
api_component_token``, ``POST /cgi-bin/component/api_authorizer_token``, ``POST /cgi-bin/
component/api_get_authorizer_list``, ``POST /cgi-bin/component/api_get_authorizer_info``,
``POST /cgi-bin/wxopen/wxamplinkget``,
``POST /cgi-bin/wxopen/qrcodejumpget|qrcodejumpadd|qrcodejumppublish|qrcodejumpdelete``. The call
log, the stats and the faults name them ``stable_token``, ``token``, ``central``,
``component_token``, ``authorizer_token``, ``authorizer_list``, ``authorizer_info``,
``amplinkget`` and ``qrcodejump*``.

The discovery endpoints (REFERENCE.md "A third-party platform's authorizers") take the platform's
token as ``?component_access_token=`` or ``?access_token=``, check it as the other component
endpoints do (41001, 40001, 42001; 40013 when the body's ``component_appid`` is not its
platform's) and count against that ``component_appid`` for the 5 requests a second.
``api_get_authorizer_list``, body ``{component_appid, offset, count}`` (count 1 to 500, 40170
above), answers ``{total_count, list: [{authorizer_appid, refresh_token, auth_time}]}``, the
platform's authorizations in the order they were granted, each with its current refresh token; a
revoked authorization is not listed. ``api_get_authorizer_info``, body ``{component_appid,
authorizer_appid}``, answers ``{authorizer_info: {nick_name, head_img, service_type_info: {id},
verify_type_info: {id}, user_name, alias, qrcode_url, business_info, principal_name,
account_status, MiniProgramInfo (mini programs only), ...}, authorization_info:
{authorizer_appid, authorizer_refresh_token, func_info: [{funcscope_category: {id}}]}}`` with
the permission sets granted; 40013 for an appid that is no account, 61003 for an account that has
not authorised the platform or withdrew.

``qrcodejumpadd`` takes ``open_version``, ``permit_sub_rule`` and ``is_edit`` as integers or as
their decimal strings ("1"), as WeChat does; anything else is 40097.

Admin endpoints (JSON in and out; errors are HTTP 400/404 with ``{"error"}``):
``POST /sim/reset``, ``POST /sim/accounts``, ``GET|PATCH /sim/accounts/<appid>``,
``POST|PUT|GET /sim/accounts/<appid>/rules``, ``POST /sim/components``,
``POST|GET /sim/components/<appid>/ticket``,
``PUT|DELETE /sim/components/<appid>/authorizations/<authorizer_appid>`` (grant or change one,
body ``{refresh_token?, permission_sets?, rotate_refresh_token?, auth_time?}``; revoke one),
``POST /sim/components/<appid>/churn`` (``{revoke?, authorize?, change?, seed?}``: a seeded
turn of authorizers withdrawing, authorising or coming back, and changing permission sets),
``POST /sim/tokens/expire``, ``POST /sim/tokens/invalidate``, ``POST /sim/clock``,
``POST|GET|DELETE /sim/faults``, ``GET|DELETE /sim/calls``, ``GET /sim/stats``,
``GET|POST /sim/settings``, and the notification receivers' ``PUT|GET /sim/receivers/<kind>/<id>``,
``GET|DELETE /sim/receivers/<kind>/<id>/messages``, ``GET|DELETE /sim/receivers``.

Notification receivers (receivers.py): ``POST /cgi-bin/webhook/send?key=`` (WeCom),
``POST /robot/send?access_token=`` (DingTalk), ``POST /open-apis/bot/v2/hook/<id>`` (Feishu and
Lark), ``POST /services/<T>/<B>/<X>`` (Slack), ``POST /hooks/<id>`` (qrsync's webhook).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from qrsync.simulator import receivers
from qrsync.simulator.admin import SimulatorAdmin
from qrsync.simulator.faults import Fault, FaultBook, malform
from qrsync.simulator.world import (
    ApiCall,
    Json,
    NotFound,
    Settings,
    World,
    WorldError,
    error_reply,
    is_int,
)

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"

_WECHAT_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/cgi-bin/stable_token"): "stable_token",
    ("GET", "/cgi-bin/token"): "token",
    ("POST", "/cgi-bin/component/api_component_token"): "component_token",
    ("POST", "/cgi-bin/component/api_authorizer_token"): "authorizer_token",
    ("POST", "/cgi-bin/component/api_get_authorizer_list"): "authorizer_list",
    ("POST", "/cgi-bin/component/api_get_authorizer_info"): "authorizer_info",
    ("POST", "/cgi-bin/wxopen/wxamplinkget"): "amplinkget",
    ("POST", "/cgi-bin/wxopen/qrcodejumpget"): "qrcodejumpget",
    ("POST", "/cgi-bin/wxopen/qrcodejumpadd"): "qrcodejumpadd",
    ("POST", "/cgi-bin/wxopen/qrcodejumppublish"): "qrcodejumppublish",
    ("POST", "/cgi-bin/wxopen/qrcodejumpdelete"): "qrcodejumpdelete",
}
_CENTRAL = re.compile(r"/central/token/([^/]+)")
DRIP_INTERVAL_S = 0.05
DRIP_MAX_S = 60.0
OVERSIZE_BYTES = 48 * 1024 * 1024
"""Larger than qrsync's 32 MB cap on an answer, and than any real answer (about 5 MB)."""
_SECRET_IN_URL = re.compile(r"((?:access_token|secret|key|sign)=)[^&\s]+")
_RECEIVER = r"/sim/receivers/(?P<kind>[^/]+)/(?P<id>[^/]+)"
MAX_HEADERS = 100
MAX_LINE = 65536


class _Headers(dict[str, str]):
    """A request's headers by lower-cased name; ``get`` takes any case, as email's Message."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@dataclass(frozen=True)
class Outcome:
    """What the handler sends: a status and a body, or nothing at all (a dropped connection)."""

    status: int = 200
    body: bytes = b""
    content_type: str = JSON_TYPE
    drop: bool = False
    wire: str = ""  # one of faults.WIRE_FAULTS: how the body goes wrong on its way out
    headers: tuple[tuple[str, str], ...] = ()
    pause_s: float = 0.0  # wait before answering (or dropping); ends early if the client leaves


@dataclass(frozen=True)
class AdminRequest:
    """An admin request: the path's named parts, the query string and the JSON body."""

    args: Mapping[str, str]
    query: Mapping[str, str]
    body: Json


def _encode(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _json_object(raw: bytes) -> Json | None:
    """The body as a JSON object; an empty body is ``{}``, anything else unparsable is None."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Simulator:
    """One simulator's state behind its one lock, and how each request is answered."""

    def __init__(self, seed: int, world: Mapping[str, Any] | None, settings: Settings) -> None:
        self.lock = threading.Lock()
        self._start_seed = seed
        self._start_world = copy.deepcopy(dict(world)) if world is not None else None
        self._start_settings = dataclasses.replace(settings)
        self.world = World(self._start_world, seed, dataclasses.replace(settings))
        self.faults = FaultBook()
        self.receivers = receivers.Receivers()
        self._admin_routes: list[tuple[str, re.Pattern[str], Callable[[AdminRequest], Any]]] = [
            (method, re.compile(pattern), handler)
            for method, pattern, handler in (
                ("POST", r"/sim/reset", self._reset),
                ("POST", r"/sim/accounts", self._add_account),
                ("GET", r"/sim/accounts/(?P<appid>[^/]+)", self._account),
                ("PATCH", r"/sim/accounts/(?P<appid>[^/]+)", self._patch_account),
                ("POST", r"/sim/accounts/(?P<appid>[^/]+)/rules", self._generate_rules),
                ("PUT", r"/sim/accounts/(?P<appid>[^/]+)/rules", self._put_rules),
                ("GET", r"/sim/accounts/(?P<appid>[^/]+)/rules", self._rules),
                ("POST", r"/sim/components", self._add_component),
                ("POST", r"/sim/components/(?P<appid>[^/]+)/ticket", self._rotate_ticket),
                ("GET", r"/sim/components/(?P<appid>[^/]+)/ticket", self._ticket),
                (
                    "PUT",
                    r"/sim/components/(?P<appid>[^/]+)/authorizations/(?P<authorizer>[^/]+)",
                    self._put_authorization,
                ),
                (
                    "DELETE",
                    r"/sim/components/(?P<appid>[^/]+)/authorizations/(?P<authorizer>[^/]+)",
                    self._revoke_authorization,
                ),
                ("POST", r"/sim/components/(?P<appid>[^/]+)/churn", self._churn),
                ("POST", r"/sim/tokens/expire", self._expire_tokens),
                ("POST", r"/sim/tokens/invalidate", self._invalidate_tokens),
                ("POST", r"/sim/clock", self._advance_clock),
                ("POST", r"/sim/faults", self._add_fault),
                ("GET", r"/sim/faults", self._faults),
                ("DELETE", r"/sim/faults", self._clear_faults),
                ("GET", r"/sim/calls", self._calls),
                ("DELETE", r"/sim/calls", self._clear_calls),
                ("GET", r"/sim/stats", self._stats),
                ("GET", r"/sim/settings", self._settings),
                ("POST", r"/sim/settings", self._change_settings),
                ("GET", r"/sim/receivers", self._receivers),
                ("DELETE", r"/sim/receivers", self._clear_receivers),
                ("PUT", _RECEIVER, self._set_receiver),
                ("GET", _RECEIVER, self._receiver),
                ("GET", _RECEIVER + "/messages", self._receiver_messages),
                ("DELETE", _RECEIVER + "/messages", self._clear_receiver_messages),
            )
        ]

    def route(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        raw: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> Outcome:
        endpoint = _WECHAT_ROUTES.get((method, path))
        if endpoint is not None:
            return self.wechat(endpoint, query, raw)
        central = _CENTRAL.fullmatch(path)
        if central is not None and method == "GET":
            return self.wechat("central", query, raw, unquote(central.group(1)))
        if path.startswith("/sim/"):
            return self.admin(method, path, query, raw)
        receiver = receivers.match(method, path, query)
        if receiver is not None:
            with self.lock:
                reply = self.receivers.receive(*receiver, headers or {}, raw, query)
            return Outcome(
                reply.status,
                reply.body,
                reply.content_type,
                drop=reply.drop,
                headers=reply.headers,
                pause_s=reply.pause_s,
            )
        return Outcome(404, _encode({"error": f"no endpoint {method} {path}"}))

    # --- WeChat --------------------------------------------------------------------------

    def wechat(
        self, endpoint: str, query: Mapping[str, str], raw: bytes, path_appid: str = ""
    ) -> Outcome:
        """Answer a WeChat endpoint, with the latency and the fault (if any) that hits it."""
        body = _json_object(raw)
        with self.lock:
            world = self.world
            call = ApiCall(endpoint, query, body, world.next_rid(), path_appid)
            appid = world.caller_appid(call)
            fault = self.faults.take(endpoint, appid, *call.listing_args())
            pause = world.settings.latency_ms / 1000 + (0.0 if fault is None else fault.delay_s)
        if pause > 0:
            time.sleep(pause)
        with self.lock:
            world = self.world  # a reset may have come in while this request slept
            if fault is not None and fault.replaces_answer:
                outcome, errcode = _fault_outcome(fault, call.rid)
                status = None if outcome.drop else outcome.status
                world.record_call(call, appid, errcode, status, fault.id)
                return outcome
            if fault is not None and fault.effect == "drift":
                world.drift(call, fault.drift_add, fault.drift_delete)
            reply = world.answer(call)
            if fault is not None and fault.effect == "malformed" and reply.errcode == 0:
                malform(reply.payload, fault.malformed)
            world.record_call(
                call, appid, reply.errcode, reply.status, None if fault is None else fault.id
            )
        # The payload is built from copies, so it is encoded outside the lock.
        outcome = Outcome(reply.status, _encode(reply.payload))
        if fault is not None and fault.effect == "wire":
            outcome = dataclasses.replace(outcome, wire=fault.wire)
        elif fault is not None and fault.effect == "content_type":
            outcome = dataclasses.replace(outcome, content_type=fault.content_type)
        return outcome

    # --- admin ---------------------------------------------------------------------------

    def admin(self, method: str, path: str, query: Mapping[str, str], raw: bytes) -> Outcome:
        body = _json_object(raw)
        if body is None:
            return Outcome(400, _encode({"error": "the body must be a JSON object"}))
        allowed = False
        for verb, pattern, handler in self._admin_routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            allowed = True
            if verb != method:
                continue
            request = AdminRequest(
                {k: unquote(v) for k, v in match.groupdict().items()}, query, body
            )
            try:
                with self.lock:
                    result = handler(request)
            except WorldError as exc:
                return Outcome(exc.status, _encode({"error": str(exc)}))
            return Outcome(200, _encode(result))
        if allowed:
            return Outcome(405, _encode({"error": f"{method} is not allowed on {path}"}))
        return Outcome(404, _encode({"error": f"no admin endpoint {path}"}))

    def _reset(self, request: AdminRequest) -> Json:
        seed = request.body.get("seed", self._start_seed)
        world = request.body.get("world", self._start_world)
        if not is_int(seed):
            raise WorldError("seed: must be an integer")
        if world is not None and not isinstance(world, dict):
            raise WorldError("world: must be an object in the world-file shape")
        # Built before anything is replaced: a bad world leaves the running one as it was.
        self.world = World(world, seed, dataclasses.replace(self._start_settings))
        self.faults = FaultBook()
        self.receivers = receivers.Receivers()
        return {"seed": seed, "accounts": sorted(self.world.accounts)}

    def _add_account(self, request: AdminRequest) -> Json:
        return self.world.add_account(request.body)

    def _account(self, request: AdminRequest) -> Json:
        return self.world.account_view(request.args["appid"])

    def _patch_account(self, request: AdminRequest) -> Json:
        return self.world.patch_account(request.args["appid"], request.body)

    def _generate_rules(self, request: AdminRequest) -> Json:
        return self.world.generate_rules(request.args["appid"], request.body)

    def _put_rules(self, request: AdminRequest) -> Json:
        return self.world.put_rules(request.args["appid"], request.body)

    def _rules(self, request: AdminRequest) -> Json:
        return self.world.rules_view(
            request.args["appid"], request.query.get("miniprogram_appid") or None
        )

    def _add_component(self, request: AdminRequest) -> Json:
        return self.world.add_component(request.body)

    def _rotate_ticket(self, request: AdminRequest) -> Json:
        return {"verify_ticket": self.world.rotate_ticket(request.args["appid"])}

    def _ticket(self, request: AdminRequest) -> Json:
        return {"verify_ticket": self.world.component(request.args["appid"]).ticket}

    def _put_authorization(self, request: AdminRequest) -> Json:
        return self.world.put_authorization(
            request.args["appid"], request.args["authorizer"], request.body
        )

    def _churn(self, request: AdminRequest) -> Json:
        return self.world.churn(request.args["appid"], request.body)

    def _revoke_authorization(self, request: AdminRequest) -> Json:
        self.world.revoke_authorization(request.args["appid"], request.args["authorizer"])
        return {}

    def _token_appid(self, request: AdminRequest) -> str:
        appid = request.body.get("appid")
        if not isinstance(appid, str) or not appid:
            raise WorldError("appid: required")
        if appid not in self.world.accounts and appid not in self.world.components:
            raise NotFound(f"no account or component {appid}")
        return appid

    def _expire_tokens(self, request: AdminRequest) -> Json:
        return {"tokens": self.world.expire_tokens(self._token_appid(request))}

    def _invalidate_tokens(self, request: AdminRequest) -> Json:
        return {"tokens": self.world.invalidate_tokens(self._token_appid(request))}

    def _advance_clock(self, request: AdminRequest) -> Json:
        seconds = request.body.get("advance_s")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise WorldError("advance_s: must be a number of seconds, 0 or more")
        return {"now": self.world.clock.advance(float(seconds))}

    def _add_fault(self, request: AdminRequest) -> Json:
        return {"id": self.faults.add(request.body).id}

    def _faults(self, request: AdminRequest) -> list[Json]:
        return self.faults.views()

    def _clear_faults(self, request: AdminRequest) -> Json:
        self.faults.clear()
        return {}

    def _calls(self, request: AdminRequest) -> list[Json]:
        query = request.query
        return self.world.calls_view(query.get("endpoint") or None, query.get("appid") or None)

    def _clear_calls(self, request: AdminRequest) -> Json:
        self.world.clear_calls()
        return {}

    def _stats(self, request: AdminRequest) -> Json:
        return self.world.stats_view()

    def _settings(self, request: AdminRequest) -> Json:
        return self.world.settings.view()

    def _change_settings(self, request: AdminRequest) -> Json:
        return self.world.update_settings(request.body)

    def _receivers(self, request: AdminRequest) -> list[Json]:
        return self.receivers.views()

    def _clear_receivers(self, request: AdminRequest) -> Json:
        self.receivers.clear()
        return {}

    def _set_receiver(self, request: AdminRequest) -> Json:
        return self.receivers.configure(request.args["kind"], request.args["id"], request.body)

    def _receiver(self, request: AdminRequest) -> Json:
        return self.receivers.view(request.args["kind"], request.args["id"])

    def _receiver_messages(self, request: AdminRequest) -> list[Json]:
        return self.receivers.messages(request.args["kind"], request.args["id"])

    def _clear_receiver_messages(self, request: AdminRequest) -> Json:
        self.receivers.clear_messages(request.args["kind"], request.args["id"])
        return {}


def _fault_outcome(fault: Fault, rid: str) -> tuple[Outcome, int | None]:
    """The answer of a fault that replaces the endpoint's, and the errcode it carries."""
    if fault.effect == "errcode":
        reply = error_reply(fault.errcode, rid, fault.errmsg)
        return Outcome(200, _encode(reply.payload)), fault.errcode
    if fault.effect == "http_status":
        return Outcome(fault.http_status, fault.error_page(), "text/html"), None
    if fault.effect == "body":
        return Outcome(200, fault.body.encode()), None
    return Outcome(drop=True), None


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the simulator answer it, writes the answer (or drops the line)."""

    protocol_version = "HTTP/1.1"
    server_version = "qrsync-simulator"
    timeout = 120.0  # an idle keep-alive connection is closed after this
    # Headers and body go out in two writes: without TCP_NODELAY the second waits ~40 ms for
    # the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def parse_request(self) -> bool:
        """http.server's parse_request for the plain HTTP/1.x requests of WeChat clients,
        without parsing the headers as an email message (a third of the simulator's CPU per
        request); a malformed request line or header gets 400, too long or too many 431."""
        self.command = ""
        self.request_version = self.default_request_version
        self.close_connection = True
        raw: bytes = getattr(self, "raw_requestline", b"")  # set by handle_one_request
        self.requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.0"  # an answer with a status line, then close
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(MAX_HEADERS):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if not colon or not name.strip():
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        return True

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            length = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        outcome = self.server.simulator.route(self.command, url.path, query, raw, headers)
        if outcome.pause_s > 0:
            self._hold(outcome.pause_s)
        if outcome.drop:
            self.close_connection = True
            return
        if outcome.wire:
            self._send_mangled(outcome)
            return
        self.send_response(outcome.status)
        self.send_header("Content-Type", outcome.content_type)
        self.send_header("Content-Length", str(len(outcome.body)))
        for name, value in outcome.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(outcome.body)

    def _hold(self, seconds: float) -> None:
        """Say nothing for ``seconds`` (a slow or silent receiver), or until the client hangs up
        or the server stops: the line is polled, so the wait is bounded either way."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return  # the client hung up
            except (OSError, ValueError):
                return
            if readable:
                time.sleep(min(left, 0.1))  # a pipelined request waits its turn

    def _send_mangled(self, outcome: Outcome) -> None:
        """Send the answer the way its wire fault says (see faults.WIRE_FAULTS), then close.

        Every loop is bounded: a drip gives up after DRIP_MAX_S, an oversized answer stops at
        OVERSIZE_BYTES, and both stop as soon as the client hangs up.
        """
        self.close_connection = True
        body, wire = outcome.body, outcome.wire
        self.send_response(outcome.status)
        self.send_header("Content-Type", outcome.content_type)
        if wire == "oversize":
            self.send_header("Connection", "close")  # no length: the body ends when the line does
        elif wire == "oversize_declared":
            self.send_header("Content-Length", str(OVERSIZE_BYTES))
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        try:
            if wire == "drip":
                deadline = time.monotonic() + DRIP_MAX_S
                for index in range(len(body)):
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    time.sleep(DRIP_INTERVAL_S)
            elif wire in ("oversize", "oversize_declared"):
                # Valid JSON so far, then whitespace: only its size is wrong.
                self.wfile.write(b'{"errcode":0,"errmsg":"ok","rule_list":[')
                block = b" " * 65536
                for _ in range(OVERSIZE_BYTES // len(block)):
                    self.wfile.write(block)
            else:  # reset, truncated: half the answer, then the line goes
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if wire == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
        except OSError:
            pass  # the client hung up, as it should on a bounded read

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):  # once a request: skip the masking unless shown
            logger.debug("simulator: %s", _SECRET_IN_URL.sub(r"\1***", format % args))


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that remembers its open connections so that stop() can end them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's name; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise wait for a request."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("simulator: connection from %s failed", client_address, exc_info=True)


class RunningSimulator:
    """A simulator serving in a background thread; ``stop()`` or leaving a ``with`` ends it."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        self.url = (
            f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"
        )
        self.admin = SimulatorAdmin(self.url)
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"qrsync-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def simulator(self) -> Simulator:
        """The state behind the server, for in-process inspection."""
        return self._server.simulator

    def stop(self) -> None:
        """Stop serving, end open connections and wait for the server thread; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()
        self.admin.close()

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 1,
    world: Mapping[str, Any] | None = None,
    rate_limit: bool = True,
    latency_ms: int = 0,
) -> RunningSimulator:
    """Start a simulator in a background thread; ``world`` None is an empty world.

    Raises :class:`WorldError` for an invalid world and OSError when the port cannot be bound.
    """
    if latency_ms < 0:
        raise ValueError("latency_ms must be 0 or more")
    simulator = Simulator(seed, world, Settings(rate_limit=rate_limit, latency_ms=latency_ms))
    return RunningSimulator(_Server((host, port), simulator))
