"""Renderers of :class:`qrsync.report.Report`: text, JSON, CSV, self-contained HTML."""

from __future__ import annotations
