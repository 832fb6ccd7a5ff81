"""`qrsync report --format csv|html|json [--output FILE]`, checked against the tables; and the CSV
and HTML renderers on hand-built reports: no data, 3 accounts, 3,000 accounts."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import build_history, require_tool, rows, rule

from qrsync.render.csvout import COLUMNS, render_csv
from qrsync.render.html import render_html
from qrsync.report import Report, Row

SCRIPT_PATH = "<script>alert(1)</script>"
CHINESE_PATH = "pages/商品/详情"
SCREENSHOT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.sh"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def history(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Two syncs of a mini program (between them one rule published, one deleted), one of its
    rules opening a path that is markup, another a Chinese one; plus an account whose secret is
    wrong, so that it fails twice."""
    rules = [
        *(rule(f"https://a.example.com/{i}") for i in range(3)),
        rule("https://a.example.com/markup", path=SCRIPT_PATH),
        rule("https://a.example.com/商品", path=CHINESE_PATH),
    ]
    return build_history(simulator, qrsync, monkeypatch, rules)


# --- reading the formats -------------------------------------------------------------------------


class Page(HTMLParser):
    """Parses a page, checking that every element is closed in order, and collects what the
    tests look at: top-level SVGs and their titles, resource references, text, tag counts."""

    VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "wbr", "source", "col"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.errors: list[str] = []
        self.svgs: list[dict[str, str]] = []
        self.references: list[str] = []
        self.styles: list[str] = []
        self.texts: list[str] = []
        self.tags: Counter[str] = Counter()
        self.feed(text)
        self.close()
        if self.open:
            self.errors.append(f"never closed: {self.open}")

    def _attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "action", "poster", "data"):
                self.references.append(value or "")
            if name == "style":
                self.styles.append(value or "")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(tag, attrs)
        if tag == "svg" and "svg" not in self.open:
            self.svgs.append({name: value or "" for name, value in attrs} | {"title": ""})
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attributes(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
            return
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self.open[-2:] == ["svg", "title"] and self.svgs and not self.svgs[-1]["title"]:
            self.svgs[-1]["title"] = data
        if self.open and self.open[-1] == "style":
            self.styles.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def charts(self) -> dict[str, str]:
        """Chart id -> its title."""
        return {svg["id"]: svg["title"] for svg in self.svgs if "chart" in svg.get("class", "")}


def parse_page(text: str) -> Page:
    page = Page(text)
    assert page.errors == []
    assert not [r for r in page.references if not r.startswith("#")], page.references
    assert not [s for s in page.styles if "url(" in s]
    assert page.tags["script"] == 1, "only the page's own table-sorting script"
    assert page.tags["link"] == 0 and page.tags["img"] == 0 and page.tags["iframe"] == 0
    return page


def parse_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def expected_csv_rows(db: Any) -> dict[str, dict[str, str]]:
    """Per account, straight from the tables, every CSV column but longest_wait_s."""
    expected: dict[str, dict[str, str]] = {}
    for name, kind, unpublished, published, deleted in rows(
        db,
        "SELECT a.name, a.kind,"
        " count(r.prefix) FILTER (WHERE r.deleted_at IS NULL AND r.state = 1),"
        " count(r.prefix) FILTER (WHERE r.deleted_at IS NULL AND r.state = 2),"
        " count(r.prefix) FILTER (WHERE r.deleted_at IS NOT NULL)"
        " FROM accounts a LEFT JOIN rules r ON r.account_id = a.id GROUP BY a.name, a.kind",
    ):
        expected[name] = {
            "account": name,
            "kind": kind,
            "unpublished": str(unpublished),
            "published": str(published),
            "deleted": str(deleted),
            "waiting_unpublished": str(unpublished),
            "quota_left": "",
            "quota_week_before": "",
            "qrcodejump_open": "",
        }
    for name, quota, is_open in rows(
        db,
        "SELECT DISTINCT ON (s.account_id) a.name, s.qrcodejump_pub_quota, s.qrcodejump_open"
        " FROM account_snapshots s JOIN accounts a ON a.id = s.account_id"
        " ORDER BY s.account_id, s.taken_at DESC",
    ):
        expected[name] |= {"quota_left": _text(quota), "qrcodejump_open": _text(is_open)}
    for name, status, errcode in rows(
        db,
        "SELECT DISTINCT ON (r.account_id) a.name, r.status, r.errcode"
        " FROM sync_runs r JOIN accounts a ON a.id = r.account_id"
        " ORDER BY r.account_id, r.started_at DESC, r.id DESC",
    ):
        expected[name] |= {"last_status": status, "last_errcode": _text(errcode)}
    for name, last_success, streak in rows(
        db,
        "SELECT a.name,"
        " max(r.finished_at) FILTER (WHERE r.status IN ('succeeded', 'partial')),"
        " count(*) FILTER (WHERE r.status = 'failed' AND r.started_at > COALESCE("
        "   (SELECT max(s.started_at) FROM sync_runs s WHERE s.account_id = a.id"
        "    AND s.status IN ('succeeded', 'partial')), '-infinity'))"
        " FROM accounts a JOIN sync_runs r ON r.account_id = a.id GROUP BY a.id, a.name",
    ):
        success = (
            "" if last_success is None else last_success.astimezone(UTC).replace(microsecond=0)
        )
        expected[name] |= {
            "last_success_at": _text(success and success.isoformat()),
            "failure_streak": str(streak),
        }
    return expected


# --- through the CLI, against the tables ---------------------------------------------------------


def test_csv_has_one_row_per_account_matching_the_tables(
    history: Any, qrsync: Any, db: Any
) -> None:
    result = qrsync("report", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = parse_csv(result.stdout)
    assert [r["account"] for r in table] == ["broken", "mp"]
    expected = expected_csv_rows(db)
    for row in table:
        longest = row.pop("longest_wait_s")
        assert row == expected[row["account"]]
        oldest_wait = rows(
            db,
            "SELECT extract(epoch FROM now() - min(r.first_seen_at)) FROM rules r"
            " JOIN accounts a ON a.id = r.account_id"
            " WHERE a.name = %s AND r.state = 1 AND r.deleted_at IS NULL",
            row["account"],
        )[0][0]
        if oldest_wait is None:
            assert longest == ""
        else:
            assert 0 <= int(longest) <= oldest_wait
    mp = next(r for r in table if r["account"] == "mp")
    assert (mp["unpublished"], mp["published"], mp["deleted"], mp["quota_left"]) == (
        "3",
        "1",
        "1",
        "19",
    )
    broken = next(r for r in table if r["account"] == "broken")
    assert (broken["last_status"], broken["failure_streak"], broken["last_errcode"]) == (
        "failed",
        "2",
        "40125",
    )
    assert broken["quota_left"] == "" and broken["last_success_at"] == ""


def test_csv_for_one_account(history: Any, qrsync: Any) -> None:
    table = parse_csv(qrsync("report", "--format", "csv", "--account", "mp").stdout)
    assert [r["account"] for r in table] == ["mp"]


def test_html_page_holds_the_four_charts_and_fetches_nothing(history: Any, qrsync: Any) -> None:
    result = qrsync("report", "--format", "html")
    assert result.exit_code == 0, result.output
    page = parse_page(result.stdout)
    charts = page.charts()
    assert set(charts) == {"chart-publications", "chart-quota", "chart-states", "chart-sync"}
    assert all(charts.values()), charts
    assert "2 succeeded, 0 partial, 2 failed" in charts["chart-sync"]
    assert "1 published, 3 unpublished, 1 deleted" in charts["chart-states"]
    text = page.text
    for expected in (
        "https://a.example.com/1",  # published between the syncs
        "https://a.example.com/2",  # deleted
        "Needs attention: 1 account",
        "broken",
        CHINESE_PATH,
    ):
        assert expected in text, expected


def test_html_escapes_markup_from_wechat(history: Any, qrsync: Any) -> None:
    raw = qrsync("report", "--format", "html").stdout
    assert SCRIPT_PATH not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    page = parse_page(raw)
    assert SCRIPT_PATH in page.text  # shown as text, in the publish queue


def test_html_for_one_failing_account_has_empty_states(history: Any, qrsync: Any) -> None:
    page = parse_page(qrsync("report", "--format", "html", "--account", "broken").stdout)
    assert "No publications in this window." in page.text
    assert "No quota readings in this window." in page.text
    assert "account broken" in page.text


@pytest.mark.parametrize("output_format", ["csv", "html", "json"])
def test_output_writes_the_file_and_nothing_on_stdout(
    history: Any, qrsync: Any, tmp_path: Path, output_format: str
) -> None:
    target = tmp_path / f"report.{output_format}"
    result = qrsync("report", "--format", output_format, "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    written = target.read_text(encoding="utf-8")
    if output_format == "csv":
        assert [r["account"] for r in parse_csv(written)] == ["broken", "mp"]
    elif output_format == "html":
        assert len(parse_page(written).charts()) == 4
    else:
        assert {r["account"] for r in json.loads(written)["rules_by_state"]} == {"broken", "mp"}


def test_format_json_is_the_json_report(history: Any, qrsync: Any) -> None:
    by_format = json.loads(qrsync("report", "--format", "json").stdout)
    by_flag = json.loads(qrsync("report", "--json").stdout)
    assert by_format.keys() == by_flag.keys()
    assert by_format["rules_by_state"] == by_flag["rules_by_state"]


# --- hand-built reports --------------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def hand_built(accounts: int, days: int = 30) -> Report:
    """A report over ``days`` days for ``accounts`` accounts: every tenth one failing, quotas
    draining at different speeds, a publication and a sync run per account and day."""
    since = NOW - timedelta(days=days)
    names = [f"acct-{i:04d}" for i in range(accounts)]
    day_list = [(since + timedelta(days=d)).date() for d in range(days + 1)]

    def health(i: int, name: str) -> Row:
        failing = i % 10 == 1
        last_ok = NOW - (timedelta(days=3) if failing else timedelta(minutes=20))
        return {
            "account": name,
            "enabled": True,
            "last_status": "failed" if failing else "succeeded",
            "last_run_at": NOW - timedelta(minutes=5),
            "last_success_at": last_ok,
            "success_age": NOW - last_ok,
            "failure_streak": 12 if failing else 0,
            "last_errcode": 61007 if failing else None,
            "last_error": f"account '{name}': WeChat answered 61007" if failing else None,
        }

    def recent(i: int) -> dict[str, Any]:
        return {
            "account": names[i % accounts],
            "prefix": f"https://shop.example.com/qr/{i}",
            "path": "pages/商品/详情" if i % 2 else "pages/index/index",
        }

    recent_count = min(20, accounts)
    return Report(
        generated_at=NOW,
        since=since,
        account=None,
        rules_by_state=[
            {
                "account": name,
                "kind": "miniprogram",
                "unpublished": i % 7,
                "published": 10 + i % 13,
                "other": 0,
                "deleted": i % 3,
            }
            for i, name in enumerate(names)
        ],
        publish_queue=[
            recent(i)
            | {"unpublished_since": NOW - timedelta(days=i + 1), "waiting": timedelta(days=i + 1)}
            for i in range(recent_count)
        ],
        publish_queue_by_account=[
            {"account": name, "waiting_rules": i % 7, "longest_wait": timedelta(hours=i % 7 * 30)}
            for i, name in enumerate(names)
            if i % 7
        ],
        publications=[
            recent(i)
            | {"published_observed_at": NOW - timedelta(hours=i), "wait": timedelta(hours=30 + i)}
            for i in range(recent_count)
        ],
        publications_per_day=[{"day": day, "publications": accounts} for day in day_list],
        deletions=[
            recent(i)
            | {
                "from_state": 2,
                "observed_at": NOW - timedelta(hours=i),
                "previous_seen_at": NOW - timedelta(hours=i, minutes=15),
            }
            for i in range(recent_count)
        ],
        quota=[
            {
                "account": name,
                "qrcodejump_pub_quota": 1000 - i % 1000,
                "qrcodejump_open": 1,
                "taken_at": NOW - timedelta(minutes=20),
                "quota_week_before": 1000 - i % 1000 + 7,
            }
            for i, name in enumerate(names)
        ],
        quota_series=[
            {"account": name, "day": day, "qrcodejump_pub_quota": 1000 - i % 1000 + days - d}
            for i, name in enumerate(names)
            for d, day in enumerate(day_list)
        ],
        sync_health=sorted(
            (health(i, name) for i, name in enumerate(names)),
            key=lambda h: (-h["failure_streak"], h["account"]),
        ),
        sync_per_day=[
            {
                "day": day,
                "succeeded": accounts - accounts // 10,
                "partial": 0,
                "failed": accounts // 10,
            }
            for day in day_list
        ],
    )


def empty_report(**changes: Any) -> Report:
    fields: dict[str, Any] = {
        "generated_at": NOW,
        "since": NOW - timedelta(days=7),
        "account": None,
        "rules_by_state": [],
        "publish_queue": [],
        "publish_queue_by_account": [],
        "publications": [],
        "publications_per_day": [],
        "deletions": [],
        "quota": [],
        "quota_series": [],
        "sync_health": [],
        "sync_per_day": [],
    }
    return Report(**(fields | changes))


def test_empty_report_says_so_instead_of_drawing_charts() -> None:
    page = parse_page(render_html(empty_report()))
    assert page.charts() == {}
    for message in (
        "No publications in this window.",
        "No quota readings in this window.",
        "No accounts yet.",
        "No sync runs in this window.",
        "No rules are waiting to be published.",
        "No deletions in this window.",
    ):
        assert message in page.text
    assert not re.search(r"\b(nan|inf|None)\b", page.text)


def test_accounts_without_any_data_yet() -> None:
    report = empty_report(
        rules_by_state=[
            {"account": "new", "kind": "miniprogram", "unpublished": 0, "published": 0,
             "other": 0, "deleted": 0}
        ],
        sync_health=[
            {"account": "new", "enabled": True, "last_status": None, "last_run_at": None,
             "last_success_at": None, "success_age": None, "failure_streak": 0,
             "last_errcode": None, "last_error": None}
        ],
    )  # fmt: skip
    page = parse_page(render_html(report))
    assert "No rules mirrored yet." in page.text and "never synced" in page.text
    assert parse_csv(render_csv(report)) == [
        {"account": "new", "kind": "miniprogram", "unpublished": "0", "published": "0",
         "deleted": "0", "waiting_unpublished": "0", "longest_wait_s": "", "quota_left": "",
         "quota_week_before": "", "qrcodejump_open": "", "last_status": "",
         "last_success_at": "", "failure_streak": "0", "last_errcode": ""}
    ]  # fmt: skip


def test_empty_report_csv_is_the_header_alone() -> None:
    assert render_csv(empty_report()) == ",".join(COLUMNS)


def test_three_accounts_are_all_shown_without_caps() -> None:
    report = hand_built(3)
    page = parse_page(render_html(report))
    assert set(page.charts()) == {
        "chart-publications",
        "chart-quota",
        "chart-states",
        "chart-sync",
    }
    text = page.text
    assert all(name in text for name in ("acct-0000", "acct-0001", "acct-0002"))
    assert "other accounts" not in text and "more accounts" not in text
    assert "The 8 accounts" not in text
    assert "Needs attention: 1 account" in text


def test_three_thousand_accounts_stay_small_and_say_what_is_left_out() -> None:
    rendered = render_html(hand_built(3000))
    assert len(rendered.encode()) < 1_500_000
    page = parse_page(rendered)
    text = page.text
    assert "2,985 other accounts" in text  # rules by state: 15 bars and one for the rest
    assert "The 8 accounts with the least quota left, of 3,000 accounts" in text
    assert "Needs attention: 300 accounts" in text and "and 250 more accounts" in text
    assert "and 2,551 more accounts with waiting rules" in text  # 2,571 have some
    assert "and 2,950 more accounts (see the CSV)" in text
    assert page.tags["tr"] < 250
    assert page.tags["path"] < 100  # 8 quota lines (line and area each)


def test_three_thousand_accounts_in_the_csv_in_name_order() -> None:
    table = parse_csv(render_csv(hand_built(3000)))
    assert len(table) == 3000
    assert [r["account"] for r in table] == sorted(r["account"] for r in table)
    first = table[1]
    assert first["last_status"] == "failed" and first["last_errcode"] == "61007"
    assert first["last_success_at"] == (NOW - timedelta(days=3)).isoformat()
    assert first["longest_wait_s"] == str(30 * 3600)


def test_every_account_of_rules_by_state_is_a_csv_row() -> None:
    report = hand_built(3)
    report = replace(report, quota=[], sync_health=report.sync_health[:1])
    table = parse_csv(render_csv(report))
    assert [r["account"] for r in table] == ["acct-0000", "acct-0001", "acct-0002"]
    assert {r["quota_left"] for r in table} == {""}


def test_names_and_prefixes_with_markup_and_chinese_are_escaped() -> None:
    hostile = '"><img src=x onerror=alert(1)>'
    report = hand_built(3)
    renamed = [r | {"account": hostile + " 品牌服务号"} for r in report.sync_health]
    publications = [
        p | {"prefix": f"https://x.example.com/{SCRIPT_PATH}"} for p in report.publications
    ]
    rendered = render_html(replace(report, sync_health=renamed, publications=publications))
    assert "<img" not in rendered and SCRIPT_PATH not in rendered
    page = parse_page(rendered)
    assert hostile + " 品牌服务号" in page.text
    assert f"https://x.example.com/{SCRIPT_PATH}" in page.text


def test_long_prefixes_are_cut() -> None:
    report = hand_built(3)
    long_prefix = "https://example.com/" + "very-long-path/" * 200
    queue = [q | {"prefix": long_prefix} for q in report.publish_queue]
    page = parse_page(render_html(replace(report, publish_queue=queue)))
    assert long_prefix not in page.text and long_prefix[:250] in page.text


def test_a_long_window_is_drawn_per_week_or_month() -> None:
    since = NOW - timedelta(days=200)
    weekly = empty_report(
        since=since,
        publications_per_day=[{"day": date(2026, 7, 1), "publications": 3}],
        sync_per_day=[{"day": date(2026, 7, 1), "succeeded": 2, "partial": 0, "failed": 1}],
    )
    titles = parse_page(render_html(weekly)).charts()
    assert "per week" in titles["chart-publications"] and "per week" in titles["chart-sync"]
    monthly = empty_report(
        since=NOW - timedelta(days=900),
        publications_per_day=[{"day": date(2025, 1, 1), "publications": 3}],
    )
    assert "per month" in parse_page(render_html(monthly)).charts()["chart-publications"]


def test_screenshot_script_renders_a_png(tmp_path: Path) -> None:
    require_tool(CHROMIUM, "chromium")
    page = tmp_path / "report.html"
    page.write_text(render_html(hand_built(3)), encoding="utf-8")
    picture = tmp_path / "report.png"
    subprocess.run(
        [str(SCREENSHOT), str(page), str(picture)], check=True, capture_output=True, timeout=240
    )
    data = picture.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
