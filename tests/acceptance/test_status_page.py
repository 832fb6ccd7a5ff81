"""The daemon's status page (``GET /``): the report for people, built at most every 30 s from
the database, no secret in it, one line when the database cannot be read; and what headless
Chromium shows of it."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import MP_SECRET, build_history, require_tool, rule

from qrsync.status_page import CACHE_S, StatusPage
from qrsync.store.engine import make_engine

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "scripts" / "screenshot_report.sh"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def history(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    rules = [rule(f"https://a.example.com/{i}") for i in range(4)]
    return build_history(simulator, qrsync, monkeypatch, rules)


def test_the_page_is_the_report_and_is_read_at_most_every_30_seconds(
    history: Any, engine: Any, db: Any
) -> None:
    clock = Clock()
    page = StatusPage(engine, clock=clock)
    status, first = page.render()
    text = first.decode()
    assert status == 200 and "<html" in text[:300].lower()
    assert "broken" in text and "https://a.example.com/1" in text  # health and publications
    # (build_history's second account has the secret "right", a word any page holds: the
    # secrets worth looking for are the real one, the wrong one and every token)
    tokens = [r[0] for r in db.execute("SELECT access_token FROM tokens").fetchall()]
    for secret in (MP_SECRET, "wrong-secret-value", *tokens):
        assert secret not in text
    db.execute("DELETE FROM sync_runs WHERE status = 'failed'")  # the page does not see it yet
    clock.now += timedelta(seconds=CACHE_S - 1)
    assert page.render() == (200, first)
    clock.now += timedelta(seconds=2)
    status, second = page.render()
    assert status == 200 and second != first
    assert "40125" not in second.decode()  # the failed runs are gone from the fresh page


def test_a_database_that_cannot_be_read_is_one_line_and_503(engine: Any) -> None:
    unreachable = make_engine("postgresql://postgres@127.0.0.1:9/nowhere", "qrsync")
    try:
        status, body = StatusPage(unreachable).render()
    finally:
        unreachable.dispose()
    text = body.decode()
    assert status == 503 and "the database could not be read" in text
    assert "Traceback" not in text


def test_chromium_renders_the_status_page(history: Any, engine: Any, tmp_path: Path) -> None:
    require_tool(Path("/usr/bin/chromium"), "chromium")
    status, body = StatusPage(engine).render()
    assert status == 200
    page = tmp_path / "status.html"
    page.write_bytes(body)
    picture = tmp_path / "status.png"
    subprocess.run(
        [str(SCREENSHOT), str(page), str(picture)], check=True, capture_output=True, timeout=240
    )
    data = picture.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
