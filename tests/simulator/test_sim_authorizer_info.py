"""api_get_authorizer_info: an authorizer's account and the permission sets it granted a platform
(REFERENCE.md "A third-party platform's authorizers"), and its errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests

from qrsync.simulator import RunningSimulator
from qrsync.simulator.default_world import (
    AUTHORIZER,
    AUTHORIZER_REFRESH_TOKEN,
    COMPONENT,
    COMPONENT_SECRET,
    MINIPROGRAM,
    MINIPROGRAM_SECRET,
    SERVICE_ACCOUNT,
    VERIFY_TICKET,
)

INFO_PATH = "/cgi-bin/component/api_get_authorizer_info"
RID = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")
PERSONAL_MP = "wx40000000000000p1"
UNVERIFIED_OA = "wx40000000000000u1"


def assert_error(answer: dict[str, Any], errcode: int) -> None:
    assert answer == {"errcode": errcode, "errmsg": answer["errmsg"]}, answer
    assert RID.search(str(answer["errmsg"])), answer


def platform_token(wechat: Any) -> str:
    body = {
        "component_appid": COMPONENT,
        "component_appsecret": COMPONENT_SECRET,
        "component_verify_ticket": VERIFY_TICKET,
    }
    answer = wechat.post("/cgi-bin/component/api_component_token", body)
    return str(answer["component_access_token"])


def authorizer_info(
    wechat: Any,
    ct: str,
    authorizer_appid: Any = AUTHORIZER,
    component_appid: str = COMPONENT,
    token_param: str = "component_access_token",
) -> dict[str, Any]:
    body = {"component_appid": component_appid, "authorizer_appid": authorizer_appid}
    answer: dict[str, Any] = wechat.post(INFO_PATH, body, **{token_param: ct})
    return answer


def func_info(*permission_sets: int) -> list[dict[str, Any]]:
    return [{"funcscope_category": {"id": n}} for n in permission_sets]


@pytest.fixture
def three_authorizers(sim: RunningSimulator) -> RunningSimulator:
    """The default platform, authorised by its service account, a personal mini program
    (permission set 18 only) and an unverified service account with names of its own."""
    sim.admin.add_account({"appid": PERSONAL_MP, "kind": "miniprogram", "personal": True})
    sim.admin.add_account(
        {
            "appid": UNVERIFIED_OA,
            "kind": "service_account",
            "verified": False,
            "nick_name": "小店服务号",
            "principal_name": "深圳市小店科技有限公司",
        }
    )
    sim.admin.add_component(
        {
            "appid": COMPONENT,
            "secret": COMPONENT_SECRET,
            "verify_ticket": VERIFY_TICKET,
            "authorizations": [
                {"authorizer_appid": AUTHORIZER, "refresh_token": AUTHORIZER_REFRESH_TOKEN},
                {
                    "authorizer_appid": PERSONAL_MP,
                    "refresh_token": "refresh@@@personal",
                    "permission_sets": [18],
                },
                {
                    "authorizer_appid": UNVERIFIED_OA,
                    "refresh_token": "refresh@@@unverified",
                    "permission_sets": [1, 3, 15],
                },
            ],
        }
    )
    return sim


def test_a_service_account_and_the_permission_sets_it_granted(wechat) -> None:
    ct = platform_token(wechat)
    answer = authorizer_info(wechat, ct)
    assert set(answer) == {"authorizer_info", "authorization_info"}
    assert answer["authorization_info"] == {
        "authorizer_appid": AUTHORIZER,
        "authorizer_refresh_token": AUTHORIZER_REFRESH_TOKEN,
        "func_info": func_info(3, 18),  # the default world's grant
    }
    info = answer["authorizer_info"]
    assert "MiniProgramInfo" not in info
    assert info["service_type_info"] == {"id": 2}  # a service account
    assert info["verify_type_info"] == {"id": 0}  # verified by WeChat
    assert info["nick_name"] and info["principal_name"]
    assert re.fullmatch(r"gh_[0-9a-f]{12}", info["user_name"])
    assert info["head_img"].startswith("http://") and info["qrcode_url"].startswith("http://")
    assert set(info["business_info"]) >= {"open_pay", "open_store", "open_card"}
    # The same account answers the same, token after token.
    assert authorizer_info(wechat, ct) == answer


def test_a_mini_program_is_told_by_its_mini_program_info(
    wechat, three_authorizers: RunningSimulator
) -> None:
    ct = platform_token(wechat)
    answer = authorizer_info(wechat, ct, PERSONAL_MP)
    info = answer["authorizer_info"]
    assert set(info["MiniProgramInfo"]) >= {"network", "categories"}
    assert info["service_type_info"] == {"id": 0}
    assert info["principal_name"] == "个人"  # what WeChat calls a person's account's owner
    assert answer["authorization_info"]["func_info"] == func_info(18)


def test_an_unverified_account_and_its_own_names(
    wechat, three_authorizers: RunningSimulator
) -> None:
    info = authorizer_info(wechat, platform_token(wechat), UNVERIFIED_OA)["authorizer_info"]
    assert info["verify_type_info"] == {"id": -1}
    assert (info["nick_name"], info["principal_name"]) == ("小店服务号", "深圳市小店科技有限公司")
    three_authorizers.admin.patch_account(UNVERIFIED_OA, verified=True, nick_name="新名字")
    info = authorizer_info(wechat, platform_token(wechat), UNVERIFIED_OA)["authorizer_info"]
    assert (info["verify_type_info"], info["nick_name"]) == ({"id": 0}, "新名字")


def test_an_account_that_has_not_authorised_the_platform_is_61003(
    wechat, sim: RunningSimulator
) -> None:
    ct = platform_token(wechat)
    # The default mini program is an account of the world but no authorizer of the platform.
    answer = authorizer_info(wechat, ct, MINIPROGRAM)
    assert_error(answer, 61003)
    assert answer["errmsg"].startswith("component is not authorized by this account rid: ")
    assert_error(authorizer_info(wechat, ct, SERVICE_ACCOUNT), 61003)
    sim.admin.revoke_authorization(COMPONENT, AUTHORIZER)
    assert_error(authorizer_info(wechat, ct), 61003)


@pytest.mark.parametrize(
    ("authorizer_appid", "errcode"),
    [("wx99999999999999zz", 40013), ("", 41002), (None, 41002), (7, 41002)],
    ids=["unknown", "empty", "missing", "not-a-string"],
)
def test_an_appid_that_names_no_account(wechat, authorizer_appid: Any, errcode: int) -> None:
    assert_error(authorizer_info(wechat, platform_token(wechat), authorizer_appid), errcode)


def test_a_body_that_is_not_json_is_47001(wechat, sim: RunningSimulator) -> None:
    ct = platform_token(wechat)
    answer = requests.post(
        f"{sim.url}{INFO_PATH}", params={"component_access_token": ct}, data=b"{", timeout=10
    ).json()
    assert_error(answer, 47001)


def test_the_component_access_token_is_checked(wechat, sim: RunningSimulator) -> None:
    ct = platform_token(wechat)
    # The discovery endpoints take the token under either name (REFERENCE).
    assert "authorizer_info" in authorizer_info(wechat, ct, token_param="access_token")
    assert_error(authorizer_info(wechat, ""), 41001)
    assert_error(authorizer_info(wechat, "not-a-token"), 40001)
    access = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert_error(authorizer_info(wechat, access), 40001)  # not a platform's token
    assert_error(authorizer_info(wechat, ct, component_appid="wx99999999999999c9"), 40013)
    sim.admin.expire_tokens(COMPONENT)
    assert_error(authorizer_info(wechat, ct), 42001)
    fresh = platform_token(wechat)
    sim.admin.invalidate_tokens(COMPONENT)
    assert_error(authorizer_info(wechat, fresh), 40001)


def test_the_refresh_token_is_the_current_one_after_a_rotation(
    wechat, sim: RunningSimulator
) -> None:
    sim.admin.add_component(
        {
            "appid": COMPONENT,
            "secret": COMPONENT_SECRET,
            "verify_ticket": VERIFY_TICKET,
            "authorizations": [
                {
                    "authorizer_appid": AUTHORIZER,
                    "refresh_token": AUTHORIZER_REFRESH_TOKEN,
                    "permission_sets": [3],
                    "rotate_refresh_token": True,
                }
            ],
        }
    )
    ct = platform_token(wechat)
    body = {
        "component_appid": COMPONENT,
        "authorizer_appid": AUTHORIZER,
        "authorizer_refresh_token": AUTHORIZER_REFRESH_TOKEN,
    }
    rotated = wechat.post(
        "/cgi-bin/component/api_authorizer_token", body, component_access_token=ct
    )["authorizer_refresh_token"]
    assert rotated != AUTHORIZER_REFRESH_TOKEN
    assert authorizer_info(wechat, ct)["authorization_info"] == {
        "authorizer_appid": AUTHORIZER,
        "authorizer_refresh_token": rotated,
        "func_info": func_info(3),
    }


def test_calls_are_logged_without_tokens_and_faults_apply(wechat, sim: RunningSimulator) -> None:
    ct = platform_token(wechat)
    fault_id = sim.admin.add_fault(endpoint="authorizer_info", errcode=-1)
    assert_error(authorizer_info(wechat, ct), -1)
    assert "authorizer_info" in authorizer_info(wechat, ct)
    assert_error(authorizer_info(wechat, ct, MINIPROGRAM), 61003)
    sim.admin.add_fault(endpoint="authorizer_info", drop=True)
    with pytest.raises(requests.ConnectionError):
        authorizer_info(wechat, ct)
    calls = sim.admin.calls(endpoint="authorizer_info")
    assert [(c["appid"], c["errcode"], c["fault"]) for c in calls] == [
        (COMPONENT, -1, fault_id),
        (COMPONENT, 0, None),
        (COMPONENT, 61003, None),
        (COMPONENT, None, "f2"),
    ]
    assert sim.admin.stats()["authorizer_info"] == 4
    logged = json.dumps(sim.admin.calls())
    assert ct not in logged and AUTHORIZER_REFRESH_TOKEN not in logged


def test_no_per_second_limit_holds_it_as_the_rule_endpoints_are_held(
    limited: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    """WeChat documents no per-second limit for api_get_authorizer_info (a daily quota only):
    a burst far above the rule endpoints' 5 a second is answered in full."""
    client = make_wechat(limited.url)
    ct = platform_token(client)
    codes = [authorizer_info(client, ct).get("errcode", 0) for _ in range(30)]
    assert set(codes) == {0}
    assert {c["appid"] for c in limited.admin.calls(endpoint="authorizer_info")} == {COMPONENT}
