"""api_get_authorizer_list: a platform's current authorizations with their current refresh tokens
(REFERENCE.md "A third-party platform's authorizers"), paged by offset and count."""

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
    VERIFY_TICKET,
)

LIST_PATH = "/cgi-bin/component/api_get_authorizer_list"
GRANTED = [f"wx30000000000000{n:02d}" for n in range(7)]
RID = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


def assert_error(answer: dict[str, Any], errcode: int) -> None:
    assert answer["errcode"] == errcode, answer
    assert RID.search(str(answer["errmsg"])), answer


def platform_token(wechat: Any) -> str:
    body = {
        "component_appid": COMPONENT,
        "component_appsecret": COMPONENT_SECRET,
        "component_verify_ticket": VERIFY_TICKET,
    }
    return str(
        wechat.post("/cgi-bin/component/api_component_token", body)["component_access_token"]
    )


def authorizer_token(wechat: Any, ct: str) -> dict[str, Any]:
    body = {
        "component_appid": COMPONENT,
        "authorizer_appid": AUTHORIZER,
        "authorizer_refresh_token": AUTHORIZER_REFRESH_TOKEN,
    }
    answer: dict[str, Any] = wechat.post(
        "/cgi-bin/component/api_authorizer_token", body, component_access_token=ct
    )
    return answer


def authorizer_list(
    wechat: Any,
    ct: str,
    offset: Any = 0,
    count: Any = 500,
    component_appid: str = COMPONENT,
    token_param: str = "component_access_token",
) -> dict[str, Any]:
    body = {"component_appid": component_appid, "offset": offset, "count": count}
    answer: dict[str, Any] = wechat.post(LIST_PATH, body, **{token_param: ct})
    return answer


def grant(appid: str, refresh_token: str, **extra: Any) -> dict[str, Any]:
    return {"authorizer_appid": appid, "refresh_token": refresh_token, **extra}


@pytest.fixture
def seven_authorizers(sim: RunningSimulator) -> list[str]:
    """The default platform, authorised by seven mini programs (auth_time 1700000000 + n)."""
    for appid in GRANTED:
        sim.admin.add_account({"appid": appid, "kind": "miniprogram", "secret": "s-" + appid})
    sim.admin.add_component(
        {
            "appid": COMPONENT,
            "secret": COMPONENT_SECRET,
            "verify_ticket": VERIFY_TICKET,
            "authorizations": [
                grant(appid, f"refresh@@@{appid}", auth_time=1_700_000_000 + n)
                for n, appid in enumerate(GRANTED)
            ],
        }
    )
    return GRANTED


def test_pages_by_offset_and_count_until_total_count(wechat, seven_authorizers: list[str]) -> None:
    ct = platform_token(wechat)
    pages = [authorizer_list(wechat, ct, offset, 3) for offset in (0, 3, 6)]
    assert [set(page) for page in pages] == [{"total_count", "list"}] * 3
    assert [page["total_count"] for page in pages] == [7, 7, 7]
    assert [len(page["list"]) for page in pages] == [3, 3, 1]
    listed = [entry for page in pages for entry in page["list"]]
    assert listed == [
        {
            "authorizer_appid": appid,
            "refresh_token": f"refresh@@@{appid}",
            "auth_time": 1_700_000_000 + n,
        }
        for n, appid in enumerate(seven_authorizers)
    ]
    assert authorizer_list(wechat, ct, 7, 3) == {"total_count": 7, "list": []}
    assert authorizer_list(wechat, ct, 0, 500)["list"] == listed


def test_lists_the_current_refresh_token_after_a_rotation_and_not_a_revoked_grant(
    wechat, sim: RunningSimulator
) -> None:
    sim.admin.add_component(
        {
            "appid": COMPONENT,
            "secret": COMPONENT_SECRET,
            "verify_ticket": VERIFY_TICKET,
            "authorizations": [
                grant(AUTHORIZER, AUTHORIZER_REFRESH_TOKEN, rotate_refresh_token=True)
            ],
        }
    )
    ct = platform_token(wechat)
    (before,) = authorizer_list(wechat, ct)["list"]
    assert before["refresh_token"] == AUTHORIZER_REFRESH_TOKEN
    assert isinstance(before["auth_time"], int) and before["auth_time"] > 0
    rotated = authorizer_token(wechat, ct)["authorizer_refresh_token"]
    assert rotated != AUTHORIZER_REFRESH_TOKEN
    # Within the old token's grace the list already gives the new one: it is the current one.
    (after,) = authorizer_list(wechat, ct)["list"]
    assert after == {**before, "refresh_token": rotated}
    sim.admin.revoke_authorization(COMPONENT, AUTHORIZER)
    assert authorizer_list(wechat, ct) == {"total_count": 0, "list": []}


