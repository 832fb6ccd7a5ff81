"""The database edge: engine, schema, named SQL and the merge. Nothing here knows about HTTP."""

from __future__ import annotations
