"""The reports behind `qrsync report` and `qrsync status`: queries, then renderers.

Each report is a plain data structure built from the views and named queries, so that the text
renderer here and the JSON output share one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from qrsync.store.queries import query

RECENT_LIMIT = 20


@dataclass(frozen=True)
class Report:
    since: datetime
    rules_by_state: list[dict[str, Any]]
    publications: list[dict[str, Any]]
    deletions: list[dict[str, Any]]
    quota: list[dict[str, Any]]


def build_report(
    engine: Engine, *, since: datetime, account: str | None = None, limit: int = RECENT_LIMIT
) -> Report:
    params = {"since": since, "account": account, "limit": limit}
    with engine.connect() as conn:

        def rows(name: str) -> list[dict[str, Any]]:
            return [dict(r) for r in conn.execute(query(name), params).mappings()]

        return Report(
            since=since,
            rules_by_state=rows("report_rules_by_state"),
            publications=rows("report_publications"),
            deletions=rows("report_deletions"),
            quota=rows("report_quota"),
        )


def sync_health(engine: Engine, account: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(query("sync_health"), {"account": account}).mappings()
        ]


# --- text ---------------------------------------------------------------------------------------


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


def render_report_text(report: Report) -> str:
    parts = ["Rules by state"]
    parts.append(
        format_table(
            ["account", "kind", "unpublished", "published", "deleted"],
            [
                [
                    r["account"],
                    r["kind"],
                    f"{r['unpublished']:,}",
                    f"{r['published']:,}",
                    f"{r['deleted']:,}",
                ]
                for r in report.rules_by_state
            ],
        )
    )
    parts.append(f"\nPublications since {fmt_time(report.since)} (latest {RECENT_LIMIT})")
    parts.append(
        format_table(
            ["account", "prefix", "observed", "wait"],
            [
                [
                    p["account"],
                    p["prefix"],
                    fmt_time(p["published_observed_at"]),
                    fmt_age(p["wait"]),
                ]
                for p in report.publications
            ],
        )
    )
    parts.append(f"\nDeletions since {fmt_time(report.since)} (latest {RECENT_LIMIT})")
    parts.append(
        format_table(
            ["account", "prefix", "state before", "observed"],
            [
                [d["account"], d["prefix"], str(d["from_state"]), fmt_time(d["observed_at"])]
                for d in report.deletions
            ],
        )
    )
    parts.append("\nPublish quota (left this month)")
    parts.append(
        format_table(
            ["account", "quota left", "a week before", "jumping on", "as of"],
            [
                [
                    q["account"],
                    _num(q["qrcodejump_pub_quota"]),
                    _num(q["quota_week_before"]),
                    {1: "yes", 0: "no"}.get(q["qrcodejump_open"], "-"),
                    fmt_time(q["taken_at"]),
                ]
                for q in report.quota
            ],
        )
    )
    return "\n".join(parts)


def render_status_text(rows: list[dict[str, Any]]) -> str:
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


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)
