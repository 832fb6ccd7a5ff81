"""Load ``queries.sql`` into named statements (procrastinate's ``sql/__init__.py``, in spirit).

The SQL stays in one readable, greppable, ``EXPLAIN``-able file; Python runs it by name.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from sqlalchemy import TextClause, text

_HEADER = re.compile(r"^-- name: (?P<name>\w+) --$", re.MULTILINE)


def parse_queries(source: str) -> dict[str, str]:
    """Split the file on its ``-- name: X --`` headers; each body keeps its comments."""
    parts = _HEADER.split(source)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"queries.sql defines '{name}' twice")
        queries[name] = body.strip().rstrip(";")
    return queries


@cache
def _all() -> dict[str, TextClause]:
    source = files("qrsync.store").joinpath("queries.sql").read_text(encoding="utf-8")
    return {name: text(sql) for name, sql in parse_queries(source).items()}


def query(name: str) -> TextClause:
    """The named statement as a SQLAlchemy text clause."""
    return _all()[name]
