"""Runs whose listing equals the account's last complete one, recorded many at a time.

Most runs of a fleet find nothing new. Such a run writes no rule: only its ``sync_runs`` row and
its snapshot. Opening and closing each on its own costs four statements and a connection held
for the length of its API call; here the listing is fetched first, compared with the digests
read for the whole fleet at once (:meth:`UnchangedRuns.expectations`), and the runs of a batch
are recorded by one transaction of three statements: the accounts' locks (tried, never waited
for), the runs opened (and the accounts' dead runs closed) where the digests are still the ones
compared with, the snapshots written and the runs closed. A listing that differs, or whose
account is busy or changed meanwhile, goes the ordinary way (:mod:`qrsync.store.runs`) with the
pages already fetched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from qrsync.store import digests
from qrsync.store.engine import Engine, one, quote_ident
from qrsync.store.queries import query

MAX_RULES = digests.GROUP_ROWS
"""The largest listing compared in memory before its run opens: one digest group (a listing
bigger than that is staged as it arrives, behaviour 9)."""


class Expectation(NamedTuple):
    """What an account's next listing is compared with: its last complete listing."""

    digest_run_id: int
    rules_seen: int
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class UnchangedRun:
    """A listing found equal to its account's last complete one, to be recorded."""

    account_id: int
    expectation: Expectation
    trigger: str
    scheduled_for: datetime | None
    replica: str | None
    started_at: datetime
    observed_at: datetime
    api_calls: int
    pages: int
    total_count: int | None
    qrcodejump_open: int | None
    qrcodejump_pub_quota: int | None
    message: str | None = None


class Recorded(NamedTuple):
    run_id: int
    closed_dead_runs: int


class UnchangedRuns:
    """The database side of unchanged runs (see the module's docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._runs_table = f"{quote_ident(engine.schema)}.sync_runs"

    def expectations(self, account_ids: Sequence[int]) -> dict[int, Expectation]:
        """The last complete listing of each account that has one (and live rules), of at most
        :data:`MAX_RULES` rules; read without the accounts' locks (checked again by
        :meth:`record`)."""
        with self.engine.transaction() as conn:
            rows = conn.execute(
                query("unchanged_expectations"),
                {
                    "account_ids": list(account_ids),
                    "group_rows": digests.GROUP_ROWS,
                    "max_rules": MAX_RULES,
                },
            ).fetchall()
        return {
            row.account_id: Expectation(
                row.sync_run_id, row.rules_seen, tuple(bytes(d) for d in row.digests)
            )
            for row in rows
        }

    def record(self, runs: Sequence[UnchangedRun], finished_at: datetime) -> dict[int, Recorded]:
        """Record ``runs`` in one transaction; return those recorded, by account id. A run
        missing from the answer was not recorded: its account was locked by another run, or its
        digests changed since they were read; it must go the ordinary way."""
        if not runs:
            return {}
        conn = self.engine.checkout()
        try:
            locked = set(
                one(
                    conn,
                    query("lock_unchanged_accounts"),
                    {
                        "search_path": self.engine.search_path,
                        "account_ids": [run.account_id for run in runs],
                    },
                ).locked
            )
            runnable = [run for run in runs if run.account_id in locked]
            opened = {
                row.account_id: Recorded(row.id, row.closed_dead_runs)
                for row in conn.execute(
                    query("open_unchanged_runs"),
                    {
                        "runs_table": self._runs_table,
                        "runs": _json(
                            {
                                "account_id": run.account_id,
                                "digest_run_id": run.expectation.digest_run_id,
                                "trigger": run.trigger,
                                "scheduled_for": run.scheduled_for,
                                "replica": run.replica,
                                "started_at": run.started_at,
                            }
                            for run in runnable
                        ),
                    },
                ).fetchall()
            }
            closing = [
                {
                    "run_id": opened[run.account_id].run_id,
                    "account_id": run.account_id,
                    "observed_at": run.observed_at,
                    "qrcodejump_open": run.qrcodejump_open,
                    "qrcodejump_pub_quota": run.qrcodejump_pub_quota,
                    "total_count": run.total_count,
                    "rules_seen": run.expectation.rules_seen,
                    "api_calls": run.api_calls,
                    "pages": run.pages,
                    "message": run.message,
                }
                for run in runnable
                if run.account_id in opened
            ]
            if closing:
                conn.execute(
                    query("close_unchanged_runs"),
                    {"runs": _json(closing), "finished_at": finished_at},
                )
            conn.commit()
        finally:
            self.engine.give_back(conn)  # (rolls back what was not committed)
        return opened


def _json(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as one JSON array for ``jsonb_to_recordset`` (timestamps in ISO 8601, with their
    offset)."""
    return orjson.dumps(list(rows)).decode()
