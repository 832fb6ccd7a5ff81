"""The daemon's own discovery schedule, as real processes: two replicas on one database discover
a platform whose authorizers change, exactly one of them in each slot (one discovery_runs row
per slot), and both start syncing the accounts found, and stop syncing the disabled ones,
without a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import rows, scalar, toml_config, wait_for
from test_discovery_platform import enabled_accounts, truth

from qrsync.simulator.platform import (
    PLATFORM,
    PLATFORM_SECRET,
    PLATFORM_TICKET,
    platform_world,
)

DISCOVER_SCHEDULE = "*/4 * * * * *"  # every 4 s (6-field cron: seconds first)
SCHEDULE = "@every 3s"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def replicas(
    fast_simulator: Any, qrsync: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    fast_simulator.admin.reset(world=platform_world(30, seed=11, rules=2))
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", PLATFORM_TICKET)
    config = qrsync.write_config(
        toml_config(
            fast_simulator.url,
            "",
            sync="concurrency = 4",
            extra=(
                f'[daemon]\nschedule = "{SCHEDULE}"\nlease_s = 3\nshutdown_grace_s = 5\n'
                "http_port = 0\n"
                f'[component]\nappid = "{PLATFORM}"\nappsecret_env = "PLATFORM_SECRET"\n'
                f'verify_ticket_env = "PLATFORM_TICKET"\ndiscover = true\n'
                f'discover_schedule = "{DISCOVER_SCHEDULE}"\n'
            ),
        )
    )
    procs: dict[str, Any] = {}
    for name in ("r1", "r2"):
        path = tmp_path / f"{name}.log"
        log = open(path, "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "qrsync", "--config", str(config), "daemon", "--name", name,
             "--http-port", str(_free_port()), "--log-format", "json"],
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs[name] = {"proc": proc, "log": log, "path": path}
    yield procs
    for entry in procs.values():
        if entry["proc"].poll() is None:
            entry["proc"].kill()
            entry["proc"].wait(timeout=30)
        entry["log"].close()


def _synced(db: Any) -> set[str]:
    return {
        name
        for (name,) in rows(
            db,
            "SELECT DISTINCT a.name FROM sync_runs s JOIN accounts a ON a.id = s.account_id "
            "WHERE s.status = 'succeeded'",
        )
    }


@pytest.mark.slow
def test_two_replicas_discover_once_per_slot_and_sync_what_they_find(
    replicas: dict[str, Any], fast_simulator: Any, db: Any
) -> None:
    sim = fast_simulator
    wanted = truth(sim)
    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM discovery_runs WHERE status = 'succeeded'"),
        "a first discovery by a replica",
        60,
    )
    assert enabled_accounts(db) == wanted
    wait_for(lambda: _synced(db) >= wanted, "every discovered account synced by a replica", 90)

    # The platform changes; a later slot's discovery follows it, and the replicas sync the new
    # accounts and stop syncing the ones withdrawn, without a restart.
    churn = sim.admin.churn(PLATFORM, revoke=3, authorize=2, seed=5)
    changed_at = scalar(db, "SELECT now()")
    after = truth(sim)
    assert after != wanted
    wait_for(
        lambda: scalar(
            db,
            "SELECT count(*) FROM discovery_runs WHERE status = 'succeeded' AND started_at > %s",
            changed_at,
        ),
        "a discovery after the platform changed",
        60,
    )
    assert enabled_accounts(db) == after
    new = after - wanted
    gone = {name for name in wanted if name.split("-")[1] in churn["revoked"]}
    assert gone and gone.isdisjoint(after)
    if new:
        wait_for(lambda: _synced(db) >= new, "the new accounts synced by a replica", 60)
    disabled_at = scalar(
        db,
        "SELECT max(finished_at) FROM discovery_runs WHERE status = 'succeeded' AND disabled > 0",
    )
    # Two more account slots, and a discovery poll, go by: nothing of the withdrawn ones starts.
    later = scalar(db, "SELECT now() + interval '8 seconds'")
    wait_for(lambda: scalar(db, "SELECT now() > %s", later), "8 seconds to pass", 30)
    started = scalar(
        db,
        "SELECT count(*) FROM sync_runs s JOIN accounts a ON a.id = s.account_id "
        "WHERE a.name = ANY(%s) AND s.started_at > %s + interval '6 seconds'",
        sorted(gone),
        disabled_at,
    )
    assert started == 0

    # Exactly one discovery per slot, whichever replica claimed it.
    slots = rows(
        db,
        "SELECT scheduled_for, count(*) FROM discovery_runs WHERE trigger = 'schedule' "
        "GROUP BY 1 ORDER BY 1",
    )
    assert len(slots) >= 3 and all(n == 1 for _, n in slots)
    assert {r for (r,) in rows(db, "SELECT DISTINCT replica FROM discovery_runs")} <= {"r1", "r2"}
    for entry in replicas.values():
        entry["proc"].send_signal(signal.SIGTERM)
    for entry in replicas.values():
        assert entry["proc"].wait(timeout=60) == 0
        text = entry["path"].read_text()
        assert "refreshtoken@@@" not in text and PLATFORM_SECRET not in text
        assert "Traceback" not in text
