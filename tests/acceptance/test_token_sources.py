"""SPEC behaviour 6 (and 3, 7 where a token fails): the four token sources, through the real CLI,
the simulator's call log and the ``tokens`` / ``authorizer_refresh_tokens`` tables."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
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
from tokenfaults_helpers import (
    COMPONENT,
    COMPONENT_SECRET,
    REFRESH_SEED,
    VERIFY_TICKET,
    account_with_token,
    assert_no_secret_shown,
    authorizer_token_answer,
    component_oa_account,
    component_section,
    component_world,
    current_refresh_token,
    fetch_stable_token,
    last_run,
    live_rules,
    rule_tables,
    truth,
)

from qrsync.config import load_config
from qrsync.store.engine import make_engine
from qrsync.sync import Syncer, SyncRequest

OA_MP2 = "wx1000000000000008"
OA_MP3 = "wx1000000000000007"
OA_MP4 = "wx1000000000000006"
FAST = "requests_per_second = 100"  # the simulator's limit is off: page without waiting
MP_RULES = [rule(f"https://a.example.com/{i}", state=1 + i % 2) for i in range(6)]


def _token_calls(sim: Any, endpoint: str = "stable_token") -> list[dict[str, Any]]:
    return sim.admin.calls(endpoint=endpoint)


# --- stable_token --------------------------------------------------------------------------------


@pytest.fixture
def mp_setup(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    fast_simulator.admin.add_account(mp_world())
    fast_simulator.admin.put_rules(MP, MP_RULES)
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(fast_simulator.url, mp_account()))
    return fast_simulator


def test_stable_token_is_fetched_once_and_reused_across_runs(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    first = qrsync("sync")
    second = qrsync("sync")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert len(_token_calls(mp_setup)) == 1
    assert len(mp_setup.admin.calls(endpoint="qrcodejumpget")) == 2
    assert live_rules(db, "mp") == truth(mp_setup, MP)
    assert_no_secret_shown(mp_setup, db, [first.output, second.output])


def test_tokens_table_holds_the_token_until_five_minutes_before_it_expires(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    assert qrsync("sync").exit_code == 0
    (token, lifetime, reuse_margin, reusable), *others = rows(
        db,
        "SELECT access_token, extract(epoch FROM expires_at - fetched_at), "
        "extract(epoch FROM expires_at - reuse_until), reuse_until > now() FROM tokens",
    )
    assert others == []
    # stable_token gives back the token in force: the one qrsync stored is that one.
    assert token == fetch_stable_token(mp_setup.url, MP, MP_SECRET)
    assert 7100 <= lifetime <= 7200
    assert reuse_margin == 300
    assert reusable is True


def test_accounts_sharing_an_appid_share_one_token_fetch(
    fast_simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = fast_simulator
    sim.admin.add_account(oa_world(linked_miniprograms=[OA_MP, OA_MP2]))
    sim.admin.generate_rules(OA, 70, miniprogram_appid=OA_MP)
    sim.admin.generate_rules(OA, 40, miniprogram_appid=OA_MP2)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    accounts = oa_account("oa-one") + oa_account("oa-two", miniprogram_appid=OA_MP2)
    qrsync.write_config(toml_config(sim.url, accounts, api=FAST, sync="page_size = 50"))
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert len(_token_calls(sim)) == 1
    assert scalar(db, "SELECT count(*) FROM tokens") == 1
    assert live_rules(db, "oa-one") == truth(sim, OA, OA_MP)
    assert live_rules(db, "oa-two") == truth(sim, OA, OA_MP2)


@pytest.mark.parametrize(
    ("spoil", "errcode"),
    [("expire_tokens", 42001), ("invalidate_tokens", 40001)],
    ids=["expired", "invalidated"],
)
def test_rejected_token_is_refreshed_once_and_the_run_succeeds(
    mp_setup: Any, qrsync: Any, db: Any, spoil: str, errcode: int
) -> None:
    assert qrsync("sync").exit_code == 0
    old = scalar(db, "SELECT access_token FROM tokens")
    WeChatUser(mp_setup.url, MP, MP_SECRET).publish("https://a.example.com/0")
    getattr(mp_setup.admin, spoil)(MP)
    mp_setup.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert len(_token_calls(mp_setup)) == 1
    assert [c["errcode"] for c in mp_setup.admin.calls(endpoint="qrcodejumpget")] == [errcode, 0]
    assert last_run(db, "mp")["status"] == "succeeded"
    assert live_rules(db, "mp") == truth(mp_setup, MP)
    fresh = scalar(db, "SELECT access_token FROM tokens")
    assert fresh != old
    assert_no_secret_shown(mp_setup, db, [result.output], old)


def test_token_rejected_while_wechat_still_hands_it_out_is_force_refreshed(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    # 40014 although stable_token still gives the same token back: only force_refresh helps.
    assert qrsync("sync").exit_code == 0
    old = scalar(db, "SELECT access_token FROM tokens")
    mp_setup.admin.add_fault(endpoint="qrcodejumpget", errcode=40014)
    mp_setup.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert len(_token_calls(mp_setup)) == 2
    assert [c["errcode"] for c in mp_setup.admin.calls(endpoint="qrcodejumpget")] == [40014, 0]
    assert scalar(db, "SELECT access_token FROM tokens") != old


def test_token_replaced_for_one_account_is_taken_up_by_the_other_without_a_fetch(
    fast_simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One account's token is rejected mid-listing and forced anew, which invalidates the old
    one for the other account listing at the same time: that one finds the fresh token in the
    cache (the failed token is replaced only if it is still the cached one)."""
    sim = fast_simulator
    sim.admin.add_account(oa_world(linked_miniprograms=[OA_MP, OA_MP2]))
    sim.admin.generate_rules(OA, 400, miniprogram_appid=OA_MP)
    sim.admin.generate_rules(OA, 400, miniprogram_appid=OA_MP2)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    accounts = oa_account("oa-one") + oa_account("oa-two", miniprogram_appid=OA_MP2)
    qrsync.write_config(toml_config(sim.url, accounts, api=FAST, sync="page_size = 50"))
    assert qrsync("sync").exit_code == 0
    sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, errcode=40014)
    sim.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    # One plain stable_token call that gives the rejected token back, one forced: no more.
    assert len(_token_calls(sim)) == 2
    assert live_rules(db, "oa-one") == truth(sim, OA, OA_MP)
    assert live_rules(db, "oa-two") == truth(sim, OA, OA_MP2)


