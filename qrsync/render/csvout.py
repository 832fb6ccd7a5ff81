"""CSV for spreadsheets and BI tools: one row per account, every number the report holds for it.

The row joins what the report keeps in separate lists (rules by state, the publish queue, quota,
sync health), so a spreadsheet needs no lookups; an account missing from a list gets empty cells.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from qrsync.report import Report, Row

COLUMNS = (
    "account",
    "kind",
    "unpublished",
    "published",
    "deleted",
    "waiting_unpublished",
    "longest_wait_s",
    "quota_left",
    "quota_week_before",
    "qrcodejump_open",
    "last_status",
    "last_success_at",
    "failure_streak",
    "last_errcode",
)


def _cell(value: Any) -> Any:
    """Timestamps in ISO 8601 (UTC, whole seconds), durations in whole seconds, None empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    return value


def _by_account(rows: list[Row]) -> dict[str, Row]:
    return {row["account"]: row for row in rows}


def account_rows(report: Report) -> list[dict[str, Any]]:
    """One dict per account (keys: :data:`COLUMNS`), in name order."""
    states = _by_account(report.rules_by_state)
    queue = _by_account(report.publish_queue_by_account)
    quota = _by_account(report.quota)
    health = _by_account(report.sync_health)
    names = sorted({*states, *queue, *quota, *health})
    result = []
    for name in names:
        state = states.get(name, {})
        waiting = queue.get(name, {})
        latest = quota.get(name, {})
        run = health.get(name, {})
        result.append(
            {
                "account": name,
                "kind": state.get("kind"),
                "unpublished": state.get("unpublished", 0),
                "published": state.get("published", 0),
                "deleted": state.get("deleted", 0),
                "waiting_unpublished": waiting.get("waiting_rules", 0),
                "longest_wait_s": waiting.get("longest_wait"),
                "quota_left": latest.get("qrcodejump_pub_quota"),
                "quota_week_before": latest.get("quota_week_before"),
                "qrcodejump_open": latest.get("qrcodejump_open"),
                "last_status": run.get("last_status"),
                "last_success_at": run.get("last_success_at"),
                "failure_streak": run.get("failure_streak"),
                "last_errcode": run.get("last_errcode"),
            }
        )
    return result


def render_csv(report: Report) -> str:
    """The per-account table as CSV text, header row first (no trailing newline)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in account_rows(report):
        writer.writerow({key: _cell(value) for key, value in row.items()})
    return buffer.getvalue().removesuffix("\n")
