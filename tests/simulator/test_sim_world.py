"""The world: generated data and its quirks, determinism, the admin API, world files, the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from helpers import DOCUMENT_EXAMPLE_RULES

from qrsync.simulator import (
    RunningSimulator,
    SimulatorAdminError,
    WorldError,
    load_world_file,
    start_simulator,
)
from qrsync.simulator.command import simulator_command
from qrsync.simulator.default_world import (
    AUTHORIZER,
    CENTRAL_MINIPROGRAM,
    COMPONENT,
    MINIPROGRAM,
    MINIPROGRAM_SECRET,
    SERVICE_ACCOUNT,
    SERVICE_ACCOUNT_SECRET,
    VERIFY_TICKET,
    default_world,
)

SPACED_PATH = re.compile(r"^\S+( / \S+)+ $")


def has_quirks(rule: dict[str, Any]) -> bool:
    urls = rule["debug_url"]
    return (
        len(set(urls)) < len(urls)
        or any(": //" in url for url in urls)
        or bool(SPACED_PATH.match(rule["path"]))
    )


# --- generated data --------------------------------------------------------------------------


def test_the_default_world(sim: RunningSimulator) -> None:
    counts = {
        appid: sim.admin.account(appid)["rules"]
        for appid in (MINIPROGRAM, SERVICE_ACCOUNT, AUTHORIZER, CENTRAL_MINIPROGRAM)
    }
    assert counts == {
        MINIPROGRAM: {MINIPROGRAM: 25},
        SERVICE_ACCOUNT: {MINIPROGRAM: 12_000},
        AUTHORIZER: {MINIPROGRAM: 300},
        CENTRAL_MINIPROGRAM: {CENTRAL_MINIPROGRAM: 10},
    }
    assert sim.admin.ticket(COMPONENT) == VERIFY_TICKET
    assert sim.admin.account(MINIPROGRAM)["pub_quota"] == 20


def test_miniprogram_rules_show_the_documents_quirks(sim: RunningSimulator) -> None:
    rules = sim.admin.rules(MINIPROGRAM)
    urls = [rule["debug_url"] for rule in rules]
    assert any(len(set(u)) < len(u) for u in urls), "a debug_url holding the same URL twice"
    assert any(url.startswith("https: //") for u in urls for url in u), "a stray space"
    assert any(SPACED_PATH.match(rule["path"]) for rule in rules), '"pages / index / index "'
    assert {len(u) for u in urls} >= {0, 5} and max(len(u) for u in urls) <= 5
    assert {rule["permit_sub_rule"] for rule in rules} == {1, 2}
    assert {rule["open_version"] for rule in rules} == {1, 2, 3}
    assert {rule["state"] for rule in rules} == {1, 2}
    assert 0 < sum(has_quirks(rule) for rule in rules) < len(rules)


def test_service_account_rules_are_unique_weixin_urls_in_mixed_states(
    sim: RunningSimulator,
) -> None:
    rules = sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)
    prefixes = [rule["prefix"] for rule in rules]
    assert all(prefix.startswith("http://weixin.qq.com/q/02") for prefix in prefixes)
    assert len(set(prefixes)) == len(prefixes) == 12_000
    published = sum(rule["state"] == 2 for rule in rules) / len(rules)
    assert 0.55 < published < 0.65
    assert any(SPACED_PATH.match(rule["path"]) for rule in rules)


def test_quirks_can_be_switched_off(sim: RunningSimulator) -> None:
    sim.admin.add_account({"appid": "wx0000000000000a99", "kind": "miniprogram", "secret": "s"})
    added = sim.admin.generate_rules("wx0000000000000a99", 200, quirks=False)
    assert added == {"miniprogram_appid": "wx0000000000000a99", "added": 200, "total": 200}
    assert not any(has_quirks(rule) for rule in sim.admin.rules("wx0000000000000a99"))


# --- determinism -----------------------------------------------------------------------------


def session_transcript(seed: int, make_wechat: Callable[[str], Any]) -> list[Any]:
    """The same calls against a fresh simulator: tokens, an error's rid, the rules."""
    with start_simulator(seed=seed, world=default_world(), rate_limit=False) as sim:
        client = make_wechat(sim.url)
        token = client.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
        forced = client.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True)["access_token"]
        error = client.get("SIM_unknown")["errmsg"]
        return [
            token,
            forced,
            error,
            client.get(forced),
            client.page(client.access_token(SERVICE_ACCOUNT, SERVICE_ACCOUNT_SECRET), 7),
        ]