def test_token_rejected_again_after_the_fresh_one_fails_the_run(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    assert qrsync("sync").exit_code == 0
    before = rule_tables(db)
    mp_setup.admin.put_rules(MP, MP_RULES[:3])
    mp_setup.admin.add_fault(endpoint="qrcodejumpget", errcode=40001, times=-1)
    mp_setup.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    # One fresh token and ONE retry, not a loop.
    assert len(mp_setup.admin.calls(endpoint="qrcodejumpget")) == 2
    run = last_run(db, "mp")
    assert (run["status"], run["errcode"]) == ("failed", 40001)
    assert "account 'mp'" in run["error"]
    assert rule_tables(db) == before
    assert_no_secret_shown(mp_setup, db, [result.output])


def test_refresh_after_another_program_renewed_the_token_leaves_its_token_valid(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    assert qrsync("sync").exit_code == 0
    # Another program using the AppID forces a new token: qrsync's cached one is now invalid.
    theirs = requests.post(
        f"{mp_setup.url}/cgi-bin/stable_token",
        json={
            "grant_type": "client_credential",
            "appid": MP,
            "secret": MP_SECRET,
            "force_refresh": True,
        },
        timeout=10,
    ).json()["access_token"]
    mp_setup.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert len(_token_calls(mp_setup)) == 1
    assert [c["errcode"] for c in mp_setup.admin.calls(endpoint="qrcodejumpget")] == [40001, 0]
    # qrsync took the token in force rather than forcing another: the other program's works.
    assert scalar(db, "SELECT access_token FROM tokens") == theirs
    still = requests.post(
        f"{mp_setup.url}/cgi-bin/wxopen/qrcodejumpget",
        params={"access_token": theirs},
        json={},
        timeout=10,
    ).json()
    assert still["errcode"] == 0


def test_token_past_its_reuse_time_is_fetched_again(mp_setup: Any, qrsync: Any, db: Any) -> None:
    assert qrsync("sync").exit_code == 0
    # As if the token had been cached for 1 h 56 min: within 5 minutes of its expiry.
    db.execute(
        "UPDATE tokens SET fetched_at = fetched_at - interval '6960 seconds', "
        "expires_at = expires_at - interval '6960 seconds', "
        "reuse_until = reuse_until - interval '6960 seconds'"
    )
    mp_setup.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert len(_token_calls(mp_setup)) == 1
    assert [c["errcode"] for c in mp_setup.admin.calls(endpoint="qrcodejumpget")] == [0]
    assert scalar(db, "SELECT reuse_until > now() + interval '1 hour' FROM tokens") is True


def test_wrong_secret_fails_that_account_only(
    fast_simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = fast_simulator
    sim.admin.add_account(mp_world())
    sim.admin.put_rules(MP, MP_RULES)
    sim.admin.add_account(oa_world())
    sim.admin.generate_rules(OA, 30, miniprogram_appid=OA_MP)
    wrong = "wrong-secret-value-789"
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("OA_SECRET", wrong)
    qrsync.write_config(
        toml_config(sim.url, mp_account() + oa_account(), api=FAST, sync="page_size = 50")
    )
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    failed = last_run(db, "oa")
    assert (failed["status"], failed["errcode"]) == ("failed", 40125)
    assert "account 'oa'" in failed["error"] and "40125" in failed["error"]
    assert "secret" in failed["error"]
    assert "account 'oa'" in result.output
    assert sim.admin.calls(endpoint="qrcodejumpget", appid=OA) == []
    assert (
        scalar(
            db,
            "SELECT count(*) FROM rules r JOIN accounts a ON a.id = r.account_id WHERE a.name='oa'",
        )
        == 0
    )
    assert last_run(db, "mp")["status"] == "succeeded"
    assert live_rules(db, "mp") == truth(sim, MP)
    assert_no_secret_shown(sim, db, [result.output], wrong)


# --- central -------------------------------------------------------------------------------------


@pytest.fixture
def central_setup(fast_simulator: Any, qrsync: Any) -> Any:
    fast_simulator.admin.add_account(mp_world())
    fast_simulator.admin.put_rules(MP, MP_RULES)
    token = f'{{ source = "central", url = "{fast_simulator.url}/central/token/{MP}" }}'
    qrsync.write_config(
        toml_config(fast_simulator.url, account_with_token("shop", "miniprogram", MP, token))
    )
    return fast_simulator


def test_central_token_service_supplies_the_token(central_setup: Any, qrsync: Any, db: Any) -> None:
    first = qrsync("sync")
    second = qrsync("sync")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert len(_token_calls(central_setup, "central")) == 1
    assert _token_calls(central_setup) == []
    assert live_rules(db, "shop") == truth(central_setup, MP)
    assert_no_secret_shown(central_setup, db, [first.output, second.output])


def test_central_service_down_fails_the_run_and_changes_nothing(
    central_setup: Any, qrsync: Any, db: Any
) -> None:
    assert qrsync("sync").exit_code == 0
    central_setup.admin.put_rules(MP, [*MP_RULES[1:], rule("https://a.example.com/new")])
    before = rule_tables(db)
    central_setup.admin.invalidate_tokens(MP)
    central_setup.admin.add_fault(endpoint="central", http_status=500, times=-1)
    central_setup.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "shop")
    assert run["status"] == "failed"
    assert "account 'shop'" in run["error"]
    assert "central" in run["error"] and "500" in run["error"]
    assert "account 'shop'" in result.output
    # HTTP 5xx from the token service is retried like any other, up to api.max_retries = 3.
    assert len(_token_calls(central_setup, "central")) == 4
    assert rule_tables(db) == before
    assert_no_secret_shown(central_setup, db, [result.output])
    central_setup.admin.clear_faults()
    assert qrsync("sync").exit_code == 0
    assert live_rules(db, "shop") == truth(central_setup, MP)


# --- static --------------------------------------------------------------------------------------


@pytest.fixture
def static_setup(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    fast_simulator.admin.add_account(mp_world())
    fast_simulator.admin.put_rules(MP, MP_RULES)
    token = fetch_stable_token(fast_simulator.url, MP, MP_SECRET)
    monkeypatch.setenv("SHOP_TOKEN", token)
    config = account_with_token(
        "shop", "miniprogram", MP, '{ source = "static", token_env = "SHOP_TOKEN" }'
    )
    qrsync.write_config(toml_config(fast_simulator.url, config))
    fast_simulator.admin.clear_calls()
    return fast_simulator


def test_static_token_is_used_as_given(static_setup: Any, qrsync: Any, db: Any) -> None:
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert _token_calls(static_setup) == []
    assert [c["errcode"] for c in static_setup.admin.calls(endpoint="qrcodejumpget")] == [0]
    assert live_rules(db, "shop") == truth(static_setup, MP)
    assert_no_secret_shown(static_setup, db, [result.output], os.environ["SHOP_TOKEN"])


def test_rejected_static_token_fails_without_showing_the_token(
    static_setup: Any, qrsync: Any, db: Any
) -> None:
    static_setup.admin.invalidate_tokens(MP)
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "shop")
    assert run["status"] == "failed"
    assert "account 'shop'" in run["error"]
    assert "static token" in run["error"] and "rejected" in run["error"]
    assert "static token" in result.output
    # The same token cannot be retried into working: one call, no token fetched elsewhere.
    assert len(static_setup.admin.calls(endpoint="qrcodejumpget")) == 1
    assert _token_calls(static_setup) == []
    assert scalar(db, "SELECT count(*) FROM rules") == 0
    assert_no_secret_shown(static_setup, db, [result.output], os.environ["SHOP_TOKEN"])


def test_rejected_static_token_records_wechats_errcode(
    static_setup: Any, qrsync: Any, db: Any
) -> None:
    static_setup.admin.invalidate_tokens(MP)
    assert qrsync("sync").exit_code == 1
    assert last_run(db, "shop")["errcode"] == 40001


# --- component (third-party platform) ------------------------------------------------------------


@pytest.fixture
def platform(fast_simulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A verified service account without its own secret, authorised to a platform."""
    fast_simulator.admin.add_account(oa_world(secret=None))
    fast_simulator.admin.generate_rules(OA, 120, miniprogram_appid=OA_MP)
    monkeypatch.setenv("COMPONENT_SECRET", COMPONENT_SECRET)
    monkeypatch.setenv("VERIFY_TICKET", VERIFY_TICKET)
    monkeypatch.setenv("OA_REFRESH_TOKEN", REFRESH_SEED)
    return fast_simulator


def _component_config(
    qrsync: Any, sim: Any, ticket: str | None = None, *, security: str = ""
) -> None:
    section = component_section() if ticket is None else component_section(ticket)
    qrsync.write_config(
        toml_config(
            sim.url,
            component_oa_account("oa", OA, OA_MP),
            api=FAST,
            sync="page_size = 50",
            extra=section + security,
        )
    )


def test_component_account_syncs_through_the_platform(platform: Any, qrsync: Any, db: Any) -> None:
    platform.admin.add_component(component_world(OA))
    _component_config(qrsync, platform)
    first = qrsync("sync")
    second = qrsync("sync")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    stats = platform.admin.stats()
    assert (stats["component_token"], stats["authorizer_token"], stats["stable_token"]) == (1, 1, 0)
    assert rows(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == [(REFRESH_SEED,)]
    assert_no_secret_shown(platform, db, [first.output, second.output])


def test_verify_ticket_is_read_from_a_file(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA))
    fresh = platform.admin.rotate_ticket(COMPONENT)
    ticket_file = tmp_path / "verify_ticket.txt"
    ticket_file.write_text(fresh + "\n", encoding="utf-8")
    monkeypatch.delenv("VERIFY_TICKET")
    _component_config(qrsync, platform, f'verify_ticket_file = "{ticket_file}"')
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="component_token")] == [0]
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    assert_no_secret_shown(platform, db, [result.output])


def test_a_verify_ticket_file_older_than_a_ticket_lasts_fails_saying_the_callback_stopped(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA))
    ticket_file = tmp_path / "verify_ticket.txt"
    ticket_file.write_text(platform.admin.rotate_ticket(COMPONENT) + "\n", encoding="utf-8")
    written = time.time() - 13 * 3600
    os.utime(ticket_file, (written, written))
    monkeypatch.delenv("VERIFY_TICKET")
    _component_config(qrsync, platform, f'verify_ticket_file = "{ticket_file}"')
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "oa")
    assert run["status"] == "failed"
    assert f"the component_verify_ticket in {ticket_file} was written 13 h ago" in run["error"]
    assert "callback" in run["error"] and "Traceback" not in result.output
    assert platform.admin.calls(endpoint="component_token") == []  # WeChat not asked
    assert rows(db, "SELECT count(*) FROM rules") == [(0,)]
    assert_no_secret_shown(platform, db, [result.output])


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_missing_verify_ticket_fails_naming_where_it_was_looked_for(
    platform: Any,
    qrsync: Any,
    db: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    platform.admin.add_component(component_world(OA))
    monkeypatch.delenv("VERIFY_TICKET")
    missing = tmp_path / "not-written-yet.txt"
    setting = f'verify_ticket_file = "{missing}"' if where == "file" else None
    _component_config(qrsync, platform, setting)
    result = qrsync("sync")
    # A configuration that cannot work: exit 2, one line naming the key and where it looked.
    assert result.exit_code == 2, result.output
    assert f"component.verify_ticket_{where}" in result.output
    assert (str(missing) if where == "file" else "VERIFY_TICKET") in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert rows(db, "SELECT count(*) FROM sync_runs") == [(0,)]
    assert platform.admin.calls(endpoint="component_token") == []


def test_verify_ticket_file_rewritten_by_the_callback_is_read_again(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA))
    ticket_file = tmp_path / "verify_ticket.txt"
    ticket_file.write_text(VERIFY_TICKET + "\n", encoding="utf-8")
    monkeypatch.delenv("VERIFY_TICKET")
    _component_config(qrsync, platform, f'verify_ticket_file = "{ticket_file}"')
    assert qrsync("sync").exit_code == 0
    # Two pushes later the first ticket is no longer accepted; the callback stored the latest.
    platform.admin.rotate_ticket(COMPONENT)
    ticket_file.write_text(platform.admin.rotate_ticket(COMPONENT) + "\n", encoding="utf-8")
    platform.admin.expire_tokens(COMPONENT)
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="component_token")] == [0]
    assert_no_secret_shown(platform, db, [result.output], VERIFY_TICKET)


def test_rotated_refresh_token_is_saved_and_used_by_the_next_run(
    platform: Any, qrsync: Any, db: Any
) -> None:
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    _component_config(qrsync, platform)
    first = qrsync("sync")
    assert first.exit_code == 0, first.output
    rotated = current_refresh_token(platform, OA)
    assert rotated != REFRESH_SEED
    assert rows(
        db, "SELECT component_appid, authorizer_appid, refresh_token FROM authorizer_refresh_tokens"
    ) == [(COMPONENT, OA, rotated)]
    # Past the 5-minute grace the seed in the configuration is dead ...
    platform.admin.advance_clock(400)
    assert authorizer_token_answer(platform, OA, REFRESH_SEED)["errcode"] == 61023
    # ... and the cached access token too: the next run must use the stored refresh token.
    platform.admin.expire_tokens(OA)
    platform.admin.put_rules(OA, platform.admin.rules(OA, OA_MP)[5:], miniprogram_appid=OA_MP)
    platform.admin.clear_calls()
    second = qrsync("sync")
    assert second.exit_code == 0, second.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [0]
    assert last_run(db, "oa")["status"] == "succeeded"
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    again = current_refresh_token(platform, OA)
    assert again != rotated
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == again
    assert_no_secret_shown(platform, db, [first.output, second.output])


def test_rotated_refresh_token_lost_on_the_wire_is_recovered_by_the_retry(
    platform: Any, qrsync: Any, db: Any
) -> None:
    """WeChat rotates the refresh token and the answer is cut by a reset: the retry presents
    the stored (old) token, still inside its 5-minute grace (REFERENCE.md), gets a new one and
    stores it; a refresh long after the grace still works (no 61023, no re-authorisation)."""
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    _component_config(qrsync, platform)
    platform.admin.add_fault(endpoint="authorizer_token", wire="reset", times=1)
    first = qrsync("sync")
    assert first.exit_code == 0, first.output
    calls = platform.admin.calls(endpoint="authorizer_token")
    assert len(calls) == 2  # the answer lost after the rotation, then the retry
    stored = scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens")
    assert stored == current_refresh_token(platform, OA) != REFRESH_SEED
    # Ten minutes on, past the grace: the seed and the token whose answer was lost are dead,
    # the stored one is WeChat's current one.
    platform.admin.advance_clock(600)
    assert authorizer_token_answer(platform, OA, REFRESH_SEED)["errcode"] == 61023
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    second = qrsync("sync")
    assert second.exit_code == 0, second.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [0]
    assert last_run(db, "oa")["status"] == "succeeded"
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == (
        current_refresh_token(platform, OA)
    )
    assert_no_secret_shown(platform, db, [first.output, second.output])


class _Records(logging.Handler):
    """Keeps the records of one logger (the CLI replaces the root logger's handlers)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _records_of(name: str) -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def _refresh_token_rows(db: Any) -> list[tuple[Any, ...]]:
    """The stored refresh tokens with their xmin: a row rewritten with the same value shows."""
    return rows(
        db,
        "SELECT component_appid, authorizer_appid, refresh_token, seed_fingerprint, xmin::text "
        "FROM authorizer_refresh_tokens",
    )


def test_rotated_refresh_token_lost_past_its_grace_is_recovered_from_the_authorizer_list(
    platform: Any, qrsync: Any, db: Any
) -> None:
    """WeChat rotates the refresh token, the answer is lost and every retry fails until the old
    token's 5 minutes are over (network down, process killed): the stored token is dead (61023).
    The next run finds the current one in api_get_authorizer_list, commits it and goes on; the
    merchant does not authorise again."""
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    _component_config(qrsync, platform)
    platform.admin.add_fault(endpoint="authorizer_token", wire="reset", times=1)
    platform.admin.add_fault(endpoint="authorizer_token", http_status=503, after=1, times=-1)
    lost = qrsync("sync")
    assert lost.exit_code == 1, lost.output
    assert last_run(db, "oa")["status"] == "failed"
    rotated = current_refresh_token(platform, OA)
    assert rotated != REFRESH_SEED  # WeChat rotated it; qrsync never heard of it
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == REFRESH_SEED
    fingerprint = scalar(db, "SELECT seed_fingerprint FROM authorizer_refresh_tokens")
    platform.admin.clear_faults()
    platform.admin.advance_clock(600)  # past the old token's grace
    assert authorizer_token_answer(platform, OA, REFRESH_SEED)["errcode"] == 61023
    platform.admin.clear_calls()
    with _records_of("qrsync.tokens") as records:
        recovered = qrsync("sync")
    assert recovered.exit_code == 0, recovered.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [61023, 0]
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_list")] == [0]
    (warning,) = [r for r in records if getattr(r, "action", None) == "refresh_token_recovered"]
    assert (warning.levelname, getattr(warning, "account", None)) == ("WARNING", "oa")
    assert "authorizer list" in recovered.output
    assert last_run(db, "oa")["status"] == "succeeded"
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    # The listed token was used (and rotated once more): what is stored is WeChat's current one,
    # under the seed's fingerprint (the configuration's seed is not taken up again).
    current = current_refresh_token(platform, OA)
    assert current != rotated
    assert rows(db, "SELECT refresh_token, seed_fingerprint FROM authorizer_refresh_tokens") == [
        (current, fingerprint)
    ]
    # Later refreshes need no list: the stored token is the live one.
    platform.admin.advance_clock(600)
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    later = qrsync("sync")
    assert later.exit_code == 0, later.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [0]
    assert platform.admin.calls(endpoint="authorizer_list") == []
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == (
        current_refresh_token(platform, OA)
    )
    shown = [lost.output, recovered.output, later.output, warning.getMessage()]
    assert_no_secret_shown(platform, db, shown, rotated, current)


def test_authorizer_on_a_later_page_of_the_authorizer_list_is_found(
    platform: Any, qrsync: Any, db: Any
) -> None:
    """The list is read 500 at a time until the authorizer turns up: here the 601st of a
    platform's authorizers, whose refresh token moved on while the seed sat in the
    configuration."""
    current = "refreshtoken@@@rotated-while-nobody-listened-0003"
    platform_world = component_world(OA, refresh_token=current)
    others = [f"wx4{n:015d}" for n in range(600)]
    for appid in others:
        platform.admin.add_account({"appid": appid, "kind": "miniprogram"})
    platform_world["authorizations"][:0] = [
        {"authorizer_appid": appid, "refresh_token": f"refreshtoken@@@{appid}"} for appid in others
    ]
    platform.admin.add_component(platform_world)
    _component_config(qrsync, platform)
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_list")] == [0, 0]
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [61023, 0]
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == current
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    assert_no_secret_shown(platform, db, [result.output], current)


def test_rotated_refresh_token_is_kept_when_the_run_then_fails(
    platform: Any, qrsync: Any, db: Any
) -> None:
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    _component_config(qrsync, platform)
    platform.admin.add_fault(endpoint="qrcodejumpget", errcode=40097)
    failed = qrsync("sync")
    assert failed.exit_code == 1, failed.output
    assert last_run(db, "oa")["errcode"] == 40097
    rotated = current_refresh_token(platform, OA)
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == rotated
    platform.admin.advance_clock(400)
    platform.admin.expire_tokens(OA)
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    assert_no_secret_shown(platform, db, [failed.output, result.output])


def test_new_refresh_token_in_the_configuration_is_picked_up(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    _component_config(qrsync, platform)
    assert qrsync("sync").exit_code == 0
    # The merchant authorises the platform again: a new refresh token, the old ones dead.
    reauthorised = "refreshtoken@@@after-re-authorisation-0002"
    platform.admin.add_component(
        component_world(OA, refresh_token=reauthorised, rotate_refresh_token=True)
    )
    platform.admin.advance_clock(400)
    platform.admin.expire_tokens(OA)
    monkeypatch.setenv("OA_REFRESH_TOKEN", reauthorised)
    platform.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [0]
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    stored = scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens")
    assert stored == current_refresh_token(platform, OA) != reauthorised
    assert_no_secret_shown(platform, db, [result.output], reauthorised)


def test_expired_component_token_is_refreshed_and_the_run_succeeds(
    platform: Any, qrsync: Any, db: Any
) -> None:
    platform.admin.add_component(component_world(OA))
    _component_config(qrsync, platform)
    assert qrsync("sync").exit_code == 0
    platform.admin.expire_tokens(COMPONENT)
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [42001, 0]
    assert [c["errcode"] for c in platform.admin.calls(endpoint="component_token")] == [0]
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)


def test_missing_permission_set_3_fails_with_a_hint(platform: Any, qrsync: Any, db: Any) -> None:
    platform.admin.add_component(component_world(OA, permission_sets=(18,)))
    _component_config(qrsync, platform)
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "oa")
    assert (run["status"], run["errcode"]) == ("failed", 61007)
    assert "account 'oa'" in run["error"] and "61007" in run["error"]
    assert "permission set 3" in run["error"]
    assert "permission set 3" in result.output
    assert len(platform.admin.calls(endpoint="qrcodejumpget")) == 1
    assert scalar(db, "SELECT count(*) FROM rules") == 0
    assert_no_secret_shown(platform, db, [result.output])


def test_wrong_verify_ticket_fails_with_61006(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA))
    stale = "ticket@@@a-ticket-that-was-never-pushed-0009"
    monkeypatch.setenv("VERIFY_TICKET", stale)
    _component_config(qrsync, platform)
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "oa")
    assert (run["status"], run["errcode"]) == ("failed", 61006)
    assert "account 'oa'" in run["error"] and "61006" in run["error"]
    assert "verify_ticket" in run["error"]
    assert "account 'oa'" in result.output
    assert platform.admin.calls(endpoint="authorizer_token") == []
    assert platform.admin.calls(endpoint="qrcodejumpget") == []
    assert scalar(db, "SELECT count(*) FROM rules") == 0
    assert_no_secret_shown(platform, db, [result.output], stale)


def test_revoked_authorization_fails_with_61023_and_says_to_authorise_again(
    platform: Any, qrsync: Any, db: Any
) -> None:
    """The authorizer list is consulted once: a revoked authorization is not listed, so there
    is no token to recover and nothing is written."""
    platform.admin.add_component(component_world(OA))
    _component_config(qrsync, platform)
    assert qrsync("sync").exit_code == 0
    before = rule_tables(db)
    stored = _refresh_token_rows(db)
    platform.admin.revoke_authorization(COMPONENT, OA)
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "oa")
    assert (run["status"], run["errcode"]) == ("failed", 61023)
    assert "account 'oa'" in run["error"] and "authorise the platform again" in run["error"]
    assert "authorizer list no longer has a valid refresh token" in run["error"]
    assert "revoked" in run["error"]
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [61023]
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_list")] == [0]
    assert rule_tables(db) == before
    assert _refresh_token_rows(db) == stored
    assert_no_secret_shown(platform, db, [result.output])


