"""Fault injection: the failures qrsync must survive, switched on per request by the admin API.

A fault names an endpoint, optionally narrows it (caller appid, page_num, get_type), skips the
first ``after`` matching requests, hits the next ``times`` ones (-1: forever), and has exactly one
effect: an errcode, an HTTP status, a garbage body, a delay, a dropped connection, a malformed
listing, drift (rules added and deleted mid-listing), the endpoint's own answer mangled on the
wire (:data:`WIRE_FAULTS`), or sent under another Content-Type. When several faults match a request
the oldest one that is due fires; each matching fault still counts the request towards its
``after``.
"""

from __future__ import annotations

import http
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qrsync.simulator.world import ENDPOINTS, Json, WorldError, is_int

MALFORMATIONS: tuple[str, ...] = (
    "missing_rule_list",
    "rule_list_not_list",
    "rule_missing_prefix",
    "state_not_int",
    "missing_total_count",
    "rule_dropped",
)
"""How a successful listing can be malformed: a key missing or of the wrong type, or its last
rule dropped while ``list_size`` still counts it (rule_dropped)."""
WIRE_FAULTS: tuple[str, ...] = (
    "drip",
    "oversize",
    "oversize_declared",
    "reset",
    "truncated",
)
"""How the endpoint's own answer can go wrong on the wire: sent a byte at a time and never
finished in time (drip), far larger than any real answer, with or without saying so in its
Content-Length (oversize, oversize_declared), cut by a TCP reset or a plain close half-way
through (reset, truncated)."""
EFFECTS: tuple[str, ...] = (
    "errcode",
    "http_status",
    "body",
    "delay_s",
    "drop",
    "malformed",
    "drift",
    "wire",
    "content_type",
)
# Effects that answer instead of the endpoint; the others let it answer.
REPLACING: frozenset[str] = frozenset({"errcode", "http_status", "body", "drop"})
_LISTING_ONLY: frozenset[str] = frozenset({"malformed", "drift"})


@dataclass
class Fault:
    """One armed fault and how much of it is left."""

    id: str
    endpoint: str
    effect: str
    appid: str | None = None
    page_num: int | None = None
    get_type: int | None = None
    after: int = 0
    times: int = 1
    errcode: int = 0
    errmsg: str | None = None
    http_status: int = 0
    body: str = ""
    delay_s: float = 0.0
    malformed: str = ""
    wire: str = ""
    content_type: str = ""
    drift_add: int = 0
    drift_delete: int = 0
    skipped: int = 0
    fired: int = 0

    @property
    def replaces_answer(self) -> bool:
        return self.effect in REPLACING

    @property
    def remaining(self) -> int:
        """Requests this fault will still hit (-1: forever)."""
        return -1 if self.times < 0 else max(0, self.times - self.fired)

    def matches(
        self, endpoint: str, appid: str | None, get_type: int | None, page_num: int | None
    ) -> bool:
        return (
            self.endpoint == endpoint
            and (self.appid is None or self.appid == appid)
            and (self.get_type is None or self.get_type == get_type)
            and (self.page_num is None or self.page_num == page_num)
        )

    def view(self) -> Json:
        effect: Any = {
            "errcode": self.errcode,
            "http_status": self.http_status,
            "body": self.body,
            "delay_s": self.delay_s,
            "drop": True,
            "malformed": self.malformed,
            "drift": {"add": self.drift_add, "delete": self.drift_delete},
            "wire": self.wire,
            "content_type": self.content_type,
        }[self.effect]
        view: Json = {"id": self.id, "endpoint": self.endpoint, self.effect: effect}
        if self.errmsg is not None:
            view["errmsg"] = self.errmsg
        for key in ("appid", "page_num", "get_type"):
            if getattr(self, key) is not None:
                view[key] = getattr(self, key)
        view.update(after=self.after, times=self.times, fired=self.fired)
        view["remaining"] = self.remaining
        return view

    def error_page(self) -> bytes:
        """The short HTML a reverse proxy answers with when the upstream fails."""
        try:
            phrase = http.HTTPStatus(self.http_status).phrase
        except ValueError:
            phrase = "Error"
        title = f"{self.http_status} {phrase}"
        return (
            f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
            "<hr><center>nginx</center></body></html>"
        ).encode()


