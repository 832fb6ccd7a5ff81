"""JSON for machines: timestamps as ISO 8601, durations as seconds, every secret masked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from qrsync.masking import mask


def _default(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(document: Any) -> str:
    """``document`` (dataclasses, or JSON-able data with datetimes) as indented JSON.

    orjson, not the standard library: with ``indent`` the standard encoder is pure Python, and
    the document of a 10,000-account sync took a second."""
    text = orjson.dumps(
        document,
        default=_default,
        option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
    )
    return mask(text.decode())
