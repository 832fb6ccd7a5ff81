"""The simulator's in-memory world and the WeChat semantics it answers with (api/REFERENCE.md).

Everything here is plain state mutated under the caller's lock: accounts, their rules, tokens,
third-party platforms (components), the simulated clock, the rate-limit windows and the call log.
Tokens, request ids and generated rules come from RNGs seeded by the simulator's seed, so the same
seed and the same calls give the same answers.

A world is described by a dict (or a TOML / JSON world file) of this shape::

    token_ttl_s = 7200                 # expires_in of every token issued
    [[accounts]]
    appid = "wx..."                    # required
    kind = "miniprogram"               # or "service_account"; required
    secret = "..."                     # optional: without one no direct token can be had (40125)
    personal = false                   # miniprogram: personal mini programs get 85075
    verified = true                    # service_account: unverified ones get 48001
    nick_name = "..."                  # api_get_authorizer_info's names (default: made up
    principal_name = "..."             #   from the appid; a personal one's principal is 个人)
    qrcodejump_open = 1                # reported by qrcodejumpget
    pub_quota = 100                    # publishes left this month (never reset by itself)
    released = true                    # false: publishing a rule gives 85074
    total_count_offset = 0             # miniprogram mode: added to total_count
    linked_miniprograms = ["wx..."]    # service_account: mini programs it may set rules for
    service_type = 2                   # official account: 2 service account, 0/1 subscription
    max_rules = 100000                 # per (account, mini program): 85073 when full
    [[accounts.rule_sets]]             # generated rules, deterministic from the seed
    miniprogram_appid = "wx..."        # service_account: whose rules (default: first linked)
    count = 12000
    published_fraction = 0.5           # share of rules in state 2
    quirks = true                      # the document's quirks on a deterministic subset
    [[components]]                     # a third-party platform (服务商)
    appid = "wx..."
    secret = "..."
    verify_ticket = "ticket@@@..."     # valid 12 h; the admin API can push a new one
    [[components.authorizations]]
    authorizer_appid = "wx..."         # must be one of the accounts
    refresh_token = "..."
    permission_sets = [3, 18]
    rotate_refresh_token = false       # true: every api_authorizer_token call rotates it
    auth_time = 1700000000             # when it was granted (default: when the world is built)

Choices where the reference is silent: an unverified service account calling the rule endpoints
gets 48001 ("api unauthorized", WeChat's generic answer to an account type an API is not open
to); publishing an already published rule succeeds without using quota; the central token
endpoint is not rate limited (it stands for the company's own service, not WeChat);
api_get_authorizer_list answers 40097 for an ``offset`` that is not an integer of 0 or more or a
``count`` that is not one of 1 or more (40170 above 500, as the reference says), lists the
authorizations in the order they were granted, and counts against the ``component_appid`` of its
body for the rate limit, as the other component endpoints do. api_get_authorizer_info answers
41002 without an ``authorizer_appid``, 40013 for one that is no account of the world and 61003
for an account that has not authorised the platform (or withdrew); its ``authorization_info``
carries the current ``authorizer_refresh_token`` besides ``func_info``, as WeChat's page of the
endpoint lists, and the account fields are made up from the appid (same appid, same answer).
qrcodejumpadd takes ``open_version``, ``permit_sub_rule`` and ``is_edit`` as integers or as their
decimal strings ("1"): WeChat's older page of the endpoint and SDKs such as WxJava send strings,
its newer pages numbers. Either way the rule stores, and qrcodejumpget answers, integers.
wxamplinkget (an official account's linked mini programs, with the authorizer's or the account's
own access token) answers 48001 to a mini program's token and 61003 to an authorizer token of a
platform the account no longer authorises; each item's ``nickname`` is the linked mini program's
``nick_name`` when it is an account of the world. An official account's ``service_type`` (0 or 1:
a subscription account) is what api_get_authorizer_info reports in ``service_type_info``; the
rule endpoints treat it as a service account. The admin API grants or changes an authorization
(``PUT /sim/components/<appid>/authorizations/<authorizer>``); a changed grant is a new
authorisation, so its ``auth_time`` moves to now unless given.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import string
import time
import tomllib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeGuard, TypeVar

Json = dict[str, Any]
AccountKind = Literal["miniprogram", "service_account"]

ENDPOINTS: tuple[str, ...] = (
    "stable_token",
    "token",
    "central",
    "component_token",
    "authorizer_token",
    "authorizer_list",
    "authorizer_info",
    "amplinkget",
    "qrcodejumpget",
    "qrcodejumpadd",
    "qrcodejumppublish",
    "qrcodejumpdelete",
)

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40097: "invalid args",
    40125: "invalid appsecret",
    40166: "invalid appid",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    44990: "api freq out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit, mustslower, retry next minute",
    47001: "data format error",
    40170: "args count exceed count limit",
    48001: "api unauthorized",
    61003: "component is not authorized by this account",
    61006: "component ticket is invalid",
    61007: "api is unauthorized to component",
    61023: "refresh_token is invalid",
    85066: "illegal link",
    85068: "test link is not under the rule prefix",
    85071: "link already added",
    85072: "link is already taken by another account",
    85073: "qrcode jump rules are full",
    85074: "mini program has no released version",
    85075: "can not access",
    886000: "publish quota of this month is used up",
    886001: "system busy",
}

NEWEST_LIMIT = 10_000  # get_type 0 answers the most recent 10,000 rules (REFERENCE)
MAX_PREFIXES = 200  # get_type 1
MAX_PAGE_SIZE = 200  # get_type 2
MAX_DEBUG_URLS = 5
RENEW_WINDOW_S = 300  # stable_token renews a token in its last 5 minutes
GRACE_S = 300  # a superseded /cgi-bin/token token or rotated refresh token lives 5 more minutes
AUTHORIZER_LIST_MAX_COUNT = 500  # api_get_authorizer_list: 40170 above (REFERENCE)
FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_GAP_S = 30
TICKET_TTL_S = 12 * 3600
CALL_LOG_LIMIT = 100_000

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
_CODE_ALPHABET = string.ascii_letters + string.digits
_PAGES = (
    "pages/index/index",
    "pages/goods/detail",
    "pages/store/home",
    "pages/coupon/claim",
    "pages/member/card",
    "pages/event/landing",
    "pages/order/list",
)
_SECTIONS = ("goods", "store", "coupon", "member", "event", "order", "poster")
# Token and platform endpoints count against the appid their request names (the rule endpoints
# against the account of their token, once it is known to be valid).
_LIMITED_BY_REQUEST = frozenset(
    {
        "stable_token",
        "token",
        "component_token",
        "authorizer_token",
        "authorizer_list",
        "authorizer_info",
    }
)


class _SecretHolder(Protocol):
    """An account or a component: what an appid and secret authenticate."""

    @property
    def appid(self) -> str: ...

    @property
    def secret(self) -> str | None: ...


_Holder = TypeVar("_Holder", bound=_SecretHolder)


class WorldError(ValueError):
    """A world description or an admin request is invalid; ``status`` is the HTTP answer."""

    status = 400


class NotFound(WorldError):
    """An admin request names an account or component the world does not have."""

    status = 404


def is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: Python's bool is an int, JSON's true is not."""
    return isinstance(value, int) and not isinstance(value, bool)