def _int(data: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = data.get(key, default)
    if not is_int(value) or value < minimum:
        raise WorldError(f"fault.{key}: must be an integer of at least {minimum}")
    return int(value)


def parse_fault(data: object, fault_id: str) -> Fault:
    """Check a fault as the admin API received it and arm it."""
    if not isinstance(data, Mapping):
        raise WorldError("fault: expected a JSON object")
    filters = {"endpoint", "appid", "page_num", "get_type", "after", "times", "errmsg"}
    unknown = sorted(set(data) - filters - set(EFFECTS))
    if unknown:
        raise WorldError(f"fault: unknown key {unknown[0]!r}")
    effects = [key for key in EFFECTS if key in data]
    if len(effects) != 1:
        raise WorldError(f"fault: needs exactly one effect of {', '.join(EFFECTS)}")
    endpoint = data.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise WorldError(f"fault.endpoint: must be one of {', '.join(ENDPOINTS)}")
    fault = Fault(id=fault_id, endpoint=str(endpoint), effect=effects[0])
    appid = data.get("appid")
    if appid is not None and not isinstance(appid, str):
        raise WorldError("fault.appid: must be a string")
    fault.appid = appid
    if "page_num" in data or "get_type" in data or fault.effect in _LISTING_ONLY:
        if endpoint != "qrcodejumpget":
            raise WorldError("fault: page_num, get_type, malformed and drift need qrcodejumpget")
    fault.page_num = _int(data, "page_num", 1, 1) if "page_num" in data else None
    fault.get_type = _int(data, "get_type", 0, 0) if "get_type" in data else None
    fault.after = _int(data, "after", 0, 0)
    fault.times = _int(data, "times", 1, -1)
    if fault.times == 0:
        raise WorldError("fault.times: must be -1 (forever) or at least 1")
    errmsg = data.get("errmsg")
    if errmsg is not None and (fault.effect != "errcode" or not isinstance(errmsg, str)):
        raise WorldError("fault.errmsg: a string, with an errcode effect only")
    fault.errmsg = errmsg
    _set_effect(fault, data[fault.effect])
    return fault


def _set_effect(fault: Fault, value: object) -> None:
    if fault.effect == "errcode":
        if not is_int(value) or value == 0:
            raise WorldError("fault.errcode: must be a non-zero integer")
        fault.errcode = value
    elif fault.effect == "http_status":
        if not is_int(value) or not 400 <= value <= 599:
            raise WorldError("fault.http_status: must be an integer from 400 to 599")
        fault.http_status = value
    elif fault.effect == "body":
        if not isinstance(value, str):
            raise WorldError("fault.body: must be a string")
        fault.body = value
    elif fault.effect == "delay_s":
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 600:
            raise WorldError("fault.delay_s: must be a number of seconds from 0 to 600")
        fault.delay_s = float(value)
    elif fault.effect == "drop":
        if value is not True:
            raise WorldError("fault.drop: must be true")
    elif fault.effect == "wire":
        if value not in WIRE_FAULTS:
            raise WorldError(f"fault.wire: must be one of {', '.join(WIRE_FAULTS)}")
        fault.wire = str(value)
    elif fault.effect == "content_type":
        if not isinstance(value, str) or not value or not value.isprintable():
            raise WorldError("fault.content_type: must be a non-empty printable string")
        fault.content_type = value
    elif fault.effect == "malformed":
        if value not in MALFORMATIONS:
            raise WorldError(f"fault.malformed: must be one of {', '.join(MALFORMATIONS)}")
        fault.malformed = str(value)
    else:
        if not isinstance(value, Mapping) or not set(value) <= {"add", "delete"}:
            raise WorldError('fault.drift: must be {"add": N, "delete": M}')
        fault.drift_add = _int(value, "add", 0, 0)
        fault.drift_delete = _int(value, "delete", 0, 0)


class FaultBook:
    """The armed faults, in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._count = 0

    def add(self, data: object) -> Fault:
        self._count += 1
        fault = parse_fault(data, f"f{self._count}")
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def views(self) -> list[Json]:
        return [fault.view() for fault in self._faults]

    def take(
        self, endpoint: str, appid: str | None, get_type: int | None, page_num: int | None
    ) -> Fault | None:
        """The fault that hits this request, if any, counted as fired."""
        chosen: Fault | None = None
        for fault in self._faults:
            if fault.remaining == 0 or not fault.matches(endpoint, appid, get_type, page_num):
                continue
            if fault.skipped < fault.after:
                fault.skipped += 1
            elif chosen is None:
                chosen = fault
                fault.fired += 1
        return chosen


def malform(payload: Json, how: str) -> None:
    """Break a successful qrcodejumpget answer the way ``how`` says, in place."""
    rules = payload.get("rule_list")
    if how == "missing_rule_list":
        payload.pop("rule_list", None)
    elif how == "rule_list_not_list" and isinstance(rules, list):
        payload["rule_list"] = {str(index): rule for index, rule in enumerate(rules)}
    elif how == "rule_missing_prefix" and isinstance(rules, list) and rules:
        rules[0].pop("prefix", None)
    elif how == "state_not_int" and isinstance(rules, list) and rules:
        rules[0]["state"] = str(rules[0].get("state"))
    elif how == "missing_total_count":
        payload.pop("total_count", None)
    elif how == "rule_dropped" and isinstance(rules, list) and rules:
        rules.pop()  # the answer's list_size still counts it
