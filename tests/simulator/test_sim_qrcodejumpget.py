"""qrcodejumpget in both modes, every get_type and its argument checks (REFERENCE.md)."""

from __future__ import annotations

import pytest
import requests

from qrsync.simulator import RunningSimulator
from qrsync.simulator.default_world import (
    AUTHORIZER,
    AUTHORIZER_SECRET,
    CENTRAL_MINIPROGRAM,
    MINIPROGRAM,
    SERVICE_ACCOUNT,
)

MP_FIELDS = {"prefix", "path", "state", "open_version", "permit_sub_rule", "debug_url"}
OA_FIELDS = {"prefix", "path", "state"}
ANSWER_FIELDS = {
    "errcode",
    "errmsg",
    "rule_list",
    "qrcodejump_open",
    "list_size",
    "qrcodejump_pub_quota",
    "total_count",
}


# --- mini-program mode -----------------------------------------------------------------------


def test_miniprogram_mode_answers_every_rule_with_all_fields(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    answer = wechat.get(mp_token)
    assert set(answer) == ANSWER_FIELDS
    assert (answer["errcode"], answer["errmsg"]) == (0, "ok")
    assert answer["list_size"] == len(answer["rule_list"]) == 25
    assert answer["total_count"] == 26  # total_count_offset 1, like the document's example
    assert (answer["qrcodejump_open"], answer["qrcodejump_pub_quota"]) == (1, 20)
    assert all(set(rule) == MP_FIELDS for rule in answer["rule_list"])
    assert answer["rule_list"] == [
        {key: rule[key] for key in MP_FIELDS} for rule in sim.admin.rules(MINIPROGRAM)
    ]


def test_miniprogram_mode_needs_no_body(sim: RunningSimulator, mp_token: str) -> None:
    url = f"{sim.url}/cgi-bin/wxopen/qrcodejumpget"
    answer = requests.post(url, params={"access_token": mp_token}, timeout=10).json()
    assert answer["errcode"] == 0 and answer["list_size"] == 25


def test_miniprogram_mode_honours_get_type_1_like_the_documents_example(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    truth = [rule["prefix"] for rule in sim.admin.rules(MINIPROGRAM)]
    body = {
        "appid": "wx1234567890abcdef",
        "get_type": 1,
        "prefix_list": [truth[7], "https://unknown.example.com/q", truth[2]],
    }
    answer = wechat.get(mp_token, body)
    assert [rule["prefix"] for rule in answer["rule_list"]] == [truth[2], truth[7]]
    assert all(set(rule) == MP_FIELDS for rule in answer["rule_list"])
    assert (answer["list_size"], answer["total_count"]) == (2, 26)


def test_miniprogram_mode_pages_with_get_type_2(wechat, mp_token: str) -> None:
    sizes = [
        wechat.get(mp_token, {"get_type": 2, "page_num": n, "page_size": 10})["list_size"]
        for n in (1, 2, 3, 4)
    ]
    assert sizes == [10, 10, 5, 0]


def test_a_personal_miniprogram_gets_85075(wechat, sim: RunningSimulator) -> None:
    sim.admin.add_account(
        {"appid": "wx000000000000dead", "kind": "miniprogram", "secret": "p", "personal": True}
    )
    token = wechat.access_token("wx000000000000dead", "p")
    assert wechat.get(token)["errcode"] == 85075


# --- service-account mode --------------------------------------------------------------------


def test_get_type_0_answers_the_newest_10000_newest_first(
    wechat, oa_token: str, sim: RunningSimulator
) -> None:
    answer = wechat.get(oa_token, {"appid": MINIPROGRAM})
    truth = sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)
    assert (answer["list_size"], answer["total_count"]) == (10_000, 12_000)
    assert all(set(rule) == OA_FIELDS for rule in answer["rule_list"])
    assert [rule["prefix"] for rule in answer["rule_list"]] == [
        rule["prefix"] for rule in reversed(truth[-10_000:])
    ]
    explicit = wechat.get(oa_token, {"appid": MINIPROGRAM, "get_type": 0})
    assert explicit["rule_list"] == answer["rule_list"]


def test_get_type_1_answers_the_listed_prefixes_that_exist_in_add_order(
    wechat, oa_token: str, sim: RunningSimulator
) -> None:
    truth = sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)
    asked = [truth[9000]["prefix"], "http://weixin.qq.com/q/02nothere", truth[3]["prefix"]]
    answer = wechat.get(oa_token, {"appid": MINIPROGRAM, "get_type": 1, "prefix_list": asked})
    assert answer["rule_list"] == [
        {key: truth[i][key] for key in ("prefix", "state", "path")} for i in (3, 9000)
    ]
    assert (answer["list_size"], answer["total_count"]) == (2, 12_000)