def one_of(value: object, allowed: Sequence[int]) -> int | None:
    """``value`` as one of the ``allowed`` integers, given as a JSON integer or as its decimal
    string ("1", not "01", " 1" or "1.0"); None for anything else."""
    if is_int(value):
        return value if value in allowed else None
    if isinstance(value, str):
        return next((option for option in allowed if value == str(option)), None)
    return None


def load_world_file(path: Path) -> Json:
    """Read a world file: JSON when it ends in .json, TOML otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorldError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data: object = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise WorldError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise WorldError(f"{path}: expected a table at the top")
    return data


class _Fields:
    """Typed, named access to one table of a world description, so errors say where."""

    def __init__(self, data: object, where: str, allowed: Iterable[str]) -> None:
        if not isinstance(data, Mapping):
            raise WorldError(f"{where}: expected a table / object")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise WorldError(f"{where}: unknown key {unknown[0]!r}")
        self.data: Mapping[str, Any] = data
        self.where = where

    def has(self, key: str) -> bool:
        return key in self.data

    def fail(self, key: str, problem: str) -> WorldError:
        return WorldError(f"{self.where}.{key}: {problem}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def string(self, key: str, default: str) -> str:
        """Any string, the empty one included."""
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self.data.get(key) is not None else None

    def integer(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if not is_int(value):
            raise self.fail(key, "must be an integer")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum}")
        return int(value)

    def fraction(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise self.fail(key, "must be a number from 0 to 1")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return list(value)

    def integers(self, key: str, default: Sequence[int]) -> list[int]:
        value = self.data.get(key, list(default))
        if not isinstance(value, list) or not all(is_int(v) for v in value):
            raise self.fail(key, "must be a list of integers")
        return list(value)

    def tables(self, key: str) -> list[object]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of tables")
        return list(value)


class Clock:
    """Simulated time: real time passing plus whatever the admin API advanced it by."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0) + self._offset

    def advance(self, seconds: float) -> float:
        self._offset += seconds
        return self.now()


@dataclass(slots=True)
class Rule:
    """One QR-code jump rule as WeChat stores it; ``seq`` orders rules by when they were added."""

    prefix: str
    path: str
    state: int = 1
    open_version: int = 3
    permit_sub_rule: int = 1
    debug_url: list[str] = field(default_factory=list)
    seq: int = 0

    def miniprogram_view(self) -> Json:
        """The fields of "scan an ordinary QR code" rules, in the document's example order."""
        return {
            "prefix": self.prefix,
            "open_version": self.open_version,
            "state": self.state,
            "permit_sub_rule": self.permit_sub_rule,
            "path": self.path,
            "debug_url": list(self.debug_url),
        }

    def service_account_view(self) -> Json:
        """Service-account rules carry only prefix, state and path."""
        return {"prefix": self.prefix, "state": self.state, "path": self.path}

    def full_view(self) -> Json:
        """Every stored field, for the admin API's ground truth."""
        return {
            "prefix": self.prefix,
            "path": self.path,
            "state": self.state,
            "open_version": self.open_version,
            "permit_sub_rule": self.permit_sub_rule,
            "debug_url": list(self.debug_url),
        }


class RuleBook:
    """The rules one account set for one mini program, in add order, indexed by prefix.

    The order list stays sorted by ``seq``, so a page is a slice and a delete a bisect: paging
    100,000 rules never re-sorts anything.
    """

    def __init__(self, owner: str, miniprogram: str) -> None:
        self.owner = owner
        self.miniprogram = miniprogram
        self.generations = 0
        self._by_prefix: dict[str, Rule] = {}
        self._order: list[Rule] = []
        self._next_seq = 0

    @property
    def miniprogram_mode(self) -> bool:
        return self.owner == self.miniprogram

    def __len__(self) -> int:
        return len(self._order)

    def get(self, prefix: str) -> Rule | None:
        return self._by_prefix.get(prefix)

    def append(self, rule: Rule) -> None:
        rule.seq = self._next_seq
        self._next_seq += 1
        self._by_prefix[rule.prefix] = rule
        self._order.append(rule)

    def remove(self, prefix: str) -> Rule | None:
        rule = self._by_prefix.pop(prefix, None)
        if rule is not None:
            index = bisect.bisect_left(self._order, rule.seq, key=lambda r: r.seq)
            del self._order[index]
        return rule

    def all(self) -> Sequence[Rule]:
        return self._order

    def page(self, offset: int, size: int) -> list[Rule]:
        return self._order[offset : offset + size]

    def newest(self, limit: int) -> list[Rule]:
        return self._order[-limit:][::-1] if limit > 0 else []

    def among(self, prefixes: Iterable[str]) -> list[Rule]:
        found = {p: self._by_prefix[p] for p in prefixes if p in self._by_prefix}
        return sorted(found.values(), key=lambda r: r.seq)


@dataclass
class RuleSet:
    """A request to generate rules into one rule book."""

    miniprogram_appid: str
    count: int
    published_fraction: float = 0.5
    quirks: bool = True


@dataclass
class Account:
    """A mini program or a service account and the settings its rule endpoints report."""

    appid: str
    kind: AccountKind
    secret: str | None = None
    personal: bool = False
    verified: bool = True
    qrcodejump_open: int = 1
    pub_quota: int = 100
    released: bool = True
    total_count_offset: int = 0
    linked_miniprograms: list[str] = field(default_factory=list)
    max_rules: int = 100_000
    nick_name: str = ""
    principal_name: str = ""
    service_type: int = 2

    def miniprograms(self) -> list[str]:
        """The mini programs whose rules this account sets: itself, or the linked ones."""
        return [self.appid] if self.kind == "miniprogram" else list(self.linked_miniprograms)


@dataclass
class Token:
    """An issued credential; ``component`` is set on authorizer tokens and component tokens."""

    value: str
    appid: str
    kind: Literal["access", "component"]
    expires_at: float
    component: str | None = None
    invalid_at: float | None = None
    forced_expired: bool = False

    def invalidate(self, at: float) -> None:
        """Answer 40001 from ``at`` on (or from an earlier time already set)."""
        if self.invalid_at is None or self.invalid_at > at:
            self.invalid_at = at

    def errcode(self, now: float) -> int:
        """0 while usable; 40001 once invalidated (or superseded past its grace); 42001 expired."""
        if self.invalid_at is not None and now >= self.invalid_at:
            return 40001
        if self.forced_expired or now >= self.expires_at:
            return 42001
        return 0


@dataclass
class Authorization:
    """An authorizer account's grant to a component, with its refresh token(s)."""

    authorizer_appid: str
    refresh_token: str
    permission_sets: list[int]
    rotate_refresh_token: bool = False
    auth_time: int = 0  # epoch seconds, as api_get_authorizer_list reports it
    retired: dict[str, float] = field(default_factory=dict)  # old refresh token -> valid until

    def accepts(self, refresh_token: str, now: float) -> bool:
        if refresh_token == self.refresh_token:
            return True
        return now < self.retired.get(refresh_token, float("-inf"))


@dataclass
class Component:
    """A third-party platform: its secret, its current and previous verify tickets, its grants."""

    appid: str
    secret: str
    ticket: str
    ticket_issued_at: float
    previous_ticket: str | None = None
    previous_ticket_issued_at: float = 0.0
    authorizations: dict[str, Authorization] = field(default_factory=dict)

    def ticket_valid(self, ticket: str, now: float) -> bool:
        if ticket == self.ticket:
            return now < self.ticket_issued_at + TICKET_TTL_S
        if self.previous_ticket is not None and ticket == self.previous_ticket:
            return now < self.previous_ticket_issued_at + TICKET_TTL_S
        return False


