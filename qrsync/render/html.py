"""One self-contained HTML page for people who manage accounts: headline numbers, four charts, and
the tables that call for action.

The page is mailed, archived and opened offline, so it fetches nothing: the CSS is inline, the
charts are SVG drawn here, and a few lines of inline JavaScript sort the tables. Every string from
the data is escaped (prefixes and paths come from WeChat and may hold markup). Charts and tables
are capped, and say so, so that the page reads the same and stays small for 3 accounts or 3,000.
"""

from __future__ import annotations

import html
import statistics
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from qrsync import __version__
from qrsync.masking import mask
from qrsync.render import charts
from qrsync.report import RECENT_LIMIT, Report, Row

QUOTA_LINES = 8
"""Quota chart: the accounts with the least quota left, one line each, at most this many."""
STATE_BARS = 15
"""Rules-by-state chart: the accounts with the most live rules; the rest share one bar."""
ATTENTION_ROWS = 50
QUEUE_ROWS = 20
QUOTA_ROWS = 50
STALE_AFTER = timedelta(days=1)
"""An enabled account whose last successful sync is older than this needs attention."""
TEXT_LIMIT = 300
"""Longer prefixes, paths and errors are cut (the full text is in the database)."""

# Okabe-Ito colours: told apart with the common colour-vision deficiencies.
BLUE = "#0072B2"
ORANGE = "#E69F00"
GREEN = "#009E73"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
GREY = "#C4C9CF"

STATE_NAMES = {1: "unpublished", 2: "published"}

