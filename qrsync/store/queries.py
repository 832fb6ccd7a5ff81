"""Load ``queries.sql`` into named statements (procrastinate's ``sql/__init__.py``, in spirit).

The SQL stays in one readable, greppable, ``EXPLAIN``-able file; Python runs it by name.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_HEADER = re.compile(r"^-- name: (?P<name>\w+) --$", re.MULTILINE)


def parse_queries(source: str) -> dict[str, str]:
    """Split the file on its ``-- name: X --`` headers."""
    parts = _HEADER.split(source)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"queries.sql defines '{name}' twice")
        queries[name] = _without_leading_comments(body.strip().rstrip(";"))
    return queries


def _without_leading_comments(body: str) -> str:
    """The statement with the first line of its comment only: the rest is for people reading
    the file and would travel to the server with every execution; the first names it where
    the server shows what runs (pg_stat_activity, the logs)."""
    lines = body.splitlines()
    first = lines[0] if lines and lines[0].lstrip().startswith("--") else None
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    if first is not None:
        lines.insert(0, first)
    return "\n".join(lines)


@cache
def _all() -> dict[str, str]:
    source = files("qrsync.store").joinpath("queries.sql").read_text(encoding="utf-8")
    return parse_queries(source)


def query(name: str) -> str:
    """The named statement, its parameters written ``%(name)s`` (psycopg binds them)."""
    return _all()[name]