@dataclass
class Settings:
    """Knobs of the simulator that the admin API can turn while it runs."""

    rate_limit: bool = True
    requests_per_second: int = 5
    latency_ms: int = 0

    def view(self) -> Json:
        return {
            "rate_limit": self.rate_limit,
            "requests_per_second": self.requests_per_second,
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class ApiCall:
    """One request to a WeChat endpoint; ``body`` is None when it was not a JSON object."""

    endpoint: str
    query: Mapping[str, str]
    body: Json | None
    rid: str
    path_appid: str = ""

    def body_value(self, key: str) -> Any:
        return None if self.body is None else self.body.get(key)

    def listing_args(self) -> tuple[int | None, int | None]:
        """get_type (absent means 0) and page_num of a qrcodejumpget call, for logs and faults."""
        if self.endpoint != "qrcodejumpget" or self.body is None:
            return None, None
        get_type = self.body.get("get_type", 0)
        page_num = self.body.get("page_num")
        return (
            get_type if is_int(get_type) else None,
            page_num if is_int(page_num) else None,
        )


@dataclass
class Reply:
    """What an endpoint answers: an HTTP status and a JSON body."""

    payload: Json
    status: int = 200

    @property
    def errcode(self) -> int | None:
        if self.status != 200:
            return None
        code = self.payload.get("errcode", 0)
        return code if is_int(code) else None


def error_reply(errcode: int, rid: str, errmsg: str | None = None) -> Reply:
    """A WeChat error body: ``errmsg`` ends in the request id, as WeChat's do."""
    text = errmsg if errmsg is not None else ERRMSG.get(errcode, "error")
    return Reply({"errcode": errcode, "errmsg": f"{text} rid: {rid}"})


class _RuleMaker:
    """Generates plausible rules for one rule book, with the document's quirks on a subset."""

    def __init__(self, book: RuleBook, rng: random.Random) -> None:
        self.book = book
        self.rng = rng
        self.host = f"qr-{book.miniprogram[-6:].lower()}.example.com"

    def prefix(self) -> str:
        rng = self.rng
        if self.book.miniprogram_mode:
            section = rng.choice(_SECTIONS)
            code = "".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
            return f"https://{self.host}/{section}/{code}"
        return "http://weixin.qq.com/q/02" + "".join(rng.choices(_CODE_ALPHABET, k=22))

    def rule(self, prefix: str, index: int, published_fraction: float, quirks: bool) -> Rule:
        rng = self.rng
        path = rng.choice(_PAGES)
        state = 2 if rng.random() < published_fraction else 1
        if not self.book.miniprogram_mode:
            if quirks and (index == 0 or rng.random() < 0.1):
                path = _spaced(path)
            return Rule(prefix=prefix, path=path, state=state)
        open_version = rng.choice((1, 2, 3))
        permit_sub_rule = rng.choice((1, 2))
        if quirks and index == 0:
            # The document's own example, quirk for quirk.
            urls = [f"{prefix}?a=1", f"{prefix}?a=1", f"{prefix}?a=2", f"{_stray(prefix)}?a=2"]
            return Rule(prefix, _spaced("pages/index/index"), 1, 1, 1, urls)
        wanted = {1: 0, 2: MAX_DEBUG_URLS}.get(index, rng.randint(0, MAX_DEBUG_URLS))
        urls = [self.debug_url(prefix, n) for n in range(1, wanted + 1)]
        if quirks and rng.random() < 0.15:
            quirk = rng.choice(("duplicate", "stray_space", "spaced_path"))
            if quirk == "duplicate":
                first = urls[0] if urls else f"{prefix}?a=1"
                urls = [first, first, *urls[1:]][:MAX_DEBUG_URLS]
            elif quirk == "stray_space":
                urls = [*urls[: MAX_DEBUG_URLS - 1], f"{_stray(prefix)}?a={len(urls) + 1}"]
            else:
                path = _spaced(path)
        return Rule(prefix, path, state, open_version, permit_sub_rule, urls)

    def debug_url(self, prefix: str, n: int) -> str:
        shape = self.rng.randrange(3)
        if shape == 0:
            return f"{prefix}?a={n}"
        if shape == 1:
            return f"{prefix}/{n}"
        return f"{prefix}?id={self.rng.randrange(10_000, 99_999)}&from=poster"


def _authorizer_view(account: Account) -> Json:
    """api_get_authorizer_info's ``authorizer_info`` of an account, in the shape of WeChat's page
    of the endpoint: ``MiniProgramInfo`` only for mini programs (how SDKs tell them apart),
    ``service_type_info`` 2 for a service account (0 for a mini program), ``verify_type_info``
    0 verified by WeChat or -1 unverified."""
    digest = hashlib.sha256(account.appid.encode()).hexdigest()
    miniprogram = account.kind == "miniprogram"
    info: Json = {
        "nick_name": account.nick_name,
        "head_img": f"http://wx.qlogo.cn/mmopen/sim{digest[:32]}/0",
        "service_type_info": {"id": 0 if miniprogram else account.service_type},
        "verify_type_info": {"id": 0 if account.verified else -1},
        "user_name": f"gh_{digest[:12]}",
        "alias": "",
        "qrcode_url": f"http://mmbiz.qpic.cn/mmbiz_jpg/sim{digest[32:64]}/0",
        "business_info": {
            "open_pay": 0,
            "open_shake": 0,
            "open_scan": 0,
            "open_card": 0,
            "open_store": 0,
        },
        "principal_name": account.principal_name,
        "account_status": 1,
    }
    if miniprogram:
        info["signature"] = ""
        info["MiniProgramInfo"] = {
            "network": {
                "RequestDomain": [],
                "WsRequestDomain": [],
                "UploadDomain": [],
                "DownloadDomain": [],
                "BizDomain": [],
                "UDPDomain": [],
            },
            "categories": [],
            "visit_status": 0,
        }
    return info


def _default_nick_name(account: Account) -> str:
    what = "mini program" if account.kind == "miniprogram" else "service account"
    return f"Simulated {what} {account.appid[-4:]}"


def _spaced(path: str) -> str:
    """The document's "pages / index / index " spelling of a path."""
    return " / ".join(path.split("/")) + " "


def _stray(prefix: str) -> str:
    """The document's "https: //..." spelling of a URL."""
    return prefix.replace("://", ": //", 1)


class World:
    """All simulated state, and the WeChat endpoints' answers computed from it.

    Not thread-safe by itself: the server holds one lock around every call.
    """

    def __init__(self, spec: Mapping[str, Any] | None, seed: int, settings: Settings) -> None:
        self.seed = seed
        self.settings = settings
        self.clock = Clock()
        self.token_ttl_s = 7200
        self.accounts: dict[str, Account] = {}
        self.components: dict[str, Component] = {}
        self.books: dict[tuple[str, str], RuleBook] = {}
        # Each owner's books (mini program appids, in creation order): adding or viewing an
        # account touches its own books only, so building a world of 10,000 is linear.
        self._books_of: dict[str, dict[str, None]] = {}
        self.tokens: dict[str, Token] = {}
        self.calls: deque[Json] = deque(maxlen=CALL_LOG_LIMIT)
        self.stats: Counter[str] = Counter()
        self._prefix_owner: dict[str, tuple[str, str]] = {}
        self._stable: dict[str, str] = {}
        self._plain: dict[str, str] = {}
        self._forced: dict[str, tuple[int, int, float]] = {}  # appid -> (day, count, last at)
        self._windows: dict[str, deque[float]] = {}
        self._secrets_rng = random.Random(f"{seed}:secrets")
        self._rid_count = 0
        if spec is not None:
            self._load(spec)

    # --- building the world ------------------------------------------------------------------

    def _load(self, spec: Mapping[str, Any]) -> None:
        top = _Fields(spec, "world", {"token_ttl_s", "accounts", "components"})
        self.token_ttl_s = top.integer("token_ttl_s", 7200, minimum=1)
        for index, data in enumerate(top.tables("accounts")):
            self.add_account(data, f"accounts[{index}]")
        for index, data in enumerate(top.tables("components")):
            self.add_component(data, f"components[{index}]")

    def add_account(self, data: object, where: str = "account") -> Json:
        """Add (or replace, with fresh rules) one account described in the world shape."""
        f = _Fields(
            data,
            where,
            {
                "appid", "kind", "secret", "personal", "verified", "qrcodejump_open",
                "pub_quota", "released", "total_count_offset", "linked_miniprograms",
                "max_rules", "rule_sets", "nick_name", "principal_name", "service_type",
            },
        )  # fmt: skip
        kind = f.text("kind")
        if kind not in ("miniprogram", "service_account"):
            raise f.fail("kind", "must be 'miniprogram' or 'service_account'")
        account = Account(
            appid=f.text("appid"),
            kind="miniprogram" if kind == "miniprogram" else "service_account",
            secret=f.optional_text("secret"),
            personal=f.flag("personal", False),
            verified=f.flag("verified", True),
            qrcodejump_open=f.integer("qrcodejump_open", 1, minimum=0),
            pub_quota=f.integer("pub_quota", 100, minimum=0),
            released=f.flag("released", True),
            total_count_offset=f.integer("total_count_offset", 0),
            linked_miniprograms=f.texts("linked_miniprograms"),
            max_rules=f.integer("max_rules", 100_000, minimum=0),
            service_type=self._service_type(f),
        )
        account.nick_name = f.optional_text("nick_name") or _default_nick_name(account)
        account.principal_name = f.optional_text("principal_name") or (
            "个人" if account.personal else "qrsync simulator Ltd."
        )
        if account.kind == "miniprogram" and account.linked_miniprograms:
            raise f.fail("linked_miniprograms", "is for service accounts only")
        rule_sets = [
            self._rule_set(account, item, f"{where}.rule_sets[{i}]")
            for i, item in enumerate(f.tables("rule_sets"))
        ]
        self._drop_books(account.appid)
        self.accounts[account.appid] = account
        for rule_set in rule_sets:
            self.generate(account.appid, rule_set)
        return self.account_view(account.appid)

    @staticmethod
    def _service_type(f: _Fields) -> int:
        value = f.integer("service_type", 2)
        if value not in (0, 1, 2):
            raise f.fail("service_type", "must be 0, 1 (subscription account) or 2 (service)")
        return value

    def _rule_set(self, account: Account, data: object, where: str) -> RuleSet:
        f = _Fields(data, where, {"miniprogram_appid", "count", "published_fraction", "quirks"})
        miniprogram = self._rules_miniprogram(account, f.optional_text("miniprogram_appid"))
        return RuleSet(
            miniprogram_appid=miniprogram,
            count=f.integer("count", minimum=0),
            published_fraction=f.fraction("published_fraction", 0.5),
            quirks=f.flag("quirks", True),
        )

    def _rules_miniprogram(self, account: Account, requested: str | None) -> str:
        """Which rule book of an account an admin request means (its own, or a linked one)."""
        choices = account.miniprograms()
        if requested is None:
            if not choices:
                raise WorldError(f"{account.appid}: links no mini program")
            return choices[0]
        if requested not in choices:
            raise WorldError(f"{account.appid}: {requested} is not one of {choices}")
        return requested

    def _drop_books(self, appid: str) -> None:
        for miniprogram in self._books_of.pop(appid, {}):
            key = (appid, miniprogram)
            book = self.books.pop(key)
            for rule in book.all():
                if self._prefix_owner.get(rule.prefix) == key:
                    del self._prefix_owner[rule.prefix]

    def add_component(self, data: object, where: str = "component") -> Json:
        """Add (or replace) one third-party platform described in the world shape."""
        f = _Fields(data, where, {"appid", "secret", "verify_ticket", "authorizations"})
        component = Component(
            appid=f.text("appid"),
            secret=f.text("secret"),
            ticket=f.text("verify_ticket"),
            ticket_issued_at=self.clock.now(),
        )
        for index, item in enumerate(f.tables("authorizations")):
            a = _Fields(
                item,
                f"{where}.authorizations[{index}]",
                {
                    "authorizer_appid", "refresh_token", "permission_sets",
                    "rotate_refresh_token", "auth_time",
                },
            )  # fmt: skip
            grant = Authorization(
                authorizer_appid=a.text("authorizer_appid"),
                refresh_token=a.text("refresh_token"),
                permission_sets=a.integers("permission_sets", (3, 18)),
                rotate_refresh_token=a.flag("rotate_refresh_token", False),
                auth_time=a.integer("auth_time", int(component.ticket_issued_at), minimum=0),
            )
            if grant.authorizer_appid not in self.accounts:
                raise a.fail("authorizer_appid", f"{grant.authorizer_appid} is not an account")
            component.authorizations[grant.authorizer_appid] = grant
        self.components[component.appid] = component
        return {"appid": component.appid, "verify_ticket": component.ticket}

    def book(self, owner: str, miniprogram: str) -> RuleBook:
        key = (owner, miniprogram)
        found = self.books.get(key)
        if found is None:
            found = self.books[key] = RuleBook(owner, miniprogram)
            self._books_of.setdefault(owner, {})[miniprogram] = None
        return found

    def generate(self, appid: str, rule_set: RuleSet) -> int:
        """Append generated rules; the RNG is keyed by book and batch, so books are independent."""
        book = self.book(appid, rule_set.miniprogram_appid)
        rng = random.Random(f"{self.seed}:{book.owner}:{book.miniprogram}:{book.generations}")
        book.generations += 1
        maker = _RuleMaker(book, rng)
        for index in range(rule_set.count):
            prefix = maker.prefix()
            while prefix in self._prefix_owner:
                prefix = maker.prefix()
            self._append(
                book, maker.rule(prefix, index, rule_set.published_fraction, rule_set.quirks)
            )
        return rule_set.count

    def _append(self, book: RuleBook, rule: Rule) -> None:
        book.append(rule)
        self._prefix_owner[rule.prefix] = (book.owner, book.miniprogram)

    def _remove(self, book: RuleBook, prefix: str) -> None:
        book.remove(prefix)
        if self._prefix_owner.get(prefix) == (book.owner, book.miniprogram):
            del self._prefix_owner[prefix]

    # --- admin -------------------------------------------------------------------------------

    def account(self, appid: str) -> Account:
        found = self.accounts.get(appid)
        if found is None:
            raise NotFound(f"no account {appid}")
        return found

    def component(self, appid: str) -> Component:
        found = self.components.get(appid)
        if found is None:
            raise NotFound(f"no component {appid}")
        return found

    def account_view(self, appid: str) -> Json:
        a = self.account(appid)
        return {
            "appid": a.appid,
            "kind": a.kind,
            "personal": a.personal,
            "verified": a.verified,
            "qrcodejump_open": a.qrcodejump_open,
            "pub_quota": a.pub_quota,
            "released": a.released,
            "total_count_offset": a.total_count_offset,
            "linked_miniprograms": list(a.linked_miniprograms),
            "max_rules": a.max_rules,
            "nick_name": a.nick_name,
            "principal_name": a.principal_name,
            "service_type": a.service_type,
            "rules": {mp: len(self.books[(appid, mp)]) for mp in self._books_of.get(appid, {})},
        }

    def patch_account(self, appid: str, data: object) -> Json:
        account = self.account(appid)
        f = _Fields(
            data,
            appid,
            {
                "qrcodejump_open", "pub_quota", "released", "total_count_offset", "secret",
                "personal", "verified", "max_rules", "linked_miniprograms", "nick_name",
                "principal_name", "service_type",
            },
        )  # fmt: skip
        if f.has("qrcodejump_open"):
            account.qrcodejump_open = f.integer("qrcodejump_open", minimum=0)
        if f.has("pub_quota"):
            account.pub_quota = f.integer("pub_quota", minimum=0)
        if f.has("released"):
            account.released = f.flag("released", True)
        if f.has("total_count_offset"):
            account.total_count_offset = f.integer("total_count_offset")
        if f.has("secret"):
            account.secret = f.optional_text("secret")
        if f.has("personal"):
            account.personal = f.flag("personal", False)
        if f.has("verified"):
            account.verified = f.flag("verified", True)
        if f.has("max_rules"):
            account.max_rules = f.integer("max_rules", minimum=0)
        if f.has("linked_miniprograms"):
            if account.kind != "service_account":
                raise f.fail("linked_miniprograms", "is for service accounts only")
            account.linked_miniprograms = f.texts("linked_miniprograms")
        if f.has("nick_name"):
            account.nick_name = f.text("nick_name")
        if f.has("principal_name"):
            account.principal_name = f.text("principal_name")
        if f.has("service_type"):
            account.service_type = self._service_type(f)
        return self.account_view(appid)

    def generate_rules(self, appid: str, data: object) -> Json:
        account = self.account(appid)
        rule_set = self._rule_set(account, data, f"{appid}.rules")
        added = self.generate(appid, rule_set)
        total = len(self.book(appid, rule_set.miniprogram_appid))
        return {"miniprogram_appid": rule_set.miniprogram_appid, "added": added, "total": total}

    def put_rules(self, appid: str, data: object) -> Json:
        """Replace a rule book verbatim: no WeChat validation, so tests can plant any rule."""
        account = self.account(appid)
        f = _Fields(data, f"{appid}.rules", {"miniprogram_appid", "rules"})
        miniprogram = self._rules_miniprogram(account, f.optional_text("miniprogram_appid"))
        rules: list[Rule] = []
        for index, item in enumerate(f.tables("rules")):
            r = _Fields(
                item,
                f"rules[{index}]",
                {"prefix", "path", "state", "open_version", "permit_sub_rule", "debug_url"},
            )
            rules.append(
                Rule(
                    prefix=r.text("prefix"),
                    path=r.string("path", "pages/index/index"),
                    state=r.integer("state", 1),
                    open_version=r.integer("open_version", 3),
                    permit_sub_rule=r.integer("permit_sub_rule", 1),
                    debug_url=r.texts("debug_url"),
                )
            )
        if len({rule.prefix for rule in rules}) != len(rules):
            raise WorldError(f"{appid}.rules: a prefix appears twice")
        book = self.book(appid, miniprogram)
        for rule in list(book.all()):
            self._remove(book, rule.prefix)
        for rule in rules:
            self._append(book, rule)
        return {"miniprogram_appid": miniprogram, "total": len(book)}

    def rules_view(self, appid: str, miniprogram: str | None) -> Json:
        account = self.account(appid)
        miniprogram = self._rules_miniprogram(account, miniprogram)
        book = self.books.get((appid, miniprogram))
        rules = [] if book is None else [rule.full_view() for rule in book.all()]
        return {"appid": appid, "miniprogram_appid": miniprogram, "rules": rules}

    def rotate_ticket(self, appid: str) -> str:
        component = self.component(appid)
        component.previous_ticket = component.ticket
        component.previous_ticket_issued_at = component.ticket_issued_at
        component.ticket = "ticket@@@" + self._random_text(64)
        component.ticket_issued_at = self.clock.now()
        return component.ticket

    def put_authorization(self, component_appid: str, authorizer_appid: str, data: object) -> Json:
        """Grant the platform an authorization, or change one (a new authorisation: its
        ``auth_time`` moves to now unless given); unnamed fields keep their value."""
        component = self.component(component_appid)
        self.account(authorizer_appid)
        f = _Fields(
            data,
            f"{component_appid}.authorizations.{authorizer_appid}",
            {"refresh_token", "permission_sets", "rotate_refresh_token", "auth_time"},
        )
        grant = component.authorizations.get(authorizer_appid)
        if grant is None:
            grant = Authorization(
                authorizer_appid=authorizer_appid,
                refresh_token="refreshtoken@@@" + self._random_text(48),
                permission_sets=[3, 18],
            )
        if f.has("refresh_token"):
            grant.refresh_token = f.text("refresh_token")
        if f.has("permission_sets"):
            grant.permission_sets = f.integers("permission_sets", (3, 18))
        if f.has("rotate_refresh_token"):
            grant.rotate_refresh_token = f.flag("rotate_refresh_token", False)
        grant.auth_time = f.integer("auth_time", int(self.clock.now()), minimum=0)
        # A new grant goes to the end of the list, as api_get_authorizer_list orders by grant.
        component.authorizations[authorizer_appid] = grant
        return {
            "authorizer_appid": authorizer_appid,
            "permission_sets": list(grant.permission_sets),
            "auth_time": grant.auth_time,
        }

    def revoke_authorization(self, component_appid: str, authorizer_appid: str) -> None:
        component = self.component(component_appid)
        if component.authorizations.pop(authorizer_appid, None) is None:
            raise NotFound(f"{authorizer_appid} has not authorised {component_appid}")

    def expire_tokens(self, appid: str) -> int:
        """Every token of ``appid`` answers 42001 from now on."""
        hit = [token for token in self.tokens.values() if token.appid == appid]
        for token in hit:
            token.forced_expired = True
        return len(hit)

    def invalidate_tokens(self, appid: str) -> int:
        """Every token of ``appid`` answers 40001 from now on."""
        now = self.clock.now()
        hit = [token for token in self.tokens.values() if token.appid == appid]
        for token in hit:
            token.invalidate(now)
        return len(hit)

    def update_settings(self, data: object) -> Json:
        f = _Fields(data, "settings", {"rate_limit", "requests_per_second", "latency_ms"})
        if f.has("rate_limit"):
            self.settings.rate_limit = f.flag("rate_limit", True)
        if f.has("requests_per_second"):
            self.settings.requests_per_second = f.integer("requests_per_second", minimum=1)
        if f.has("latency_ms"):
            self.settings.latency_ms = f.integer("latency_ms", minimum=0)
        return self.settings.view()

    def record_call(
        self,
        call: ApiCall,
        appid: str | None,
        errcode: int | None,
        status: int | None,
        fault: str | None,
    ) -> None:
        """Log a request (never its token) for the admin API's calls and stats."""
        get_type, page_num = call.listing_args()
        self.stats[call.endpoint] += 1
        self.calls.append(
            {
                "endpoint": call.endpoint,
                "appid": appid,
                "get_type": get_type,
                "page_num": page_num,
                "errcode": errcode,
                "status": status,
                "fault": fault,
                "at": round(self.clock.now(), 3),
            }
        )

    def calls_view(self, endpoint: str | None, appid: str | None) -> list[Json]:
        return [
            dict(call)
            for call in self.calls
            if (endpoint is None or call["endpoint"] == endpoint)
            and (appid is None or call["appid"] == appid)
        ]

    def clear_calls(self) -> None:
        self.calls.clear()
        self.stats.clear()

    def stats_view(self) -> Json:
        return {endpoint: self.stats[endpoint] for endpoint in ENDPOINTS}

    # --- requests ----------------------------------------------------------------------------

    def next_rid(self) -> str:
        """A request id shaped like WeChat's, a function of the seed and the request number."""
        self._rid_count += 1
        digest = hashlib.sha256(f"{self.seed}:rid:{self._rid_count}".encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:16]}-{digest[16:24]}"

    def caller_appid(self, call: ApiCall) -> str | None:
        """The account a request counts against (rate limit, faults, call log), if known."""
        if call.endpoint == "central":
            return call.path_appid
        if call.endpoint == "token":
            return call.query.get("appid") or None
        key = {
            "stable_token": "appid",
            "component_token": "component_appid",
            "authorizer_token": "authorizer_appid",
            "authorizer_list": "component_appid",
            "authorizer_info": "component_appid",
        }.get(call.endpoint)
        if key is not None:
            value = call.body_value(key)
            return value if isinstance(value, str) and value else None
        token = self.tokens.get(call.query.get("access_token", ""))
        return None if token is None or token.kind != "access" else token.appid

    def answer(self, call: ApiCall) -> Reply:
        handlers: dict[str, Callable[[ApiCall], Reply]] = {
            "stable_token": self._stable_token,
            "token": self._plain_token,
            "central": self._central_token,
            "component_token": self._component_token,
            "authorizer_token": self._authorizer_token,
            "authorizer_list": self._authorizer_list,
            "authorizer_info": self._authorizer_info,
            "amplinkget": self._amplinkget,
            "qrcodejumpget": self._qrcodejumpget,
            "qrcodejumpadd": self._qrcodejumpadd,
            "qrcodejumppublish": self._qrcodejumppublish,
            "qrcodejumpdelete": self._qrcodejumpdelete,
        }
        if call.endpoint in _LIMITED_BY_REQUEST and not self._admit(self.caller_appid(call)):
            return error_reply(44990, call.rid)
        return handlers[call.endpoint](call)

    def _admit(self, appid: str | None) -> bool:
        """The per-account sliding one-second window; a refused request does not count."""
        if not self.settings.rate_limit:
            return True
        now = self.clock.now()
        window = self._windows.setdefault(appid or "", deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.settings.requests_per_second:
            return False
        window.append(now)
        return True

    def _random_text(self, length: int) -> str:
        return "".join(self._secrets_rng.choices(_TOKEN_ALPHABET, k=length))

    def _issue(
        self, appid: str, kind: Literal["access", "component"], component: str | None = None
    ) -> Token:
        value = ("SIM_" if kind == "access" else "SIMC_") + self._random_text(124)
        token = Token(value, appid, kind, self.clock.now() + self.token_ttl_s, component)
        self.tokens[value] = token
        return token

    def _expires_in(self, token: Token) -> int:
        return max(0, int(token.expires_at - self.clock.now()))

    def _authenticate(
        self, call: ApiCall, appid: object, secret: object, known: Mapping[str, _Holder]
    ) -> _Holder | Reply:
        """The account or component an appid and secret prove, or the error WeChat answers."""
        if not isinstance(appid, str) or not appid:
            return error_reply(41002, call.rid)
        if not isinstance(secret, str) or not secret:
            return error_reply(41004, call.rid)
        holder = known.get(appid)
        if holder is None:
            return error_reply(40013, call.rid)
        if holder.secret is None or secret != holder.secret:
            return error_reply(40125, call.rid)
        return holder

    def _current_stable(self, appid: str) -> Token:
        """The stable token of an account, renewed in its last 5 minutes (the old one lives on)."""
        now = self.clock.now()
        current = self.tokens.get(self._stable.get(appid, ""))
        if current is None or current.errcode(now) or current.expires_at - now <= RENEW_WINDOW_S:
            current = self._issue(appid, "access")
            self._stable[appid] = current.value
        return current

    def _stable_token(self, call: ApiCall) -> Reply:
        if call.body is None:
            return error_reply(47001, call.rid)
        if call.body_value("grant_type") != "client_credential":
            return error_reply(40002, call.rid)
        account = self._authenticate(
            call, call.body_value("appid"), call.body_value("secret"), self.accounts
        )
        if isinstance(account, Reply):
            return account
        appid = account.appid
        if call.body_value("force_refresh") is True:
            now = self.clock.now()
            day = int(now // 86400)
            last_day, count, last_at = self._forced.get(appid, (day, 0, float("-inf")))
            count = count if last_day == day else 0
            if count >= FORCE_REFRESH_PER_DAY:
                return error_reply(45009, call.rid)
            if now - last_at < FORCE_REFRESH_GAP_S:
                return error_reply(45011, call.rid)
            self._forced[appid] = (day, count + 1, now)
            old = self.tokens.get(self._stable.get(appid, ""))
            if old is not None:
                old.invalidate(now)
            token = self._issue(appid, "access")
            self._stable[appid] = token.value
        else:
            token = self._current_stable(appid)
        return Reply({"access_token": token.value, "expires_in": self._expires_in(token)})

    def _plain_token(self, call: ApiCall) -> Reply:
        if call.query.get("grant_type") != "client_credential":
            return error_reply(40002, call.rid)
        account = self._authenticate(
            call, call.query.get("appid"), call.query.get("secret"), self.accounts
        )
        if isinstance(account, Reply):
            return account
        appid = account.appid
        # Every call issues a new token; the previous one lives 5 more minutes (REFERENCE).
        previous = self.tokens.get(self._plain.get(appid, ""))
        if previous is not None:
            previous.invalidate(self.clock.now() + GRACE_S)
        token = self._issue(appid, "access")
        self._plain[appid] = token.value
        return Reply({"access_token": token.value, "expires_in": self.token_ttl_s})

    def _central_token(self, call: ApiCall) -> Reply:
        if call.path_appid not in self.accounts:
            return Reply({"error": f"no account {call.path_appid}"}, status=404)
        token = self._current_stable(call.path_appid)
        return Reply({"access_token": token.value, "expires_in": self._expires_in(token)})

    def _component_token(self, call: ApiCall) -> Reply:
        if call.body is None:
            return error_reply(47001, call.rid)
        component = self._authenticate(
            call,
            call.body_value("component_appid"),
            call.body_value("component_appsecret"),
            self.components,
        )
        if isinstance(component, Reply):
            return component
        ticket = call.body_value("component_verify_ticket")
        if not isinstance(ticket, str) or not component.ticket_valid(ticket, self.clock.now()):
            return error_reply(61006, call.rid)
        token = self._issue(component.appid, "component")
        return Reply({"component_access_token": token.value, "expires_in": self.token_ttl_s})

    def _platform_token(self, call: ApiCall, value: str) -> Token | Reply:
        """The component_access_token of a platform endpoint, checked (41001, 40001, 42001), and
        the ``component_appid`` of the body checked against it (40013)."""
        if not value:
            return error_reply(41001, call.rid)
        platform_token = self.tokens.get(value)
        if platform_token is None or platform_token.kind != "component":
            return error_reply(40001, call.rid)
        refused = platform_token.errcode(self.clock.now())
        if refused:
            return error_reply(refused, call.rid)
        if call.body_value("component_appid") != platform_token.appid:
            return error_reply(40013, call.rid)
        return platform_token

    def _authorizer_token(self, call: ApiCall) -> Reply:
        if call.body is None:
            return error_reply(47001, call.rid)
        authorizer = call.body_value("authorizer_appid")
        platform_token = self._platform_token(call, call.query.get("component_access_token", ""))
        if isinstance(platform_token, Reply):
            return platform_token
        now = self.clock.now()
        component = self.components.get(platform_token.appid)
        grant = None
        if component is not None and isinstance(authorizer, str):
            grant = component.authorizations.get(authorizer)
        refresh = call.body_value("authorizer_refresh_token")
        if grant is None or not isinstance(refresh, str) or not grant.accepts(refresh, now):
            return error_reply(61023, call.rid)
        if grant.rotate_refresh_token:
            grant.retired[grant.refresh_token] = now + GRACE_S
            grant.refresh_token = "refreshtoken@@@" + self._random_text(48)
        token = self._issue(grant.authorizer_appid, "access", platform_token.appid)
        return Reply(
            {
                "authorizer_access_token": token.value,
                "expires_in": self.token_ttl_s,
                "authorizer_refresh_token": grant.refresh_token,
            }
        )

    def _discovery_token(self, call: ApiCall) -> Token | Reply:
        """The body and the platform token of a discovery endpoint, checked as
        :meth:`_platform_token` does; the token comes under either name (REFERENCE)."""
        if call.body is None:
            return error_reply(47001, call.rid)
        value = call.query.get("component_access_token") or call.query.get("access_token", "")
        return self._platform_token(call, value)

    def _authorizer_list(self, call: ApiCall) -> Reply:
        """api_get_authorizer_list: a page of the platform's current authorizations, each with
        its current refresh token; a revoked one is not listed (REFERENCE "discovery")."""
        platform_token = self._discovery_token(call)
        if isinstance(platform_token, Reply):
            return platform_token
        offset = call.body_value("offset")
        count = call.body_value("count")
        if not is_int(offset) or not is_int(count) or offset < 0 or count < 1:
            return error_reply(40097, call.rid)
        if count > AUTHORIZER_LIST_MAX_COUNT:
            return error_reply(40170, call.rid)
        component = self.components.get(platform_token.appid)
        grants = [] if component is None else list(component.authorizations.values())
        return Reply(
            {
                "total_count": len(grants),
                "list": [
                    {
                        "authorizer_appid": grant.authorizer_appid,
                        "refresh_token": grant.refresh_token,
                        "auth_time": grant.auth_time,
                    }
                    for grant in grants[offset : offset + count]
                ],
            }
        )

    def _authorizer_info(self, call: ApiCall) -> Reply:
        """api_get_authorizer_info: an authorizer's account, and the permission sets it granted
        the platform (REFERENCE "discovery"); 61003 once it has withdrawn its grant."""
        platform_token = self._discovery_token(call)
        if isinstance(platform_token, Reply):
            return platform_token
        appid = call.body_value("authorizer_appid")
        if not isinstance(appid, str) or not appid:
            return error_reply(41002, call.rid)
        account = self.accounts.get(appid)
        if account is None:
            return error_reply(40013, call.rid)
        component = self.components.get(platform_token.appid)
        grant = None if component is None else component.authorizations.get(appid)
        if grant is None:
            return error_reply(61003, call.rid)
        return Reply(
            {
                "authorizer_info": _authorizer_view(account),
                "authorization_info": {
                    "authorizer_appid": appid,
                    "authorizer_refresh_token": grant.refresh_token,
                    "func_info": [
                        {"funcscope_category": {"id": permission_set}}
                        for permission_set in grant.permission_sets
                    ],
                },
            }
        )

    def _amplinkget(self, call: ApiCall) -> Reply:
        """wxamplinkget: the mini programs linked to an official account (REFERENCE
        "discovery"), called with its (authorizer) access token."""
        checked = self._token_account(call)
        if isinstance(checked, Reply):
            return checked
        token, account = checked
        if token.component is not None:
            component = self.components.get(token.component)
            if component is None or account.appid not in component.authorizations:
                return error_reply(61003, call.rid)
        if account.kind == "miniprogram":
            return error_reply(48001, call.rid)
        items = []
        for appid in account.linked_miniprograms:
            linked = self.accounts.get(appid)
            digest = hashlib.sha256(appid.encode()).hexdigest()
            items.append(
                {
                    "appid": appid,
                    "nickname": linked.nick_name if linked else f"Mini program {appid[-4:]}",
                    "username": f"gh_{digest[:12]}",
                    "headimgurl": f"http://wx.qlogo.cn/mmhead/sim{digest[:32]}/0",
                    "status": 1,
                    "source": "",
                    "selected": 0,
                    "nearby_display_status": 0,
                    "released": 1,
                    "func_infos": [],
                    "copy_verify_status": 0,
                    "email": "",
                }
            )
        return Reply({"errcode": 0, "errmsg": "ok", "wxopens": {"items": items}})

    # --- the rule endpoints ------------------------------------------------------------------

    def _token_account(self, call: ApiCall) -> tuple[Token, Account] | Reply:
        """An account's access token (41001, 40001, 42001...), its rate limit (44990), a JSON
        body (47001), and the account the token belongs to."""
        value = call.query.get("access_token", "")
        if not value:
            return error_reply(41001, call.rid)
        token = self.tokens.get(value)
        if token is None or token.kind != "access":
            return error_reply(40001, call.rid)
        refused = token.errcode(self.clock.now())
        if refused:
            return error_reply(refused, call.rid)
        if not self._admit(token.appid):
            return error_reply(44990, call.rid)
        if call.body is None:
            return error_reply(47001, call.rid)
        account = self.accounts.get(token.appid)
        if account is None:
            return error_reply(40001, call.rid)
        return token, account

    def _caller(self, call: ApiCall) -> Account | Reply:
        """Token, rate limit, body and account checks shared by the qrcodejump* endpoints."""
        checked = self._token_account(call)
        if isinstance(checked, Reply):
            return checked
        token, account = checked
        if token.component is not None:
            component = self.components.get(token.component)
            grant = None if component is None else component.authorizations.get(account.appid)
            # Service-account rules need permission set 3; mini-program rules 3 or 18 (the doc).
            needed = {3} if account.kind == "service_account" else {3, 18}
            if grant is None or not needed & set(grant.permission_sets):
                return error_reply(61007, call.rid)
        if account.kind == "miniprogram" and account.personal:
            return error_reply(85075, call.rid)
        if account.kind == "service_account" and not account.verified:
            return error_reply(48001, call.rid)
        return account

    def _target_book(self, call: ApiCall, account: Account) -> RuleBook | Reply:
        """The caller's own book (mini program), or the linked mini program's named in ``appid``."""
        if account.kind == "miniprogram":
            return self.book(account.appid, account.appid)
        target = call.body_value("appid")
        if not isinstance(target, str) or not target:
            return error_reply(40097, call.rid)
        if target not in account.linked_miniprograms:
            return error_reply(40166, call.rid)
        return self.book(account.appid, target)

    def _resolve(self, call: ApiCall) -> tuple[Account, RuleBook] | Reply:
        account = self._caller(call)
        if isinstance(account, Reply):
            return account
        book = self._target_book(call, account)
        if isinstance(book, Reply):
            return book
        return account, book

    def _qrcodejumpget(self, call: ApiCall) -> Reply:
        resolved = self._resolve(call)
        if isinstance(resolved, Reply):
            return resolved
        account, book = resolved
        selected = self._select(call, book)
        if isinstance(selected, Reply):
            return selected
        if book.miniprogram_mode:
            rule_list = [rule.miniprogram_view() for rule in selected]
            total = len(book) + account.total_count_offset
        else:
            rule_list = [rule.service_account_view() for rule in selected]
            total = len(book)
        return Reply(
            {
                "errcode": 0,
                "errmsg": "ok",
                "rule_list": rule_list,
                "qrcodejump_open": account.qrcodejump_open,
                "list_size": len(rule_list),
                "qrcodejump_pub_quota": account.pub_quota,
                "total_count": total,
            }
        )

    def _select(self, call: ApiCall, book: RuleBook) -> Sequence[Rule] | Reply:
        """The rules a qrcodejumpget body asks for, per get_type (REFERENCE)."""
        get_type = call.body_value("get_type")
        get_type = 0 if get_type is None else get_type
        if not is_int(get_type):
            return error_reply(40097, call.rid)
        if get_type == 0:
            # Mini-program mode answers every rule; service accounts the newest 10,000.
            return book.all() if book.miniprogram_mode else book.newest(NEWEST_LIMIT)
        if get_type == 1:
            prefixes = call.body_value("prefix_list")
            if (
                not isinstance(prefixes, list)
                or not 1 <= len(prefixes) <= MAX_PREFIXES
                or not all(isinstance(p, str) for p in prefixes)
            ):
                return error_reply(40097, call.rid)
            return book.among(prefixes)
        if get_type == 2:
            page_num = call.body_value("page_num")
            page_size = call.body_value("page_size")
            if not is_int(page_num) or not is_int(page_size):
                return error_reply(40097, call.rid)
            if page_num < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
                return error_reply(40097, call.rid)
            return book.page((page_num - 1) * page_size, page_size)
        return error_reply(40097, call.rid)

    def _qrcodejumpadd(self, call: ApiCall) -> Reply:
        resolved = self._resolve(call)
        if isinstance(resolved, Reply):
            return resolved
        account, book = resolved
        rule = self._rule_from_body(call, book.miniprogram_mode)
        if isinstance(rule, Reply):
            return rule
        given = call.body_value("is_edit")
        is_edit = 0 if given is None else one_of(given, (0, 1))
        if is_edit is None:
            return error_reply(40097, call.rid)
        existing = book.get(rule.prefix)
        owner = self._prefix_owner.get(rule.prefix)
        if existing is not None and is_edit == 0:
            return error_reply(85071, call.rid)
        if existing is None and owner is not None:
            return error_reply(85072, call.rid)
        if is_edit == 1:
            if existing is None or existing.state == 2:
                return error_reply(40097, call.rid)  # missing, or published: not editable
            existing.path, existing.state, existing.debug_url = rule.path, 1, rule.debug_url
            existing.open_version = rule.open_version
            existing.permit_sub_rule = rule.permit_sub_rule
        else:
            if len(book) >= account.max_rules:
                return error_reply(85073, call.rid)
            self._append(book, rule)
        return Reply({"errcode": 0, "errmsg": "ok"})

    def _rule_from_body(self, call: ApiCall, miniprogram_mode: bool) -> Rule | Reply:
        prefix = call.body_value("prefix")
        path = call.body_value("path")
        if not isinstance(prefix, str) or not prefix or not isinstance(path, str):
            return error_reply(40097, call.rid)
        if not prefix.startswith(("http://", "https://")):
            return error_reply(85066, call.rid)
        if not miniprogram_mode:
            return Rule(prefix=prefix, path=path)
        # Integers or their decimal strings, as WeChat takes them (see the module's docstring).
        open_version = one_of(call.body_value("open_version"), (1, 2, 3))
        permit_sub_rule = one_of(call.body_value("permit_sub_rule"), (1, 2))
        urls = call.body_value("debug_url")
        urls = [] if urls is None else urls
        if (
            open_version is None
            or permit_sub_rule is None
            or not isinstance(urls, list)
            or len(urls) > MAX_DEBUG_URLS
            or not all(isinstance(url, str) for url in urls)
        ):
            return error_reply(40097, call.rid)
        if not all(url.startswith(prefix) for url in urls):
            return error_reply(85068, call.rid)
        return Rule(prefix, path, 1, open_version, permit_sub_rule, list(urls))

    def _existing_rule(self, call: ApiCall) -> tuple[Account, RuleBook, Rule] | Reply:
        resolved = self._resolve(call)
        if isinstance(resolved, Reply):
            return resolved
        account, book = resolved
        prefix = call.body_value("prefix")
        rule = book.get(prefix) if isinstance(prefix, str) else None
        if rule is None:
            return error_reply(40097, call.rid)
        return account, book, rule

    def _qrcodejumppublish(self, call: ApiCall) -> Reply:
        found = self._existing_rule(call)
        if isinstance(found, Reply):
            return found
        account, book, rule = found
        miniprogram = self.accounts.get(book.miniprogram)
        if not account.released or (miniprogram is not None and not miniprogram.released):
            return error_reply(85074, call.rid)
        if rule.state != 2:
            if account.pub_quota <= 0:
                return error_reply(886000, call.rid)
            account.pub_quota -= 1
            rule.state = 2
        return Reply({"errcode": 0, "errmsg": "ok"})

    def _qrcodejumpdelete(self, call: ApiCall) -> Reply:
        found = self._existing_rule(call)
        if isinstance(found, Reply):
            return found
        _, book, rule = found
        self._remove(book, rule.prefix)
        return Reply({"errcode": 0, "errmsg": "ok"})

    # --- faults that change the world --------------------------------------------------------

    def drift(self, call: ApiCall, add: int, delete: int) -> None:
        """A user editing during a paged listing: delete from the first page, add at the end."""
        token = self.tokens.get(call.query.get("access_token", ""))
        account = None if token is None else self.accounts.get(token.appid)
        if account is None:
            return
        book = self._target_book(call, account)
        if isinstance(book, Reply):
            return
        page_size = call.body_value("page_size")
        if not is_int(page_size) or not 1 <= page_size <= MAX_PAGE_SIZE:
            page_size = MAX_PAGE_SIZE
        for rule in book.page(0, page_size)[:delete]:
            self._remove(book, rule.prefix)
        self.generate(account.appid, RuleSet(book.miniprogram, add, 0.5, quirks=False))
