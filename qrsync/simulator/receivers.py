"""Notification receivers served by the simulator: one per channel kind, each checking a request
the way its platform does, answering the platform's way, and recording what it got.

Paths, on the simulator's base URL (a robot is created the first time its id is used, with no
secret and no fault, unless the admin API set it up first)::

    wecom     POST /cgi-bin/webhook/send?key=<id>
    dingtalk  POST /robot/send?access_token=<id>
    feishu    POST /open-apis/bot/v2/hook/<id>       (lark: the same path; a robot set up as
    lark                                              "lark" answers as Lark, ids are shared)
    slack     POST /services/<T>/<B>/<X>             (the id is "T/B/X")
    webhook   POST /hooks/<id>

:func:`receiver_path` builds them. What each checks, in the platform's order:

- its signature, when the robot has a secret: DingTalk's ``timestamp`` (ms) and ``sign`` in the
  query (errcode 310000 "sign not match" or "invalid timestamp"), Feishu's and Lark's in the body
  (code 19021), the webhook's ``X-Qrsync-Timestamp`` and ``X-Qrsync-Signature`` (HTTP 401). A
  timestamp more than an hour away from this machine's real clock is refused, as the platforms
  do (the simulated WeChat clock plays no part). WeCom and Slack robots are not signed.
- its rate limit, per robot, over sliding windows: WeCom 20 a minute (errcode 45009 "api freq
  out of limit"), DingTalk 20 a minute (130101 "send too fast, exceed 20 times per minute"),
  Feishu and Lark 100 a minute and 5 a second (code 11232 "frequency limited psm"), Slack 1 a
  second (HTTP 429 ``rate_limited`` with ``Retry-After``), webhook 60 a minute (HTTP 429 with
  ``Retry-After``). All in-body errors come with HTTP 200, as on the platforms.
- its format and size: WeCom ``msgtype`` (40008) and content of at most 4,096 bytes for markdown,
  2,048 for text (40058 "markdown.content exceed max length 4096"); DingTalk ``msgtype`` and
  markdown title and text (40035), body at most 20,000 bytes (460101 "message too long, exceed
  20000 bytes"); Feishu/Lark ``msg_type`` and its content, body at most 20 KB (9499 "Bad
  Request"); Slack text or blocks, at most 50 blocks, 3,000 characters a section and 150 the
  header (HTTP 400 ``no_text``, ``invalid_blocks``, ``invalid_payload``); the webhook's schema
  (qrsync/notify/channels.py), at most 500 events and 1,000,000 bytes (HTTP 400, 413).
- a keyword, when the robot has one (DingTalk 310000 "keywords not in content", Feishu 19024).

A robot's fault mode replaces all that: ``ok`` (check and answer as above), ``in_body_error``
(HTTP 200 with the platform's error in the body: ``errcode``/``errmsg`` as set, else WeCom -1,
DingTalk -1, Feishu 19007 "Bot Not Enabled", Slack "invalid_payload"; the webhook answers 400),
``rate_limited`` (the platform's rate-limit answer), ``http_500``, ``slow`` (check and answer
after ``slow_s`` seconds, at most :data:`SLOW_MAX_S`), ``no_answer`` (read the request, say
nothing, close the line after ``slow_s`` seconds or :data:`NO_ANSWER_MAX_S`, sooner when the
client hangs up), ``down`` (close the line at once), ``unknown`` (answer as for a key that does
not exist: WeCom 93000, DingTalk 300005, Feishu 19001, Slack 404 ``no_service``, webhook 404).
``times`` limits a fault to that many requests, after which the robot is ``ok`` again.

Admin endpoints (see server.py; :class:`qrsync.simulator.admin.SimulatorAdmin` wraps them):
``PUT /sim/receivers/<kind>/<id>`` (body ``{secret, fault, slow_s, errcode, errmsg, times,
keyword, rate_limit}``; the robot's whole set-up, what it received is kept),
``GET /sim/receivers/<kind>/<id>``, ``GET|DELETE /sim/receivers/<kind>/<id>/messages``,
``GET|DELETE /sim/receivers``. Ids in admin paths are percent-encoded (a Slack id has slashes).
Every request is recorded (at most :data:`MAX_RECORDS` a robot, oldest dropped), with
``accepted`` true only for what the platform would have posted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from qrsync.simulator.world import Json, NotFound, WorldError, is_int

KINDS: tuple[str, ...] = ("wecom", "dingtalk", "feishu", "lark", "slack", "webhook")
FAULTS: tuple[str, ...] = (
    "ok",
    "in_body_error",
    "rate_limited",
    "http_500",
    "slow",
    "no_answer",
    "down",
    "unknown",
)
SLOW_MAX_S = 30.0
NO_ANSWER_MAX_S = 30.0
MAX_RECORDS = 10_000
SIGNATURE_WINDOW_S = 3600.0
RATE_WINDOWS: dict[str, tuple[tuple[float, int], ...]] = {
    "wecom": ((60.0, 20),),
    "dingtalk": ((60.0, 20),),
    "feishu": ((60.0, 100), (1.0, 5)),
    "slack": ((1.0, 1),),
    "webhook": ((60.0, 60),),
}
WECOM_MARKDOWN_BYTES = 4096
WECOM_TEXT_BYTES = 2048
DINGTALK_BODY_BYTES = 20_000
FEISHU_BODY_BYTES = 20 * 1024
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_CHARS = 3000
SLACK_HEADER_CHARS = 150
WEBHOOK_BODY_BYTES = 1_000_000
WEBHOOK_MAX_EVENTS = 500
_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=utf-8"


def family(kind: str) -> str:
    """Feishu and Lark robots share one path and one set of ids."""
    return "feishu" if kind == "lark" else kind


def receiver_path(kind: str, receiver_id: str) -> str:
    """The path (and query) a channel of ``kind`` posts to for the robot ``receiver_id``."""
    if kind == "wecom":
        return f"/cgi-bin/webhook/send?key={quote(receiver_id, safe='')}"
    if kind == "dingtalk":
        return f"/robot/send?access_token={quote(receiver_id, safe='')}"
    if kind in ("feishu", "lark"):
        return f"/open-apis/bot/v2/hook/{quote(receiver_id, safe='')}"
    if kind == "slack":
        return "/services/" + "/".join(quote(part, safe="") for part in receiver_id.split("/"))
    if kind == "webhook":
        return f"/hooks/{quote(receiver_id, safe='')}"
    raise ValueError(f"unknown receiver kind {kind!r}")


_HOOK = re.compile(r"/open-apis/bot/v2/hook/([^/]+)")
_SLACK = re.compile(r"/services/([^/]+/[^/]+/[^/]+)")
_WEBHOOK = re.compile(r"/hooks/([^/]+)")


def match(method: str, path: str, query: Mapping[str, str]) -> tuple[str, str] | None:
    """The receiver family and robot id a request is for, or None when it is for none."""
    if method != "POST":
        return None
    if path == "/cgi-bin/webhook/send":
        return "wecom", query.get("key", "")
    if path == "/robot/send":
        return "dingtalk", query.get("access_token", "")
    for family_name, pattern in (("feishu", _HOOK), ("slack", _SLACK), ("webhook", _WEBHOOK)):
        found = pattern.fullmatch(path)
        if found is not None:
            return family_name, found.group(1)
    return None


@dataclass(frozen=True)
class Reply:
    """What the receiver answers; ``pause_s`` before it, or nothing at all when ``drop``."""

    status: int = 200
    body: bytes = b""
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()
    pause_s: float = 0.0
    drop: bool = False


@dataclass
class Robot:
    """One robot (a key, a token, a hook): its set-up, its rate windows and what it got."""

    kind: str
    id: str
    secret: str | None = None
    fault: str = "ok"
    slow_s: float = 0.0
    errcode: int | None = None
    errmsg: str | None = None
    times: int = -1
    keyword: str | None = None
    rate_limit: bool = True
    admitted: deque[float] = field(default_factory=deque)
    records: deque[Json] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
    received: int = 0
    accepted: int = 0

    def view(self) -> Json:
        return {
            "kind": self.kind,
            "id": self.id,
            "path": receiver_path(self.kind, self.id),
            "secret_set": self.secret is not None,
            "fault": self.fault,
            "slow_s": self.slow_s,
            "errcode": self.errcode,
            "errmsg": self.errmsg,
            "times": self.times,
            "keyword": self.keyword,
            "rate_limit": self.rate_limit,
            "received": self.received,
            "accepted": self.accepted,
        }


@dataclass
class _Verdict:
    """The outcome of checking one request."""

    reply: Reply
    outcome: str  # accepted, refused, rate_limited, in_body_error, http_500, no_answer, down, ...
    code: int | None = None
    reason: str = ""
    accepted: bool = False


def _json_reply(
    payload: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Reply(status, body, _JSON, headers)


def _parse(raw: bytes) -> Json | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _texts(value: object) -> list[str]:
    """Every string under a ``content`` or ``text`` key of a card or post, in order."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("content", "text") and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_texts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_texts(item))
    return found