def test_refresh_token_the_authorizer_list_still_gives_is_not_retried(
    platform: Any, qrsync: Any, db: Any
) -> None:
    """WeChat refuses a refresh token its authorizer list gives as current: no other token to
    try, so the run fails as before (authorise again) after one look at the list."""
    platform.admin.add_component(component_world(OA))
    _component_config(qrsync, platform)
    assert qrsync("sync").exit_code == 0
    stored = _refresh_token_rows(db)
    platform.admin.expire_tokens(OA)
    platform.admin.add_fault(endpoint="authorizer_token", errcode=61023, times=-1)
    platform.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    run = last_run(db, "oa")
    assert (run["status"], run["errcode"]) == ("failed", 61023)
    assert "authorise the platform again" in run["error"]
    assert "authorizer list no longer has a valid refresh token" in run["error"]
    assert len(platform.admin.calls(endpoint="authorizer_token")) == 1
    assert len(platform.admin.calls(endpoint="authorizer_list")) == 1
    assert _refresh_token_rows(db) == stored
    assert_no_secret_shown(platform, db, [result.output])


def test_authorizer_list_unreachable_fails_without_asking_to_authorise_again(
    platform: Any, qrsync: Any, db: Any
) -> None:
    """The stored refresh token is dead and the list that holds the current one cannot be read
    (network down): the run fails saying so, not "authorise again", and the next run recovers."""
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    _component_config(qrsync, platform)
    # Every answer, each carrying a rotated token, is cut on the wire.
    platform.admin.add_fault(endpoint="authorizer_token", wire="reset", times=-1)
    assert qrsync("sync").exit_code == 1
    platform.admin.clear_faults()
    platform.admin.advance_clock(600)
    platform.admin.add_fault(endpoint="authorizer_list", drop=True, times=-1)
    platform.admin.clear_calls()
    failed = qrsync("sync")
    assert failed.exit_code == 1, failed.output
    run = last_run(db, "oa")
    assert run["status"] == "failed"
    assert "authorizer list" in run["error"] and "could not be read" in run["error"]
    assert "authorise" not in run["error"]
    # 1 + api.max_retries, and maybe one more: a kept-alive connection closed without an answer
    # is tried again once on a new one by libcurl itself (the request may never have arrived).
    assert len(platform.admin.calls(endpoint="authorizer_list")) in (4, 5)
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == REFRESH_SEED
    platform.admin.clear_faults()
    recovered = qrsync("sync")
    assert recovered.exit_code == 0, recovered.output
    assert live_rules(db, "oa") == truth(platform, OA, OA_MP)
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == (
        current_refresh_token(platform, OA)
    )
    assert_no_secret_shown(platform, db, [failed.output, recovered.output])


