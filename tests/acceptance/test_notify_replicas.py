"""Two and three `qrsync daemon` replicas on one database sync an account every second and
sweep the same outbox while rounds of changes add events to it: every event reaches every
channel once (none twice, none lost), sent by the replicas only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import MP, MP_SECRET, mp_account, mp_world, rows, rule, scalar, toml_config, wait_for

SECRET = "hook-signing-secret-2"
PREFIX = "https://shop.example.cn/r/"
RULES = 60
ROUNDS = 6


@pytest.fixture
def simulator(fast_simulator: Any) -> Any:
    return fast_simulator


@pytest.fixture
def config(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    for name, kind, robot in (
        ("hook", "webhook", "fleet-hook"),
        ("ding", "dingtalk", "fleet-ding"),
    ):
        monkeypatch.setenv(f"{name.upper()}_URL", simulator.admin.receiver_url(kind, robot))
        monkeypatch.setenv(f"{name.upper()}_SECRET", SECRET)
        simulator.admin.set_receiver(kind, robot, secret=SECRET)
    channels = "".join(
        f'[[notify]]\nname = "{name}"\nkind = "{kind}"\nurl_env = "{name.upper()}_URL"\n'
        f'secret_env = "{name.upper()}_SECRET"\n\n'
        for name, kind in (("hook", "webhook"), ("ding", "dingtalk"))
    )
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule(f"{PREFIX}{i}") for i in range(RULES)])
    # The replicas sync and deliver: no `qrsync sync` runs here (it would deliver at its end).
    daemon = '[daemon]\nschedule = "@every 1s"\nlease_s = 5\nhttp_port = 0\nshutdown_grace_s = 5\n'
    path: Path = qrsync.write_config(
        toml_config(simulator.url, mp_account() + channels, extra=daemon)
    )
    return path


def start_replicas(config: Path, count: int, tmp_path: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for index in range(count):
        log = open(tmp_path / f"r{index}.log", "wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "qrsync",
                    "--config",
                    str(config),
                    "daemon",
                    "--name",
                    f"r{index}",
                ],
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_deliver_each_event_once_per_channel(
    simulator: Any,
    qrsync: Any,
    db: Any,
    config: Path,
    tmp_path: Path,
    stop: list[subprocess.Popen[bytes]],
    replicas: int,
) -> None:
    stop.extend(start_replicas(config, replicas, tmp_path))
    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM rules") == RULES,
        "the replicas' first sync (the baseline)",
        timeout_s=120,
    )
    for round_ in range(ROUNDS):
        # Each round publishes or unpublishes every rule: 60 events, while the replicas sweep.
        state = 2 if round_ % 2 == 0 else 1
        simulator.admin.put_rules(MP, [rule(f"{PREFIX}{i}", state=state) for i in range(RULES)])
        wait_for(
            lambda round_=round_: (
                scalar(db, "SELECT count(*) FROM notify_events") == RULES * (round_ + 1)
            ),
            f"the events of round {round_ + 1}",
            timeout_s=120,
        )
    events = [r[0] for r in rows(db, "SELECT id FROM notify_events ORDER BY id")]
    assert len(events) == RULES * ROUNDS
    wait_for(
        lambda: (
            scalar(db, "SELECT count(*) FROM notifications WHERE status = 'sent'")
            == 2 * len(events)
        ),
        "every notification to be sent",
        timeout_s=180,
    )
    hook = [
        i
        for m in simulator.admin.receiver_messages("webhook", "fleet-hook", accepted=True)
        for i in m["event_ids"]
    ]
    repeats = [i for i, n in Counter(hook).items() if n > 1]
    assert repeats == [] and sorted(hook) == events  # none twice, none lost
    # DingTalk's messages are digests: as many accepted as recorded sent, none refused.
    ding = simulator.admin.receiver_messages("dingtalk", "fleet-ding")
    assert all(m["accepted"] for m in ding)
    sent = scalar(db, "SELECT count(*) FROM notify_messages WHERE channel = 'ding' AND ok")
    assert len(ding) == sent
    senders = {r[0] for r in rows(db, "SELECT DISTINCT replica FROM notify_messages")}
    assert senders <= {f"r{index}" for index in range(replicas)}  # (which ones: timing)
    for index in range(replicas):
        log = (tmp_path / f"r{index}.log").read_text(encoding="utf-8", errors="replace")
        assert SECRET not in log and "fleet-hook" not in log and "fleet-ding" not in log
