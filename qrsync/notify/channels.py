"""The channels' formats: what a message to each platform looks like, how it is signed and sent,
and how the platform's answer is read (SPEC behaviour 11).

A batch of events becomes at most ``max_messages`` messages (:func:`compose`): one event per
message when they fit, otherwise digests grouped by kind and account, each within the platform's
size limit, cut with "and N more — see `<hint>`" when even digests do not fit. A cut never
drops an event from coverage: the message holding the "and N more" line lists the elided ids in
its ``event_ids``, so every event given is covered by exactly one message.

Kinds and their formats (each platform's own):

- ``wecom``: WeCom (企业微信) group robot, ``POST .../cgi-bin/webhook/send?key=KEY``, body
  ``{"msgtype": "markdown", "markdown": {"content": ...}}`` with ``<font color="warning">``;
  the content is at most 4,096 bytes (UTF-8). No signing (the key in the URL is the secret).
- ``dingtalk``: DingTalk (钉钉) custom robot, ``POST .../robot/send?access_token=TOKEN``, body
  ``{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}``, at most 20,000 bytes.
  With a secret, the query also carries ``timestamp`` (ms) and ``sign`` =
  base64(HMAC-SHA256(key=secret, msg="<timestamp>\\n<secret>")), URL-encoded.
- ``feishu`` / ``lark``: Feishu (飞书) / Lark custom bot, ``POST .../open-apis/bot/v2/hook/ID``,
  body ``{"msg_type": "interactive", "card": {...}}`` (a header and one ``lark_md`` block), at
  most 20 KB. With a secret, the body also carries ``timestamp`` (s, a string) and ``sign`` =
  base64(HMAC-SHA256(key="<timestamp>\\n<secret>", msg="")).
- ``slack``: Slack incoming webhook, ``POST https://hooks.slack.com/services/T/B/X``, body
  ``{"text": <fallback>, "blocks": [header, section, ...]}``: at most 50 blocks, 3,000
  characters a section, 150 the header. No signing.
- ``webhook``: qrsync's own JSON, documented below.

Every title (and so every message a person reads) contains "qrsync": a DingTalk or Feishu robot
secured by a keyword rather than a signature can be given that keyword.

The webhook schema (version 1). One ``POST`` carries a list of events as
``Content-Type: application/json; charset=utf-8``::

    {
      "version": 1,
      "channel": "ops-hook",              // the [[notify]] name
      "events": [
        {
          "id": 1234,                      // the event's id: unique, use it to drop repeats
          "kind": "rule_published",        // one of the eleven event names
          "account": "brand-mp",
          "prefix": "https://shop.example.cn/q/123",   // rule events; null for the others
          "occurred_at": "2026-12-03T11:43:01Z",       // when qrsync observed it (UTC)
          "text": "brand-mp: rule https://shop.example.cn/q/123 published after 3 days",
          ...                              // the kind's details: path, old_path, from_state,
                                           // to_state, waited_days, quota, threshold,
                                           // failed_runs, error, errcode, held_deletions,
                                           // command
        }
      ],
      "more": 0,                           // events covered by this request but not listed
      "more_hint": "qrsync notify status"  // only when more > 0: where to see them all
    }

A request holds at most 500 events and 1,000,000 bytes. ``qrsync notify test`` sends
``"test": true`` and no events. Every request has the header ``X-Qrsync-Timestamp`` (Unix
seconds); with a secret, ``X-Qrsync-Signature: sha256=<hex>``, the HMAC-SHA256 with the secret as
key of ``"<timestamp>.<body>"`` (the body's exact bytes). A receiver should check the signature
with a constant-time comparison and refuse a timestamp more than an hour away from its clock. Any
2xx answer is a delivery; 429 and 5xx are retried (``Retry-After`` is honoured); any other
answer is a failure. Delivery is at least once: a receiver drops repeats by event ``id``.

:func:`send` signs at send time and reads the answer the platform's way: a 200 whose body carries
an error (``errcode`` of WeCom and DingTalk, ``code`` of Feishu and Lark, anything but ``ok`` from
Slack) is not a delivery. The URL (it holds the robot's key) and the secret never appear in an
answer's detail, a summary or an exception: they are masked (qrsync/masking.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from qrsync import __version__
from qrsync.config import NOTIFY_EVENTS, NOTIFY_KINDS
from qrsync.masking import mask, one_line, register_secret

KINDS = NOTIFY_KINDS
EVENT_KINDS = NOTIFY_EVENTS


@dataclass(frozen=True)
class Event:
    """One event of the outbox, as a channel shows it."""

    id: int
    kind: str
    account: str
    prefix: str | None
    occurred_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Channel:
    """One ``[[notify]]`` channel with its URL and secret read (both secrets: never shown)."""

    name: str
    kind: str
    url: str
    secret: str | None = None

    def __repr__(self) -> str:
        return f"Channel(name={self.name!r}, kind={self.kind!r}, url=***, secret=***)"


@dataclass(frozen=True)
class Message:
    """One request's worth: the events it covers, a line for logs, and the body before signing."""

    event_ids: tuple[int, ...]
    summary: str
    title: str = ""
    text: str = ""  # what a person reads (the kind's markdown flavour); webhook: a summary
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """A platform's limits for one robot: requests a minute, a second, and the size it checks
    (WeCom: the markdown content; every other kind: the request body), in bytes."""

    per_minute: int
    per_second: float | None
    max_bytes: int


