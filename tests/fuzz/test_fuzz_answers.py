"""Issue 7, fuzzing: generated qrcodejumpget answers, served by the simulator in place of its own,
each end in a correct mirror or in a failed run with a clear one-line message (SPEC behaviour 3),
never in a traceback and never in a partial write.

Every example is a short story of one to three syncs of one account, on tables emptied first,
so that an example means the same whenever Hypothesis replays it. Each sync is served one
generated answer (a ``body`` fault, see qrsync/simulator/faults.py): valid answers with
REFERENCE.md's quirks, and hostile ones (wrong types, missing and unknown fields, unicode, NUL,
long strings, duplicated prefixes, counts that disagree, errcodes, not an object, not JSON).

What a sync must do with an answer is decided by :func:`judge`, an oracle written from
REFERENCE.md and SPEC.md without qrsync's parser: an answer the document allows must be
mirrored, one qrsync cannot mirror verbatim must fail the run, and for the grey zone between
(a state of 7, a missing path, a float where a number is expected...) either outcome is right,
provided a mirror, when there is one, is exactly the answer.

Examples are derandomized (the same ones on every run); ``FUZZ_EXAMPLES=1000`` explores further
when run by hand.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import pytest
from helpers import (
    MP,
    MP_SECRET,
    OA,
    OA_SECRET,
    mp_account,
    mp_world,
    oa_account,
    oa_world,
    rows,
    toml_config,
)
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

MAX_DELETE_FRACTION = 0.5  # the default of sync.max_delete_fraction (SPEC behaviour 2)
PAGE_SIZE = 200  # every generated listing fits one get_type 2 page
MAX_BODY_CHARS = 600_000  # well under a megabyte on the wire
INDEXABLE_BYTES = 2000
"""PostgreSQL's btree entries hold about 2,700 bytes; rules are indexed by prefix (and debug
URLs by prefix and URL), so a longer one may be refused by the database: either outcome."""
SMALLINT = (-32768, 32767)
INTEGER = (-(2**31), 2**31 - 1)
HISTORY_TABLES = (
    "rules",
    "rule_past_versions",
    "rule_state_changes",
    "rule_debug_urls",
    "account_snapshots",
    "listing_digests",
    "staged_rules",
    "sync_runs",
)
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "70")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# --- strategies: strings ---------------------------------------------------------------------

SPECIMENS = (
    "二维码跳转规则",
    "🧧🎉👨‍👩‍👧",
    "مرحبا بالعالم",
    "\u202eevil\u202c",
    "zero\u200bwidth",
    "e\u0301",
    "\ufeffbom",
    "tab\there",
    "line\nbreak",
    "crlf\r\n",
    "\x1b[31mred\x1b[0m",
    "\x7f\x01",
    "nul\x00byte",
    "lone\ud83dsurrogate",
    "'; DROP TABLE rules; --",
    "%s %(x)s {0} %d",
    "back\\slash",
    '"quoted"',
    "\\N",
    "NULL",
    "{a,b}",
    "",
    " ",
)
LONG_PIECES = ("x", "规", "🧧", "ab\n", "\u202e")

short_text = st.one_of(st.text(max_size=12), st.sampled_from(SPECIMENS))


def _noise(seed: int, length: int) -> str:
    """Incompressible text (unlike a repeated piece), as cheap to make as a repeated one."""
    rng = random.Random(seed)
    return "".join(
        chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x4E00, 0x9FFF))))
        for _ in range(length)
    )


repeated_text = st.builds(
    lambda piece, n: (piece * n)[:n], st.sampled_from(LONG_PIECES), st.integers(1000, 10_000)
)
noise_text = st.builds(_noise, st.integers(0, 2**16), st.integers(1000, 10_000))
# Long strings are rare: a listing of long strings is a few hundred kilobytes already.
hostile_text = st.one_of(short_text, short_text, short_text, repeated_text, noise_text)
prefix_text = st.one_of(short_text, short_text, short_text, repeated_text, noise_text)

PREFIX_POOL = tuple(f"https://qr.example.com/{name}" for name in ("a", "b", "c", "d", "规则"))
prefixes = st.one_of(
    st.sampled_from(PREFIX_POOL),  # collisions: within an answer and with the run before
    st.sampled_from(PREFIX_POOL),
    st.builds("https://qr.example.com/{}".format, short_text),
    st.builds("http://weixin.qq.com/q/{}".format, short_text),
    prefix_text,
)
paths = st.one_of(
    st.sampled_from(("pages/index/index", "pages / index / index ", "")),  # REFERENCE.md quirk
    hostile_text,
)
debug_urls = st.one_of(
    st.sampled_from(
        (
            "https://qr.example.com/a?x=1",
            "https: //qr.example.com/a?x=1",  # REFERENCE.md quirk: a stray space
        )
    ),
    st.builds("https://qr.example.com/a?{}".format, short_text),
    hostile_text,
)

# --- strategies: other JSON values -----------------------------------------------------------

EDGE_INTS = (
    0,
    -1,
    1,
    2,
    3,
    4,
    7,
    32767,
    32768,
    -32768,
    -32769,
    2**31,
    2**63 - 1,
    2**64,
    -(2**63) - 1,
)
edge_ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers())
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    edge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from((1.0, 2.0, 1.5, -0.0, 1e300)),
    short_text,
)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=6,
)

# --- strategies: rules and answers -----------------------------------------------------------

RULE_FIELDS = ("prefix", "path", "state", "open_version", "permit_sub_rule", "debug_url")
TOP_FIELDS = (
    "errcode",
    "errmsg",
    "rule_list",
    "qrcodejump_open",
    "list_size",
    "qrcodejump_pub_quota",
    "total_count",
)
QUOTA_ERRCODES = (45009, 45011)
ERRCODES = (
    -1,
    40001,
    40014,
    40097,
    40166,
    42001,
    44990,
    45009,
    45011,
    61004,
    61007,
    85075,
    886001,
    99999,
)


@st.composite
def valid_rules(draw: st.DrawFn, mode: str) -> dict[str, Any]:
    """A rule as REFERENCE.md describes it for ``mode`` (mini program: every field)."""
    rule: dict[str, Any] = {
        "prefix": draw(prefixes.filter(_storable).filter(bool)),
        "path": draw(paths.filter(_storable)),
        "state": draw(st.sampled_from((1, 2))),
    }
    if mode == "miniprogram":
        rule["open_version"] = draw(st.sampled_from((1, 2, 3)))
        if draw(st.booleans()):  # in the document's example, missing from its field table
            rule["permit_sub_rule"] = draw(st.sampled_from((1, 2)))
        if draw(st.booleans()):  # 选填: optional
            urls = draw(st.lists(debug_urls.filter(_storable), max_size=5))
            if urls and draw(st.booleans()):
                urls.append(urls[0])  # REFERENCE.md quirk: the same URL twice
            rule["debug_url"] = urls[:5]
    return rule


@st.composite
def hostile_rules(draw: st.DrawFn, mode: str) -> Any:
    """A valid rule with one to three things wrong, or something that is not a rule at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(any_json)
    rule: dict[str, Any] = draw(valid_rules(mode))
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(RULE_FIELDS))
        how = draw(st.sampled_from(("drop", "retype", "int", "text", "extra", "urls")))
        if how == "drop":
            rule.pop(name, None)
        elif how == "retype":
            rule[name] = draw(any_json)
        elif how == "int":
            rule[name] = draw(edge_ints)
        elif how == "text":
            rule[name] = draw(prefix_text if name == "prefix" else hostile_text)
        elif how == "extra":
            rule[draw(short_text)] = draw(any_json)  # may also hit a known field: judged as is
        else:
            rule["debug_url"] = draw(st.lists(st.one_of(debug_urls, any_json), max_size=7))
    return rule


