"""The pager: read an account's rules from qrcodejumpget, page by page, validated.

Mini-program mode ("scan an ordinary QR code") is one call with body ``{}`` whose answer is the
whole listing. Service-account mode pages with ``get_type = 2`` from ``page_num = 1`` until every
rule is seen; ``get_type = 1`` refreshes named prefixes in batches of 200 (REFERENCE.md). Pages
are yielded one at a time so that nothing holds a whole listing in memory; whether a listing was
consistent is judged by :func:`judge_listing` from what the pages said.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from qrsync.errors import MalformedResponse
from qrsync.model import Page, Rule
from qrsync.wechat.client import INT32_MAX, INT32_MIN, ApiCaller

ENDPOINT = "qrcodejumpget"
PATH = "/cgi-bin/wxopen/qrcodejumpget"
MAX_PREFIXES_PER_CALL = 200
EXTRA_PAGES = 2
"""Pages the pager may read past what total_count announced (rules added while it pages)."""


@dataclass
class ListingTally:
    """What the pages of a listing said, gathered as they pass (no rules kept).

    ``pages`` counts every page of the run, across listing attempts; the other fields describe
    the current attempt and are cleared by :meth:`restart`.
    """

    pages: int = 0
    total_counts: list[int | None] = field(default_factory=list)
    ended: bool = True
    last: Page | None = None
    short_pages: list[str] = field(default_factory=list)
    """Pages whose ``list_size`` disagrees with their ``rule_list``: an answer that lost rules
    on the way must not delete them."""
    rules: int = 0
    """Rules listed by the current attempt so far (for a progress display)."""
    on_page: Callable[[ListingTally], None] | None = None
    """Told after every page (the CLI's progress display)."""

    def add(self, page: Page) -> None:
        self.pages += 1
        self.rules += len(page.rules)
        self.total_counts.append(page.total_count)
        self.last = page
        if page.list_size is not None and page.list_size != len(page.rules):
            self.short_pages.append(
                f"page {page.page_num} holds {len(page.rules)} rules but its list_size says "
                f"{page.list_size}"
            )
        if self.on_page is not None:
            self.on_page(self)

    def snapshot(self) -> dict[str, int | None]:
        """What the last page said of the account (``account_snapshots``'s counts)."""
        last = self.last
        return {
            "total_count": last.total_count if last else None,
            "qrcodejump_open": last.qrcodejump_open if last else None,
            "qrcodejump_pub_quota": last.qrcodejump_pub_quota if last else None,
        }

    def restart(self) -> None:
        self.rules = 0
        self.total_counts = []
        self.ended = True
        self.last = None
        self.short_pages = []


def total_count_note(listed: int, total_count: int | None) -> str | None:
    """What a run says of a mini program's answer whose total_count disagrees with the rules
    it holds (WeChat's own example shows 3 for 2): applied as listed all the same."""
    if total_count is None or total_count == listed:
        return None
    return (
        f"mini-program listing holds {listed} rules but its total_count says {total_count} "
        "(WeChat's own example does this); applied as listed"
    )


def judge_listing(tally: ListingTally, distinct_prefixes: int) -> list[str]:
    """Why a paged listing is not complete and consistent (SPEC behaviour 2); empty if it is."""
    problems: list[str] = list(tally.short_pages)
    counts = set(tally.total_counts)
    if not tally.ended:
        problems.append("the pager did not reach the end of the listing")
    if len(counts) > 1:
        shown = ", ".join(str(c) for c in sorted(c for c in counts if c is not None))
        problems.append(f"total_count changed between pages ({shown})")
    elif counts and distinct_prefixes != next(iter(counts)):
        problems.append(
            f"{distinct_prefixes} distinct rules seen but total_count is {next(iter(counts))}"
        )
    return problems


def miniprogram_listing(api: ApiCaller, tally: ListingTally) -> Iterator[Page]:
    """The one call of mini-program mode: body ``{}``, the whole listing in one answer."""
    page = parse_page(api.call(PATH, {}, endpoint=ENDPOINT), page_num=1, account=api.account)
    tally.add(page)
    yield page


def service_account_listing(
    api: ApiCaller,
    miniprogram_appid: str,
    page_size: int,
    tally: ListingTally,
    resume: ServicePages | None = None,
) -> Iterator[Page]:
    """Pages of get_type 2 until a short page, or total_count is reached (see
    :class:`ServicePages`); from where ``resume`` stands, if given (a listing begun elsewhere,
    its pages so far in ``tally``)."""
    pages = resume or ServicePages(miniprogram_appid, page_size, tally)
    while True:
        page, more = pages.take(api.call(PATH, pages.body(), endpoint=ENDPOINT), api.account)
        yield page
        if not more:
            return


@dataclass
class ServicePages:
    """The paging of get_type 2, one answer at a time: what to ask for next, and when to stop.

    The loop is bounded: it stops ``EXTRA_PAGES`` pages past the largest total_count announced
    and then reports the listing as not ended (``tally.ended = False``).
    """

    miniprogram_appid: str
    page_size: int
    tally: ListingTally
    page_num: int = 1
    largest_total: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "appid": self.miniprogram_appid,
            "get_type": 2,
            "page_num": self.page_num,
            "page_size": self.page_size,
        }

    def take(self, payload: dict[str, Any], account: str) -> tuple[Page, bool]:
        """The page answered to :meth:`body`, and whether another must be asked for (then
        :meth:`body` asks for it)."""
        page_num, page_size = self.page_num, self.page_size
        page = parse_page(payload, page_num, account)
        if page.total_count is None:
            raise MalformedResponse(
                f"qrcodejumpget page {page_num} has no total_count", account=account
            )
        self.tally.add(page)
        self.largest_total = max(self.largest_total, page.total_count)
        if len(page.rules) < page_size or page_num * page_size >= page.total_count:
            return page, False
        if page_num >= math.ceil(self.largest_total / page_size) + EXTRA_PAGES:
            self.tally.ended = False
            return page, False
        self.page_num += 1
        return page, True