KIND_LIMITS: dict[str, Limits] = {
    "wecom": Limits(per_minute=20, per_second=None, max_bytes=4096),
    "dingtalk": Limits(per_minute=20, per_second=None, max_bytes=20_000),
    "feishu": Limits(per_minute=100, per_second=5.0, max_bytes=20_000),
    "lark": Limits(per_minute=100, per_second=5.0, max_bytes=20_000),
    "slack": Limits(per_minute=60, per_second=1.0, max_bytes=40_000),
    "webhook": Limits(per_minute=60, per_second=None, max_bytes=1_000_000),
}
WECOM_TEXT_BYTES = 2048
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_CHARS = 3000
SLACK_HEADER_CHARS = 150
WEBHOOK_MAX_EVENTS = 500
MAX_LINE_BYTES = 1000
"""One event's line is cut to this: a single event always fits any platform's message."""
_ANSWER_BYTES = 65_536
_RETRY_AFTER_MAX_S = 3600.0


@dataclass(frozen=True)
class Answer:
    """What a receiver answered: ``detail`` is one masked line (it names no channel: the caller
    does), ``retry_after_s`` the wait the receiver asked for, if any."""

    ok: bool
    retryable: bool
    status: int | None
    detail: str
    retry_after_s: float | None = None


# --- human text -------------------------------------------------------------------------

_LABELS: dict[str, str] = {
    "rule_published": "rule published 规则已发布",
    "rule_unpublished": "rule unpublished 规则已取消发布",
    "rule_deleted": "rule deleted 规则已删除",
    "rule_restored": "rule back 规则已恢复",
    "rule_path_changed": "path changed 跳转路径已变更",
    "rule_waiting": "rule waiting 规则待发布",
    "quota_low": "publish quota low 发布配额不足",
    "account_failing": "account failing 同步失败",
    "account_recovered": "account recovered 同步已恢复",
    "deletions_held": "deletions held 删除已拦截",
    "authorization_needed": "authorization needed 需要重新授权",
}
# Digests list what needs a person first.
_URGENCY: dict[str, int] = {
    kind: rank
    for rank, kind in enumerate(
        (
            "authorization_needed",
            "deletions_held",
            "account_failing",
            "quota_low",
            "rule_deleted",
            "rule_waiting",
            "rule_unpublished",
            "rule_path_changed",
            "rule_published",
            "rule_restored",
            "account_recovered",
        )
    )
}
_WARNING = frozenset(
    {"authorization_needed", "deletions_held", "account_failing", "quota_low", "rule_deleted"}
)
_GOOD = frozenset({"rule_published", "rule_restored", "account_recovered"})


def _label(kind: str) -> str:
    return _LABELS.get(kind, kind)


def _clean(value: Any) -> str:
    """A value from WeChat or the database as one masked line without backticks."""
    return one_line(mask(str(value))).replace("`", "'")