# --- formatting ----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escaped text for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def _cut(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _clip(text: str, units: int) -> str:
    """``text`` cut to about ``units`` Latin characters' width (CJK characters count double)."""
    if sum(map(_width, text)) <= units:
        return text
    used, kept = 1, []
    for char in text:
        used += _width(char)
        if used > units:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _num(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "–"


def _duration(value: timedelta | None) -> str:
    """Human durations: "45 s", "12 min", "5 h 20 min", "3 d 4 h"."""
    if value is None:
        return "–"
    seconds = max(0, int(value.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _seconds(value: timedelta | None) -> float:
    return -1.0 if value is None else value.total_seconds()


def _as_date(value: date | datetime) -> date:
    return value.astimezone().date() if isinstance(value, datetime) else value


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _empty(message: str) -> str:
    return f'<div class="empty">{_e(message)}</div>'


def _window(report: Report, days: Sequence[date]) -> tuple[date, date]:
    """First and last day to draw: the report window, widened to the data, never absurdly long."""
    start, end = _as_date(report.since), _as_date(report.generated_at)
    if days:
        first, end = min(days), max(end, *days)
        if (first - start).days > 366:
            start = first
        start = min(start, first)
    elif (end - start).days > 366:
        start = end - timedelta(days=29)
    return start, end


def _timeline(report: Report, days: Sequence[date]) -> charts.Timeline:
    start, end = _window(report, days)
    span = (end - start).days + 1
    unit: charts.Unit = "day" if span <= 62 else "week" if span <= 7 * 60 else "month"
    buckets, bucket = [], charts.bucket_start(unit, start)
    while bucket <= end:
        buckets.append(bucket)
        bucket = charts.next_bucket(unit, bucket)
    return charts.Timeline(unit, buckets)


# --- the four charts -----------------------------------------------------------------------------


def _chart_panel(title: str, note: str, body: str) -> str:
    return _section("", title, note, body)


def _bucketed(timeline: charts.Timeline, rows: list[Row], column: str) -> list[int]:
    values = [0] * len(timeline.buckets)
    index = {bucket: i for i, bucket in enumerate(timeline.buckets)}
    for row in rows:
        position = index.get(timeline.key(_as_date(row["day"])))
        if position is not None:
            values[position] += int(row[column] or 0)
    return values


def _publications_chart(report: Report) -> str:
    rows = report.publications_per_day
    total = sum(int(r["publications"] or 0) for r in rows)
    if not total:
        return _chart_panel("Publications", "", _empty("No publications in this window."))
    timeline = _timeline(report, [_as_date(r["day"]) for r in rows])
    values = _bucketed(timeline, rows, "publications")
    busiest = max(range(len(values)), key=values.__getitem__)
    # A rule added already published waited an unknown time: not a wait of 0.
    waits = [
        p["wait"]
        for p in report.publications
        if p.get("wait") is not None and not p.get("added_published")
    ]
    note = (
        f"{_plural(total, 'publication')} in the window, {charts.per_unit(timeline)}; busiest: "
        f"{timeline.tip(timeline.buckets[busiest])} ({values[busiest]:,})."
    )
    if waits:
        note += f" Median wait before publishing (latest {len(waits)}): "
        note += f"{_duration(statistics.median(waits))}."
    label = f"Publications {charts.per_unit(timeline)}, {total:,} in the window"
    series = [charts.Series("publications", BLUE, values)]
    return _chart_panel(
        "Publications", note, charts.columns("chart-publications", label, timeline, series)
    )


SYNC_SERIES = (("succeeded", GREEN), ("partial", ORANGE), ("failed", VERMILLION))


def _sync_chart(report: Report) -> str:
    rows = report.sync_per_day
    totals = {name: sum(int(r[name] or 0) for r in rows) for name, _ in SYNC_SERIES}
    runs = sum(totals.values())
    if not runs:
        return _chart_panel("Sync runs", "", _empty("No sync runs in this window."))
    timeline = _timeline(report, [_as_date(r["day"]) for r in rows])
    series = [
        charts.Series(name, colour, _bucketed(timeline, rows, name)) for name, colour in SYNC_SERIES
    ]
    share = totals["succeeded"] / runs
    note = (
        f"{_plural(runs, 'run')} in the window, {charts.per_unit(timeline)}: {share:.1%} succeeded."
    )
    note += _worst_bucket(timeline, series)
    label = (
        f"Sync runs {charts.per_unit(timeline)}: {totals['succeeded']:,} succeeded, "
        f"{totals['partial']:,} partial, {totals['failed']:,} failed"
    )
    legend = charts.legend([(colour, name, f"{totals[name]:,}") for name, colour in SYNC_SERIES])
    return _chart_panel(
        "Sync runs", note, charts.columns("chart-sync", label, timeline, series) + legend
    )


def _worst_bucket(timeline: charts.Timeline, series: Sequence[charts.Series]) -> str:
    """Where the share of runs that did not succeed was highest, if any did not."""
    succeeded, *others = series
    shares = []
    for i, bucket in enumerate(timeline.buckets):
        bad = sum(s.values[i] for s in others)
        if bad:
            shares.append((bad / (bad + succeeded.values[i]), bucket))
    if not shares:
        return ""
    share, bucket = max(shares)
    return f" Worst: {timeline.tip(bucket)}, {share:.0%} partial or failed."


def _quota_readings(report: Report) -> dict[str, list[tuple[date, int]]]:
    readings: dict[str, list[tuple[date, int]]] = defaultdict(list)
    for row in report.quota_series:
        if row["qrcodejump_pub_quota"] is not None:
            readings[row["account"]].append((_as_date(row["day"]), row["qrcodejump_pub_quota"]))
    for points in readings.values():
        points.sort()
    return readings


def _quota_chart(report: Report) -> str:
    """One line per account, each on its own row and scale, so that an account with 1,000
    publishes left does not flatten one running out; lowest quota first."""
    readings = _quota_readings(report)
    if not readings:
        return _chart_panel("Publish quota left", "", _empty("No quota readings in this window."))
    ranked = sorted(readings, key=lambda name: (readings[name][-1][1], name))
    shown = ranked[:QUOTA_LINES]
    note = "Publishes left this month, as last seen each day; least left first."
    if len(ranked) > len(shown):
        note = (
            f"The {len(shown)} accounts with the least quota left, of {len(ranked):,} accounts "
            "with readings; least left first."
        )
    note += " Each line runs from 0 to its account's highest reading."
    start, end = _window(report, [day for name in shown for day, _ in readings[name]])
    span = max((end - start).days, 1)
    left, width = 150.0, charts.CHART_WIDTH - 150.0 - 112.0
    row_height = 48.0 if len(shown) <= 4 else 34.0

    def x_of(day: date) -> float:
        return left + width * (day - start).days / span

    body: list[str] = []
    for i, name in enumerate(shown):
        body += _quota_row(name, readings[name], i * row_height, row_height, x_of)
    baseline = len(shown) * row_height
    days = charts.Timeline("day", [start + timedelta(days=i) for i in range(span + 1)])
    body += charts.x_labels(days, lambda i: x_of(days.buckets[i]), baseline + 14)
    label = f"Publish quota left over time for the {len(shown)} accounts with the least left"
    chart = charts.svg("chart-quota", label, baseline + 20, body)
    return _chart_panel("Publish quota left", note, chart)


def _quota_row(
    name: str,
    points: list[tuple[date, int]],
    y: float,
    height: float,
    x_of: Callable[[date], float],
) -> Iterator[str]:
    """A sparkline of one account's quota, its name on the left and the numbers on the right."""
    first, latest = points[0][1], points[-1][1]
    high = max(value for _, value in points) or 1
    top, bottom, middle = y + 5, y + height - 6, y + height / 2

    def y_of(value: int) -> float:
        return bottom - (bottom - top) * value / high

    xy = [(x_of(day), y_of(value)) for day, value in points]
    line = " ".join(
        f"{'M' if i == 0 else 'L'}{charts.f(x)} {charts.f(y)}" for i, (x, y) in enumerate(xy)
    )
    (x_first, _), (x_last, y_last) = xy[0], xy[-1]
    area = (
        f"{line} L{charts.f(x_last)} {charts.f(bottom)} L{charts.f(x_first)} {charts.f(bottom)} Z"
    )
    yield f"<g><title>{_e(name)}</title>{charts.text(142, middle + 4, _clip(name, 20), 'end')}</g>"
    yield charts.hline(x_of(points[0][0]), charts.CHART_WIDTH - 112, bottom)
    yield f'<path d="{area}" fill="{BLUE}" fill-opacity="0.12" stroke="none"/>'
    tip = f"<title>{_e(name)}: {first:,} → {latest:,} left</title>"
    yield f'<path d="{line}" fill="none" stroke="{BLUE}" stroke-width="2">{tip}</path>'
    end_colour = VERMILLION if latest == 0 else BLUE
    yield f'<circle cx="{charts.f(x_last)}" cy="{charts.f(y_last)}" r="3.5" fill="{end_colour}"/>'
    tone = "bad" if latest == 0 else "value"
    yield charts.text(charts.CHART_WIDTH - 100, middle - 1, f"{latest:,} left", cls=tone)
    was = "unchanged" if first == latest else f"from {first:,}"
    yield charts.text(charts.CHART_WIDTH - 100, middle + 12, was, cls="small")


STATE_SERIES = (
    ("published", GREEN),
    ("unpublished", ORANGE),
    ("other", PURPLE),
    ("deleted", GREY),
)
STATE_LABELS = 170.0
"""Width of the account names left of the bars; the live-rule counts take STATE_NUMBERS."""
STATE_NUMBERS = 62.0


def _live(row: Row) -> int:
    return sum(int(row[name] or 0) for name in ("published", "unpublished", "other"))


def _states_chart(report: Report) -> str:
    rows = sorted(report.rules_by_state, key=lambda r: (-_live(r), r["account"]))
    totals = {name: sum(int(r[name] or 0) for r in rows) for name, _ in STATE_SERIES}
    if not rows:
        return _chart_panel("Rules by state", "", _empty("No accounts yet."))
    if not any(totals.values()):
        return _chart_panel("Rules by state", "", _empty("No rules mirrored yet."))
    shown, rest = rows[:STATE_BARS], rows[STATE_BARS:]
    row_height = 34.0 if len(shown) <= 6 else 22.0
    scale = max(sum(_state_counts([r]).values()) for r in shown) or 1
    body: list[str] = []
    for i, row in enumerate(shown):
        body += _state_bar(row["account"], _state_counts([row]), i * row_height, row_height, scale)
    height = len(shown) * row_height
    if rest:
        counts = _state_counts(rest)
        body.append(charts.hline(0, charts.CHART_WIDTH, height + 4, "axis"))
        others = f"{len(rest):,} other accounts"
        body += _state_bar(others, counts, height + 8, row_height, sum(counts.values()) or 1)
        height += 8 + row_height
    note = (
        "Live rules per account (published, unpublished, other), and deleted ones kept in history."
    )
    if rest:
        note = (
            f"The {len(shown)} accounts with the most live rules; the last bar shows how the rules "
            f"of all other {len(rest):,} accounts split (not to scale). Numbers: live rules."
        )
    label = (
        f"Rules by state for {_plural(len(rows), 'account')}: {totals['published']:,} published, "
        f"{totals['unpublished']:,} unpublished, {totals['deleted']:,} deleted"
    )
    legend = charts.legend([(colour, name, f"{totals[name]:,}") for name, colour in STATE_SERIES])
    return _chart_panel(
        "Rules by state", note, charts.svg("chart-states", label, height, body) + legend
    )


def _state_counts(rows: list[Row]) -> dict[str, int]:
    return {name: sum(int(r[name] or 0) for r in rows) for name, _ in STATE_SERIES}


def _state_bar(
    name: str, counts: dict[str, int], y: float, height: float, scale: int
) -> Iterator[str]:
    """One account's (or a group's) bar: label, a segment per state, live rules at the end."""
    middle = y + height / 2 + 4
    label = charts.text(STATE_LABELS - 8, middle, _clip(name, 23), "end")
    yield f"<g><title>{_e(name)}</title>{label}</g>"
    unit = (charts.CHART_WIDTH - STATE_LABELS - STATE_NUMBERS) / scale
    x = STATE_LABELS
    for series, colour in STATE_SERIES:
        width = counts[series] * unit
        if width > 0:
            tip = f"{name}: {counts[series]:,} {series}"
            yield charts.rect(x, y + 3, width, height - 6, colour, tip)
            x += width
    live = counts["published"] + counts["unpublished"] + counts["other"]
    yield charts.text(charts.CHART_WIDTH - 4, middle, f"{live:,}", "end", "value")


# --- headline numbers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    label: str
    value: str
    note: str = ""
    tone: str = ""
    """"" neutral, "good", "warn" or "bad": the card's accent colour."""


def _success_age(row: Row, now: datetime) -> timedelta | None:
    if row.get("success_age") is not None:
        age: timedelta = row["success_age"]
        return age
    return now - row["last_success_at"] if row.get("last_success_at") else None


def _problem(row: Row, now: datetime) -> tuple[str, str] | None:
    """Why an account needs attention, as (tone, words), or None when it is fine (or paused)."""
    if not row.get("enabled", True):
        return None
    status = row.get("last_status")
    if status is None:
        return "warn", "never synced"
    if status == "failed":
        return "bad", "failing"
    if row.get("last_success_at") is None:
        return "warn", "no success yet"
    age = _success_age(row, now)
    if age is not None and age > STALE_AFTER:
        return "warn", f"stale {_duration(age)}"
    if status == "partial":
        return "warn", "last run partial"
    return None


def _headlines(report: Report) -> str:
    now = report.generated_at
    live = sum(_live(r) for r in report.rules_by_state)
    published = sum(int(r["published"] or 0) for r in report.rules_by_state)
    deleted = sum(int(r["deleted"] or 0) for r in report.rules_by_state)
    waiting = sum(int(r["waiting_rules"] or 0) for r in report.publish_queue_by_account)
    longest = max((r["longest_wait"] for r in report.publish_queue_by_account), default=None)
    publications = sum(int(r["publications"] or 0) for r in report.publications_per_day)
    problems = [p for p in (_problem(r, now) for r in report.sync_health) if p]
    failing = sum(1 for tone, _ in problems if tone == "bad")
    share = f"{published / live:.0%} of live rules" if live else "no live rules"
    cards = [
        Headline("Accounts", _num(len(report.rules_by_state)), _accounts_note(report)),
        Headline("Live rules", _num(live), f"{deleted:,} deleted, kept in history"),
        Headline("Published", _num(published), share, "good" if published else ""),
        Headline(
            "Waiting unpublished",
            _num(waiting),
            f"longest {_duration(longest)}" if waiting else "queue empty",
            "warn" if waiting else "",
        ),
        Headline("Publications in window", _num(publications), f"since {_time(report.since)}"),
        Headline(
            "Failing accounts",
            _num(failing),
            _attention_count(len(problems) - failing, len(report.sync_health)),
            "bad" if failing else "warn" if problems else "good" if report.sync_health else "",
        ),
        _lowest_quota(report),
    ]
    return (
        '<section class="cards" aria-label="Headline numbers">'
        + "".join(
            f'<div class="card {c.tone}"><div class="label">{_e(c.label)}</div>'
            f'<div class="value">{_e(c.value)}</div><div class="sub">{_e(c.note)}</div></div>'
            for c in cards
        )
        + "</section>"
    )


def _attention_count(stale: int, accounts: int) -> str:
    if not accounts:
        return "no accounts yet"
    return f"{stale:,} more stale or partial" if stale else "none stale"


def _accounts_note(report: Report) -> str:
    paused = sum(1 for r in report.sync_health if not r.get("enabled", True))
    if not report.rules_by_state:
        return "none yet"
    return f"{paused:,} paused" if paused else "all enabled"


def _lowest_quota(report: Report) -> Headline:
    known = [q for q in report.quota if q["qrcodejump_pub_quota"] is not None]
    if not known:
        return Headline("Lowest quota left", "–", "no readings yet")
    low = min(known, key=lambda q: (q["qrcodejump_pub_quota"], q["account"]))
    left = int(low["qrcodejump_pub_quota"])
    return Headline(
        "Lowest quota left", _num(left), _clip(low["account"], 28), "bad" if left == 0 else ""
    )


# --- tables --------------------------------------------------------------------------------------


def _td(text: str, *, cls: str = "", sort: float | None = None) -> str:
    attributes = f' class="{cls}"' if cls else ""
    if sort is not None:
        attributes += f' data-v="{sort:.0f}"'
    return f"<td{attributes}>{_e(text)}</td>"


def _td_num(value: int | None) -> str:
    return _td(_num(value), cls="num", sort=-1 if value is None else value)


def _td_time(value: datetime | None) -> str:
    return _td(_time(value), cls="time", sort=value.timestamp() if value else 0)


def _td_duration(value: timedelta | None) -> str:
    return _td(_duration(value), cls="num", sort=_seconds(value))


def _td_long(value: object) -> str:
    """A prefix, path or error: wrapped anywhere, at most two lines, the whole on hover."""
    text = _cut("" if value is None else str(value))
    return f'<td><div class="clip" title="{_e(text)}">{_e(text)}</div></td>'


def _td_account(name: str) -> str:
    return f'<td class="account"><div class="clip" title="{_e(name)}">{_e(name)}</div></td>'


def _td_html(content: str, sort: float) -> str:
    """A cell whose content is markup built here (a badge, a meter), never data."""
    return f'<td class="nowrap" data-v="{sort:.0f}">{content}</td>'


def _meter(value: float, whole: float, label: str, tone: str = "") -> str:
    share = 0.0 if whole <= 0 else max(0.0, min(1.0, value / whole))
    return (
        f'<span class="meter {tone}"><span style="width:{share * 100:.1f}%"></span></span>'
        f'<span class="num">{_e(label)}</span>'
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[str]) -> str:
    head = "".join(
        f'<th scope="col"{" class=num" if h in numeric else ""}>'
        f'<button type="button">{_e(h)}</button></th>'
        for h in headers
    )
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return (
        f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _more(hidden: int, what: str, where: str) -> str:
    if hidden <= 0:
        return ""
    return f'<p class="more">… and {hidden:,} more {_e(what)} ({_e(where)}).</p>'


def _section(anchor: str, title: str, note: str, body: str) -> str:
    """A white panel: a heading, a sentence saying what it shows (if any), the content."""
    identity = f' id="{anchor}"' if anchor else ""
    intro = f'<p class="note">{_e(note)}</p>' if note else ""
    return f'<section class="panel"{identity}><h2>{_e(title)}</h2>{intro}{body}</section>'


def _attention_section(report: Report) -> str:
    now = report.generated_at
    flagged = [(r, p) for r in report.sync_health if (p := _problem(r, now))]
    if not report.sync_health:
        return _section("attention", "Needs attention", "", _empty("No accounts yet."))
    if not flagged:
        count = _plural(len(report.sync_health), "account")
        message = f"All good: {count} synced successfully in the last {_duration(STALE_AFTER)}."
        return _section("attention", "Needs attention", "", f'<p class="ok">{_e(message)}</p>')
    shown = flagged[:ATTENTION_ROWS]
    rows = [
        [
            _td_account(r["account"]),
            _td_html(f'<span class="badge {tone}">{_e(words)}</span>', 0 if tone == "bad" else 1),
            _td_time(r["last_run_at"]),
            _td_time(r["last_success_at"]),
            _td_num(r["failure_streak"]),
            _td("" if r["last_errcode"] is None else str(r["last_errcode"]), cls="num"),
            _td_long(_error_text(r)),
        ]
        for r, (tone, words) in shown
    ]
    headers = ["account", "problem", "last run", "last success", "failures", "errcode", "error"]
    table = _table(headers, rows, {"failures", "errcode"})
    more = _more(len(flagged) - len(shown), "accounts", "qrsync status lists them all")
    title = f"Needs attention: {_plural(len(flagged), 'account')}"
    return _section("attention", title, _attention_note(flagged), table + more)


def _error_text(row: Row) -> str:
    """The run's error, masked, without the "account 'name': " its row already shows."""
    error = mask(row["last_error"] or "")
    return error.removeprefix(f"account '{row['account']}': ")


def _attention_note(flagged: list[tuple[Row, tuple[str, str]]]) -> str:
    """How many fail and how many are stale, and the errors most of them share."""
    failing = [row for row, (tone, _) in flagged if tone == "bad"]
    note = (
        f"{len(failing):,} failing, {len(flagged) - len(failing):,} stale or partial (stale: no "
        f"successful sync for more than {_duration(STALE_AFTER)}); failing accounts first."
    )
    codes = Counter(row["last_errcode"] for row in failing if row["last_errcode"] is not None)
    if codes:
        common = ", ".join(
            f"{code} ({_plural(count, 'account')})" for code, count in codes.most_common(3)
        )
        note += f" Most common errcodes: {common}."
    return note


def _queue_section(report: Report) -> str:
    by_account = report.publish_queue_by_account
    waiting = sum(int(r["waiting_rules"] or 0) for r in by_account)
    if not waiting:
        return _section(
            "queue", "Publish queue", "", _empty("No rules are waiting to be published.")
        )
    longest = max(_seconds(r["longest_wait"]) for r in by_account)
    note = (
        f"{_plural(waiting, 'rule')} in {_plural(len(by_account), 'account')} wait unpublished; "
        f"the longest has waited {_duration(timedelta(seconds=longest))}."
    )
    shown = by_account[:QUEUE_ROWS]
    account_rows = [
        [
            _td_account(r["account"]),
            _td_num(r["waiting_rules"]),
            _td_html(
                _meter(_seconds(r["longest_wait"]), longest, _duration(r["longest_wait"]), "warn"),
                _seconds(r["longest_wait"]),
            ),
        ]
        for r in shown
    ]
    accounts = _table(["account", "waiting rules", "longest wait"], account_rows, {"waiting rules"})
    accounts += _more(len(by_account) - len(shown), "accounts with waiting rules", "see the CSV")
    rule_rows = [
        [
            _td_account(q["account"]),
            _td_long(q["prefix"]),
            _td_long(q["path"]),
            _td_time(q["unpublished_since"]),
            _td_duration(q["waiting"]),
        ]
        for q in report.publish_queue
    ]
    rules = _table(
        ["account", "prefix", "path", "waiting since", "waiting"], rule_rows, {"waiting"}
    )
    body = (
        f'<h3>By account, longest wait first</h3><div class="narrow">{accounts}</div>'
        f"<h3>The {_plural(len(rule_rows), 'rule')} waiting longest</h3>{rules}"
    )
    return _section("queue", "Publish queue", note, body)


def _publications_section(report: Report) -> str:
    title = "Recent publications"
    if not report.publications:
        return _section("publications", title, "", _empty("No publications in this window."))
    rows = [
        [
            _td_account(p["account"]),
            _td_long(p["prefix"]),
            _td_long(p["path"]),
            _td_time(p["published_observed_at"]),
            "<td>added published</td>" if p.get("added_published") else _td_duration(p["wait"]),
        ]
        for p in report.publications
    ]
    note = (
        "Seen published by a sync, newest first; wait: from first seen to seen published"
        " (added published: a rule added and published between two syncs)."
    )
    if len(rows) >= RECENT_LIMIT:
        note += f" The latest {len(rows)} only."
    table = _table(["account", "prefix", "path", "seen published", "wait"], rows, {"wait"})
    return _section("publications", title, note, table)


def _deletions_section(report: Report) -> str:
    title = "Recent deletions"
    if not report.deletions:
        return _section("deletions", title, "", _empty("No deletions in this window."))
    rows = [
        [
            _td_account(d["account"]),
            _td_long(d["prefix"]),
            _td(STATE_NAMES.get(d["from_state"], f"state {d['from_state']}")),
            _td_time(d["previous_seen_at"]),
            _td_time(d["observed_at"]),
        ]
        for d in report.deletions
    ]
    note = "Deleted between the last sync that saw the rule and the first that did not."
    if len(rows) >= RECENT_LIMIT:
        note += f" The latest {len(rows)} only."
    headers = ["account", "prefix", "state before", "last seen", "seen gone"]
    return _section("deletions", title, note, _table(headers, rows, set()))


def _quota_key(row: Row) -> tuple[bool, int, str]:
    left = row["qrcodejump_pub_quota"]
    return left is None, left or 0, row["account"]


def _quota_section(report: Report) -> str:
    title = "Publish quota left this month"
    if not report.quota:
        return _section("quota", title, "", _empty("No quota readings yet."))
    ordered = sorted(report.quota, key=_quota_key)
    shown = ordered[:QUOTA_ROWS]
    most = max((int(q["qrcodejump_pub_quota"] or 0) for q in shown), default=0)
    rows = []
    for q in shown:
        left, before = q["qrcodejump_pub_quota"], q["quota_week_before"]
        change = None if left is None or before is None else left - before
        tone = "bad" if left == 0 else ""
        rows.append(
            [
                _td_account(q["account"]),
                _td_html(_meter(left or 0, most, _num(left), tone), -1 if left is None else left),
                _td_num(before),
                _td(_signed(change), cls="num", sort=-1e9 if change is None else change),
                _td({1: "yes", 0: "no"}.get(q["qrcodejump_open"], "–")),
                _td_time(q["taken_at"]),
            ]
        )
    headers = ["account", "quota left", "a week before", "change", "jumping on", "as of"]
    note = "Least left first."
    table = _table(headers, rows, {"a week before", "change"})
    more = _more(len(ordered) - len(shown), "accounts", "see the CSV")
    return _section("quota", title, note, table + more)


def _signed(value: int | None) -> str:
    return "–" if value is None else f"{value:+,}" if value else "0"


# --- the page ------------------------------------------------------------------------------------


def _zone(moment: datetime) -> str:
    offset = moment.astimezone().utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _header(report: Report) -> str:
    scope = f"account {report.account}" if report.account else "all accounts"
    length = _duration(report.generated_at - report.since)
    nav = "".join(
        f'<a href="#{anchor}">{_e(name)}</a>'
        for anchor, name in (
            ("attention", "Needs attention"),
            ("queue", "Publish queue"),
            ("publications", "Publications"),
            ("deletions", "Deletions"),
            ("quota", "Quota"),
        )
    )
    return (
        '<header><div class="wrap">'
        '<h1>QR-code jump rules <span lang="zh">二维码跳转规则</span></h1>'
        f'<p class="meta"><b>{_e(_time(report.since))} → {_e(_time(report.generated_at))}</b> '
        f"({_e(length)}) · <b>{_e(scope)}</b> · times in {_e(_zone(report.generated_at))}</p>"
        f'<nav aria-label="Sections">{nav}</nav></div></header>'
    )


def render_html(report: Report) -> str:
    """The whole report as one HTML page that needs nothing but a browser."""
    charts = "".join(
        (
            _publications_chart(report),
            _quota_chart(report),
            _states_chart(report),
            _sync_chart(report),
        )
    )
    scope = report.account or "all accounts"
    title = f"qrsync report: {scope}, {_time(report.generated_at)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"{_header(report)}<main>{_headlines(report)}"
        f'<div class="charts">{charts}</div>'
        f"{_attention_section(report)}{_queue_section(report)}{_publications_section(report)}"
        f"{_deletions_section(report)}{_quota_section(report)}</main>"
        f"<footer>Made by qrsync {_e(__version__)} at {_e(_time(report.generated_at))}. "
        "The same numbers for spreadsheets: <code>qrsync report --format csv</code>; for "
        "programs: <code>--format json</code>.</footer>"
        f"<script>{SORT_SCRIPT}</script></body></html>"
    )


CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #eef1f4; --paper: #f6f8fa;
  --bad: #c5221f; --warn: #b35900; --good: #1a7f37; --accent: #0b4f7c; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: var(--paper); font: 15px/1.45 system-ui,
  -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", "PingFang SC",
  "Microsoft YaHei", sans-serif; }
header { background: var(--accent); color: #fff; }
header .wrap, main, footer { max-width: 1240px; margin: 0 auto; padding: 0 24px; }
header .wrap { padding-top: 18px; padding-bottom: 12px; }
h1 { margin: 0; font-size: 24px; font-weight: 650; }
h1 span { font-weight: 400; opacity: .8; margin-left: 8px; }
.meta { margin: 6px 0 10px; font-size: 15px; }
nav a { color: #fff; margin-right: 18px; font-size: 14px; opacity: .9; }
main { padding-top: 18px; padding-bottom: 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-top: 4px solid var(--line);
  border-radius: 8px; padding: 10px 14px; }
.card.good { border-top-color: var(--good); } .card.warn { border-top-color: #e69f00; }
.card.bad { border-top-color: var(--bad); } .card.bad .value { color: var(--bad); }
.card .label { color: var(--muted); font-size: 13px; font-weight: 600; min-height: 2.5em; }
.card .value { font-size: 30px; font-weight: 700; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 13px; overflow-wrap: anywhere; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr));
  gap: 0 16px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 18px 16px; margin-top: 16px; min-width: 0; }
h2 { font-size: 18px; margin: 0 0 8px; } h2:has(+ .note) { margin-bottom: 2px; }
h3 { font-size: 15px; margin: 12px 0 6px; }
.note { color: var(--muted); font-size: 13.5px; margin: 0 0 10px; }
svg.chart { display: block; width: 100%; height: auto; }
.chart text { font-size: 12px; fill: var(--muted); }
.chart text.value { fill: var(--ink); font-weight: 600; }
.chart text.bad { fill: var(--bad); font-weight: 700; } .chart text.small { font-size: 11px; }
.chart .grid { stroke: var(--soft); } .chart .axis { stroke: #8c959f; }
.chart rect:hover, .chart path:hover { opacity: .75; }
.legend { list-style: none; margin: 8px 0 0; padding: 0; display: flex; flex-wrap: wrap;
  gap: 4px 18px; font-size: 13px; color: var(--muted); }
.legend b { color: var(--ink); font-variant-numeric: tabular-nums; }
.legend li { display: flex; align-items: center; gap: 6px; min-width: 0; }
.legend.lines li { flex: 0 1 calc(50% - 18px); }
.legend .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.swatch { width: 12px; height: 12px; border-radius: 2px; flex: none; }
svg.key { width: 24px; height: 8px; flex: none; }
.empty { padding: 36px 12px; text-align: center; color: var(--muted); background: var(--paper);
  border-radius: 6px; }
.ok { margin: 0; padding: 10px 12px; background: #e9f6ec; color: var(--good);
  border-radius: 6px; font-weight: 600; }
.narrow { max-width: 760px; }
td.nowrap { white-space: nowrap; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th { text-align: left; border-bottom: 2px solid var(--line); padding: 0; white-space: nowrap; }
th button { all: unset; cursor: pointer; display: block; padding: 6px 8px; color: var(--muted);
  font-weight: 600; }
th button:focus-visible { outline: 2px solid var(--accent); }
th[aria-sort=ascending] button::after { content: " ▲"; }
th[aria-sort=descending] button::after { content: " ▼"; }
th.num button { text-align: right; }
td { border-bottom: 1px solid var(--soft); padding: 5px 8px; vertical-align: top; }
tbody tr:hover { background: #f3f7fb; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.account { min-width: 11em; max-width: 16em; font-weight: 600; }
.clip { display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 2;
  overflow: hidden; overflow-wrap: anywhere; max-width: 36em; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12.5px;
  font-weight: 600; white-space: nowrap; }
.badge.bad { background: #fde7e6; color: var(--bad); }
.badge.warn { background: #fff1d6; color: var(--warn); }
.meter { display: inline-block; width: 90px; height: 8px; background: var(--soft);
  border-radius: 4px; margin-right: 8px; vertical-align: middle; overflow: hidden; }
.meter span { display: block; height: 100%; background: #0072b2; }
.meter.warn span { background: #e69f00; } .meter.bad span { background: var(--bad); }
td .num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.more { color: var(--muted); font-style: italic; margin: 8px 0 0; }
footer { color: var(--muted); font-size: 13px; padding-top: 8px; padding-bottom: 28px; }
code { font-size: 12.5px; background: var(--soft); padding: 1px 4px; border-radius: 4px; }
@media print { body { background: #fff; } .panel, .card { break-inside: avoid; } }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th button").forEach(function (button, column) {
    button.addEventListener("click", function () {
      var th = button.parentNode, up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var vx = x.getAttribute("data-v"), vy = y.getAttribute("data-v");
        var order = vx !== null && vy !== null ? vx - vy
          : x.textContent.localeCompare(y.textContent);
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