@st.composite
def valid_answers(draw: st.DrawFn, mode: str) -> dict[str, Any]:
    """An answer REFERENCE.md allows, quirks included: total_count above the rules listed (mini
    program), list_size off, errcode or optional counters missing, unknown members."""
    rules = draw(st.lists(valid_rules(mode), max_size=8, unique_by=lambda r: r["prefix"]))
    if rules and draw(st.integers(0, 4)) == 0:
        rules.append(dict(draw(st.sampled_from(rules))))  # the same rule listed twice
    distinct = len({r["prefix"] for r in rules})
    answer: dict[str, Any] = {
        "errcode": 0,
        "errmsg": "ok",
        "rule_list": rules,
        "qrcodejump_open": draw(st.sampled_from((0, 1))),
        "list_size": len(rules),
        "qrcodejump_pub_quota": draw(st.integers(0, 100)),
        "total_count": distinct,
    }
    if draw(st.integers(0, 3)) == 0:
        # Mini program: the document's own example says 3 for 2 rules. Service account: an
        # inconsistent listing, applied without deletions (SPEC behaviour 2).
        answer["total_count"] = distinct + draw(st.sampled_from((1, -1, 5, -distinct)))
    if draw(st.integers(0, 3)) == 0:
        answer["list_size"] = draw(st.integers(0, 20))
    for optional in ("errcode", "errmsg", "qrcodejump_open", "qrcodejump_pub_quota", "list_size"):
        if draw(st.integers(0, 5)) == 0:
            del answer[optional]
    if draw(st.integers(0, 3)) == 0:
        answer[draw(short_text.filter(lambda k: k not in TOP_FIELDS))] = draw(any_json)
    return answer