# --- concurrency ---------------------------------------------------------------------------------


@pytest.fixture
def shared_appid(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Four accounts: one service account's rules for four mini programs."""
    linked = [OA_MP, OA_MP2, OA_MP3, OA_MP4]
    fast_simulator.admin.add_account(oa_world(linked_miniprograms=linked))
    for mp in linked:
        fast_simulator.admin.generate_rules(OA, 60, miniprogram_appid=mp)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    accounts = "".join(oa_account(f"oa-{n}", miniprogram_appid=mp) for n, mp in enumerate(linked))
    qrsync.write_config(toml_config(fast_simulator.url, accounts, api=FAST, sync="page_size = 50"))
    assert qrsync("accounts").exit_code == 0  # mirrors the accounts into the database
    return fast_simulator


def _sync_in_threads(config_path: Path, db: Any, database_url: str) -> list[Any]:
    """Every account of the configuration synced at once, each thread with a Syncer (engine,
    token providers, HTTP client) of its own, as separate processes would: only the database
    is shared."""
    config = load_config(config_path)
    ids = dict(rows(db, "SELECT name, id FROM accounts"))
    start = threading.Barrier(len(config.accounts))
    results: list[Any] = []
    problems: list[BaseException] = []

    def run(account: Any) -> None:
        engine = make_engine(database_url, "qrsync")
        syncer = Syncer(config, engine)
        try:
            start.wait(timeout=30)
            results.append(syncer.sync_account(SyncRequest(account, ids[account.name])))
        except BaseException as exc:  # reported below, not lost in the thread
            problems.append(exc)
        finally:
            syncer.close()
            engine.dispose()

    threads = [threading.Thread(target=run, args=(a,)) for a in config.accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    return results


def test_threads_syncing_with_an_empty_cache_fetch_the_token_once(
    shared_appid: Any, qrsync: Any, db: Any, database_url: str
) -> None:
    # A slow token endpoint: every thread is waiting for the token while the first fetches it.
    shared_appid.admin.add_fault(endpoint="stable_token", delay_s=0.3, times=-1)
    results = _sync_in_threads(qrsync.config_path, db, database_url)
    assert sorted(r.status for r in results) == ["succeeded"] * 4
    assert len(_token_calls(shared_appid)) == 1
    assert scalar(db, "SELECT count(*) FROM tokens") == 1
    for n, mp in enumerate([OA_MP, OA_MP2, OA_MP3, OA_MP4]):
        assert live_rules(db, f"oa-{n}") == truth(shared_appid, OA, mp)


def test_threads_of_a_platform_fetch_and_rotate_the_authorizer_token_once(
    shared_appid: Any, qrsync: Any, db: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs using one refresh token at once would rotate it twice and could keep the one
    that dies: the refresh happens once, under the lock, and the stored token is the live one."""
    sim = shared_appid
    sim.admin.add_account(
        oa_world(secret=None, linked_miniprograms=[OA_MP, OA_MP2, OA_MP3, OA_MP4])
    )
    for mp in (OA_MP, OA_MP2, OA_MP3, OA_MP4):
        sim.admin.generate_rules(OA, 60, miniprogram_appid=mp)
    sim.admin.add_component(component_world(OA, rotate_refresh_token=True))
    monkeypatch.setenv("COMPONENT_SECRET", COMPONENT_SECRET)
    monkeypatch.setenv("VERIFY_TICKET", VERIFY_TICKET)
    monkeypatch.setenv("OA_REFRESH_TOKEN", REFRESH_SEED)
    accounts = "".join(
        component_oa_account(f"oa-{n}", OA, mp)
        for n, mp in enumerate([OA_MP, OA_MP2, OA_MP3, OA_MP4])
    )
    qrsync.write_config(
        toml_config(sim.url, accounts, api=FAST, sync="page_size = 50", extra=component_section())
    )
    assert qrsync("accounts").exit_code == 0  # the accounts now use the platform's token
    sim.admin.add_fault(endpoint="authorizer_token", delay_s=0.3, times=-1)
    sim.admin.clear_calls()
    results = _sync_in_threads(qrsync.config_path, db, database_url)
    assert sorted(r.status for r in results) == ["succeeded"] * 4
    stats = sim.admin.stats()
    assert (stats["component_token"], stats["authorizer_token"]) == (1, 1)
    stored = scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens")
    assert stored == current_refresh_token(sim, OA)


def test_two_processes_syncing_at_once_fetch_the_token_once(
    shared_appid: Any, qrsync: Any, db: Any
) -> None:
    command = Path(sys.executable).with_name("qrsync")
    argv = [str(command), "--config", str(qrsync.config_path), "sync"]
    halves = [
        ["--account", "oa-0", "--account", "oa-1"],
        ["--account", "oa-2", "--account", "oa-3"],
    ]
    shared_appid.admin.add_fault(endpoint="stable_token", delay_s=0.5, times=-1)
    processes = [
        subprocess.Popen(argv + half, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for half in halves
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert len(_token_calls(shared_appid)) == 1
    assert scalar(db, "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'") == 4
    for n, mp in enumerate([OA_MP, OA_MP2, OA_MP3, OA_MP4]):
        assert live_rules(db, f"oa-{n}") == truth(shared_appid, OA, mp)
    assert_no_secret_shown(shared_appid, db, outputs)


# --- tokens encrypted at rest ([security] token_key_env) ----------------------------------------

KEY_A = "zHcmM9VRbHs3s5Kjkz5r6eGr3rFSGwVZ8M7d2BdQyZ0="
KEY_B = "n7HSp3jIFQm0BI3rsh8lTrq8xIhiMCnTj6VVD2I1Ses="
SECURITY = '[security]\ntoken_key_env = "QRSYNC_TOKEN_KEY"\n'


def _sealed_config(qrsync: Any, sim: Any, security: str = SECURITY) -> None:
    _component_config(qrsync, sim, security=security)


def _synced_with_key(
    platform: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, *, rotate: bool = True
) -> None:
    """One successful sync of a platform account with tokens sealed by KEY_A."""
    platform.admin.add_component(component_world(OA, rotate_refresh_token=rotate))
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", KEY_A)
    _sealed_config(qrsync, platform)
    result = qrsync("sync")
    assert result.exit_code == 0, result.output


def _stored_tokens(db: Any) -> list[str]:
    access = [v for (v,) in rows(db, "SELECT access_token FROM tokens")]
    refresh = [v for (v,) in rows(db, "SELECT refresh_token FROM authorizer_refresh_tokens")]
    return access + refresh


def test_tokens_are_stored_encrypted_when_a_key_is_configured(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA, rotate_refresh_token=True))
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", KEY_A)
    _sealed_config(qrsync, platform)
    first = qrsync("sync")
    platform.admin.expire_tokens(OA)
    second = qrsync("sync")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    stored = _stored_tokens(db)
    assert len(stored) == 3 and all(v.startswith("fernet:") for v in stored)
    rotated = current_refresh_token(platform, OA)
    assert not any(rotated in v or REFRESH_SEED in v for v in stored)
    assert_no_secret_shown(platform, db, [first.output, second.output], rotated)


def test_a_wrong_key_fails_the_run_and_fetches_nothing(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _synced_with_key(platform, qrsync, monkeypatch)
    before = _stored_tokens(db)
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", KEY_B)
    result = qrsync("sync")
    assert result.exit_code == 1
    run = last_run(db, "oa")
    assert run["status"] == "failed"
    assert "cannot be decrypted with the configured security.token_key_env" in run["error"]
    assert run["error"].startswith("account 'oa'")
    assert _stored_tokens(db) == before  # the refresh token is kept for the right key
    assert platform.admin.calls(endpoint="authorizer_token") == []
    assert "Traceback" not in result.output


def test_encrypted_tokens_without_a_key_are_an_error_not_a_refetch(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _synced_with_key(platform, qrsync, monkeypatch, rotate=False)
    platform.admin.clear_calls()
    _sealed_config(qrsync, platform, security="")
    result = qrsync("sync")
    assert result.exit_code == 1
    assert "stored encrypted but no key is configured" in last_run(db, "oa")["error"]
    assert platform.admin.calls(endpoint="authorizer_token") == []


def test_a_key_is_rotated_without_losing_a_token(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _synced_with_key(platform, qrsync, monkeypatch)
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", f"{KEY_B}, {KEY_A}")
    rotated = qrsync("db", "rotate-token-key")
    assert rotated.exit_code == 0, rotated.output
    assert "3 stored tokens encrypted with the first key" in rotated.output
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", KEY_B)
    platform.admin.expire_tokens(OA)
    platform.admin.clear_calls()
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert [c["errcode"] for c in platform.admin.calls(endpoint="authorizer_token")] == [0]
    assert all(v.startswith("fernet:") for v in _stored_tokens(db))


def test_tokens_stored_in_clear_are_encrypted_by_rotate(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin.add_component(component_world(OA))
    _component_config(qrsync, platform)
    assert qrsync("sync").exit_code == 0
    assert not any(v.startswith("fernet:") for v in _stored_tokens(db))
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", KEY_A)
    _sealed_config(qrsync, platform)
    assert qrsync("sync").exit_code == 0  # clear values are still read
    result = qrsync("db", "rotate-token-key")
    assert result.exit_code == 0, result.output
    assert all(v.startswith("fernet:") for v in _stored_tokens(db))
    assert qrsync("sync").exit_code == 0


@pytest.mark.parametrize(
    ("value", "problem"),
    [("not-a-key", "is not a Fernet key"), (None, "environment variable QRSYNC_TOKEN_KEY")],
)
def test_a_bad_token_key_stops_the_command_naming_the_key(
    platform: Any,
    qrsync: Any,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
    problem: str,
) -> None:
    platform.admin.add_component(component_world(OA))
    if value is None:
        monkeypatch.delenv("QRSYNC_TOKEN_KEY", raising=False)
    else:
        monkeypatch.setenv("QRSYNC_TOKEN_KEY", value)
    _sealed_config(qrsync, platform)
    result = qrsync("sync")
    assert result.exit_code == 2
    assert "security.token_key_env" in result.stderr and problem in result.stderr
    assert "not-a-key" not in result.stderr or value is None
    assert scalar(db, "SELECT count(*) FROM sync_runs") == 0


def test_ca_bundle_must_exist(fast_simulator: Any, qrsync: Any, tmp_path: Path) -> None:
    fast_simulator.admin.add_account(mp_world())
    qrsync.write_config(
        toml_config(fast_simulator.url, mp_account(), api=f'ca_bundle = "{tmp_path}/none.pem"')
    )
    result = qrsync("sync")
    assert result.exit_code == 2
    assert "api.ca_bundle" in result.stderr and "none.pem" in result.stderr


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o600, False)])
def test_a_secret_file_others_may_read_is_warned_about(
    fast_simulator: Any, qrsync: Any, tmp_path: Path, mode: int, warned: bool
) -> None:
    fast_simulator.admin.add_account(mp_world())
    fast_simulator.admin.put_rules(MP, MP_RULES)
    secret_file = tmp_path / "mp_secret"
    secret_file.write_text(MP_SECRET + "\n", encoding="utf-8")
    secret_file.chmod(mode)
    token = f'{{ source = "stable_token", secret_file = "{secret_file}" }}'
    qrsync.write_config(
        toml_config(fast_simulator.url, account_with_token("mp", "miniprogram", MP, token))
    )
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert ("may be read by other users (mode 644)" in result.stderr) is warned
    assert MP_SECRET not in result.output + result.stderr