def _cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes on a character boundary, marked with an ellipsis."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: max(0, limit - 3)].decode("utf-8", "ignore") + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(event: Event, *, with_account: bool = True) -> str:
    """One plain line saying what happened, e.g. ``brand-mp: rule https://shop.example.cn/q/123
    published after 3 days``; values are masked, on one line, and the whole within
    :data:`MAX_LINE_BYTES`."""
    d = event.details
    rule = f"rule {_clean(event.prefix)}" if event.prefix is not None else "rule"
    kind = event.kind

    def has(key: str) -> bool:
        return d.get(key) is not None

    if kind == "rule_published":
        text = f"{rule} published"
        if has("waited_days"):
            text += f" after {_plural(int(d['waited_days']), 'day')}"
        if has("path"):
            text += f" (opens {_clean(d['path'])})"
    elif kind == "rule_unpublished":
        text = f"{rule} unpublished"
        if has("from_state") and has("to_state"):
            text += f" (state {_clean(d['from_state'])} → {_clean(d['to_state'])})"
    elif kind == "rule_deleted":
        text = f"{rule} deleted"
        if has("path"):
            text += f" (it opened {_clean(d['path'])})"
    elif kind == "rule_restored":
        text = f"{rule} is back after its deletion"
    elif kind == "rule_path_changed":
        text = f"{rule} now opens {_clean(d.get('path', '?'))}"
        if has("old_path"):
            text += f" (was {_clean(d['old_path'])})"
    elif kind == "rule_waiting":
        days = f" for {_plural(int(d['waited_days']), 'day')}" if has("waited_days") else ""
        text = f"{rule} still unpublished{days}"
    elif kind == "quota_low":
        text = f"publish quota down to {_clean(d.get('quota', '?'))}"
        if has("threshold"):
            text += f" (alert at {_clean(d['threshold'])} or below)"
    elif kind == "account_failing":
        runs = (
            f"{_plural(int(d['failed_runs']), 'failed run')} in a row"
            if has("failed_runs")
            else "failing"
        )
        text = f"syncing fails: {runs}"
        if has("errcode"):
            text += f"; WeChat errcode {_clean(d['errcode'])}"
        if has("error"):
            text += f"; last error: {_clean(d['error'])}"
    elif kind == "account_recovered":
        text = "syncing again"
        if has("failed_runs"):
            text += f" after {_plural(int(d['failed_runs']), 'failed run')}"
    elif kind == "deletions_held":
        held = (
            _plural(int(d["held_deletions"]), "rule deletion")
            if has("held_deletions")
            else "deletions"
        )
        text = f"{held} held back by the mass-delete guard"
        if has("command"):
            text += f"; confirm with `{_clean(d['command'])}`"
    elif kind == "authorization_needed":
        text = "needs a person: the token source was refused"
        if has("errcode"):
            text += f" (errcode {_clean(d['errcode'])})"
        if has("error"):
            text += f": {_clean(d['error'])}"
    else:
        text = f"{_clean(kind)} {rule if event.prefix is not None else ''}".rstrip()
        if d:
            text += " " + _clean(
                json.dumps(dict(d), ensure_ascii=False, default=str, sort_keys=True)
            )
    if with_account:
        text = f"{_clean(event.account)}: {text}"
    return _cut(text, MAX_LINE_BYTES)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the kinds' flavours ------------------------------------------------------------------


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _escaped(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string (quotes excluded): escaping is per character,
    so the escaped size of a concatenation is the sum of its parts'."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _and_more(count: int, hint: str, groups: int) -> str:
    where = f" in {groups} groups" if groups > 1 else ""
    return f"and {count} more{where} — see `{hint}`"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class _Line:
    """A line of a digest: its text in the kind's flavour and the events it accounts for."""

    text: str
    event_ids: tuple[int, ...] = ()


_TITLE_RESERVE = 100  # bytes; a title is cut to this
_HEAD_RESERVE = 300  # bytes (escaped) of a digest's heading
_SIGN_RESERVE = 160  # bytes Feishu's timestamp and sign add to the body
_SLACK_FALLBACK_RESERVE = 400  # bytes (escaped) of Slack's fallback text


class _Flavour(ABC):
    """How one kind writes a digest and what its size budget counts."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.limit = KIND_LIMITS[kind].max_bytes
        self._costs: dict[str, int] = {}

    # Text pieces.
    def section_header(self, account: str, kind: str, count: int) -> str:
        return f"**{account}** · {_label(kind)} ({count})"

    def item(self, text: str) -> str:
        return f"- {text}"

    def more(self, count: int, hint: str, groups: int = 0) -> str:
        return f"- {_and_more(count, hint, groups)}"

    def heading(self, title: str) -> str:
        return f"### {title}"

    # Budget: the size of a message holding these lines, counted exactly for the kind.
    def new_budget(self) -> _Budget:
        return _Budget(self)

    def line_cost(self, text: str) -> int:
        cost = self._costs.get(text)
        if cost is None:
            cost = self._costs[text] = self.measure_line(text)
        return cost

    def measure_line(self, text: str) -> int:
        return _escaped(text) + 2  # the line and its "\n" separator

    @abstractmethod
    def base_cost(self) -> int:
        """The size of a message of this kind holding no line."""

    # The body.
    @abstractmethod
    def payload(self, title: str, content: str, kind_hint: str) -> dict[str, Any]:
        """The request body of a message of this kind."""


class _Budget:
    """The running size of one message being filled; ``fits`` tries lines without adding them."""

    def __init__(self, flavour: _Flavour) -> None:
        self.flavour = flavour
        self.used = flavour.base_cost()

    def fits(self, texts: Sequence[str]) -> bool:
        return self.used + sum(self.flavour.line_cost(t) for t in texts) <= self.flavour.limit

    def add(self, text: str) -> None:
        self.used += self.flavour.line_cost(text)


class _WeCom(_Flavour):
    def section_header(self, account: str, kind: str, count: int) -> str:
        color = "warning" if kind in _WARNING else "info" if kind in _GOOD else "comment"
        return f'<font color="{color}">**{account}** · {_label(kind)} ({count})</font>'

    def item(self, text: str) -> str:
        return f"> {text}"

    def more(self, count: int, hint: str, groups: int = 0) -> str:
        return f"> {_and_more(count, hint, groups)}"

    def measure_line(self, text: str) -> int:
        return len(text.encode()) + 1  # WeCom counts the content's own bytes

    def base_cost(self) -> int:
        return _HEAD_RESERVE

    def payload(self, title: str, content: str, kind_hint: str) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"content": content}}


class _DingTalk(_Flavour):
    def base_cost(self) -> int:
        body = self.payload("x" * 2 * _TITLE_RESERVE, "x" * _HEAD_RESERVE, "")
        return len(_json_bytes(body))

    def payload(self, title: str, content: str, kind_hint: str) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"title": title, "text": content}}


class _Feishu(_Flavour):
    def item(self, text: str) -> str:
        return f"• {text}"

    def more(self, count: int, hint: str, groups: int = 0) -> str:
        return f"• {_and_more(count, hint, groups)}"

    def heading(self, title: str) -> str:
        return ""

    def base_cost(self) -> int:
        body = self.payload("x" * 2 * _TITLE_RESERVE, "x" * _HEAD_RESERVE, "")
        return len(_json_bytes(body)) + _SIGN_RESERVE

    def payload(self, title: str, content: str, kind_hint: str) -> dict[str, Any]:
        template = "orange" if kind_hint in _WARNING else "green" if kind_hint in _GOOD else "blue"
        return {
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": True},
                "header": {"title": {"tag": "plain_text", "content": title}, "template": template},
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": content}}],
            },
        }


class _SlackBudget(_Budget):
    """Slack counts blocks (50), characters a section (3,000) and, here, the body's bytes."""

    def __init__(self, flavour: _Flavour) -> None:
        super().__init__(flavour)
        self.blocks = 2  # the header and the first section
        self.section_chars = 0

    def _after(self, texts: Sequence[str]) -> tuple[int, int, int]:
        used, blocks, chars = self.used, self.blocks, self.section_chars
        for text in texts:
            need = len(text) + (1 if chars else 0)
            if chars and chars + need > SLACK_SECTION_CHARS:
                blocks += 1
                used += _SLACK_SECTION_BYTES
                chars, need = 0, len(text)
            chars += need
            used += self.flavour.line_cost(text)
        return used, blocks, chars

    def fits(self, texts: Sequence[str]) -> bool:
        used, blocks, _ = self._after(texts)
        return used <= self.flavour.limit and blocks <= SLACK_MAX_BLOCKS

    def add(self, text: str) -> None:
        self.used, self.blocks, self.section_chars = self._after([text])


_SLACK_SECTION_BYTES = (
    len(_json_bytes({"type": "section", "text": {"type": "mrkdwn", "text": ""}})) + 1
)


class _Slack(_Flavour):
    def section_header(self, account: str, kind: str, count: int) -> str:
        return f"*{_slack_escape(account)}* · {_label(kind)} ({count})"

    def item(self, text: str) -> str:
        return f"• {_slack_escape(text)}"

    def more(self, count: int, hint: str, groups: int = 0) -> str:
        return f"• {_slack_escape(_and_more(count, hint, groups))}"

    def heading(self, title: str) -> str:
        return ""

    def new_budget(self) -> _Budget:
        return _SlackBudget(self)

    def base_cost(self) -> int:
        body = {
            "text": "x" * _SLACK_FALLBACK_RESERVE,
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": "x" * SLACK_HEADER_CHARS * 3},
                },
                {"type": "section", "text": {"type": "mrkdwn", "text": ""}},
            ],
        }
        return len(_json_bytes(body))

    def payload(self, title: str, content: str, kind_hint: str) -> dict[str, Any]:
        sections: list[str] = []
        for line in content.split("\n"):
            if sections and len(sections[-1]) + 1 + len(line) <= SLACK_SECTION_CHARS:
                sections[-1] += "\n" + line
            else:
                sections.append(line[:SLACK_SECTION_CHARS])
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:SLACK_HEADER_CHARS]}}
        ]
        blocks += [
            {"type": "section", "text": {"type": "mrkdwn", "text": section}}
            for section in sections
            if section
        ]
        fallback = _cut(title, _SLACK_FALLBACK_RESERVE // 3)
        return {"text": fallback, "blocks": blocks}


_FLAVOURS: dict[str, Callable[[str], _Flavour]] = {
    "wecom": _WeCom,
    "dingtalk": _DingTalk,
    "feishu": _Feishu,
    "lark": _Feishu,
    "slack": _Slack,
}


# --- composing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    account: str
    kind: str
    events: tuple[Event, ...]
    items: tuple[_Line, ...] = ()  # one line per event, rendered once


def _sections(flavour: _Flavour, events: Sequence[Event]) -> list[_Section]:
    groups: dict[tuple[str, str], list[Event]] = {}
    for event in sorted(events, key=lambda e: e.id):
        groups.setdefault((event.account, event.kind), []).append(event)
    ordered = sorted(groups, key=lambda key: (_URGENCY.get(key[1], len(_URGENCY)), key[0], key[1]))
    return [
        _Section(
            account,
            kind,
            tuple(groups[account, kind]),
            tuple(
                _Line(flavour.item(describe(e, with_account=False)), (e.id,))
                for e in groups[account, kind]
            ),
        )
        for account, kind in ordered
    ]


def _section_lines(flavour: _Flavour, section: _Section, cap: int | None, hint: str) -> list[_Line]:
    shown = section.events if cap is None else section.events[:cap]
    elided = section.events[len(shown) :]
    header = flavour.section_header(_clean(section.account), section.kind, len(section.events))
    lines = [_Line(_cut(header, _HEAD_RESERVE))]
    lines += section.items[: len(shown)]
    if elided:
        lines.append(_Line(flavour.more(len(elided), hint), tuple(e.id for e in elided)))
    return lines


def _pack(
    flavour: _Flavour,
    sections: Sequence[_Section],
    cap: int | None,
    max_messages: int,
    hint: str,
) -> list[list[_Line]] | None:
    """Fill messages line by line in order; None when more than ``max_messages`` are needed.
    A section's header stays with its first line and is repeated (with "…") where the section
    goes on in the next message."""
    messages: list[list[_Line]] = [[]]
    budget = flavour.new_budget()
    for section in sections:
        lines = _section_lines(flavour, section, cap, hint)
        header = lines[0]
        for position, line in enumerate(lines[1:]):
            first = position == 0
            if not budget.fits([header.text, line.text] if first else [line.text]):
                if len(messages) >= max_messages:
                    return None
                messages.append([])
                budget = flavour.new_budget()
                if not first:
                    again = _Line(header.text + " …")
                    messages[-1].append(again)
                    budget.add(again.text)
            if first:
                messages[-1].append(header)
                budget.add(header.text)
            messages[-1].append(line)
            budget.add(line.text)
    return messages


def _pack_with_tail(
    flavour: _Flavour, sections: Sequence[_Section], max_messages: int, hint: str
) -> list[list[_Line]]:
    """Each section as its header and "and N more" only, in order; in the last message a tail
    line covers every section that does not fit (too many accounts and kinds for the budget)."""
    total = sum(len(s.events) for s in sections)
    worst_tail = flavour.more(total, hint, len(sections))
    messages: list[list[_Line]] = [[]]
    budget = flavour.new_budget()
    for position, section in enumerate(sections):
        lines = _section_lines(flavour, section, 0, hint)
        texts = [line.text for line in lines]
        more_follow = position < len(sections) - 1
        for attempt in range(2):
            last = len(messages) == max_messages
            if budget.fits(texts + ([worst_tail] if last and more_follow else [])):
                for line in lines:
                    messages[-1].append(line)
                    budget.add(line.text)
                break
            if last or attempt == 1:
                remaining = sections[position:]
                ids = tuple(e.id for s in remaining for e in s.events)
                messages[-1].append(_Line(flavour.more(len(ids), hint, len(remaining)), ids))
                return messages
            messages.append([])
            budget = flavour.new_budget()
    return messages


def _digest_title(events: Sequence[Event], part: int, parts: int) -> str:
    accounts = sorted({e.account for e in events})
    who = _clean(accounts[0]) if len(accounts) == 1 else f"{len(accounts)} accounts"
    title = f"qrsync: {who}, {_plural(len(events), 'event')}"
    if parts > 1:
        title += f" ({part}/{parts})"
    return _cut(title, _TITLE_RESERVE)


def _finish(
    flavour: _Flavour,
    lines: Sequence[_Line],
    by_id: Mapping[int, Event],
    part: int,
    parts: int,
    total: int,
) -> Message:
    ids = tuple(i for line in lines for i in line.event_ids)
    covered = [by_id[i] for i in ids]
    title = _digest_title(covered, part, parts)
    heading = flavour.heading(title)
    content = "\n".join(([heading] if heading else []) + [line.text for line in lines])
    urgent = min(covered, key=lambda e: _URGENCY.get(e.kind, len(_URGENCY))).kind if covered else ""
    payload = flavour.payload(title, content, urgent)
    kinds: dict[str, int] = {}
    for event in covered:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    summary = f"digest {part}/{parts} of {total} events: {len(ids)} covered ({counts})"
    return Message(ids, one_line(mask(summary)), title, content, payload)


def _single(flavour: _Flavour, event: Event) -> Message:
    # "qrsync" in every title: a robot whose security is a keyword can be given that one.
    title = _cut(f"qrsync · {_clean(event.account)} · {_label(event.kind)}", _TITLE_RESERVE)
    line = describe(event)
    when = f"observed {_when(event.occurred_at)} · event #{event.id}"
    if isinstance(flavour, _Slack):
        body = [_slack_escape(line), f"_{when}_"]
    elif isinstance(flavour, _WeCom):
        color = (
            "warning" if event.kind in _WARNING else "info" if event.kind in _GOOD else "comment"
        )
        body = [f'<font color="{color}">{line}</font>', f'<font color="comment">{when}</font>']
    else:
        body = [line, f"*{when}*"]
    heading = flavour.heading(title)
    content = "\n".join(([heading] if heading else []) + body)
    payload = flavour.payload(title, content, event.kind)
    summary = one_line(mask(f"event {event.id} {event.kind} of {event.account}"))
    return Message((event.id,), summary, title, content, payload)


def _webhook_event(event: Event) -> dict[str, Any]:
    core: dict[str, Any] = {
        "id": event.id,
        "kind": event.kind,
        "account": event.account,
        "prefix": event.prefix,
        "occurred_at": _iso(event.occurred_at),
        "text": describe(event),
    }
    extra = {
        key: (_cut(mask(value), 4 * MAX_LINE_BYTES) if isinstance(value, str) else value)
        for key, value in event.details.items()
        if key not in core
    }
    return {**core, **extra}


def _webhook_payload(
    channel: Channel, events: Sequence[dict[str, Any]], more: int, hint: str
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "version": 1,
        "channel": channel.name,
        "events": list(events),
        "more": more,
    }
    if more:
        payload["more_hint"] = hint
    return payload


def _compose_webhook(
    channel: Channel, events: Sequence[Event], max_messages: int, hint: str
) -> list[Message]:
    limit = KIND_LIMITS["webhook"].max_bytes
    ordered = sorted(events, key=lambda e: e.id)
    objects = [_webhook_event(e) for e in ordered]
    base = len(_json_bytes(_webhook_payload(channel, [], 10**12, hint)))
    groups: list[list[int]] = [[]]
    used = base
    for index, obj in enumerate(objects):
        size = len(_json_bytes(obj)) + 1
        if groups[-1] and (len(groups[-1]) >= WEBHOOK_MAX_EVENTS or used + size > limit):
            if len(groups) >= max_messages:
                break
            groups.append([])
            used = base
        groups[-1].append(index)
        used += size
    listed = sum(len(g) for g in groups)
    messages = []
    for number, group in enumerate(groups, start=1):
        last = number == len(groups)
        more_ids = [e.id for e in ordered[listed:]] if last else []
        ids = tuple(ordered[i].id for i in group) + tuple(more_ids)
        payload = _webhook_payload(channel, [objects[i] for i in group], len(more_ids), hint)
        summary = f"webhook request {number}/{len(groups)}: {len(group)} events"
        if more_ids:
            summary += f" and {len(more_ids)} more"
        messages.append(Message(ids, summary, f"qrsync: {len(ids)} events", summary, payload))
    return messages


def compose(
    channel: Channel, events: Sequence[Event], *, max_messages: int, more_hint: str
) -> list[Message]:
    """Messages covering every event in ``events``, at most ``max_messages`` of them, each within
    the kind's limits. Each event is covered by exactly one message; an empty list for no events.
    ``more_hint`` names where to see everything (e.g. ``qrsync notify status``)."""
    if channel.kind not in KINDS:
        raise ValueError(f"unknown channel kind {channel.kind!r}")
    if not events:
        return []
    max_messages = max(1, max_messages)
    hint = _clean(more_hint)
    if channel.kind == "webhook":
        return _compose_webhook(channel, events, max_messages, hint)
    flavour = _FLAVOURS[channel.kind](channel.kind)
    ordered = sorted(events, key=lambda e: e.id)
    if len(ordered) <= max_messages:
        return [_single(flavour, event) for event in ordered]
    sections = _sections(flavour, ordered)
    packed = _pack(flavour, sections, None, max_messages, hint)
    if packed is None:
        # The largest number of lines per section that still fits, found by bisection (the
        # messages needed grow with it); below 0 lines a section, a tail line covers the rest.
        low, high = 0, max(len(s.events) for s in sections)
        best = _pack(flavour, sections, 0, max_messages, hint)
        if best is None:
            packed = _pack_with_tail(flavour, sections, max_messages, hint)
        else:
            while low < high:
                middle = (low + high + 1) // 2
                attempt = _pack(flavour, sections, middle, max_messages, hint)
                if attempt is None:
                    high = middle - 1
                else:
                    low, best = middle, attempt
            packed = best
    by_id = {e.id: e for e in ordered}
    packed = [lines for lines in packed if lines]
    return [
        _finish(flavour, lines, by_id, number, len(packed), len(ordered))
        for number, lines in enumerate(packed, start=1)
    ]


def test_message(channel: Channel, *, now: datetime) -> Message:
    """The message ``qrsync notify test`` sends: it covers no event."""
    if channel.kind not in KINDS:
        raise ValueError(f"unknown channel kind {channel.kind!r}")
    title = f"qrsync test message 测试消息: {_clean(channel.name)}"
    line = (
        f"qrsync test message for channel '{_clean(channel.name)}' ({channel.kind}) at "
        f"{_when(now)}: notifications will arrive here."
    )
    summary = f"test message to channel '{_clean(channel.name)}'"
    if channel.kind == "webhook":
        payload = {**_webhook_payload(channel, [], 0, ""), "test": True}
        return Message((), summary, title, line, payload)
    flavour = _FLAVOURS[channel.kind](channel.kind)
    text = _slack_escape(line) if isinstance(flavour, _Slack) else line
    heading = flavour.heading(title)
    content = "\n".join(([heading] if heading else []) + [text])
    return Message((), summary, title, content, flavour.payload(title, content, ""))


def measure(kind: str, message: Message) -> int:
    """The size the platform checks against ``KIND_LIMITS[kind].max_bytes``: WeCom the markdown
    content's bytes, every other kind the request body's bytes (Feishu's sign excluded)."""
    if kind == "wecom":
        markdown = message.payload.get("markdown", {})
        return len(str(markdown.get("content", "")).encode())
    return len(_json_bytes(message.payload))


# --- sending --------------------------------------------------------------------------------

_NAMES = {
    "wecom": "WeCom",
    "dingtalk": "DingTalk",
    "feishu": "Feishu",
    "lark": "Lark",
    "slack": "Slack",
    "webhook": "the webhook receiver",
}


def _register(channel: Channel) -> None:
    """Make the URL, its key and the secret known to the mask before any of them can leak."""
    register_secret(channel.url)
    register_secret(channel.secret)
    parts = urlsplit(channel.url)
    for _name, value in parse_qsl(parts.query, keep_blank_values=True):
        register_secret(value)
    segments = [s for s in parts.path.split("/") if s]
    if channel.kind in ("feishu", "lark", "webhook") and segments:
        register_secret(segments[-1])
    if channel.kind == "slack" and len(segments) >= 3:
        register_secret("/".join(segments[-3:]))
        register_secret(segments[-1])


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's ``sign`` before URL encoding: base64(HMAC-SHA256(secret, "ts\\nsecret"))."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's and Lark's ``sign``: base64(HMAC-SHA256 keyed with "ts\\nsecret" of nothing)."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """The ``X-Qrsync-Signature`` header's value for a webhook request."""
    signed = f"{timestamp_s}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Request:
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


def _request(channel: Channel, message: Message, now: datetime) -> _Request:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"qrsync/{__version__}",
    }
    params: dict[str, str] = {}
    payload = dict(message.payload)
    seconds = int(now.timestamp())
    if channel.kind == "dingtalk" and channel.secret:
        millis = int(now.timestamp() * 1000)
        params = {"timestamp": str(millis), "sign": dingtalk_sign(channel.secret, millis)}
    elif channel.kind in ("feishu", "lark") and channel.secret:
        payload = {
            "timestamp": str(seconds),
            "sign": feishu_sign(channel.secret, seconds),
            **payload,
        }
    body = _json_bytes(payload)
    if channel.kind == "webhook":
        headers["X-Qrsync-Timestamp"] = str(seconds)
        if channel.secret:
            headers["X-Qrsync-Signature"] = webhook_signature(channel.secret, seconds, body)
    return _Request(channel.url, params, headers, body)


def send(
    session: requests.Session,
    channel: Channel,
    message: Message,
    *,
    now: datetime,
    timeout_s: float,
) -> Answer:
    """Sign ``message`` for ``now``, post it, and read the answer the platform's way. Never
    raises for what the network or the receiver does; the detail is masked."""
    _register(channel)
    name = _NAMES.get(channel.kind, channel.kind)
    parts = urlsplit(channel.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Answer(False, False, None, "the URL is not an http(s) URL: check url_env / url_file")
    request = _request(channel, message, now)
    try:
        response = session.post(
            request.url,
            params=request.params or None,
            data=request.body,
            headers=request.headers,
            timeout=timeout_s,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout:
        return Answer(False, True, None, f"{name} gave no answer within {timeout_s:g} s", None)
    except requests.ConnectionError as exc:
        return Answer(False, True, None, f"could not reach {name}: {_connection_problem(exc)}")
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
    ):
        return Answer(False, False, None, "the URL is not valid: check url_env / url_file")
    except requests.RequestException as exc:
        return Answer(False, True, None, f"request to {name} failed ({type(exc).__name__})")
    except ValueError:  # e.g. a host name that cannot be encoded
        return Answer(False, False, None, "the URL is not valid: check url_env / url_file")
    try:
        raw = response.raw.read(_ANSWER_BYTES, decode_content=True) or b""
    except (requests.RequestException, OSError, ValueError) as exc:
        return Answer(
            False, True, response.status_code, f"{name}'s answer broke off ({type(exc).__name__})"
        )
    finally:
        response.close()
    text = raw.decode("utf-8", "replace")
    answer = _interpret(channel.kind, response.status_code, response.headers, text)
    return Answer(
        answer.ok,
        answer.retryable,
        answer.status,
        _clean_detail(answer.detail),
        answer.retry_after_s,
    )


def _connection_problem(exc: BaseException) -> str:
    """What went wrong on the line, in words, from the innermost cause (never its text, which
    holds the URL)."""
    names: list[str] = []
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        names.append(type(seen).__name__)
        reason = getattr(seen, "reason", None)
        nested = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = reason if isinstance(reason, BaseException) else nested or seen.__cause__
    found = " ".join(names)
    if "NewConnectionError" in found or "ConnectionRefused" in found:
        return "connection refused"
    if "NameResolution" in found or "gaierror" in found:
        return "its host name does not resolve"
    if "SSL" in found:
        return "the TLS handshake failed"
    return "the connection was closed without an answer"


def _clean_detail(text: str) -> str:
    return _cut(one_line(mask(text)), 500)


def _retry_after(headers: Mapping[str, str], default: float | None) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        seconds = (moment - datetime.now(UTC)).total_seconds()
    return min(max(0.0, seconds), _RETRY_AFTER_MAX_S)


def _short(text: str) -> str:
    return _cut(one_line(text.strip()), 160)


def _interpret(kind: str, status: int, headers: Mapping[str, str], text: str) -> Answer:
    name = _NAMES.get(kind, kind)
    if status == 429:
        wait = _retry_after(headers, 60.0 if kind in ("wecom", "dingtalk") else 1.0)
        return Answer(
            False, True, status, f"{name} answered HTTP 429 (rate limited): {_short(text)}", wait
        )
    if status >= 500:
        return Answer(
            False, True, status, f"{name} answered HTTP {status}", _retry_after(headers, None)
        )
    if kind == "slack":
        return _slack(status, text)
    if kind == "webhook":
        return _webhook(status, text)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    code: object = None
    words = ""
    if isinstance(body, dict):
        if kind in ("wecom", "dingtalk"):
            code, words = body.get("errcode"), str(body.get("errmsg", ""))
        else:
            code = body.get("code", body.get("StatusCode"))
            words = str(body.get("msg", body.get("StatusMessage", "")))
    if status != 200:
        # Feishu answers some refusals with HTTP 400 and its code in the body.
        if isinstance(code, int) and code != 0:
            return _refusal(kind, status, code, words)
        retryable = status == 408
        return Answer(False, retryable, status, f"{name} answered HTTP {status}: {_short(text)}")
    if not isinstance(body, dict):
        return Answer(
            False, True, status, f"{name} answered HTTP 200 with no JSON object: {_short(text)}"
        )
    if code == 0:
        return Answer(True, False, status, f"{name} answered ok")
    if not isinstance(code, int):
        return Answer(False, True, status, f"{name} answered without a result code: {_short(text)}")
    return _refusal(kind, status, code, words)


_HINTS: dict[tuple[str, int], tuple[str, bool, float | None]] = {
    # (kind, code): (what to do, retryable, wait)
    ("wecom", 45009): ("rate limited: 20 messages a minute per robot", True, 60.0),
    ("wecom", 93000): (
        "the robot's key is wrong or the robot was removed: check url_env",
        False,
        None,
    ),
    ("wecom", 40058): ("the message is too long for WeCom", False, None),
    ("wecom", 40008): ("WeCom refused the message type", False, None),
    ("wecom", -1): ("WeCom is busy", True, None),
    ("dingtalk", 130101): ("rate limited: 20 messages a minute per robot", True, 60.0),
    ("dingtalk", 660026): ("rate limited", True, 60.0),
    ("dingtalk", 300001): ("the robot's access_token is wrong: check url_env", False, None),
    ("dingtalk", 300005): (
        "the robot's access_token is wrong or the robot was removed: check url_env",
        False,
        None,
    ),
    ("dingtalk", 460101): ("the message is too long for DingTalk", False, None),
    ("dingtalk", -1): ("DingTalk is busy", True, None),
    ("feishu", 11232): ("rate limited: 100 messages a minute and 5 a second per bot", True, 10.0),
    ("feishu", 19021): ("check secret_env, and this machine's clock", False, None),
    ("feishu", 19024): (
        "the bot wants a keyword the message lacks: use signing (secret_env) instead, or add a "
        "keyword qrsync messages contain, such as qrsync",
        False,
        None,
    ),
    ("feishu", 19022): ("this machine's IP is not on the bot's allow list", False, None),
    ("feishu", 19001): ("the hook id is wrong or the bot was removed: check url_env", False, None),
    ("feishu", 19007): ("the bot is disabled", False, None),
    ("feishu", 9499): ("Feishu refused the request as malformed or too large", False, None),
}


def _refusal(kind: str, status: int, code: int, words: str) -> Answer:
    name = _NAMES.get(kind, kind)
    family = "feishu" if kind == "lark" else kind
    field_name = "errcode" if family in ("wecom", "dingtalk") else "code"
    said = f"{name} answered {field_name} {code} ({_short(words)})"
    lowered = words.lower()
    hint, retryable, wait = _HINTS.get((family, code), ("", False, None))
    if family == "dingtalk" and code == 310000:
        if "sign" in lowered or "签名" in words:
            hint = "check secret_env"
        elif "timestamp" in lowered:
            hint = "this machine's clock is more than an hour off"
        elif "keyword" in lowered or "关键词" in words:
            hint = (
                "the robot wants a keyword the message lacks: use signing (secret_env) instead, "
                "or add a keyword qrsync messages contain, such as qrsync"
            )
        elif "ip" in lowered:
            hint = "this machine's IP is not on the robot's allow list"
        else:
            hint = "the robot's security settings refused the message"
    if "too fast" in lowered or "too many request" in lowered or "frequency limit" in lowered:
        hint, retryable, wait = "rate limited", True, wait or 60.0
    detail = f"{said}: {hint}" if hint else said
    return Answer(False, retryable, status, detail, wait)


def _slack(status: int, text: str) -> Answer:
    words = _short(text)
    if status == 200 and text.strip() == "ok":
        return Answer(True, False, status, "Slack answered ok")
    hints = {
        "no_service": "the webhook URL is wrong or was revoked: check url_env",
        "no_team": "the webhook URL is wrong: check url_env",
        "invalid_token": "the webhook URL was revoked: check url_env",
        "channel_is_archived": "the channel is archived",
        "channel_not_found": "the channel was deleted",
        "action_prohibited": "the workspace's admin blocks this webhook",
        "invalid_blocks": "Slack refused the message's blocks",
        "invalid_payload": "Slack refused the message as malformed",
        "no_text": "Slack refused a message without text",
    }
    hint = hints.get(text.strip())
    detail = f"Slack answered HTTP {status} {words!r}" + (f": {hint}" if hint else "")
    return Answer(False, status == 408, status, detail)


def _webhook(status: int, text: str) -> Answer:
    if 200 <= status < 300:
        return Answer(True, False, status, f"the webhook receiver answered HTTP {status}")
    words = _short(text)
    if status in (401, 403):
        detail = f"the webhook receiver answered HTTP {status} ({words}): check secret_env"
    elif status == 404:
        detail = f"the webhook receiver answered HTTP 404 ({words}): check url_env"
    elif status == 413:
        detail = (
            f"the webhook receiver answered HTTP 413 ({words}): the request is too large for it"
        )
    else:
        detail = f"the webhook receiver answered HTTP {status} ({words})"
    return Answer(False, status == 408, status, detail)


test_message.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