@st.composite
def hostile_answers(draw: st.DrawFn, mode: str) -> dict[str, Any]:
    """A valid answer with hostile rules mixed in, or its top-level members broken."""
    answer = draw(valid_answers(mode))
    if draw(st.booleans()):
        rules = list(answer["rule_list"])
        for _ in range(draw(st.integers(1, 3))):
            rules.insert(draw(st.integers(0, len(rules))), draw(hostile_rules(mode)))
        answer["rule_list"] = rules
    else:
        for _ in range(draw(st.integers(1, 2))):
            name = draw(st.sampled_from(TOP_FIELDS))
            how = draw(st.sampled_from(("drop", "retype", "int", "errcode")))
            if how == "drop":
                answer.pop(name, None)
            elif how == "retype":
                answer[name] = draw(any_json)
            elif how == "int":
                answer[name] = draw(edge_ints)
            else:
                answer["errcode"] = draw(st.sampled_from(ERRCODES))
                if draw(st.booleans()):
                    answer["errmsg"] = draw(hostile_text)
                else:
                    answer.pop("errmsg", None)
    return answer


def _truncated(body: str, cut: int) -> str:
    return body[: max(0, len(body) - cut)]


@st.composite
def bodies(draw: st.DrawFn, mode: str) -> str:
    """What the simulator sends: mostly JSON objects, sometimes other JSON or no JSON at all."""
    shape = draw(st.sampled_from(("valid",) * 3 + ("hostile",) * 4 + ("other_json", "not_json")))
    if shape in ("valid", "hostile"):
        answer = draw(valid_answers(mode) if shape == "valid" else hostile_answers(mode))
        # A lone surrogate only travels as an escape (\ud83d); raw, it is not UTF-8 at all.
        ascii_only = draw(st.booleans()) or _has_surrogate(answer)
        return json.dumps(answer, ensure_ascii=ascii_only)
    if shape == "other_json":
        value = draw(json_scalars | st.lists(any_json, max_size=3))
        return json.dumps(value, ensure_ascii=True)
    valid = json.dumps(draw(valid_answers(mode)))
    return draw(
        st.one_of(
            st.builds(_truncated, st.just(valid), st.integers(1, 40)),
            st.sampled_from(("", "<html>502 Bad Gateway</html>", "{", "ok", "NaN", "{'a': 1}")),
            st.text(max_size=40),
        )
    )


# --- the oracle ------------------------------------------------------------------------------


class Verdict(IntEnum):
    """What a sync must do with an answer."""

    MIRROR = 0  # the document allows it: the run must apply it
    EITHER = 1  # grey zone: applied exactly, or refused cleanly
    FAIL = 2  # cannot be mirrored verbatim: the run must fail and change nothing


Content = tuple[Any, ...]
"""(path, state, open_version, permit_sub_rule, debug_urls): a rule's row in ``rules``."""


