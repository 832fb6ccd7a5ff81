"""qrsync: a PostgreSQL mirror of WeChat QR-code jump rules (二维码跳转规则), with their history."""

from __future__ import annotations

__version__ = "0.1.0"