def prefix_listing(
    api: ApiCaller, miniprogram_appid: str, prefixes: Sequence[str], tally: ListingTally
) -> Iterator[Page]:
    """get_type 1 in batches of at most 200 prefixes."""
    for start in range(0, len(prefixes), MAX_PREFIXES_PER_CALL):
        batch = list(prefixes[start : start + MAX_PREFIXES_PER_CALL])
        body = {"appid": miniprogram_appid, "get_type": 1, "prefix_list": batch}
        page_num = start // MAX_PREFIXES_PER_CALL + 1
        page = parse_page(api.call(PATH, body, endpoint=ENDPOINT), page_num, api.account)
        tally.add(page)
        yield page


# --- validation ---------------------------------------------------------------------------------


def parse_page(payload: dict[str, Any], page_num: int, account: str) -> Page:
    """Check an answer's shape and turn it into a :class:`Page`; anything off is malformed."""

    def bad(problem: str) -> MalformedResponse:
        return MalformedResponse(f"qrcodejumpget page {page_num}: {problem}", account=account)

    rule_list = payload.get("rule_list")
    if rule_list is None:
        # An empty listing may come without rule_list; anything else must carry it.
        if payload.get("total_count") == 0 or payload.get("list_size") == 0:
            rule_list = []
        else:
            raise bad("the answer has no rule_list")
    if not isinstance(rule_list, list):
        raise bad(f"rule_list is {type(rule_list).__name__}, not a list")
    rules = tuple(_parse_rule(item, index, bad) for index, item in enumerate(rule_list))
    return Page(
        page_num=page_num,
        rules=rules,
        total_count=_optional_int(payload, "total_count", bad),
        list_size=_optional_int(payload, "list_size", bad),
        qrcodejump_open=_open_flag(payload, bad),
        qrcodejump_pub_quota=_optional_int(payload, "qrcodejump_pub_quota", bad),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_small_int(value: object) -> bool:
    """Rule fields are small enums (1/2/3); anything outside smallint is not a rule field."""
    return _is_int(value) and -32768 <= value <= 32767  # type: ignore[operator]


def _optional_int(payload: dict[str, Any], key: str, bad: Any) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise bad(f"{key} is {value!r}, not a whole number")
    if not INT32_MIN <= value <= INT32_MAX:
        raise bad(f"{key} is {value!r}, beyond any count WeChat keeps")
    return int(value)


def _open_flag(payload: dict[str, Any], bad: Any) -> int | None:
    """qrcodejump_open is documented as a number (0/1); a JSON boolean means the same."""
    value = payload.get("qrcodejump_open")
    if isinstance(value, bool):
        return int(value)
    return _optional_int(payload, "qrcodejump_open", bad)


def _parse_rule(item: object, index: int, bad: Any) -> Rule:
    # Hot path (a listing can hold 100,000 rules): one test of everything, exact types only
    # (JSON gives no subclasses); any doubt goes to _rule_problem for the message.
    if type(item) is dict:
        get = item.get
        prefix, path, state = get("prefix"), get("path"), get("state")
        open_version, permit_sub_rule, debug = (
            get("open_version"),
            get("permit_sub_rule"),
            get("debug_url"),
        )
        # PostgreSQL text cannot hold NUL: a rule holding one cannot be stored verbatim.
        if (
            type(prefix) is str
            and prefix
            and "\x00" not in prefix
            and type(state) is int
            and -32768 <= state <= 32767
            and (path is None or (type(path) is str and "\x00" not in path))
            and (
                open_version is None
                or (type(open_version) is int and -32768 <= open_version <= 32767)
            )
            and (
                permit_sub_rule is None
                or (type(permit_sub_rule) is int and -32768 <= permit_sub_rule <= 32767)
            )
        ):
            if debug is None:
                return Rule(prefix, path, state, open_version, permit_sub_rule, None)
            if type(debug) is list and all(type(u) is str and "\x00" not in u for u in debug):
                return Rule(prefix, path, state, open_version, permit_sub_rule, tuple(debug))
    raise bad(_rule_problem(item, index))


def _rule_problem(item: object, index: int) -> str:
    """What is wrong with a rule that the hot path refused."""
    if not isinstance(item, dict):
        return f"rule {index} is {type(item).__name__}, not an object"
    prefix = item.get("prefix")
    if type(prefix) is not str or not prefix:
        return f"rule {index} has no prefix"
    if "\x00" in prefix:
        return f"rule {index} has a prefix holding a NUL character, which PostgreSQL cannot store"
    state = item.get("state")
    if not _is_small_int(state):
        return f"rule {prefix!r} has state {state!r}, not a whole number"
    path = item.get("path")
    if path is not None and type(path) is not str:
        return f"rule {prefix!r} has path {path!r}, not a string"
    if path is not None and "\x00" in path:
        return f"rule {prefix!r} has a path holding a NUL character, which PostgreSQL cannot store"
    for key in ("open_version", "permit_sub_rule"):
        value = item.get(key)
        if value is not None and not _is_small_int(value):
            return f"rule {prefix!r} has {key} {value!r}, not a whole number"
    debug = item.get("debug_url")
    if type(debug) is list and all(type(u) is str for u in debug):
        return (
            f"rule {prefix!r} has a debug_url holding a NUL character, which PostgreSQL "
            "cannot store"
        )
    return f"rule {prefix!r} has a debug_url that is not a list of strings"
