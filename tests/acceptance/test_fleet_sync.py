"""A sync of many accounts (qrsync.fleet): the listings are made from one thread, unchanged runs
are recorded together, and everything else runs as a run of one account does, with the same
calls, retries, counts and tables."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from helpers import WeChatUser, mp_account, oa_account, oa_world, rows, scalar, toml_config
from tokenfaults_helpers import last_run, live_rules, truth

SECRET = "fleet-secret-value"
MPS = [f"wx8{i:015d}" for i in range(6)]
OAS = [f"wx9{i:015d}" for i in range(2)]
LINKED = [f"wxa{i:015d}" for i in range(2)]
MP_RULES = 12
OA_RULES = 120  # three pages of 50
MAX_RETRIES = 3  # helpers.toml_config


@pytest.fixture
def fleet(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Six mini programs and two service accounts, synced once (their first listings)."""
    sim = fast_simulator
    for appid in MPS:
        # (The last one's total_count says one more than it lists, as WeChat's own example.)
        offset = 1 if appid == MPS[-1] else 0
        sim.admin.add_account(
            {"appid": appid, "kind": "miniprogram", "secret": SECRET, "total_count_offset": offset}
        )
        sim.admin.generate_rules(appid, MP_RULES, published_fraction=0.5)
    for appid, linked in zip(OAS, LINKED, strict=True):
        sim.admin.add_account(oa_world(appid=appid, secret=SECRET, linked=linked))
        sim.admin.generate_rules(appid, OA_RULES, miniprogram_appid=linked)
    monkeypatch.setenv("FLEET_SECRET", SECRET)
    accounts = "".join(mp_account(f"mp{i}", appid, "FLEET_SECRET") for i, appid in enumerate(MPS))
    accounts += "".join(
        oa_account(f"oa{i}", appid, linked, "FLEET_SECRET")
        for i, (appid, linked) in enumerate(zip(OAS, LINKED, strict=True))
    )
    qrsync.write_config(
        toml_config(sim.url, accounts, api="requests_per_second = 100", sync="page_size = 50")
    )
    first = qrsync("sync")
    assert first.exit_code == 0 and "8 succeeded" in first.output, first.output
    sim.admin.clear_calls()
    return sim


def _results(output: str) -> dict[str, dict[str, Any]]:
    return {r["account"]: r for r in json.loads(output)["accounts"]}


def _qrcodejumpget_calls(sim: Any, appid: str) -> int:
    return len(sim.admin.calls(endpoint="qrcodejumpget", appid=appid))


def test_unchanged_changed_and_failing_accounts_in_one_sync(
    fleet: Any, qrsync: Any, db: Any
) -> None:
    sim = fleet
    last_before = scalar(db, "SELECT max(id) FROM sync_runs")
    WeChatUser(sim.url, MPS[1], SECRET).publish(
        next(r["prefix"] for r in sim.admin.rules(MPS[1]) if r["state"] == 1)
    )
    WeChatUser(sim.url, OAS[1], SECRET, miniprogram_appid=LINKED[1]).delete(
        sim.admin.rules(OAS[1], LINKED[1])[60]["prefix"]
    )
    sim.admin.add_fault(endpoint="qrcodejumpget", appid=MPS[2], errcode=-1, times=-1)
    sim.admin.add_fault(endpoint="qrcodejumpget", appid=MPS[3], errcode=40097, times=-1)
    sim.admin.add_fault(endpoint="qrcodejumpget", appid=MPS[4], errcode=40001, times=1)
    sim.admin.add_fault(endpoint="qrcodejumpget", appid=OAS[0], page_num=2, errcode=-1, times=1)

    result = qrsync("sync", "--json")
    assert result.exit_code == 1, result.output
    runs = _results(result.stdout)
    for name, rules in (("mp0", MP_RULES), ("mp5", MP_RULES)):
        assert runs[name]["status"] == "succeeded"
        assert (runs[name]["unchanged"], runs[name]["inserted"]) == (rules, 0)
        assert runs[name]["api_calls"] == 1
    assert runs["mp0"]["message"] is None
    assert runs["mp5"]["message"] == (
        f"mini-program listing holds {MP_RULES} rules but its total_count says {MP_RULES + 1} "
        "(WeChat's own example does this); applied as listed"
    )
    assert last_run(db, "mp5")["message"] == runs["mp5"]["message"]
    assert (runs["mp1"]["status"], runs["mp1"]["updated"]) == ("succeeded", 1)
    assert (runs["oa1"]["status"], runs["oa1"]["deleted"]) == ("succeeded", 1)
    # A retryable errcode: the first attempt was the fleet's, the retries its run's; as many
    # calls as a run of one account makes, each counted once.
    assert runs["mp2"]["status"] == "failed" and runs["mp2"]["errcode"] == -1
    assert runs["mp2"]["api_calls"] == 1 + MAX_RETRIES == _qrcodejumpget_calls(sim, MPS[2])
    # A fatal one: one call.
    assert runs["mp3"]["status"] == "failed" and runs["mp3"]["errcode"] == 40097
    assert runs["mp3"]["api_calls"] == 1 == _qrcodejumpget_calls(sim, MPS[3])
    # A rejected token: fetched again, and the listing asked again, once.
    assert runs["mp4"]["status"] == "succeeded" and runs["mp4"]["unchanged"] == MP_RULES
    assert runs["mp4"]["api_calls"] == 2 == _qrcodejumpget_calls(sim, MPS[4])
    assert sim.admin.calls(endpoint="stable_token", appid=MPS[4])  # fetched again
    # A later page failing once: its run goes on from that page (pages 1, 2, 2 again, 3).
    assert runs["oa0"]["status"] == "succeeded" and runs["oa0"]["unchanged"] == OA_RULES
    assert runs["oa0"]["api_calls"] == _qrcodejumpget_calls(sim, OAS[0]) == 4
    pages = [(c["page_num"], c["errcode"]) for c in sim.admin.calls(appid=OAS[0])]
    assert [p for p in pages if p[0] is not None] == [(1, 0), (2, -1), (2, 0), (3, 0)]

    for appid, name in [*zip(MPS, [f"mp{i}" for i in range(6)], strict=True)]:
        if name not in ("mp2", "mp3"):
            assert live_rules(db, name) == truth(sim, appid)
    assert live_rules(db, "oa1") == truth(sim, OAS[1], LINKED[1])
    new_runs = rows(
        db,
        "SELECT status, count(*) FROM sync_runs WHERE id > %s GROUP BY status ORDER BY status",
        last_before,
    )
    assert new_runs == [("failed", 2), ("succeeded", 6)]
    # Every run that went through has its snapshot; the unchanged ones say so.
    assert (
        scalar(
            db,
            "SELECT count(*) FROM sync_runs s JOIN account_snapshots p ON p.sync_run_id = s.id "
            "WHERE s.id > %s AND p.complete",
            last_before,
        )
        == 6
    )
    mp0 = last_run(db, "mp0")
    assert (mp0["status"], mp0["unchanged"], mp0["rules_seen"], mp0["api_calls"]) == (
        "succeeded",
        MP_RULES,
        MP_RULES,
        1,
    )
    assert mp0["finished_at"] >= mp0["started_at"]


