"""The WeChat API edge: HTTP client, token sources and the pager. Nothing here knows about SQL."""

from __future__ import annotations