@dataclass
class Judgement:
    verdict: Verdict = Verdict.MIRROR
    reasons: list[str] = field(default_factory=list)
    listing: dict[str, Content] = field(default_factory=dict)
    """The rules as they must be mirrored (by prefix), if the answer is applied."""
    total_count: Any = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    """Snapshot columns the answer determines exactly."""
    short: bool = False
    """The rule_list is not as long as the answer's own list_size says: applied, nothing
    deleted (rules may have been lost on the way)."""

    def at_least(self, verdict: Verdict, reason: str) -> None:
        self.reasons.append(f"{verdict.name}: {reason}")
        self.verdict = max(self.verdict, verdict)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _storable(text: str) -> bool:
    """PostgreSQL text holds neither NUL nor surrogates: such a string cannot be kept verbatim."""
    return "\x00" not in text and not _has_surrogate(text)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _small_number(j: Judgement, what: str, value: Any, documented: tuple[int, ...]) -> Any:
    """A rule's number field (REFERENCE.md: state 1/2, open_version 1-3, permit_sub_rule 1/2),
    stored in a smallint. Out of the documented values but an integer: kept as said, or
    refused. A float with a whole value (2.0 is the number 2 in JSON): the same. Anything else
    (a string, a boolean, a list) is not a number: storing it would be "fixing" it."""
    if _is_int(value) or (isinstance(value, float) and value.is_integer()):
        number = int(value)
        if not SMALLINT[0] <= number <= SMALLINT[1]:
            j.at_least(Verdict.FAIL, f"{what} {value!r} does not fit the smallint column")
        elif isinstance(value, float):
            j.at_least(Verdict.EITHER, f"{what} {value!r} is a float")
        elif number not in documented:
            j.at_least(Verdict.EITHER, f"{what} {value!r} is not a documented value")
        return number
    j.at_least(Verdict.FAIL, f"{what} {value!r} is not a number")
    return None


def _judge_rule(j: Judgement, index: int, rule: Any, mode: str) -> tuple[str, Content] | None:
    if not isinstance(rule, dict):
        j.at_least(Verdict.FAIL, f"rule {index} is not an object")
        return None
    prefix = rule.get("prefix")
    if not isinstance(prefix, str):
        j.at_least(Verdict.FAIL, f"rule {index} has no prefix string")
        return None
    if not _storable(prefix):
        j.at_least(Verdict.FAIL, f"rule {index}: prefix holds NUL or a surrogate")
    if not prefix:
        j.at_least(Verdict.EITHER, f"rule {index}: empty prefix")
    if len(prefix.encode("utf-8", "surrogatepass")) > INDEXABLE_BYTES:
        j.at_least(Verdict.EITHER, f"rule {index}: prefix too long to index")
    where = f"rule {index}"
    path = rule.get("path")
    if path is None:
        j.at_least(Verdict.EITHER, f"{where}: no path")
    elif not isinstance(path, str):
        j.at_least(Verdict.FAIL, f"{where}: path is not a string")
    elif not _storable(path):
        j.at_least(Verdict.FAIL, f"{where}: path holds NUL or a surrogate")
    state = rule.get("state")
    if state is None:
        j.at_least(Verdict.FAIL, f"{where}: no state")
    else:
        state = _small_number(j, f"{where}: state", state, (1, 2))
    numbers: list[Any] = []
    for key, documented in (("open_version", (1, 2, 3)), ("permit_sub_rule", (1, 2))):
        value = rule.get(key)
        if value is None:
            # Service accounts never send these (REFERENCE.md); the document's mini-program
            # example sends both, though its field table omits permit_sub_rule.
            if mode == "miniprogram" and key == "open_version":
                j.at_least(Verdict.EITHER, f"{where}: no open_version")
            numbers.append(None)
        else:
            numbers.append(_small_number(j, f"{where}: {key}", value, documented))
    urls = rule.get("debug_url")
    stored_urls: tuple[str, ...] | None = None
    if urls is not None:
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            j.at_least(Verdict.FAIL, f"{where}: debug_url is not a list of strings")
        else:
            stored_urls = tuple(urls)
            if len(urls) > 5:
                j.at_least(Verdict.EITHER, f"{where}: more than 5 debug URLs")
            if not all(_storable(u) for u in urls):
                j.at_least(Verdict.FAIL, f"{where}: a debug URL holds NUL or a surrogate")
            if any(
                len((prefix + u).encode("utf-8", "surrogatepass")) > INDEXABLE_BYTES for u in urls
            ):
                j.at_least(Verdict.EITHER, f"{where}: a debug URL too long to index")
    return prefix, (path, state, numbers[0], numbers[1], stored_urls)