def test_count_above_500_is_40170(wechat, seven_authorizers: list[str]) -> None:
    ct = platform_token(wechat)
    answer = authorizer_list(wechat, ct, 0, 501)
    assert_error(answer, 40170)
    assert answer["errmsg"].startswith("args count exceed count limit rid: ")
    assert authorizer_list(wechat, ct, 0, 500)["total_count"] == 7


@pytest.mark.parametrize(
    ("offset", "count"),
    [(-1, 10), (0, 0), (0, -5), ("0", 10), (0, "10"), (None, 10), (0, None), (0, True)],
)
def test_bad_offset_or_count_is_40097(wechat, offset: Any, count: Any) -> None:
    assert_error(authorizer_list(wechat, platform_token(wechat), offset, count), 40097)


def test_a_body_that_is_not_json_is_47001(wechat, sim: RunningSimulator) -> None:
    ct = platform_token(wechat)
    answer = requests.post(
        f"{sim.url}{LIST_PATH}", params={"component_access_token": ct}, data=b"{", timeout=10
    ).json()
    assert_error(answer, 47001)


def test_the_component_access_token_is_checked(wechat, sim: RunningSimulator) -> None:
    ct = platform_token(wechat)
    # The discovery endpoints take the token under either name (REFERENCE).
    assert authorizer_list(wechat, ct, token_param="access_token")["total_count"] == 1
    assert_error(authorizer_list(wechat, ""), 41001)
    assert_error(authorizer_list(wechat, "not-a-token"), 40001)
    access = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert_error(authorizer_list(wechat, access), 40001)  # not a platform's token
    assert_error(authorizer_list(wechat, ct, component_appid="wx99999999999999c9"), 40013)
    sim.admin.expire_tokens(COMPONENT)
    assert_error(authorizer_list(wechat, ct), 42001)
    fresh = platform_token(wechat)
    sim.admin.invalidate_tokens(COMPONENT)
    assert_error(authorizer_list(wechat, fresh), 40001)


def test_calls_are_logged_without_tokens_and_faults_apply(wechat, sim: RunningSimulator) -> None:
    ct = platform_token(wechat)
    fault_id = sim.admin.add_fault(endpoint="authorizer_list", errcode=-1)
    assert_error(authorizer_list(wechat, ct), -1)
    assert authorizer_list(wechat, ct)["total_count"] == 1
    sim.admin.add_fault(endpoint="authorizer_list", drop=True)
    with pytest.raises(requests.ConnectionError):
        authorizer_list(wechat, ct)
    calls = sim.admin.calls(endpoint="authorizer_list")
    assert [(c["appid"], c["errcode"], c["fault"]) for c in calls] == [
        (COMPONENT, -1, fault_id),
        (COMPONENT, 0, None),
        (COMPONENT, None, "f2"),
    ]
    assert sim.admin.stats()["authorizer_list"] == 3
    logged = json.dumps(sim.admin.calls())
    assert ct not in logged and AUTHORIZER_REFRESH_TOKEN not in logged


def test_no_per_second_limit_holds_it_as_the_rule_endpoints_are_held(
    limited: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    """WeChat documents no per-second limit for api_get_authorizer_list (a daily quota only):
    a burst far above the rule endpoints' 5 a second is answered in full."""
    client = make_wechat(limited.url)
    ct = platform_token(client)
    codes = [authorizer_list(client, ct).get("errcode", 0) for _ in range(30)]
    assert set(codes) == {0}
    assert {c["appid"] for c in limited.admin.calls(endpoint="authorizer_list")} == {COMPONENT}
