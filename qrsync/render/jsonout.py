"""JSON for machines: timestamps as ISO 8601, durations as seconds, every secret masked."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import date, datetime, timedelta
from typing import Any

from qrsync.masking import mask


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(document: Any) -> str:
    """``document`` (a dataclass, or JSON-able data with datetimes) as indented JSON."""
    if is_dataclass(document) and not isinstance(document, type):
        document = asdict(document)
    return mask(json.dumps(document, default=_default, ensure_ascii=False, indent=2))
