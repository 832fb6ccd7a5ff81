"""Replicas whose clocks disagree: one `qrsync daemon` runs 90 s ahead (libfaketime), the other
on time. Slots are named and leases expire on the database's clock, so every (account, slot)
still has exactly one run, and no replica names a slot the database has not reached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import require_tool, wait_for

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
NAMES = [f"skew-{i}" for i in range(6)]


def _daemon(config: Path, name: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "daemon", "--name", name,
         "--http-port", "0", "--log-format", "json"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def _runs_by(db: Any, replica: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM sync_runs WHERE replica = %s AND status = 'succeeded'", (replica,)
    ).fetchone()
    return int(row[0])


@pytest.mark.slow
def test_a_replica_90s_ahead_still_gives_one_run_per_slot(
    simulator: Any, qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool(LIBFAKETIME, "faketime")
    blocks = []
    for i, name in enumerate(NAMES):
        appid = f"wx{i + 500:016d}"
        simulator.admin.add_account(
            {
                "appid": appid,
                "kind": "miniprogram",
                "secret": f"s-{name}",
                "rule_sets": [{"count": 3}],
            }
        )
        monkeypatch.setenv(f"SKEW_SECRET_{i}", f"s-{name}")
        blocks.append(
            f'[[accounts]]\nname = "{name}"\nkind = "miniprogram"\nappid = "{appid}"\n'
            f'token = {{ source = "stable_token", secret_env = "SKEW_SECRET_{i}" }}\n'
        )
    config = qrsync.write_config(
        f'[api]\nbase_url = "{simulator.url}"\n[daemon]\nschedule = "@every 2s"\n'
        f"lease_s = 5\nshutdown_grace_s = 5\n\n" + "".join(blocks)
    )
    # The wall clock only is skewed, as NTP gone wrong does (the monotonic clock is left alone:
    # libfaketime would otherwise lengthen every timed wait by the offset).
    ahead_env = {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": "+90s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    ahead = _daemon(config, "ahead", tmp_path / "ahead.log", ahead_env)
    on_time = _daemon(config, "on-time", tmp_path / "on-time.log", dict(os.environ))
    try:
        wait_for(
            lambda: _runs_by(db, "ahead") >= 3 and _runs_by(db, "on-time") >= 3,
            "both replicas to run slots",
            60,
        )
    finally:
        for proc in (ahead, on_time):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in (ahead, on_time)]
    assert codes == [0, 0], (tmp_path / "ahead.log").read_text()[-2000:]

    duplicates = db.execute(
        "SELECT account_id, scheduled_for, count(*) FROM sync_runs WHERE NOT abandoned"
        " GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert duplicates == []
    # Slots are named from the database's clock: none lies in the database's future (a
    # replica naming slots from its own clock, 90 s ahead, would have).
    future = db.execute(
        "SELECT replica, scheduled_for FROM sync_runs WHERE scheduled_for > now()"
    ).fetchall()
    assert future == []
    assert db.execute("SELECT count(*) FROM sync_runs WHERE status = 'running'").fetchone()[0] == 0
    # Both replicas name the same slots: on the same 2 s grid of the database's clock.
    grids = {
        replica: {int(epoch) % 2 for (epoch,) in rows}
        for replica in ("ahead", "on-time")
        for rows in [
            db.execute(
                "SELECT extract(epoch FROM scheduled_for) FROM sync_runs WHERE replica = %s",
                (replica,),
            ).fetchall()
        ]
    }
    assert grids["ahead"] == grids["on-time"]
