"""A platform of thousands of authorizers of every kind (qrsync.simulator.platform), served 500 a
page by api_get_authorizer_list, and its seeded life: authorizers withdraw, come back, authorise
and change their permission sets (POST /sim/components/<appid>/churn)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qrsync.simulator import RunningSimulator, start_simulator
from qrsync.simulator.platform import (
    MIX,
    PLATFORM,
    PLATFORM_SECRET,
    PLATFORM_TICKET,
    platform_world,
)


@pytest.fixture(scope="module")
def big() -> Iterator[RunningSimulator]:
    """10,000 authorizers (and 500 not authorised yet), rate limits on, as WeChat's."""
    with start_simulator(host="127.0.0.1", port=0, seed=2, world=platform_world(10_000)) as sim:
        yield sim


def platform_token(wechat: Any) -> str:
    body = {
        "component_appid": PLATFORM,
        "component_appsecret": PLATFORM_SECRET,
        "component_verify_ticket": PLATFORM_TICKET,
    }
    answer = wechat.post("/cgi-bin/component/api_component_token", body)
    return str(answer["component_access_token"])


def listed(wechat: Any, ct: str) -> list[dict[str, Any]]:
    """The whole authorizer list, 500 a page, as discovery reads it."""
    entries: list[dict[str, Any]] = []
    for _ in range(100):
        page = wechat.post(
            "/cgi-bin/component/api_get_authorizer_list",
            {"component_appid": PLATFORM, "offset": len(entries), "count": 500},
            component_access_token=ct,
        )
        assert "list" in page, page
        entries += page["list"]
        if not page["list"] or len(entries) >= page["total_count"]:
            return entries
    raise AssertionError("the list did not end")


def info(wechat: Any, ct: str, appid: str) -> dict[str, Any]:
    answer: dict[str, Any] = wechat.post(
        "/cgi-bin/component/api_get_authorizer_info",
        {"component_appid": PLATFORM, "authorizer_appid": appid},
        component_access_token=ct,
    )
    return answer


def test_ten_thousand_authorizers_of_every_kind_are_listed_500_a_page(
    big: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    wechat = make_wechat(big.url)
    ct = platform_token(wechat)
    entries = listed(wechat, ct)
    assert len(entries) == 10_000 and len({e["authorizer_appid"] for e in entries}) == 10_000
    assert len(big.admin.calls(endpoint="authorizer_list")) == 20
    assert all(e["refresh_token"] and e["auth_time"] for e in entries)
    kinds: Counter[str] = Counter()
    for entry in entries[:300]:
        answer = info(wechat, ct, entry["authorizer_appid"])
        account = answer["authorizer_info"]
        sets = {f["funcscope_category"]["id"] for f in answer["authorization_info"]["func_info"]}
        if "MiniProgramInfo" in account:
            personal = account["principal_name"] == "个人"
            kinds["personal mini program" if personal else f"mini program, 18: {18 in sets}"] += 1
        elif account["service_type_info"]["id"] != 2:
            kinds["subscription account"] += 1
        elif account["verify_type_info"]["id"] == -1:
            kinds["unverified service account"] += 1
        else:
            kinds[f"service account, 3: {3 in sets}"] += 1
    assert set(kinds) == {
        "mini program, 18: True",
        "mini program, 18: False",
        "personal mini program",
        "service account, 3: True",
        "service account, 3: False",
        "unverified service account",
        "subscription account",
    }, kinds
    assert len(MIX) == 7


def test_authorizers_withdraw_come_back_authorise_and_change_their_sets(
    sim: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    sim.admin.reset(world=platform_world(200, pending=20, seed=4))
    wechat = make_wechat(sim.url)
    ct = platform_token(wechat)
    before = {e["authorizer_appid"]: e for e in listed(wechat, ct)}
    assert len(before) == 200
    sim.admin.advance_clock(60)
    turn = sim.admin.churn(PLATFORM, revoke=10, change=5, authorize=4, seed=1)
    assert len(turn["revoked"]) == 10 and len(turn["changed"]) == 5
    assert len(turn["authorized"]) == 4 and not set(turn["authorized"]) & set(before)
    after = {e["authorizer_appid"]: e for e in listed(wechat, ct)}
    assert set(after) == (set(before) - set(turn["revoked"])) | set(turn["authorized"])
    for appid in turn["revoked"]:
        assert info(wechat, ct, appid)["errcode"] == 61003
    for appid in turn["changed"]:
        assert after[appid]["auth_time"] > before[appid]["auth_time"]
        sets = {
            f["funcscope_category"]["id"]
            for f in info(wechat, ct, appid)["authorization_info"]["func_info"]
        }
        assert not {3, 18} <= sets or sets == {1, 2, 3, 18}
    # The ones that withdrew come back first, with new refresh tokens and a new auth_time.
    back = sim.admin.churn(PLATFORM, authorize=10, seed=2)
    assert set(back["authorized"]) == set(turn["revoked"])
    again = {e["authorizer_appid"]: e for e in listed(wechat, ct)}
    for appid in turn["revoked"]:
        assert again[appid]["refresh_token"] != before[appid]["refresh_token"]
        assert again[appid]["auth_time"] > before[appid]["auth_time"]
    # Seeded: the same seed and the same turns give the same platform.
    sim.admin.reset(world=platform_world(200, pending=20, seed=4))
    assert sim.admin.churn(PLATFORM, revoke=10, change=5, authorize=4, seed=1) == turn
