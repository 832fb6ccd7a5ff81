"""What `qrsync notify status` shows: per channel what is pending or failing, and, for one
channel, its latest notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qrsync.masking import mask, one_line
from qrsync.store.engine import Engine
from qrsync.store.notifications import channel_log, channel_status


def status(engine: Engine, channel: str | None = None) -> dict[str, Any]:
    """The channels (or the one named) with their counts, and the named channel's log."""
    now = datetime.now(UTC)
    channels = [row for row in channel_status(engine) if channel in (None, row["channel"])]
    for row in channels:
        oldest = row.pop("oldest_pending_at")
        row["oldest_pending_age_s"] = (
            None if oldest is None else round((now - oldest).total_seconds(), 1)
        )
        if row["last_answer"] is not None:
            row["last_answer"] = one_line(mask(row["last_answer"]))
    document: dict[str, Any] = {"channels": channels}
    if channel is not None:
        document["notifications"] = channel_log(engine, channel)
    return document


def render(document: dict[str, Any]) -> str:
    """Plain text: one line per channel, then the named channel's latest notifications."""
    channels = document["channels"]
    if not channels:
        return "no notification channel configured (add a [[notify]] table)"
    lines = []
    for row in channels:
        age = row["oldest_pending_age_s"]
        text = (
            f"{row['channel']} ({row['kind']}): {row['pending']} pending, {row['failing']} "
            f"failing, {row['sent']} sent"
        )
        if age is not None:
            text += f"; oldest pending {_duration(age)} old"
        if row["last_ok"] is False and row["last_answer"]:
            text += f"; last answer: {row['last_answer']}"
        if not row["configured"]:
            text += " (no longer configured)"
        lines.append(text)
    for item in document.get("notifications", []):
        where = f" {item['prefix']}" if item["prefix"] else ""
        state = item["status"]
        if state == "pending" and item["attempts"]:
            state = f"failing ({item['attempts']} attempts: {item['last_error']})"
        lines.append(
            f"  #{item['event_id']} {item['occurred_at']:%Y-%m-%d %H:%M} {item['kind']} "
            f"{item['account']}{where}: {state}"
        )
    return "\n".join(one_line(mask(line)) for line in lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