def test_dead_runs_of_unchanged_accounts_are_closed_by_the_batch(
    fleet: Any, qrsync: Any, db: Any
) -> None:
    account_id = scalar(db, "SELECT id FROM accounts WHERE name = 'mp0'")
    dead = scalar(
        db,
        "INSERT INTO sync_runs (account_id, trigger, started_at) VALUES (%s, 'cli', now()) "
        "RETURNING id",
        account_id,
    )
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    assert _results(result.stdout)["mp0"]["unchanged"] == MP_RULES
    closed = rows(db, "SELECT status, abandoned, error FROM sync_runs WHERE id = %s", dead)
    run_id = last_run(db, "mp0")["id"]
    assert closed == [
        (
            "failed",
            True,
            f"abandoned: the process running it ended before the run did (closed by run {run_id})",
        )
    ]
    assert "closed 1 earlier run(s)" in result.stderr


def test_an_account_whose_run_is_under_way_waits_for_it(
    fleet: Any, qrsync: Any, db: Any, database_url: str
) -> None:
    """The batch tries the accounts' locks; a busy account's run waits for its lock the
    ordinary way, then finds its listing unchanged."""
    import psycopg

    account_id = scalar(db, "SELECT id FROM accounts WHERE name = 'mp0'")
    holder = psycopg.connect(database_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(1903260011, %s)", (account_id,))
    outcome: dict[str, Any] = {}
    syncing = threading.Thread(target=lambda: outcome.update(result=qrsync("sync", "--json")))
    syncing.start()
    before = scalar(db, "SELECT max(id) FROM sync_runs")
    try:
        waiting = recorded = None
        for _ in range(300):  # bounded: 30 s
            waiting = scalar(
                db,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND classid = 1903260011 AND objid = %s",
                account_id,
            )
            recorded = scalar(
                db, "SELECT count(*) FROM sync_runs WHERE id > %s AND status = 'succeeded'", before
            )
            if (waiting and recorded == 7) or not syncing.is_alive():
                break
            syncing.join(0.1)
        # The busy account's run waits for its lock; every other account was recorded.
        assert (waiting, recorded) == (1, 7)
    finally:
        holder.execute("SELECT pg_advisory_unlock(1903260011, %s)", (account_id,))
        holder.close()
        syncing.join(60)
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    runs = _results(result.stdout)
    assert all(r["status"] == "succeeded" for r in runs.values())
    assert runs["mp0"]["unchanged"] == MP_RULES and runs["mp0"]["api_calls"] == 1
    assert _qrcodejumpget_calls(fleet, MPS[0]) == 1  # listed once, by the fleet
