"""Keep secrets out of everything a person or a machine reads (SPEC behaviour 7).

Two nets: patterns that catch a secret by where it stands (``access_token=...`` in a URL, a
``"secret": "..."`` JSON member), and the exact values qrsync has loaded or fetched (app secrets,
tokens, refresh tokens, verify tickets), registered here as soon as they are known. The registry
is process-wide on purpose: a secret may surface in any exception text from any library.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import ahocorasick

MASK = "***"

_QUERY_SECRET = re.compile(
    r"(\b(?:[a-z_]*token|[a-z_]*secret|[a-z_]*ticket|key|password|sign)=)[^&\s\"']+",
    re.IGNORECASE,
)
_JSON_SECRET = re.compile(
    r"""(["']?(?:access_token|component_access_token|authorizer_access_token|"""
    r"""authorizer_refresh_token|refresh_token|secret|appsecret|component_appsecret|"""
    r"""component_verify_ticket|verify_ticket|token)["']?\s*[:=]\s*["'])[^"']*(["'])""",
    re.IGNORECASE,
)
_QUERY_WORDS = ("token", "secret", "ticket", "key", "password", "sign")
_JSON_WORDS = ("token", "secret", "ticket")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(@)", re.IGNORECASE)
# A robot's key in a webhook URL's path: Feishu and Lark hooks, Slack incoming webhooks.
_HOOK_PATH = re.compile(r"(/open-apis/bot/v2/hook/|/services/(?=T[\w-]*/B))[^\s\"'?#]+")

_MIN_SECRET_LENGTH = 4
_KEY_LENGTH = 8


@dataclass(frozen=True)
class _Finder:
    """Finds the known secrets in a text in one pass, whatever their number.

    A daemon or a sync of a platform's fleet knows tens of thousands of secrets (a token per
    account): testing each with ``in`` cost over a millisecond per log line, and quadratic time
    for a large JSON document. An Aho-Corasick automaton (pyahocorasick) of their first
    :data:`_KEY_LENGTH` characters finds where one may stand, and the secrets that begin so are
    compared whole; the few registered since the automaton was built (``recent``) are looked
    for one by one. Never changed: registering a secret makes a new one.
    """

    automaton: ahocorasick.Automaton | None = None
    by_key: dict[str, tuple[str, ...]] = field(default_factory=dict)  # longest first
    recent: tuple[str, ...] = ()
    built: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, values: set[str]) -> _Finder:
        grouped: dict[str, list[str]] = {}
        for value in values:
            grouped.setdefault(value[:_KEY_LENGTH], []).append(value)
        automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        for key in grouped:
            automaton.add_word(key, key)
        automaton.make_automaton()
        by_key = {key: tuple(sorted(v, key=len, reverse=True)) for key, v in grouped.items()}
        return cls(automaton, by_key)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where known secrets stand in ``text``, as (start, end)."""
        found: list[tuple[int, int]] = []
        if self.automaton is not None:
            for end, key in self.automaton.iter(text):
                start = end - len(key) + 1
                for value in self.by_key[key]:
                    if text.startswith(value, start):
                        found.append((start, start + len(value)))
                        break
        for value in self.recent:
            start = text.find(value)
            while start >= 0:
                found.append((start, start + len(value)))
                start = text.find(value, start + 1)
        return found


MAX_RECENT = 256
"""Secrets looked for one by one at most; more, and the automaton is built again (40 ms for
10,000 secrets)."""
RECENT_FOR_S = 1.0
"""A few secrets registered since the automaton was built are looked for one by one for at
most this long (a fleet's tokens are fetched one by one: the automaton is built again at most
once a second, not once per token)."""
RECENT_WORK = 2_000_000
"""Or until one text would cost this many characters of searching (a large JSON document)."""

_lock = threading.Lock()
_known: set[str] = set()
_finder = _Finder()


def register_secret(value: str | None) -> None:
    """Remember a secret's value so that :func:`mask` hides it wherever it turns up."""
    register_secrets((value,))


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember many secrets at once (a fleet's cached tokens): one automaton for them all."""
    global _finder
    new = [v for v in values if v and len(v) >= _MIN_SECRET_LENGTH and v not in _known]
    if not new:
        return  # (the common case, e.g. a token used again: no lock taken)
    with _lock:
        new = [value for value in dict.fromkeys(new) if value not in _known]
        _known.update(new)
        recent = (*_finder.recent, *new)
        if len(recent) > MAX_RECENT:
            _finder = _Finder.of(_known)
        elif new:
            _finder = replace(_finder, recent=recent)


def _current_finder(text: str) -> _Finder:
    """The finder to search ``text`` with: built again first if searching its recent secrets one
    by one has lasted long enough, or would cost too much for this text."""
    global _finder
    finder = _finder
    if finder.recent and (
        time.monotonic() - finder.built > RECENT_FOR_S
        or len(finder.recent) * len(text) > RECENT_WORK
    ):
        with _lock:
            if _finder.recent:
                _finder = _Finder.of(_known)
            finder = _finder
    return finder


def _without_known(text: str) -> str:
    spans = _current_finder(text).spans(text)
    if not spans:
        return text
    spans.sort()
    parts: list[str] = []
    copied = 0  # text before this is in parts
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_start < end:  # overlapping secrets are masked as one
            end = max(end, next_end)
            continue
        parts += (text[copied:start], MASK)
        copied = end
        start, end = next_start, next_end
    parts += (text[copied:start], MASK, text[end:])
    return "".join(parts)


def mask(text: str) -> str:
    """Return ``text`` with every known secret and every secret-looking member replaced."""
    if not text:
        return text
    text = _without_known(text)
    # Each pattern only where its words are (a pattern costs a pass of the regular expression
    # engine over the text; finding a word, a pass of memchr).
    lowered = text.lower()
    if any(word in lowered for word in _QUERY_WORDS):
        text = _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
    if any(word in lowered for word in _JSON_WORDS):
        text = _JSON_SECRET.sub(rf"\g<1>{MASK}\g<2>", text)
    if "/hook/" in lowered or "/services/" in lowered:
        text = _HOOK_PATH.sub(rf"\g<1>{MASK}", text)
    if "://" in lowered:
        text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", text)
    return text


_CONTROLS = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [
        *range(0x00, 0x20),
        *range(0x7F, 0xA0),
        0x2028,  # line and paragraph separators: new lines to some log viewers
        0x2029,
        *range(0x202A, 0x202F),  # bidirectional overrides, which reorder what a reader sees
        *range(0x2066, 0x206A),
    ]
}
_CONTROLS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``, ``\\u202e``): text from
    WeChat (an errmsg, a prefix) can neither forge a log line nor move a terminal's cursor."""
    return text.translate(_CONTROLS)


class MaskingFilter(logging.Filter):
    """A logging filter that masks the rendered message of every record it sees and escapes
    its control characters (a log record is one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rendered = record.getMessage()
        masked = one_line(mask(rendered))
        if masked != rendered or record.args:
            record.msg, record.args = masked, None
        return True