def _judge_counter(j: Judgement, answer: dict[str, Any], key: str, bounds: tuple[int, int]) -> None:
    """Counters describe the account, not its rules: kept when they are numbers that fit their
    column; otherwise qrsync may refuse the answer or leave them out."""
    value = answer.get(key)
    if value is None:
        j.snapshot[key] = None
    elif key == "qrcodejump_open" and isinstance(value, bool):
        j.snapshot[key] = int(value)  # a JSON boolean for the 0/1 flag means the same
    elif _is_int(value) and bounds[0] <= value <= bounds[1]:
        j.snapshot[key] = value
    else:
        j.at_least(Verdict.EITHER, f"{key} {value!r} is not a number that fits")


def judge(body: str, mode: str) -> Judgement:
    """What a sync of ``mode`` must do with ``body``, from REFERENCE.md and SPEC.md alone."""
    j = Judgement()
    try:
        answer = json.loads(body, parse_constant=_not_json)
    except ValueError:
        j.at_least(Verdict.FAIL, "not JSON")
        return j
    if not isinstance(answer, dict):
        j.at_least(Verdict.FAIL, "JSON, but not an object")
        return j
    if _has_surrogate(answer):
        # RFC 8259: a lone surrogate's meaning is unpredictable; a decoder may refuse the text.
        j.at_least(Verdict.EITHER, "a lone surrogate somewhere")
    errcode = answer.get("errcode", 0)
    if _is_int(errcode) and errcode != 0:
        j.at_least(Verdict.FAIL, f"errcode {errcode}")
    elif errcode is None or errcode is False or errcode == 0.0:
        # REFERENCE.md: a missing errcode is success if the fields are there; null, false and
        # 0.0 are not quite missing, nor quite 0.
        if not _is_int(errcode):
            j.at_least(Verdict.EITHER, f"errcode {errcode!r}")
    else:
        j.at_least(Verdict.FAIL, f"errcode {errcode!r} is not a number")
    total = answer.get("total_count")
    if mode == "service_account" and not _is_int(total):
        j.at_least(Verdict.FAIL, f"total_count {total!r}: paging needs a number")
    j.total_count = total
    _judge_counter(j, answer, "total_count", INTEGER)
    _judge_counter(j, answer, "qrcodejump_pub_quota", INTEGER)
    _judge_counter(j, answer, "qrcodejump_open", SMALLINT)
    list_size = answer.get("list_size")
    if list_size is not None and not (_is_int(list_size) and INTEGER[0] <= list_size <= INTEGER[1]):
        j.at_least(Verdict.EITHER, f"list_size {list_size!r} is not a number that fits")
    rule_list = answer.get("rule_list")
    if rule_list is None:
        if (_is_int(total) and total == 0) or (_is_int(list_size) and list_size == 0):
            j.at_least(Verdict.EITHER, "no rule_list, but the answer says it lists nothing")
            rule_list = []
        else:
            j.at_least(Verdict.FAIL, "no rule_list")
            return j
    if not isinstance(rule_list, list):
        j.at_least(Verdict.FAIL, "rule_list is not a list")
        return j
    j.short = _is_int(list_size) and list_size != len(rule_list)
    for index, rule in enumerate(rule_list):
        judged = _judge_rule(j, index, rule, mode)
        if judged is None:
            continue
        prefix, content = judged
        if prefix in j.listing and j.listing[prefix] != content:
            # One prefix listed twice with different contents: the answer contradicts itself.
            # Applied, the later one stands (as a later page does when pages drift).
            j.at_least(Verdict.EITHER, f"prefix {prefix!r} listed twice, differently")
            del j.listing[prefix]
        j.listing[prefix] = content
    return j


@dataclass(frozen=True)
class Expectation:
    """The oracle's verdict and, if the answer is applied, the account's rules afterwards."""

    judgement: Judgement
    status: str  # succeeded or partial, if applied
    live: dict[str, Content]
    confirmed: bool = False
    """A service account's complete listing lacked live rules, so they were asked for by prefix
    (get_type 1) before being deleted."""


