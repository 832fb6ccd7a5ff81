"""The nouns both edges share: what the API edge (qrsync.wechat) hands the database edge
(qrsync.store) and back. Neither edge imports the other to name them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Rule(NamedTuple):
    """One rule exactly as WeChat listed it (quirks kept: nothing is trimmed or fixed).

    A named tuple, not a dataclass: a listing makes 100,000 of them, and a tuple is built and
    unpacked into the staging COPY several times faster."""

    prefix: str
    path: str | None
    state: int
    open_version: int | None = None
    permit_sub_rule: int | None = None
    debug_urls: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Page:
    """One answer of qrcodejumpget."""

    page_num: int
    rules: tuple[Rule, ...]
    total_count: int | None
    list_size: int | None
    qrcodejump_open: int | None
    qrcodejump_pub_quota: int | None


@dataclass(frozen=True)
class FetchedToken:
    """A token as its source gave it, and how long it lives."""

    access_token: str
    expires_in: int


REUSE_MARGIN_S = 300
"""Tokens are reused until 5 minutes before they expire (REFERENCE.md: WeChat renews then)."""


def reuse_seconds(expires_in: int) -> int:
    """How long a token is reused: until 5 minutes before expiry (half its life if shorter)."""
    return max(expires_in - min(REUSE_MARGIN_S, expires_in // 2), 0)
