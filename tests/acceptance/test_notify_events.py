"""Notification events are derived from the history qrsync records, in the same transaction:
never invented (an account's first listing is its baseline), never lost, once per crossing."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import (
    MP,
    MP_SECRET,
    OA,
    OA_MP,
    OA_SECRET,
    WeChatUser,
    mp_account,
    mp_world,
    oa_account,
    oa_world,
    rows,
    rule,
    scalar,
    toml_config,
)

NOWHERE = "http://127.0.0.1:9/hooks/nowhere"  # (nothing listens: deliveries wait, events stay)


def channel(name: str = "ops", *, extra: str = "") -> str:
    return (
        f'[[notify]]\nname = "{name}"\nkind = "webhook"\nurl_env = "HOOK_URL"\n'
        f'secret_env = "HOOK_SECRET"\n{extra}\n'
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    monkeypatch.setenv("HOOK_URL", NOWHERE)
    monkeypatch.setenv("HOOK_SECRET", "hook-signing-secret-1")


@pytest.fixture
def simulator(fast_simulator: Any) -> Any:
    """The simulator without its rate limit (a person edits rules between syncs)."""
    return fast_simulator


def events(db: Any) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT kind, prefix, details FROM notify_events ORDER BY id")


def kinds(db: Any) -> list[str]:
    return [kind for kind, _prefix, _details in events(db)]


def test_first_listing_is_a_baseline_then_each_change_is_one_event(
    simulator: Any, qrsync: Any, db: Any, env: None
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(
        MP,
        [
            rule("https://a.example.com/1"),
            rule("https://a.example.com/2", state=2),
            rule("https://a.example.com/3", state=2),
            rule("https://a.example.com/4"),
        ],
    )
    qrsync.write_config(toml_config(simulator.url, mp_account() + channel()))
    assert qrsync("sync").exit_code == 0
    assert events(db) == []  # 4 rules seen for the first time are not 4 events

    user = WeChatUser(simulator.url, MP, MP_SECRET)
    user.publish("https://a.example.com/1")
    user.delete("https://a.example.com/2")
    user.edit("https://a.example.com/4", path="pages/new/index")
    user.add("https://a.example.com/5", path="pages/five/index")  # new, unpublished: no event
    assert qrsync("sync").exit_code == 0
    got = {(kind, prefix): details for kind, prefix, details in events(db)}
    assert set(got) == {
        ("rule_published", "https://a.example.com/1"),
        ("rule_deleted", "https://a.example.com/2"),
        ("rule_path_changed", "https://a.example.com/4"),
    }
    assert got[("rule_published", "https://a.example.com/1")]["from_state"] == 1
    changed = got[("rule_path_changed", "https://a.example.com/4")]
    assert (changed["old_path"], changed["path"]) == ("pages/index/index", "pages/new/index")

    assert qrsync("sync").exit_code == 0  # nothing changed: nothing new
    assert len(events(db)) == 3
    # One notification per event for the one channel, recorded with it.
    assert scalar(db, "SELECT count(*) FROM notifications WHERE channel = 'ops'") == 3


def test_a_rule_back_after_a_deletion_is_restored(
    simulator: Any, qrsync: Any, db: Any, env: None
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(
        MP, [rule("https://a.example.com/1", state=2), rule("https://a.example.com/2")]
    )
    qrsync.write_config(toml_config(simulator.url, mp_account() + channel()))
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(MP, [rule("https://a.example.com/2")])
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(
        MP, [rule("https://a.example.com/1", state=2), rule("https://a.example.com/2")]
    )
    assert qrsync("sync").exit_code == 0
    assert [(k, p) for k, p, _ in events(db)] == [
        ("rule_deleted", "https://a.example.com/1"),
        ("rule_restored", "https://a.example.com/1"),
    ]


def test_unpublished_and_filtered_by_event_and_account(
    simulator: Any, qrsync: Any, db: Any, env: None
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.add_account(oa_world())
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1", state=2)])
    simulator.admin.put_rules(
        OA, [rule("https://b.example.com/1", state=2)], miniprogram_appid=OA_MP
    )
    only_mp = 'events = ["rule_unpublished"]\naccounts = ["m*"]'
    config = mp_account() + oa_account() + channel("mp-only", extra=only_mp) + channel("all")
    qrsync.write_config(toml_config(simulator.url, config))
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1", state=1)])
    simulator.admin.put_rules(
        OA, [rule("https://b.example.com/1", state=1)], miniprogram_appid=OA_MP
    )
    assert qrsync("sync").exit_code == 0
    assert sorted(kinds(db)) == ["rule_unpublished", "rule_unpublished"]
    got = rows(
        db,
        "SELECT n.channel, e.prefix FROM notifications n JOIN notify_events e ON e.id = n.event_id"
        " ORDER BY 1, 2",
    )
    assert got == [
        ("all", "https://a.example.com/1"),
        ("all", "https://b.example.com/1"),
        ("mp-only", "https://a.example.com/1"),
    ]


def test_quota_low_once_per_crossing(simulator: Any, qrsync: Any, db: Any, env: None) -> None:
    simulator.admin.add_account(mp_world(pub_quota=20))
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1")])
    qrsync.write_config(
        toml_config(simulator.url, mp_account() + channel(extra="quota_below = 10"))
    )
    for quota, expected in ((20, 0), (10, 1), (8, 1), (9, 1), (15, 1), (3, 2), (2, 2)):
        simulator.admin.patch_account(MP, pub_quota=quota)
        assert qrsync("sync").exit_code == 0
        assert kinds(db).count("quota_low") == expected, quota
    details = [d for k, _, d in events(db) if k == "quota_low"]
    assert [(d["quota"], d["threshold"]) for d in details] == [(10, 10), (3, 10)]


def test_failing_recovered_and_authorization_needed_once(
    simulator: Any, qrsync: Any, db: Any, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1")])
    qrsync.write_config(
        toml_config(simulator.url, mp_account() + channel(extra="failing_runs = 2"))
    )
    assert qrsync("sync").exit_code == 0
    monkeypatch.setenv("MP_SECRET", "a-wrong-secret-value")
    db.execute("DELETE FROM tokens")  # (the cached token would still work)
    for _ in range(4):
        assert qrsync("sync").exit_code == 1
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    assert qrsync("sync").exit_code == 0
    got = events(db)
    assert [k for k, _, _ in got] == [
        "authorization_needed",  # a secret WeChat refuses: once, not at every run
        "account_failing",  # at the 2nd failed run in a row, once
        "account_recovered",
    ]
    assert got[0][2]["errcode"] == 40125
    assert got[1][2]["failed_runs"] == 2
    assert got[2][2]["failed_runs"] == 4
    assert "a-wrong-secret-value" not in str(got)


def test_held_deletions_give_the_command(simulator: Any, qrsync: Any, db: Any, env: None) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule(f"https://a.example.com/{i}") for i in range(10)])
    qrsync.write_config(toml_config(simulator.url, mp_account() + channel()))
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1")])
    assert qrsync("sync").exit_code == 0
    [(kind, _prefix, details)] = events(db)
    assert kind == "deletions_held"
    assert details["held_deletions"] == 9 and details["live_rules"] == 10
    assert details["command"] == "qrsync sync --account mp --allow-mass-delete"
    assert qrsync("sync", "--account", "mp", "--allow-mass-delete").exit_code == 0
    assert kinds(db).count("rule_deleted") == 9


def test_rule_waiting_once_per_version(simulator: Any, qrsync: Any, db: Any, env: None) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(
        MP, [rule("https://a.example.com/1"), rule("https://a.example.com/2", state=2)]
    )
    qrsync.write_config(
        toml_config(simulator.url, mp_account() + channel(extra="waiting_days = 3"))
    )
    assert qrsync("sync").exit_code == 0
    # Four days pass (the channel was configured before them).
    db.execute("UPDATE rules SET changed_at = changed_at - interval '4 days'")
    db.execute("UPDATE notify_channels SET created_at = created_at - interval '5 days'")
    first = qrsync("notify", "deliver")
    assert first.exit_code == 1, first.output  # (nothing listens at NOWHERE: to retry)
    again = qrsync("notify", "deliver")  # the same rule version: no new event, none due yet
    assert again.exit_code == 0 and "0 sent, 0 to retry" in again.output
    [(kind, prefix, details)] = events(db)
    assert (kind, prefix) == ("rule_waiting", "https://a.example.com/1")
    assert details["threshold"] == 3 and details["waited_days"] >= 4


def test_no_channel_no_event(simulator: Any, qrsync: Any, db: Any, env: None) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1")])
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    assert qrsync("sync").exit_code == 0
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1", state=2)])
    assert qrsync("sync").exit_code == 0
    assert events(db) == []


def test_no_success_for_a_duration_is_failing_too(
    simulator: Any, qrsync: Any, db: Any, env: None, database_url: str
) -> None:
    from qrsync.config import load_config
    from qrsync.notify.delivery import Notifier
    from qrsync.store.engine import make_engine

    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule("https://a.example.com/1")])
    qrsync.write_config(toml_config(simulator.url, mp_account() + channel()))
    assert qrsync("sync").exit_code == 0
    # The last success was an hour ago; the account's schedule says every 10 minutes.
    db.execute(
        "UPDATE sync_runs SET started_at = started_at - interval '1 hour',"
        " finished_at = finished_at - interval '1 hour'"
    )
    config = load_config(qrsync.config_path)
    engine = make_engine(database_url, "qrsync")
    try:
        for _ in range(2):
            notifier = Notifier(
                engine,
                config.notify,
                config_file=config.path,
                replica="test",
                schedule_periods={"mp": 600.0},
            )
            notifier.sweep()
            notifier.close()
    finally:
        engine.dispose()
    [(kind, _prefix, details)] = events(db)
    assert kind == "account_failing" and details["threshold"] == 3
    assert details["error"] == "no successful run for 3 periods of its schedule"