def expect(j: Judgement, mode: str, live_before: dict[str, Content]) -> Expectation:
    """Apply the listing to the live rules as SPEC behaviour 2 says: a complete listing deletes
    what it lacks unless that is more than max_delete_fraction of the live rules, or all of them
    (then the run is partial); an inconsistent paged listing, or an answer shorter than its own
    list_size, deletes nothing (partial)."""
    complete = (mode == "miniprogram" or j.total_count == len(j.listing)) and not j.short
    live = dict(j.listing)
    missing = {p: c for p, c in live_before.items() if p not in live}
    if not complete:
        return Expectation(j, "partial", {**missing, **live})
    allowed = not missing or (
        len(missing) <= MAX_DELETE_FRACTION * len(live_before) and len(missing) < len(live_before)
    )
    confirmed = mode == "service_account" and bool(missing)
    if allowed:
        return Expectation(j, "succeeded", live, confirmed)
    return Expectation(j, "partial", {**missing, **live}, confirmed)


# --- the account and its tables ---------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    kind: str
    account: str
    fault: dict[str, Any]
    """Narrows the body fault to the listing's calls (service account: get_type 2 only, so
    that deletions are confirmed by prefix against the simulator's own, empty, world)."""


MINIPROGRAM = Mode("miniprogram", "mp", {"appid": MP, "get_type": 0})
SERVICE_ACCOUNT = Mode("service_account", "oa", {"appid": OA, "get_type": 2})


def _reset_history(db: Any) -> None:
    """Every example starts from no history at all (the account and its token stay)."""
    db.execute(f"TRUNCATE {', '.join(HISTORY_TABLES)}")
    if rows(db, "SELECT to_regclass('quota_holds')")[0][0] is not None:
        db.execute("TRUNCATE quota_holds")


def _uses_up_quota(body: str) -> bool:
    """45009 / 45011: the AppID may then be held, not called, until its quota resets."""
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("errcode") in QUOTA_ERRCODES


