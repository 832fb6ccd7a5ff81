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
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(@)", re.IGNORECASE)
# A robot's key in a webhook URL's path: Feishu and Lark hooks, Slack incoming webhooks.
_HOOK_PATH = re.compile(r"(/open-apis/bot/v2/hook/|/services/(?=T[\w-]*/B))[^\s\"'?#]+")

_lock = threading.Lock()
_known: set[str] = set()
_MIN_SECRET_LENGTH = 4


def register_secret(value: str | None) -> None:
    """Remember a secret's value so that :func:`mask` hides it wherever it turns up."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _known.add(value)


def mask(text: str) -> str:
    """Return ``text`` with every known secret and every secret-looking member replaced."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    text = _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
    text = _JSON_SECRET.sub(rf"\g<1>{MASK}\g<2>", text)
    text = _HOOK_PATH.sub(rf"\g<1>{MASK}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", text)


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