@pytest.mark.parametrize(
    "prefix_list",
    [None, [], ["http://weixin.qq.com/q/x"] * 201, "http://weixin.qq.com/q/x", [1]],
    ids=["missing", "empty", "201", "not-a-list", "not-strings"],
)
def test_get_type_1_argument_checks(wechat, oa_token: str, prefix_list: object) -> None:
    body: dict[str, object] = {"appid": MINIPROGRAM, "get_type": 1}
    if prefix_list is not None:
        body["prefix_list"] = prefix_list
    assert wechat.get(oa_token, body)["errcode"] == 40097


def test_get_type_1_takes_200_prefixes(wechat, oa_token: str) -> None:
    body = {"appid": MINIPROGRAM, "get_type": 1, "prefix_list": ["http://x"] * 200}
    assert wechat.get(oa_token, body)["list_size"] == 0


def test_get_type_2_pages_every_rule_in_add_order(
    wechat, oa_token: str, sim: RunningSimulator
) -> None:
    truth = sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)
    seen = []
    for page_num in range(1, 61):
        answer = wechat.page(oa_token, page_num)
        assert answer["total_count"] == 12_000
        assert answer["list_size"] == len(answer["rule_list"]) == 200
        seen.extend(answer["rule_list"])
    assert seen == [{key: rule[key] for key in ("prefix", "state", "path")} for rule in truth]
    past = wechat.page(oa_token, 61)
    assert (past["errcode"], past["rule_list"], past["list_size"]) == (0, [], 0)


@pytest.mark.parametrize(
    ("page_num", "page_size"),
    [(0, 10), (-1, 10), ("1", 10), (None, 10), (True, 10), (1, 0), (1, 201), (1, None), (1, 1.5)],
)
def test_get_type_2_argument_checks(
    wechat, oa_token: str, page_num: object, page_size: object
) -> None:
    body: dict[str, object] = {"appid": MINIPROGRAM, "get_type": 2}
    if page_num is not None:
        body["page_num"] = page_num
    if page_size is not None:
        body["page_size"] = page_size
    assert wechat.get(oa_token, body)["errcode"] == 40097


def test_get_type_2_takes_a_page_size_of_200(wechat, oa_token: str) -> None:
    assert wechat.page(oa_token, 1, page_size=200)["list_size"] == 200


@pytest.mark.parametrize("get_type", [3, -1, "0", 1.0])
def test_an_unknown_get_type_is_40097(wechat, oa_token: str, get_type: object) -> None:
    assert wechat.get(oa_token, {"appid": MINIPROGRAM, "get_type": get_type})["errcode"] == 40097


def test_service_account_mode_needs_a_linked_miniprogram(wechat, oa_token: str) -> None:
    assert wechat.get(oa_token, {})["errcode"] == 40097
    assert wechat.get(oa_token, {"appid": CENTRAL_MINIPROGRAM})["errcode"] == 40166
    assert wechat.get(oa_token, {"appid": "not-an-appid"})["errcode"] == 40166


def test_total_count_is_per_service_account_and_miniprogram(wechat, oa_token: str) -> None:
    other = wechat.access_token(AUTHORIZER, AUTHORIZER_SECRET)
    assert wechat.get(other, {"appid": MINIPROGRAM, "get_type": 0})["total_count"] == 300
    assert wechat.get(oa_token, {"appid": MINIPROGRAM, "get_type": 0})["total_count"] == 12_000


def test_an_unverified_service_account_gets_48001(wechat, sim: RunningSimulator) -> None:
    sim.admin.add_account(
        {
            "appid": "wx000000000000beef",
            "kind": "service_account",
            "secret": "u",
            "verified": False,
            "linked_miniprograms": [MINIPROGRAM],
        }
    )
    token = wechat.access_token("wx000000000000beef", "u")
    assert wechat.get(token, {"appid": MINIPROGRAM})["errcode"] == 48001


# --- token and body checks -------------------------------------------------------------------


def test_token_and_body_checks(sim: RunningSimulator, mp_token: str) -> None:
    url = f"{sim.url}/cgi-bin/wxopen/qrcodejumpget"

    def errcode(params: dict[str, str], data: bytes = b"{}") -> int:
        answer = requests.post(url, params=params, data=data, timeout=10).json()
        return int(answer["errcode"])

    assert errcode({}) == 41001
    assert errcode({"access_token": ""}) == 41001
    assert errcode({"access_token": "SIM_not_a_token"}) == 40001
    assert errcode({"access_token": mp_token}, b"{not json") == 47001
    assert errcode({"access_token": mp_token}, b"[1, 2]") == 47001
    assert errcode({"access_token": mp_token}) == 0