def _tables(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a failed run must not touch (rules with their xmin)."""
    return {
        "rules": rows(db, "SELECT *, xmin::text FROM rules ORDER BY account_id, prefix"),
        "rule_past_versions": rows(db, "SELECT * FROM rule_past_versions ORDER BY id"),
        "rule_state_changes": rows(db, "SELECT * FROM rule_state_changes ORDER BY id"),
        "rule_debug_urls": rows(db, "SELECT * FROM rule_debug_urls ORDER BY 1, 2, 3"),
        "account_snapshots": rows(db, "SELECT * FROM account_snapshots ORDER BY id"),
        "listing_digests": rows(db, "SELECT * FROM listing_digests ORDER BY account_id"),
    }


def _live(db: Any) -> dict[str, Content]:
    return {
        prefix: (path, state, ov, psr, None if urls is None else tuple(urls))
        for prefix, path, state, ov, psr, urls in rows(
            db,
            "SELECT prefix, path, state, open_version, permit_sub_rule, debug_urls FROM rules "
            "WHERE deleted_at IS NULL",
        )
    }


def _clip(text: str, limit: int = 600) -> str:
    return repr(text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)")


def _one_line(text: str) -> bool:
    """No line break of any kind (str.splitlines': a terminal or a BI tool may break there)."""
    return len(text.splitlines()) == 1


def _check_failed(result: Any, run: dict[str, Any], db: Any, before: Any, mode: Mode) -> None:
    assert result.exit_code == 1, result.output
    assert run["status"] == "failed"
    error = run["error"]
    assert error and _one_line(error), f"not one line: {error!r}"
    assert f"account '{mode.account}'" in error
    assert _tables(db) == before, "a failed run changed the rule tables"


def _check_applied(result: Any, run: dict[str, Any], db: Any, wanted: Expectation) -> None:
    assert result.exit_code == 0, result.output
    assert run["status"] == wanted.status, (run["status"], run["message"])
    assert _live(db) == wanted.live
    # rule_debug_urls: the distinct URLs of each live rule, at their first place (from 1).
    urls = {
        (prefix, url, position)
        for prefix, url, position in rows(db, "SELECT prefix, url, position FROM rule_debug_urls")
        if prefix in wanted.live
    }
    expected_urls = set()
    for prefix, content in wanted.live.items():
        firsts: dict[str, int] = {}
        for position, url in enumerate(content[4] or (), start=1):
            firsts.setdefault(url, position)
        expected_urls |= {(prefix, url, position) for url, position in firsts.items()}
    assert urls == expected_urls
    # History: every rule has one current version, equal to its row, deleted or not.
    current = rows(
        db,
        "SELECT r.prefix, v.path, v.state, v.open_version, v.permit_sub_rule, v.debug_urls,"
        " v.deleted, r.deleted_at IS NOT NULL FROM rules r JOIN rule_versions v"
        " ON v.account_id = r.account_id AND v.prefix = r.prefix AND v.valid_to IS NULL",
    )
    assert len(current) == len(rows(db, "SELECT 1 FROM rules"))
    for prefix, path, state, ov, psr, urls_, deleted, gone in current:
        assert deleted == gone, prefix
        if not gone:
            listed = (path, state, ov, psr, None if urls_ is None else tuple(urls_))
            assert listed == wanted.live[prefix], prefix
    snapshot = rows(
        db,
        "SELECT total_count, qrcodejump_pub_quota, qrcodejump_open, rule_count"
        " FROM account_snapshots WHERE sync_run_id = %s",
        run["id"],
    )
    assert len(snapshot) == 1
    total_count, quota, open_flag, rule_count = snapshot[0]
    assert rule_count == len(wanted.judgement.listing)
    said = {"total_count": total_count, "qrcodejump_pub_quota": quota}
    said["qrcodejump_open"] = open_flag
    expected = wanted.judgement.snapshot
    assert {k: v for k, v in said.items() if k in expected} == expected


def sync_once(
    mode: Mode,
    simulator: Any,
    qrsync: Any,
    db: Any,
    body: str,
    say: Callable[[str], None] = note,
    *,
    held: bool = False,
) -> Expectation:
    """Serve ``body`` as the account's listing, sync, and check the outcome against the oracle.
    ``held``: an earlier sync used up the AppID's quota, so this one may not call WeChat."""
    judgement = judge(body, mode.kind)
    if held:
        judgement.at_least(Verdict.EITHER, "the quota was used up by an earlier answer")
    wanted = expect(judgement, mode.kind, _live(db))
    say(f"body ({len(body)} chars): {_clip(body)}")
    say(f"oracle: {judgement.verdict.name} {judgement.reasons[:8]}")
    before = _tables(db)
    simulator.admin.clear_faults()
    simulator.admin.add_fault(endpoint="qrcodejumpget", times=-1, body=body, **mode.fault)
    result = qrsync("sync", "--json")
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)["accounts"]
    run = dict(
        zip(
            ("id", "status", "error", "message"),
            rows(db, "SELECT id, status, error, message FROM sync_runs ORDER BY id DESC LIMIT 1")[
                0
            ],
            strict=True,
        )
    )
    assert run["status"] != "running", "the run was never closed"
    assert [s["status"] for s in summary] == [run["status"]]
    say(f"run: {run}")
    if say is note:  # --hypothesis-show-statistics tells how the examples ended
        event(f"{judgement.verdict.name} -> {run['status']}")
    if judgement.verdict is Verdict.FAIL or (
        judgement.verdict is Verdict.EITHER and run["status"] == "failed"
    ):
        _check_failed(result, run, db, before, mode)
        assert summary[0]["error"] == run["error"]
    else:
        _check_applied(result, run, db, wanted)
    return wanted


def _configure(simulator: Any, qrsync: Any, account: str) -> None:
    """No retries: every fault here is permanent, and retrying it only costs time."""
    config = toml_config(
        simulator.url, account, api="requests_per_second = 100", sync=f"page_size = {PAGE_SIZE}"
    )
    qrsync.write_config(config.replace("max_retries = 3", "max_retries = 0"))


@pytest.fixture
def miniprogram(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Mode:
    fast_simulator.admin.add_account(mp_world())
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    _configure(fast_simulator, qrsync, mp_account())
    return MINIPROGRAM


@pytest.fixture
def service_account(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Mode:
    fast_simulator.admin.add_account(oa_world())
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    _configure(fast_simulator, qrsync, oa_account())
    return SERVICE_ACCOUNT


def _stories(mode: str) -> st.SearchStrategy[list[str]]:
    """One to three answers in a row: the ones before give the account rules to keep, delete
    (or not: the delete guard) and revive."""
    return st.lists(bodies(mode), min_size=1, max_size=3).filter(
        lambda story: sum(map(len, story)) <= MAX_BODY_CHARS
    )


def _run_story(mode: Mode, story: list[str], simulator: Any, qrsync: Any, db: Any) -> None:
    _reset_history(db)
    held = False
    for body in story:
        sync_once(mode, simulator, qrsync, db, body, held=held)
        held = held or _uses_up_quota(body)


@pytest.mark.slow
@FUZZ_SETTINGS
@given(story=_stories("miniprogram"))
def test_generated_miniprogram_answers_mirror_or_fail_cleanly(
    miniprogram: Mode, fast_simulator: Any, qrsync: Any, db: Any, story: list[str]
) -> None:
    _run_story(miniprogram, story, fast_simulator, qrsync, db)


@pytest.mark.slow
@FUZZ_SETTINGS
@given(story=_stories("service_account"))
def test_generated_service_account_pages_mirror_or_fail_cleanly(
    service_account: Mode, fast_simulator: Any, qrsync: Any, db: Any, story: list[str]
) -> None:
    _run_story(service_account, story, fast_simulator, qrsync, db)


# --- what the fuzzing found, pinned ----------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        {"prefix": "https://qr.example.com/a\x00b", "path": "pages/index/index", "state": 1},
        {"prefix": "https://qr.example.com/a", "path": "pages/\x00", "state": 1},
        {"prefix": "https://qr.example.com/a", "state": 2, "debug_url": ["https://x\x00"]},
    ],
    ids=["prefix", "path", "debug_url"],
)
def test_nul_in_a_rule_fails_the_run_and_names_it(
    miniprogram: Mode, fast_simulator: Any, qrsync: Any, db: Any, rule: dict[str, Any]
) -> None:
    """PostgreSQL text cannot hold NUL, so such a rule cannot be kept verbatim: the answer is
    malformed (found by the fuzzing: the COPY refused it and the run ended in a traceback,
    left 'running')."""
    body = json.dumps({"errcode": 0, "rule_list": [rule], "total_count": 1})
    sync_once(miniprogram, fast_simulator, qrsync, db, body, print)
    error = rows(db, "SELECT error FROM sync_runs")[0][0]
    assert "NUL character" in error


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"errcode": 99999, "errmsg": "bad\nthing\r\u2028rid: 1\n2"}),
        json.dumps({"errcode": 99999, "errmsg": "a\x00b"}),
        json.dumps({"errcode": 40097, "errmsg": "bad rid: 12\x003"}),
        "\x00<html>\n</html>",
    ],
    ids=["line-breaks", "nul-in-errmsg", "nul-in-rid", "nul-in-a-page"],
)
def test_text_from_wechat_gives_a_one_line_error_that_is_recorded(
    miniprogram: Mode, fast_simulator: Any, qrsync: Any, db: Any, body: str
) -> None:
    """Found by the fuzzing before control characters were escaped: a line break in errmsg
    split the error, and a NUL kept the failed run from being recorded (left 'running')."""
    sync_once(miniprogram, fast_simulator, qrsync, db, body, print)


