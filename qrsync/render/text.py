"""Reports for a terminal: aligned plain-text tables, most urgent first."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from qrsync.report import QUEUE_LIMIT, RECENT_LIMIT, Report, Row

if TYPE_CHECKING:
    from qrsync.store.discoveries import DiscoveryRun


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table; numbers right-aligned."""
    if not rows:
        return "  (none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=True):
            numeric = cell.replace(",", "").replace("-", "", 1).isdigit()
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  " + "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


def fmt_age(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render_status(rows: list[Row]) -> str:
    return format_table(
        ["account", "enabled", "last run", "status", "last success", "age", "failures", "error"],
        [
            [
                r["account"],
                "yes" if r["enabled"] else "no",
                fmt_time(r["last_run_at"]),
                r["last_status"] or "never",
                fmt_time(r["last_success_at"]),
                fmt_age(r["success_age"]),
                str(r["failure_streak"]),
                (r["last_error"] or "")[:80],
            ]
            for r in rows
        ],
    )


def render_report(report: Report) -> str:
    since = fmt_time(report.since)
    sections: list[tuple[str, str]] = [
        (
            "Sync health (failing and stale accounts first)",
            render_status(report.sync_health),
        ),
        (
            "Rules by state",
            format_table(
                ["account", "kind", "unpublished", "published", "deleted"],
                [
                    [
                        r["account"],
                        r["kind"],
                        _num(r["unpublished"]),
                        _num(r["published"]),
                        _num(r["deleted"]),
                    ]
                    for r in report.rules_by_state
                ],
            ),
        ),
        (
            f"Publish queue: rules waiting unpublished (longest {QUEUE_LIMIT})",
            format_table(
                ["account", "prefix", "waiting since", "waiting"],
                [
                    [
                        q["account"],
                        q["prefix"],
                        fmt_time(q["unpublished_since"]),
                        fmt_age(q["waiting"]),
                    ]
                    for q in report.publish_queue
                ],
            ),
        ),
        (
            f"Publications since {since} (latest {RECENT_LIMIT})",
            format_table(
                ["account", "prefix", "observed", "wait"],
                [
                    [
                        p["account"],
                        p["prefix"],
                        fmt_time(p["published_observed_at"]),
                        "added published" if p.get("added_published") else fmt_age(p["wait"]),
                    ]
                    for p in report.publications
                ],
            ),
        ),
        (
            f"Deletions since {since} (latest {RECENT_LIMIT})",
            format_table(
                ["account", "prefix", "state before", "observed"],
                [
                    [d["account"], d["prefix"], str(d["from_state"]), fmt_time(d["observed_at"])]
                    for d in report.deletions
                ],
            ),
        ),
        (
            "Publish quota left this month",
            format_table(
                ["account", "quota left", "a week before", "jumping on", "as of"],
                [
                    [
                        q["account"],
                        _num(q["qrcodejump_pub_quota"]),
                        _num(q["quota_week_before"]),
                        _open(q["qrcodejump_open"]),
                        fmt_time(q["taken_at"]),
                    ]
                    for q in report.quota
                ],
            ),
        ),
    ]
    return "\n\n".join(f"{title}\n{body}" for title, body in sections)


def _open(value: Any) -> str:
    return {1: "yes", 0: "no"}.get(value, "-")


def render_discovery(run: DiscoveryRun) -> str:
    """One line on a platform's latest discovery (``qrsync status``, ``qrsync accounts``)."""
    by = "qrsync accounts discover" if run.trigger == "cli" else f"replica {run.replica}"
    if run.scheduled_for is not None:
        by += f", slot {fmt_time(run.scheduled_for)}"
    line = f"platform {run.component_appid}: last discovery {fmt_time(run.started_at)} ({by}): "
    if run.status == "running":
        return line + "running"
    if run.status == "failed":
        code = f" {run.errcode}" if run.errcode is not None else ""
        return line + f"failed{code}, no account changed: {run.error or '?'}"
    line += (
        f"{run.authorizers or 0:,} authorizers, {run.added or 0} added, "
        f"{run.enabled or 0} enabled again, {run.disabled or 0} disabled, "
        f"{run.unsyncable or 0} not synced"
    )
    return line + (f"; {run.error}" if run.error else "")