def test_the_same_seed_and_calls_give_the_same_answers(make_wechat: Callable[[str], Any]) -> None:
    first = session_transcript(5, make_wechat)
    assert session_transcript(5, make_wechat) == first
    other = session_transcript(6, make_wechat)
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_rids_change_per_request(wechat) -> None:
    rids = {wechat.get("SIM_unknown")["errmsg"] for _ in range(3)}
    assert len(rids) == 3


# --- admin -----------------------------------------------------------------------------------


def test_reset_goes_back_to_the_start(wechat, mp_token: str, sim: RunningSimulator) -> None:
    before = sim.admin.rules(MINIPROGRAM)
    wechat.rules_call("qrcodejumpdelete", mp_token, {"prefix": before[0]["prefix"]})
    sim.admin.add_fault(endpoint="qrcodejumpget", errcode=-1, times=-1)
    sim.admin.settings(requests_per_second=1)
    assert sim.admin.reset()["seed"] == 1
    assert sim.admin.rules(MINIPROGRAM) == before
    assert sim.admin.faults() == [] and sim.admin.calls() == []
    assert sim.admin.settings()["requests_per_second"] == 5
    assert wechat.get(mp_token)["errcode"] == 40001  # tokens belong to the old world
    assert sim.admin.reset(seed=2) and sim.admin.rules(MINIPROGRAM) != before


def test_reset_to_another_world_and_refusing_a_bad_one(sim: RunningSimulator) -> None:
    world = {"accounts": [{"appid": "wx0000000000000a77", "kind": "miniprogram", "secret": "s"}]}
    assert sim.admin.reset(world=world)["accounts"] == ["wx0000000000000a77"]
    with pytest.raises(SimulatorAdminError) as refused:
        sim.admin.reset(world={"accounts": [{"appid": "wx1", "kind": "blog"}]})
    assert refused.value.status == 400 and "kind" in str(refused.value)
    assert sim.admin.account("wx0000000000000a77")["kind"] == "miniprogram"


def test_put_rules_plants_rules_verbatim(wechat, mp_token: str, sim: RunningSimulator) -> None:
    planted = [
        DOCUMENT_EXAMPLE_RULES[0],
        {**DOCUMENT_EXAMPLE_RULES[1], "debug_url": []},
    ]
    assert sim.admin.put_rules(MINIPROGRAM, planted)["total"] == 2
    answer = wechat.get(mp_token)
    assert answer["rule_list"] == planted
    assert (answer["list_size"], answer["total_count"]) == (2, 3)  # the document's example


def test_put_rules_refuses_a_prefix_twice(sim: RunningSimulator) -> None:
    with pytest.raises(SimulatorAdminError):
        sim.admin.put_rules(MINIPROGRAM, [{"prefix": "https://a"}, {"prefix": "https://a"}])


def test_patch_account_changes_what_qrcodejumpget_reports(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    sim.admin.patch_account(MINIPROGRAM, qrcodejump_open=0, pub_quota=3, total_count_offset=0)
    answer = wechat.get(mp_token)
    assert (answer["qrcodejump_open"], answer["qrcodejump_pub_quota"]) == (0, 3)
    assert answer["total_count"] == 25
    sim.admin.patch_account(MINIPROGRAM, secret="rotated")
    assert wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)["errcode"] == 40125