def test_incompressible_long_prefix_fails_the_run_cleanly(
    miniprogram: Mode, fast_simulator: Any, qrsync: Any, db: Any
) -> None:
    prefix = "https://qr.example.com/" + _noise(1, 3000)  # about 6 kB: beyond the btree limit
    rule = {"prefix": prefix, "path": "pages/index/index", "state": 1, "open_version": 3}
    body = json.dumps({"errcode": 0, "rule_list": [rule], "total_count": 1})
    sync_once(miniprogram, fast_simulator, qrsync, db, body, print)


def test_snapshot_keeps_the_listings_counts_after_deletions_are_confirmed(
    service_account: Mode, fast_simulator: Any, qrsync: Any, db: Any
) -> None:
    def listing(*names: str) -> str:
        rules = [{"prefix": f"http://weixin.qq.com/q/{n}", "path": "p", "state": 1} for n in names]
        return json.dumps(
            {"rule_list": rules, "total_count": len(rules), "qrcodejump_pub_quota": 7}
        )

    sync_once(service_account, fast_simulator, qrsync, db, listing("a", "b", "c"), print)
    sync_once(service_account, fast_simulator, qrsync, db, listing("a", "b"), print)
    assert rows(db, "SELECT total_count, qrcodejump_pub_quota FROM account_snapshots") == [
        (3, 7),
        (2, 7),
    ]