def _dig(value: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


class Receivers:
    """Every robot of every kind; the simulator calls it under its lock."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._robots: dict[tuple[str, str], Robot] = {}
        self._wall = wall_clock
        self._sequence = 0

    # --- admin -------------------------------------------------------------------------

    def configure(self, kind: str, receiver_id: str, body: Mapping[str, Any]) -> Json:
        """Set a robot up (creating it), keeping what it received."""
        if kind not in KINDS:
            raise WorldError(f"kind: one of {', '.join(KINDS)}")
        if not receiver_id:
            raise WorldError("id: required")
        unknown = set(body) - {
            "secret",
            "fault",
            "slow_s",
            "errcode",
            "errmsg",
            "times",
            "keyword",
            "rate_limit",
        }
        if unknown:
            raise WorldError(f"unknown setting {sorted(unknown)[0]}")
        secret = body.get("secret")
        fault = body.get("fault", "ok")
        slow_s = body.get("slow_s", 0.0)
        errcode = body.get("errcode")
        errmsg = body.get("errmsg")
        times = body.get("times", -1)
        keyword = body.get("keyword")
        rate_limit = body.get("rate_limit", True)
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise WorldError("secret: a non-empty string or null")
        if fault not in FAULTS:
            raise WorldError(f"fault: one of {', '.join(FAULTS)}")
        if not isinstance(slow_s, int | float) or isinstance(slow_s, bool) or slow_s < 0:
            raise WorldError("slow_s: a number of seconds, 0 or more")
        if slow_s > SLOW_MAX_S:
            raise WorldError(f"slow_s: at most {SLOW_MAX_S:g}")
        if errcode is not None and not is_int(errcode):
            raise WorldError("errcode: an integer or null")
        if errmsg is not None and not isinstance(errmsg, str):
            raise WorldError("errmsg: a string or null")
        if not is_int(times) or (times < 1 and times != -1):
            raise WorldError("times: a positive integer, or -1 for every request")
        if keyword is not None and (not isinstance(keyword, str) or not keyword):
            raise WorldError("keyword: a non-empty string or null")
        if not isinstance(rate_limit, bool):
            raise WorldError("rate_limit: true or false")
        robot = self._robot(kind, receiver_id)
        robot.kind = kind
        robot.secret, robot.fault, robot.slow_s = secret, fault, float(slow_s)
        robot.errcode, robot.errmsg, robot.times = errcode, errmsg, times
        robot.keyword, robot.rate_limit = keyword, rate_limit
        return robot.view()

    def view(self, kind: str, receiver_id: str) -> Json:
        return self._existing(kind, receiver_id).view()

    def views(self) -> list[Json]:
        return [robot.view() for robot in self._robots.values()]

    def messages(self, kind: str, receiver_id: str) -> list[Json]:
        return list(self._existing(kind, receiver_id).records)

    def clear_messages(self, kind: str, receiver_id: str) -> None:
        robot = self._existing(kind, receiver_id)
        robot.records.clear()
        robot.received = robot.accepted = 0

    def clear(self) -> None:
        self._robots.clear()

    def _robot(self, kind: str, receiver_id: str) -> Robot:
        key = (family(kind), receiver_id)
        robot = self._robots.get(key)
        if robot is None:
            robot = self._robots[key] = Robot(kind, receiver_id)
        return robot

    def _existing(self, kind: str, receiver_id: str) -> Robot:
        if kind not in KINDS:
            raise WorldError(f"kind: one of {', '.join(KINDS)}")
        robot = self._robots.get((family(kind), receiver_id))
        if robot is None:
            raise NotFound(f"no {kind} receiver {receiver_id}")
        return robot

    # --- receiving -------------------------------------------------------------------------

    def receive(
        self,
        family_name: str,
        receiver_id: str,
        headers: Mapping[str, str],
        raw: bytes,
        query: Mapping[str, str],
    ) -> Reply:
        """Check one request for the robot, record it, and say how to answer."""
        if not receiver_id:
            return _unknown(family_name).reply
        robot = self._robot(family_name, receiver_id)
        fault = robot.fault
        if fault != "ok" and robot.times > 0:
            robot.times -= 1
            if robot.times == 0:
                robot.fault, robot.times = "ok", -1
        verdict = self._check(robot, fault, headers, raw, query)
        if fault == "slow":
            verdict.reply = _with_pause(verdict.reply, min(robot.slow_s, SLOW_MAX_S))
        self._record(robot, verdict, raw, headers)
        return verdict.reply

    def _check(
        self,
        robot: Robot,
        fault: str,
        headers: Mapping[str, str],
        raw: bytes,
        query: Mapping[str, str],
    ) -> _Verdict:
        kind = robot.kind
        if fault == "down":
            return _Verdict(Reply(drop=True), "down")
        if fault == "no_answer":
            hold = min(robot.slow_s or NO_ANSWER_MAX_S, NO_ANSWER_MAX_S)
            return _Verdict(Reply(drop=True, pause_s=hold), "no_answer")
        if fault == "unknown":
            return _unknown(family(kind))
        if fault == "http_500":
            page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
            return _Verdict(Reply(500, page, _HTML), "http_500", reason="Internal Server Error")
        if fault == "rate_limited":
            return _rate_limited(kind, 1.0)
        if fault == "in_body_error":
            return _in_body_error(robot)
        now = self._wall()
        body = _parse(raw)
        refusal = _signature(robot, now, headers, raw, body, query)
        if refusal is not None:
            return refusal
        if robot.rate_limit:
            wait = _admit(robot, time.monotonic())
            if wait is not None:
                return _rate_limited(kind, wait)
        refusal = _format(kind, raw, body)
        if refusal is not None:
            return refusal
        if robot.keyword is not None:
            title, text, _ = extract(kind, body or {})
            if robot.keyword not in title + "\n" + text:
                if family(kind) == "dingtalk":
                    return _dingtalk(310000, "keywords not in content")
                if family(kind) == "feishu":
                    return _feishu(19024, "Key Words Not Found")
        return _Verdict(_success(kind), "accepted", 0, "ok", accepted=True)

    def _record(
        self, robot: Robot, verdict: _Verdict, raw: bytes, headers: Mapping[str, str]
    ) -> None:
        self._sequence += 1
        body = _parse(raw)
        title, text, event_ids = extract(robot.kind, body or {})
        robot.received += 1
        robot.accepted += 1 if verdict.accepted else 0
        robot.records.append(
            {
                "n": self._sequence,
                "at": self._wall(),
                "accepted": verdict.accepted,
                "outcome": verdict.outcome,
                "status": None if verdict.reply.drop else verdict.reply.status,
                "code": verdict.code,
                "reason": verdict.reason,
                "title": title,
                "text": text,
                "event_ids": event_ids,
                "bytes": len(raw),
                "body": body,
            }
        )


def _with_pause(reply: Reply, seconds: float) -> Reply:
    return Reply(reply.status, reply.body, reply.content_type, reply.headers, seconds, reply.drop)


def _success(kind: str) -> Reply:
    fam = family(kind)
    if fam in ("wecom", "dingtalk"):
        return _json_reply({"errcode": 0, "errmsg": "ok"})
    if fam == "feishu":
        return _json_reply(
            {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
        )
    if fam == "slack":
        return Reply(200, b"ok", _HTML)
    return _json_reply({"ok": True})


def _wecom(code: int, message: str) -> _Verdict:
    outcome = "rate_limited" if code == 45009 else "refused"
    return _Verdict(_json_reply({"errcode": code, "errmsg": message}), outcome, code, message)


def _dingtalk(code: int, message: str) -> _Verdict:
    outcome = "rate_limited" if code == 130101 else "refused"
    return _Verdict(_json_reply({"errcode": code, "errmsg": message}), outcome, code, message)


def _feishu(code: int, message: str) -> _Verdict:
    outcome = "rate_limited" if code == 11232 else "refused"
    return _Verdict(_json_reply({"code": code, "msg": message, "data": {}}), outcome, code, message)


def _http(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> _Verdict:
    outcome = "rate_limited" if status == 429 else "refused"
    return _Verdict(Reply(status, text.encode(), _HTML, headers), outcome, status, text)


def _webhook_error(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> _Verdict:
    outcome = "rate_limited" if status == 429 else "refused"
    return _Verdict(_json_reply({"error": text}, status, headers), outcome, status, text)


def _unknown(fam: str) -> _Verdict:
    if fam == "wecom":
        return _wecom(93000, "invalid webhook url, hint: [qrsync-simulator]")
    if fam == "dingtalk":
        return _dingtalk(300005, "token is not exist")
    if fam == "feishu":
        return _feishu(19001, "param invalid: incoming webhook access token invalid")
    if fam == "slack":
        return _http(404, "no_service")
    return _webhook_error(404, "no such hook")


def _rate_limited(kind: str, wait_s: float) -> _Verdict:
    fam = family(kind)
    if fam == "wecom":
        return _wecom(45009, "api freq out of limit")
    if fam == "dingtalk":
        return _dingtalk(130101, "send too fast, exceed 20 times per minute")
    if fam == "feishu":
        return _feishu(11232, "frequency limited psm[lark.oapi.app_platform_runtime]")
    retry = (("Retry-After", str(max(1, math.ceil(wait_s)))),)
    if fam == "slack":
        return _http(429, "rate_limited", retry)
    return _webhook_error(429, "rate limited", retry)


def _in_body_error(robot: Robot) -> _Verdict:
    fam = family(robot.kind)
    if fam == "wecom":
        verdict = _wecom(
            -1 if robot.errcode is None else robot.errcode, robot.errmsg or "system error"
        )
    elif fam == "dingtalk":
        verdict = _dingtalk(
            -1 if robot.errcode is None else robot.errcode, robot.errmsg or "系统繁忙"
        )
    elif fam == "feishu":
        verdict = _feishu(
            19007 if robot.errcode is None else robot.errcode, robot.errmsg or "Bot Not Enabled"
        )
    elif fam == "slack":
        verdict = _Verdict(
            Reply(200, (robot.errmsg or "invalid_payload").encode(), _HTML),
            "in_body_error",
            200,
            robot.errmsg or "invalid_payload",
        )
    else:
        verdict = _webhook_error(400, robot.errmsg or "rejected by the receiver")
    verdict.outcome = "in_body_error"
    return verdict


def _admit(robot: Robot, now: float) -> float | None:
    """Count the request in the robot's windows, or the seconds until it would fit."""
    windows = RATE_WINDOWS[family(robot.kind)]
    longest = max(seconds for seconds, _ in windows)
    while robot.admitted and robot.admitted[0] <= now - longest:
        robot.admitted.popleft()
    wait = 0.0
    for seconds, allowed in windows:
        inside = [t for t in robot.admitted if t > now - seconds]
        if len(inside) >= allowed:
            wait = max(wait, inside[-allowed] + seconds - now)
    if wait > 0:
        return wait
    robot.admitted.append(now)
    return None


def _within(timestamp_s: float, now: float) -> bool:
    return abs(now - timestamp_s) <= SIGNATURE_WINDOW_S


def _signature(
    robot: Robot,
    now: float,
    headers: Mapping[str, str],
    raw: bytes,
    body: Json | None,
    query: Mapping[str, str],
) -> _Verdict | None:
    """The platform's refusal of a badly signed request, or None (also when no secret is set)."""
    secret = robot.secret
    fam = family(robot.kind)
    if secret is None or fam in ("wecom", "slack"):
        return None
    if fam == "dingtalk":
        stamp, sign = query.get("timestamp", ""), query.get("sign", "")
        if not stamp.isdigit() or not sign:
            return _dingtalk(310000, "sign not match")
        if not _within(int(stamp) / 1000, now):
            return _dingtalk(310000, "invalid timestamp")
        digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
            return _dingtalk(310000, "sign not match")
        return None
    if fam == "feishu":
        refused = _feishu(
            19021, "sign match fail or timestamp is not within one hour from current time"
        )
        if body is None:
            return None  # the format check answers 9499
        moment, signed = str(body.get("timestamp", "")), body.get("sign")
        if not moment.isdigit() or not isinstance(signed, str) or not _within(int(moment), now):
            return refused
        digest = hmac.new(f"{moment}\n{secret}".encode(), b"", hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signed):
            return refused
        return None
    stamp = headers.get("x-qrsync-timestamp", "")
    given = headers.get("x-qrsync-signature", "")
    if not stamp.isdigit() or not given:
        return _webhook_error(401, "missing X-Qrsync-Timestamp or X-Qrsync-Signature")
    if not _within(int(stamp), now):
        return _webhook_error(401, "X-Qrsync-Timestamp is more than an hour away")
    expected = (
        "sha256="
        + hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    )
    if not hmac.compare_digest(expected, given):
        return _webhook_error(401, "signature mismatch")
    return None


def _format(kind: str, raw: bytes, body: Json | None) -> _Verdict | None:
    fam = family(kind)
    if fam == "wecom":
        return _wecom_format(body)
    if fam == "dingtalk":
        return _dingtalk_format(raw, body)
    if fam == "feishu":
        return _feishu_format(raw, body)
    if fam == "slack":
        return _slack_format(body)
    return _webhook_format(raw, body)


def _wecom_format(body: Json | None) -> _Verdict | None:
    if body is None:
        return _wecom(40035, "invalid parameter: the body is not a JSON object")
    msgtype = body.get("msgtype")
    if msgtype not in ("text", "markdown", "markdown_v2"):
        return _wecom(40008, "invalid message type")
    content = _dig(body, str(msgtype), "content")
    if not isinstance(content, str) or not content:
        return _wecom(40035, f"invalid parameter: {msgtype}.content missing")
    limit = WECOM_TEXT_BYTES if msgtype == "text" else WECOM_MARKDOWN_BYTES
    if len(content.encode()) > limit:
        return _wecom(40058, f"{msgtype}.content exceed max length {limit}")
    return None


def _dingtalk_format(raw: bytes, body: Json | None) -> _Verdict | None:
    if body is None:
        return _dingtalk(40035, "缺少参数 json")
    if len(raw) > DINGTALK_BODY_BYTES:
        return _dingtalk(460101, "message too long, exceed 20000 bytes")
    msgtype = body.get("msgtype")
    if msgtype == "markdown":
        for key in ("title", "text"):
            value = _dig(body, "markdown", key)
            if not isinstance(value, str) or not value:
                return _dingtalk(40035, f"缺少参数 markdown.{key}")
        return None
    if msgtype == "text":
        value = _dig(body, "text", "content")
        if not isinstance(value, str) or not value:
            return _dingtalk(40035, "缺少参数 text.content")
        return None
    if msgtype in ("link", "actionCard", "feedCard"):
        return None
    return _dingtalk(40035, "缺少参数 msgtype")


def _feishu_format(raw: bytes, body: Json | None) -> _Verdict | None:
    bad = _feishu(9499, "Bad Request")
    if body is None or len(raw) > FEISHU_BODY_BYTES:
        return bad
    msg_type = body.get("msg_type")
    if msg_type == "interactive":
        return None if isinstance(body.get("card"), dict) else bad
    if msg_type == "text":
        return None if isinstance(_dig(body, "content", "text"), str) else bad
    if msg_type == "post":
        return None if isinstance(_dig(body, "content", "post"), dict) else bad
    if msg_type in ("image", "share_chat"):
        return None if isinstance(body.get("content"), dict) else bad
    return _feishu(19002, "params error, msg_type need")


def _slack_format(body: Json | None) -> _Verdict | None:
    if body is None:
        return _http(400, "invalid_payload")
    blocks = body.get("blocks")
    text = body.get("text")
    if blocks is None:
        return None if isinstance(text, str) and text else _http(400, "no_text")
    if not isinstance(blocks, list) or not blocks or len(blocks) > SLACK_MAX_BLOCKS:
        return _http(400, "invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict):
            return _http(400, "invalid_blocks")
        content = _dig(block, "text", "text")
        if block.get("type") == "header":
            if not isinstance(content, str) or not 0 < len(content) <= SLACK_HEADER_CHARS:
                return _http(400, "invalid_blocks")
        elif block.get("type") == "section":
            if not isinstance(content, str) or not 0 < len(content) <= SLACK_SECTION_CHARS:
                return _http(400, "invalid_blocks")
    return None


def _webhook_format(raw: bytes, body: Json | None) -> _Verdict | None:
    if len(raw) > WEBHOOK_BODY_BYTES:
        return _webhook_error(413, f"the body is larger than {WEBHOOK_BODY_BYTES} bytes")
    if body is None:
        return _webhook_error(400, "the body is not a JSON object")
    if body.get("version") != 1:
        return _webhook_error(400, "version: must be 1")
    if not isinstance(body.get("channel"), str):
        return _webhook_error(400, "channel: must be a string")
    events = body.get("events")
    if not isinstance(events, list):
        return _webhook_error(400, "events: must be a list")
    if len(events) > WEBHOOK_MAX_EVENTS:
        return _webhook_error(413, f"events: at most {WEBHOOK_MAX_EVENTS} a request")
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            return _webhook_error(400, f"events[{index}]: must be an object")
        if not is_int(event.get("id")):
            return _webhook_error(400, f"events[{index}].id: must be an integer")
        for key in ("kind", "account", "occurred_at"):
            if not isinstance(event.get(key), str):
                return _webhook_error(400, f"events[{index}].{key}: must be a string")
    more = body.get("more", 0)
    if not is_int(more) or more < 0:
        return _webhook_error(400, "more: must be an integer, 0 or more")
    return None


def extract(kind: str, body: Mapping[str, Any]) -> tuple[str, str, list[int]]:
    """A request's title, its text as a person would read it, and (webhook) its event ids."""
    fam = family(kind)
    if fam == "wecom":
        msgtype = str(body.get("msgtype", ""))
        content = _dig(body, msgtype, "content")
        return "", content if isinstance(content, str) else "", []
    if fam == "dingtalk":
        title = _dig(body, "markdown", "title")
        text = _dig(body, "markdown", "text") or _dig(body, "text", "content")
        return (
            title if isinstance(title, str) else "",
            text if isinstance(text, str) else "",
            [],
        )
    if fam == "feishu":
        card = body.get("card")
        if isinstance(card, dict):
            title = _dig(card, "header", "title", "content")
            return (
                title if isinstance(title, str) else "",
                "\n".join(_texts(card.get("elements"))),
                [],
            )
        return "", "\n".join(_texts(body.get("content"))), []
    if fam == "slack":
        blocks = body.get("blocks")
        if isinstance(blocks, list):
            title = "".join(
                str(_dig(b, "text", "text") or "")
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "header"
            )
            text = "\n".join(
                str(_dig(b, "text", "text") or "")
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "section"
            )
            return title, text, []
        text = body.get("text")
        return "", text if isinstance(text, str) else "", []
    events = body.get("events")
    if not isinstance(events, list):
        return "", "", []
    ids = [e["id"] for e in events if isinstance(e, dict) and is_int(e.get("id"))]
    lines = [str(e.get("text", "")) for e in events if isinstance(e, dict)]
    return "", "\n".join(lines), ids
