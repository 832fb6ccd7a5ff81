"""wxamplinkget (an official account's linked mini programs, REFERENCE.md "A third-party
platform's authorizers") and the admin API that grants, changes and revokes authorizations."""

from __future__ import annotations

from typing import Any

import pytest

from qrsync.simulator import RunningSimulator
from qrsync.simulator.admin import SimulatorAdminError
from qrsync.simulator.default_world import (
    AUTHORIZER,
    AUTHORIZER_REFRESH_TOKEN,
    COMPONENT,
    COMPONENT_SECRET,
    MINIPROGRAM,
    MINIPROGRAM_SECRET,
    VERIFY_TICKET,
)

LINK_PATH = "/cgi-bin/wxopen/wxamplinkget"
SECOND_MP = "wx40000000000000m2"
SUBSCRIPTION = "wx40000000000000s1"


def platform_token(wechat: Any) -> str:
    body = {
        "component_appid": COMPONENT,
        "component_appsecret": COMPONENT_SECRET,
        "component_verify_ticket": VERIFY_TICKET,
    }
    return str(
        wechat.post("/cgi-bin/component/api_component_token", body)["component_access_token"]
    )


def authorizer_token(
    wechat: Any, appid: str = AUTHORIZER, refresh: str = AUTHORIZER_REFRESH_TOKEN
) -> str:
    body = {
        "component_appid": COMPONENT,
        "authorizer_appid": appid,
        "authorizer_refresh_token": refresh,
    }
    answer = wechat.post(
        "/cgi-bin/component/api_authorizer_token",
        body,
        component_access_token=platform_token(wechat),
    )
    return str(answer["authorizer_access_token"])


def linked(wechat: Any, token: str) -> dict[str, Any]:
    answer: dict[str, Any] = wechat.post(LINK_PATH, {}, access_token=token)
    return answer


def listed(wechat: Any) -> list[dict[str, Any]]:
    body = {"component_appid": COMPONENT, "offset": 0, "count": 500}
    answer = wechat.post(
        "/cgi-bin/component/api_get_authorizer_list",
        body,
        component_access_token=platform_token(wechat),
    )
    entries: list[dict[str, Any]] = answer["list"]
    return entries


def test_a_service_account_lists_its_linked_mini_programs(
    wechat: Any, sim: RunningSimulator
) -> None:
    answer = linked(wechat, authorizer_token(wechat))
    assert answer["errcode"] == 0
    items = answer["wxopens"]["items"]
    assert [item["appid"] for item in items] == [MINIPROGRAM]
    assert items[0]["status"] == 1 and items[0]["nickname"]
    assert set(items[0]) >= {"appid", "nickname", "username", "status", "selected", "released"}
    sim.admin.add_account({"appid": SECOND_MP, "kind": "miniprogram", "nick_name": "二号小程序"})
    sim.admin.patch_account(AUTHORIZER, linked_miniprograms=[MINIPROGRAM, SECOND_MP])
    items = linked(wechat, authorizer_token(wechat))["wxopens"]["items"]
    assert [(i["appid"], i["nickname"]) for i in items][1] == (SECOND_MP, "二号小程序")
    sim.admin.patch_account(AUTHORIZER, linked_miniprograms=[])
    assert linked(wechat, authorizer_token(wechat))["wxopens"]["items"] == []
    assert sim.admin.stats()["amplinkget"] == 3


def test_errors_of_wxamplinkget(wechat: Any, sim: RunningSimulator) -> None:
    assert linked(wechat, "")["errcode"] == 41001
    assert linked(wechat, "not-a-token")["errcode"] == 40001
    # A mini program's own token: the API is not open to it.
    assert linked(wechat, wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET))["errcode"] == 48001
    token = authorizer_token(wechat)
    sim.admin.revoke_authorization(COMPONENT, AUTHORIZER)
    assert linked(wechat, token)["errcode"] == 61003
    sim.admin.expire_tokens(AUTHORIZER)
    assert linked(wechat, token)["errcode"] == 42001


def test_authorizations_are_granted_changed_and_revoked(wechat: Any, sim: RunningSimulator) -> None:
    sim.admin.add_account({"appid": SUBSCRIPTION, "kind": "service_account", "service_type": 0})
    grant = sim.admin.authorize(
        COMPONENT, SUBSCRIPTION, refresh_token="refresh@@@sub", permission_sets=[1]
    )
    assert grant["permission_sets"] == [1]
    assert [e["authorizer_appid"] for e in listed(wechat)] == [AUTHORIZER, SUBSCRIPTION]
    body = {"component_appid": COMPONENT, "authorizer_appid": SUBSCRIPTION}
    info = wechat.post(
        "/cgi-bin/component/api_get_authorizer_info",
        body,
        component_access_token=platform_token(wechat),
    )
    assert info["authorizer_info"]["service_type_info"] == {"id": 0}
    assert info["authorization_info"]["func_info"] == [{"funcscope_category": {"id": 1}}]
    before = listed(wechat)[0]["auth_time"]
    sim.admin.advance_clock(60)
    changed = sim.admin.authorize(COMPONENT, AUTHORIZER, permission_sets=[3])
    assert changed["auth_time"] > before  # a changed grant is a new authorisation
    entry = listed(wechat)[0]
    assert entry["auth_time"] == changed["auth_time"]
    assert entry["refresh_token"] == AUTHORIZER_REFRESH_TOKEN  # kept unless given
    sim.admin.revoke_authorization(COMPONENT, SUBSCRIPTION)
    assert [e["authorizer_appid"] for e in listed(wechat)] == [AUTHORIZER]
    with pytest.raises(SimulatorAdminError) as unknown:
        sim.admin.authorize(COMPONENT, "wx000000000000nope")
    assert unknown.value.status == 404
    with pytest.raises(SimulatorAdminError) as bad:
        sim.admin.patch_account(AUTHORIZER, service_type=5)
    assert bad.value.status == 400 and "service_type" in str(bad.value)
