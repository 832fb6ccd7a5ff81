"""A run's life in the database: opened, its listing staged and merged, closed.

Staging (behaviour 9): each page is COPYed into the UNLOGGED ``staged_rules`` table as it
arrives, so memory does not grow with the listing. The merge (behaviours 1-4) is one set-based
statement in ``queries.sql`` run inside the transaction that also records the snapshot and
closes the run: either all of it happens or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from qrsync.errors import DatabaseError
from qrsync.masking import mask
from qrsync.store.engine import first_line
from qrsync.store.queries import query
from qrsync.wechat.listing import Page, Rule

COPY_STAGED = (
    "COPY staged_rules (sync_run_id, seq, prefix, path, state, open_version, permit_sub_rule,"
    " debug_urls) FROM STDIN"
)
STAGED_TYPES = ["int8", "int4", "text", "text", "int2", "int2", "int2", "text[]"]


@dataclass(frozen=True)
class MergeCounts:
    rules_seen: int
    inserted: int
    updated: int
    deleted: int
    state_changes: int
    history_rows: int
    would_delete: int
    live_rules: int
    deletions_allowed: bool

    @property
    def unchanged(self) -> int:
        return self.rules_seen - self.inserted - self.updated


@dataclass(frozen=True)
class RunOutcome:
    """What closes a run that went through (succeeded or partial)."""

    status: str
    api_calls: int
    pages: int
    total_count: int | None
    qrcodejump_open: int | None
    qrcodejump_pub_quota: int | None
    complete: bool
    message: str | None


class RunStore:
    """The database operations of sync runs; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start_run(
        self,
        account_id: int,
        *,
        trigger: str,
        started_at: datetime,
        scheduled_for: datetime | None = None,
        replica: str | None = None,
    ) -> int:
        with self.engine.begin() as conn:
            row = conn.execute(
                query("start_run"),
                {
                    "account_id": account_id,
                    "trigger": trigger,
                    "scheduled_for": scheduled_for,
                    "replica": replica,
                    "started_at": started_at,
                },
            ).one()
        return int(row.id)

    def clear_staged(self, run_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(query("clear_staged"), {"run_id": run_id})

    def stage(self, run_id: int, pages: Iterable[Page], first_seq: int = 0) -> int:
        """Stream a listing's pages into staging through one COPY, as they arrive (memory: the
        page in hand), committed once at the end; an error leaves nothing staged. Returns the
        next sequence number."""
        seq = first_seq
        with self.engine.begin() as conn:
            dbapi = conn.connection.driver_connection
            assert dbapi is not None
            with dbapi.cursor() as cursor, cursor.copy(COPY_STAGED) as copy:
                copy.set_types(STAGED_TYPES)
                for page in pages:
                    for rule in page.rules:
                        copy.write_row(_staged_row(run_id, seq, rule))
                        seq += 1
        return seq

    def count_staged(self, run_id: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(query("count_staged"), {"run_id": run_id}).scalar_one())

    def deletion_candidates(self, run_id: int, account_id: int) -> list[str]:
        """Live rules the staged listing does not hold: what a merge would mark deleted."""
        with self.engine.connect() as conn:
            result = conn.execute(
                query("deletion_candidates"), {"run_id": run_id, "account_id": account_id}
            )
            return list(result.scalars())

    def apply_listing(
        self,
        *,
        run_id: int,
        account_id: int,
        observed_at: datetime,
        clock: Callable[[], datetime],
        fence: Callable[[Connection], None] | None = None,
        complete: bool,
        allow_mass_delete: bool,
        max_delete_fraction: float,
        outcome: RunOutcome,
    ) -> tuple[MergeCounts, RunOutcome]:
        """Merge the staged listing, record the snapshot and close the run, in one transaction.

        ``clock`` gives the run's finishing time once the merge is done.

        If the delete guard holds deletions back, the run becomes ``partial`` with a message,
        and the snapshot is not marked complete.
        """
        with self.engine.begin() as conn:
            if fence is not None:
                fence(conn)
            conn.execute(query("lock_account"), {"account_id": account_id})
            row = conn.execute(
                query("merge_listing"),
                {
                    "run_id": run_id,
                    "account_id": account_id,
                    "observed_at": observed_at,
                    "complete": complete,
                    "allow_mass_delete": allow_mass_delete,
                    "max_delete_fraction": max_delete_fraction,
                },
            ).one()
            counts = MergeCounts(**row._mapping)
            if complete and not counts.deletions_allowed:
                held = (
                    f"{counts.would_delete} of {counts.live_rules} live rules are missing from "
                    "the listing; deletions held back (more than sync.max_delete_fraction). If "
                    "they really are gone: qrsync sync --account NAME --allow-mass-delete"
                )
                outcome = replace(
                    outcome, status="partial", complete=False, message=_join(outcome.message, held)
                )
            conn.execute(
                query("finish_run"),
                {
                    "run_id": run_id,
                    "account_id": account_id,
                    "observed_at": observed_at,
                    "qrcodejump_open": outcome.qrcodejump_open,
                    "qrcodejump_pub_quota": outcome.qrcodejump_pub_quota,
                    "total_count": outcome.total_count,
                    "rules_seen": counts.rules_seen,
                    "complete": outcome.complete,
                    "status": outcome.status,
                    "api_calls": outcome.api_calls,
                    "pages": outcome.pages,
                    "inserted": counts.inserted,
                    "updated": counts.updated,
                    "unchanged": counts.unchanged,
                    "deleted": counts.deleted,
                    "state_changes": counts.state_changes,
                    "message": outcome.message,
                    "finished_at": clock(),
                },
            )
        return counts, outcome

    def fail_run(
        self,
        run_id: int,
        *,
        errcode: int | None,
        error: str,
        api_calls: int,
        pages: int,
        finished_at: datetime,
        abandoned: bool = False,
    ) -> None:
        """Close a run as failed (``abandoned``: interrupted, its slot may be run again); a run
        already closed by another replica's takeover is left as that replica wrote it."""
        with self.engine.begin() as conn:
            conn.execute(
                query("fail_run"),
                {
                    "run_id": run_id,
                    "errcode": errcode,
                    "error": mask(error),
                    "api_calls": api_calls,
                    "pages": pages,
                    "finished_at": finished_at,
                    "abandoned": abandoned,
                },
            )


def _staged_row(run_id: int, seq: int, rule: Rule) -> tuple[object, ...]:
    prefix, path, state, open_version, permit_sub_rule, debug_urls = rule
    urls = list(debug_urls) if debug_urls is not None else None
    return (run_id, seq, prefix, path, state, open_version, permit_sub_rule, urls)


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


def database_error(exc: SQLAlchemyError) -> DatabaseError:
    """One line for people out of a SQLAlchemy/psycopg error."""
    return DatabaseError(f"database error: {first_line(exc)}")
