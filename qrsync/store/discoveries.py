"""The ``discovery_runs`` table: one row per discovery of a platform's authorizers.

A daemon replica claims its schedule slot's discovery by inserting the row (the unique
(platform, slot) index lets exactly one replica in); ``qrsync accounts discover`` opens a row of
its own. Each row is closed with how the discovery ended and what it found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from qrsync.store.engine import Engine
from qrsync.store.queries import query


@dataclass(frozen=True)
class DiscoveryCounts:
    """What a finished discovery found (None where it failed before knowing)."""

    authorizers: int | None = None
    added: int | None = None
    enabled: int | None = None
    disabled: int | None = None
    unsyncable: int | None = None


@dataclass(frozen=True)
class DiscoveryRun:
    """One row of ``discovery_runs``."""

    id: int
    component_appid: str
    trigger: str
    scheduled_for: datetime | None
    replica: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    authorizers: int | None
    added: int | None
    enabled: int | None
    disabled: int | None
    unsyncable: int | None
    errcode: int | None
    error: str | None


STALE_S = 3600
"""A discovery still 'running' after an hour is taken for dead (its replica stopped or was
killed mid-discovery, its row never closed): the next claim closes it as abandoned. A younger
one still running keeps the next slots from starting a second discovery beside it."""


def claim_slot(
    engine: Engine, component_appid: str, slot: datetime, replica: str, stale_s: int = STALE_S
) -> int | None:
    """The id of this replica's discovery of ``slot``; None when another replica has the slot,
    or a discovery of the platform still runs (started less than ``stale_s`` ago)."""
    with engine.transaction() as conn:
        row = conn.execute(
            query("claim_discovery_slot"),
            {
                "component_appid": component_appid,
                "scheduled_for": slot,
                "replica": replica,
                "stale_s": stale_s,
            },
        ).fetchone()
    return None if row is None else int(row.id)


def start(engine: Engine, component_appid: str, trigger: str, replica: str | None) -> int:
    """Open the row of a discovery that claims no slot; its id."""
    with engine.transaction() as conn:
        row = conn.execute(
            query("start_discovery"),
            {"component_appid": component_appid, "trigger": trigger, "replica": replica},
        ).fetchone()
    assert row is not None
    return int(row.id)


def finish(
    engine: Engine,
    run_id: int,
    status: str,
    counts: DiscoveryCounts,
    errcode: int | None = None,
    error: str | None = None,
) -> None:
    """Close a discovery's row (``error`` already masked and on one line)."""
    with engine.transaction() as conn:
        conn.execute(
            query("finish_discovery"),
            {
                "id": run_id,
                "status": status,
                "authorizers": counts.authorizers,
                "added": counts.added,
                "enabled": counts.enabled,
                "disabled": counts.disabled,
                "unsyncable": counts.unsyncable,
                "errcode": errcode,
                "error": error,
            },
        )


def last_discoveries(engine: Engine) -> list[DiscoveryRun]:
    """The latest discovery of each platform."""
    with engine.transaction() as conn:
        rows = conn.execute(query("last_discoveries")).fetchall()
    return [DiscoveryRun(**row._asdict()) for row in rows]


def succeeded_count(engine: Engine) -> int:
    """How many discoveries have succeeded (a replica reloads its accounts when it grows)."""
    with engine.transaction() as conn:
        row = conn.execute(query("discoveries_finished")).fetchone()
    return 0 if row is None else int(row.finished)
