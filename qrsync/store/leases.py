"""Leases that let several daemon replicas share one database (SPEC behaviour 8).

A replica claims (account, slot) with one statement that locks the account's lease row: it wins
if no other replica's lease is live and the slot has no finished run. While the run lasts the
lease is renewed; its epoch fences the replica: a merge commits only if the epoch is still the
one it claimed with. Everything is rows and transaction-scoped locks, so it works behind
PgBouncer in transaction pooling mode. A replica killed mid-run stops renewing; after
``daemon.lease_s`` another replica takes the account over and closes the abandoned run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from qrsync.errors import RunInterrupted
from qrsync.store.engine import Conn, Engine, one, scalars
from qrsync.store.queries import query


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: granted with an epoch, or why not."""

    account_id: int
    slot: datetime
    epoch: int | None
    holder: str | None
    done: bool
    abandoned_runs: int

    @property
    def granted(self) -> bool:
        return self.epoch is not None


@dataclass(frozen=True)
class Lease:
    account_id: int
    epoch: int
    replica: str


class LeaseStore:
    def __init__(self, engine: Engine, replica: str, lease_s: int) -> None:
        self.engine = engine
        self.replica = replica
        self.lease_s = lease_s

    def database_now(self) -> datetime:
        """The database's clock, the one every replica names slots and leases by."""
        with self.engine.transaction() as conn:
            now: datetime = one(conn, query("database_now")).now
        return now

    def ensure_rows(self) -> None:
        with self.engine.transaction() as conn:
            conn.execute(query("ensure_leases"))

    def claim(self, account_id: int, slot: datetime, *, retried: bool = False) -> Claim:
        with self.engine.transaction() as conn:
            row = one(
                conn,
                query("claim_slot"),
                {
                    "account_id": account_id,
                    "slot": slot,
                    "replica": self.replica,
                    "lease_s": self.lease_s,
                },
            )
        if row.done is None and not retried:
            # No lease row yet (an account added since start): create rows and try again.
            self.ensure_rows()
            return self.claim(account_id, slot, retried=True)
        return Claim(account_id, slot, row.epoch, row.holder, bool(row.done), row.abandoned_runs)

    def attach(self, lease: Lease, run_id: int) -> None:
        with self.engine.transaction() as conn:
            conn.execute(
                query("attach_run"),
                {"run_id": run_id, "account_id": lease.account_id, "epoch": lease.epoch},
            )

    def renew(self, leases: Sequence[Lease]) -> set[int]:
        """Renew ``leases``; return the account ids whose lease is still ours."""
        if not leases:
            return set()
        with self.engine.transaction() as conn:
            kept = scalars(
                conn,
                query("renew_leases"),
                {
                    "account_ids": [lease.account_id for lease in leases],
                    "epochs": [lease.epoch for lease in leases],
                    "replica": self.replica,
                    "lease_s": self.lease_s,
                },
            )
            return set(kept)

    def fence(self, conn: Conn, lease: Lease) -> None:
        """Raise inside the merge transaction unless the lease is still ours."""
        held = conn.execute(
            query("fence"),
            {"account_id": lease.account_id, "epoch": lease.epoch, "replica": self.replica},
        ).fetchone()
        if held is None:
            raise RunInterrupted(
                "the account's lease was taken over by another replica; nothing written"
            )

    def release(self, lease: Lease) -> None:
        with self.engine.transaction() as conn:
            conn.execute(
                query("release_lease"),
                {"account_id": lease.account_id, "epoch": lease.epoch, "replica": self.replica},
            )
