"""Notifications delivered to the simulator's receivers, which check each platform's format,
signature and limits: once per channel and event, digests within limits, retried until the
receiver is back, clear errors naming the channel, no secret in any output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import (
    MP,
    MP_SECRET,
    blocked_backend,
    mp_account,
    mp_world,
    rows,
    rule,
    scalar,
    toml_config,
    wait_for,
)

SECRET = "hook-signing-secret-1"
PREFIX = "https://shop.example.cn/q/"


@pytest.fixture
def simulator(fast_simulator: Any) -> Any:
    """The simulator without its WeChat rate limit (its receivers keep theirs)."""
    return fast_simulator


def channel(name: str, kind: str, *, secret: bool = True, extra: str = "") -> str:
    variable = name.upper().replace("-", "_")
    signed = f'secret_env = "{variable}_SECRET"\n' if secret else ""
    return (
        f'[[notify]]\nname = "{name}"\nkind = "{kind}"\nurl_env = "{variable}_URL"\n'
        f"{signed}{extra}\n"
    )


def use_channel(
    sim: Any, monkeypatch: pytest.MonkeyPatch, name: str, kind: str, robot: str, secret: str | None
) -> None:
    """Point channel ``name``'s environment at the simulator's robot ``robot``."""
    variable = name.upper().replace("-", "_")
    monkeypatch.setenv(f"{variable}_URL", sim.admin.receiver_url(kind, robot))
    if secret is not None:
        monkeypatch.setenv(f"{variable}_SECRET", secret)
        sim.admin.set_receiver(kind, robot, secret=secret)


def published(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [rule(f"{PREFIX}{i}", state=2) for i in range(start, start + count)]


def unpublished(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [rule(f"{PREFIX}{i}", state=1) for i in range(start, start + count)]


def baseline(
    sim: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, config: str, rules: int
) -> None:
    """An account with ``rules`` unpublished rules, synced once (its baseline: no event)."""
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    sim.admin.add_account(mp_world())
    sim.admin.put_rules(MP, unpublished(rules))
    qrsync.write_config(toml_config(sim.url, mp_account() + config))
    assert qrsync("sync").exit_code == 0


def webhook_ids(sim: Any, robot: str) -> list[int]:
    """Every event id the webhook robot accepted, repeats kept."""
    return [
        i
        for m in sim.admin.receiver_messages("webhook", robot, accepted=True)
        for i in m["event_ids"]
    ]


def event_ids(db: Any) -> list[int]:
    return [r[0] for r in rows(db, "SELECT id FROM notify_events ORDER BY id")]


def test_notify_test_says_what_the_receiver_answered(
    simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    use_channel(simulator, monkeypatch, "ops", "dingtalk", "robot-1", SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account() + channel("ops", "dingtalk")))
    result = qrsync("notify", "test", "--channel", "ops")
    assert result.exit_code == 0, result.output
    assert "channel 'ops' (dingtalk): accepted" in result.output
    assert len(simulator.admin.receiver_messages("dingtalk", "robot-1", accepted=True)) == 1

    # The robot's secret is another one: DingTalk refuses the signature, named for the channel.
    simulator.admin.set_receiver("dingtalk", "robot-1", secret="another-secret-value")
    refused = qrsync("notify", "test", "--channel", "ops")
    assert refused.exit_code == 1
    assert "channel 'ops' (dingtalk): refused" in refused.output
    assert "310000" in refused.output and "sign" in refused.output
    for secret in (
        SECRET,
        "access_token=robot-1",
        simulator.admin.receiver_url("dingtalk", "robot-1"),
    ):
        assert secret not in refused.output and secret not in result.output

    unknown = qrsync("notify", "test", "--channel", "nope")
    assert unknown.exit_code == 2 and "no notification channel named 'nope'" in unknown.output
    monkeypatch.delenv("OPS_URL")
    missing = qrsync("notify", "test", "--channel", "ops")
    assert missing.exit_code == 2
    assert "notify 'ops'.url_env: environment variable OPS_URL is not set" in missing.output


def test_a_sync_delivers_its_events_once(
    simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    use_channel(simulator, monkeypatch, "hook", "webhook", "hook-1", SECRET)
    baseline(simulator, qrsync, monkeypatch, channel("hook", "webhook"), 5)
    assert simulator.admin.receiver_messages("webhook", "hook-1") == []
    simulator.admin.put_rules(MP, published(3) + unpublished(2, 3))
    result = qrsync("sync")
    assert result.exit_code == 0 and "notifications: 3 sent, 0 to retry" in result.output
    assert sorted(webhook_ids(simulator, "hook-1")) == event_ids(db)
    assert len(event_ids(db)) == 3
    assert qrsync("sync").exit_code == 0
    assert qrsync("notify", "deliver").exit_code == 0
    assert len(webhook_ids(simulator, "hook-1")) == 3  # nothing twice
    assert scalar(db, "SELECT count(*) FROM notifications WHERE status = 'sent'") == 3
    status = qrsync("notify", "status", "--json")
    assert status.exit_code == 0 and '"pending": 0' in status.output


def test_a_receiver_down_for_a_day_gets_everything_when_back(
    simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    use_channel(simulator, monkeypatch, "ding", "dingtalk", "robot-2", SECRET)
    use_channel(simulator, monkeypatch, "hook", "webhook", "hook-2", SECRET)
    config = channel("ding", "dingtalk") + channel("hook", "webhook")
    baseline(simulator, qrsync, monkeypatch, config, 120)
    simulator.admin.set_receiver("dingtalk", "robot-2", secret=SECRET, fault="down")
    simulator.admin.set_receiver("webhook", "hook-2", secret=SECRET, fault="http_500")
    # During the "day", over three syncs: 60 rules published, 60 more, the first 60 unpublished.
    simulator.admin.put_rules(MP, published(60) + unpublished(60, 60))
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(MP, published(120))
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(MP, unpublished(60) + published(60, 60))
    assert qrsync("sync").exit_code == 0
    assert len(event_ids(db)) == 180  # 60 published, 60 more, 60 unpublished
    failing = qrsync("notify", "status")
    assert "ding (dingtalk): 180 pending, 180 failing, 0 sent" in failing.output
    assert simulator.admin.receiver_messages("dingtalk", "robot-2", accepted=True) == []

    # The receivers are back, and the day is over (every backoff has run out).
    simulator.admin.set_receiver("dingtalk", "robot-2", secret=SECRET)
    simulator.admin.set_receiver("webhook", "hook-2", secret=SECRET)
    db.execute("UPDATE notifications SET next_attempt_at = now()")
    result = qrsync("notify", "deliver")
    assert result.exit_code == 0, result.output
    assert "notifications: 360 sent, 0 to retry" in result.output
    got = [
        m
        for m in simulator.admin.receiver_messages("dingtalk", "robot-2")
        if m["outcome"] != "down"
    ]
    assert got and all(m["accepted"] for m in got)  # digests within DingTalk's size and rate
    assert len(got) <= 10
    assert sorted(webhook_ids(simulator, "hook-2")) == event_ids(db)  # none lost, none twice
    assert scalar(db, "SELECT count(*) FROM notifications WHERE status <> 'sent'") == 0


def test_an_oversized_digest_is_cut_within_the_limit(
    simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, db: Any
) -> None:
    use_channel(simulator, monkeypatch, "wecom", "wecom", "robot-3", None)
    baseline(simulator, qrsync, monkeypatch, channel("wecom", "wecom", secret=False), 400)
    long_path = "pages/" + "很长的路径/" * 30 + "index"
    simulator.admin.put_rules(
        MP, [rule(f"{PREFIX}{i}", state=2, path=long_path) for i in range(400)]
    )
    result = qrsync("sync")  # 400 published, 400 paths changed: 800 events
    assert result.exit_code == 0 and "notifications: 800 sent, 0 to retry" in result.output
    got = simulator.admin.receiver_messages("wecom", "robot-3")
    assert 1 <= len(got) <= 10 and all(m["accepted"] for m in got)
    assert all(m["bytes"] <= 4096 for m in got)
    assert any(
        "more" in m["text"] and "qrsync notify status --channel wecom" in m["text"] for m in got
    )


def test_a_bad_signature_secret_is_a_clear_error_naming_the_channel(
    simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, db: Any, database_url: str
) -> None:
    use_channel(simulator, monkeypatch, "feishu-ops", "feishu", "hook-id-4", SECRET)
    baseline(simulator, qrsync, monkeypatch, channel("feishu-ops", "feishu"), 2)
    simulator.admin.set_receiver("feishu", "hook-id-4", secret="the-robots-real-secret")
    simulator.admin.put_rules(MP, published(2))
    result = qrsync("-v", "sync")
    assert result.exit_code == 0  # the sync went through; the notifications wait
    assert "channel 'feishu-ops': " in result.stderr and "19021" in result.stderr
    assert "notifications: 0 sent, 2 to retry" in result.output
    status = qrsync("notify", "status", "--channel", "feishu-ops")
    assert "feishu-ops (feishu): 2 pending, 2 failing, 0 sent" in status.output
    assert "19021" in status.output
    errors = [r[0] for r in rows(db, "SELECT last_error FROM notifications")]
    assert all("19021" in e for e in errors)
    answers = [r[0] for r in rows(db, "SELECT detail FROM notify_messages")]
    as_json = qrsync("notify", "status", "--json").output
    metrics = _metrics(database_url)
    assert 'qrsync_notifications_pending{channel="feishu-ops"} 2.0' in metrics
    assert "qrsync_notifications_oldest_pending_age_seconds" in metrics
    for text in [result.output, result.stderr, status.output, as_json, metrics, *errors, *answers]:
        assert SECRET not in text and "hook-id-4" not in text


def _metrics(database_url: str) -> str:
    from prometheus_client import generate_latest

    from qrsync.metrics import Metrics
    from qrsync.store.engine import make_engine

    engine = make_engine(database_url, "qrsync")
    try:
        return generate_latest(Metrics(engine).registry).decode()
    finally:
        engine.dispose()


def _deliver(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "notify", "deliver"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _hold(database_url: str, mode: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url)
    conn.execute("SET search_path TO qrsync")
    conn.execute(f"LOCK TABLE notify_messages IN {mode} MODE")
    return conn


@pytest.mark.parametrize(
    ("mode", "statement", "copies"),
    [
        # Killed after the claim, before sending (held where it counts the minute's messages):
        # nothing was sent; the next process sends it once.
        ("ACCESS EXCLUSIVE", "FROM notify_messages", 1),
        # Killed after sending, before recording it: sent again (at least once).
        ("SHARE", "INSERT INTO notify_messages", 2),
    ],
)
def test_kill_9_between_claim_send_and_record(
    simulator: Any,
    qrsync: Any,
    monkeypatch: pytest.MonkeyPatch,
    db: Any,
    database_url: str,
    mode: str,
    statement: str,
    copies: int,
) -> None:
    use_channel(simulator, monkeypatch, "hook", "webhook", "hook-5", SECRET)
    baseline(simulator, qrsync, monkeypatch, channel("hook", "webhook"), 1)
    simulator.admin.put_rules(MP, published(1))
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hooks/nowhere")  # the sync's sweep fails
    assert qrsync("sync").exit_code == 0
    monkeypatch.setenv("HOOK_URL", simulator.admin.receiver_url("webhook", "hook-5"))
    db.execute("UPDATE notifications SET next_attempt_at = now()")
    [event] = event_ids(db)
    holder = _hold(database_url, mode)
    try:
        proc = _deliver(qrsync.config_path)
        pid = wait_for(lambda: blocked_backend(db, statement), f"deliver to block at {statement}")
        assert pid
        proc.kill()
        proc.wait(timeout=30)
    finally:
        holder.rollback()
        holder.close()
    # The killed process's claim died with its connection.
    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid) == 0,
        "the killed process's backend to go",
    )
    assert scalar(db, "SELECT status FROM notifications") == "pending"
    result = qrsync("notify", "deliver")
    assert result.exit_code == 0 and "1 sent" in result.output
    assert webhook_ids(simulator, "hook-5") == [event] * copies
    assert scalar(db, "SELECT status FROM notifications") == "sent"