def test_calls_and_stats_record_requests_without_tokens(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    wechat.get(mp_token)
    wechat.page(wechat.access_token(SERVICE_ACCOUNT, SERVICE_ACCOUNT_SECRET), 4, 50)
    stats = sim.admin.stats()
    assert (stats["stable_token"], stats["qrcodejumpget"], stats["token"]) == (2, 2, 0)
    calls = sim.admin.calls(endpoint="qrcodejumpget", appid=SERVICE_ACCOUNT)
    assert [(c["get_type"], c["page_num"], c["errcode"]) for c in calls] == [(2, 4, 0)]
    assert set(calls[0]) >= {"endpoint", "appid", "get_type", "page_num", "errcode", "at"}
    assert mp_token not in json.dumps(sim.admin.calls())
    sim.admin.clear_calls()
    assert sim.admin.calls() == [] and sim.admin.stats()["stable_token"] == 0


def test_admin_errors_say_what_is_wrong(sim: RunningSimulator) -> None:
    with pytest.raises(SimulatorAdminError) as missing:
        sim.admin.account("wx000000000000nope")
    assert missing.value.status == 404
    with pytest.raises(SimulatorAdminError) as bad:
        sim.admin.patch_account(MINIPROGRAM, pub_quota="many")
    assert bad.value.status == 400 and "pub_quota" in str(bad.value)
    with pytest.raises(SimulatorAdminError) as unlinked:
        sim.admin.generate_rules(SERVICE_ACCOUNT, 5, miniprogram_appid=CENTRAL_MINIPROGRAM)
    assert unlinked.value.status == 400
    response = requests.post(f"{sim.url}/sim/clock", data=b"[]", timeout=10)
    assert response.status_code == 400


def test_an_unknown_path_is_404(sim: RunningSimulator) -> None:
    assert requests.get(f"{sim.url}/cgi-bin/nothing", timeout=10).status_code == 404


# --- world files and start-up ----------------------------------------------------------------

WORLD_TOML = """
token_ttl_s = 600
[[accounts]]
appid = "wx1111111111111111"
kind = "miniprogram"
secret = "mp"
[[accounts.rule_sets]]
count = 3
[[accounts]]
appid = "wx2222222222222222"
kind = "service_account"
secret = "oa"
linked_miniprograms = ["wx1111111111111111"]
[[accounts.rule_sets]]
miniprogram_appid = "wx1111111111111111"
count = 7
quirks = false
[[components]]
appid = "wx3333333333333333"
secret = "platform"
verify_ticket = "ticket@@@file"
[[components.authorizations]]
authorizer_appid = "wx2222222222222222"
refresh_token = "refresh"
permission_sets = [3]
"""


def test_world_files_in_toml_and_json(tmp_path: Path, make_wechat: Callable[[str], Any]) -> None:
    toml_file = tmp_path / "world.toml"
    toml_file.write_text(WORLD_TOML, encoding="utf-8")
    world = load_world_file(toml_file)
    json_file = tmp_path / "world.json"
    json_file.write_text(json.dumps(world), encoding="utf-8")
    assert load_world_file(json_file) == world
    with start_simulator(world=world, rate_limit=False) as sim:
        client = make_wechat(sim.url)
        answer = client.stable_token("wx2222222222222222", "oa")
        assert answer["expires_in"] <= 600
        rules = client.get(answer["access_token"], {"appid": "wx1111111111111111"})
        assert rules["total_count"] == 7


def test_an_invalid_world_is_refused_with_its_place(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match=r"accounts\[0\]\.linked_miniprograms"):
        start_simulator(
            world={"accounts": [{"appid": "wx1", "kind": "miniprogram", "linked_miniprograms": 3}]}
        )
    broken = tmp_path / "broken.toml"
    broken.write_text("accounts = [", encoding="utf-8")
    with pytest.raises(WorldError, match=r"broken\.toml"):
        load_world_file(broken)


def test_the_command_refuses_a_bad_world_file(tmp_path: Path) -> None:
    path = tmp_path / "world.toml"
    path.write_text('[[accounts]]\nappid = "wx1"\nkind = "blog"\n', encoding="utf-8")
    result = CliRunner().invoke(simulator_command, ["--world", str(path), "--port", "0"])
    assert result.exit_code == 2
    assert "kind" in result.output


def test_the_command_exits_2_when_the_port_is_taken() -> None:
    with start_simulator() as taken:
        result = CliRunner().invoke(simulator_command, ["--port", str(taken.port)])
    assert result.exit_code == 2
    assert "cannot listen" in result.output
