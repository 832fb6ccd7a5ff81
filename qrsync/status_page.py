"""The live status page at ``GET /`` of a daemon's HTTP port: the report for people (what
`qrsync report --format html` shows, the last 7 days), read-only and without a secret, for a
manager's browser tab or a wall screen.

A tab that reloads every minute, or ten of them, must not load the database: the page is built
at most once every :data:`CACHE_S` seconds and served from memory meanwhile, so it is never
older than that.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from qrsync.masking import mask, one_line
from qrsync.render.html import render_html
from qrsync.report import build_report
from qrsync.store.engine import Engine, first_line

CACHE_S = 30.0
"""How long a built page is served before the database is read again."""
WINDOW = timedelta(days=7)
"""The report's window, as `qrsync report`'s default."""


class StatusPage:
    """The page, built on demand from the shared database and kept for :data:`CACHE_S`."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._page: bytes | None = None
        self._built_at: datetime | None = None

    def render(self) -> tuple[int, bytes]:
        """(HTTP status, the page): 200 with the report, or 503 with one line saying why the
        database could not be read (the last good page is not served as if it were current)."""
        with self._lock:  # one build at a time; the others wait and take the fresh page
            now = self.clock()
            fresh = self._built_at is not None and now - self._built_at < timedelta(seconds=CACHE_S)
            if fresh and self._page is not None:
                return 200, self._page
            try:
                report = build_report(self.engine, since=now - WINDOW, now=now)
            except psycopg.Error as exc:
                self._page = self._built_at = None
                return 503, _unavailable(first_line(exc))
            self._page = render_html(report).encode("utf-8")
            self._built_at = now
            return 200, self._page


def _unavailable(reason: str) -> bytes:
    line = html.escape(one_line(mask(f"the database could not be read: {reason}")))
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>qrsync: not available'
        f"</title></head><body><p>{line}</p><p>/readyz says more.</p></body></html>\n"
    ).encode()
