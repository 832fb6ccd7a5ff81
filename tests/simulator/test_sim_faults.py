"""Fault injection through /sim/faults: every effect, its filters, after / times, and drift."""

from __future__ import annotations

import pytest
import requests

from qrsync.simulator import RunningSimulator, SimulatorAdminError
from qrsync.simulator.default_world import MINIPROGRAM, MINIPROGRAM_SECRET, SERVICE_ACCOUNT


def raw_get(sim: RunningSimulator, token: str, body: object = None) -> requests.Response:
    return requests.post(
        f"{sim.url}/cgi-bin/wxopen/qrcodejumpget",
        params={"access_token": token},
        json={} if body is None else body,
        timeout=30,
    )


def test_an_errcode_fault_answers_instead_of_the_endpoint_once(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    fault_id = sim.admin.add_fault(endpoint="qrcodejumpget", errcode=-1)
    first = wechat.get(mp_token)
    assert first["errcode"] == -1
    assert first["errmsg"].startswith("system error rid: ")
    assert wechat.get(mp_token)["errcode"] == 0
    calls = sim.admin.calls(endpoint="qrcodejumpget")
    assert [(c["errcode"], c["fault"]) for c in calls] == [(-1, fault_id), (0, None)]
    assert sim.admin.faults()[0]["remaining"] == 0


def test_an_errcode_fault_may_carry_its_own_errmsg(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", errcode=886001, errmsg="system busy, retry")
    answer = wechat.get(mp_token)
    assert answer["errcode"] == 886001
    assert answer["errmsg"].startswith("system busy, retry rid: ")


def test_an_http_status_fault_answers_a_short_html_page(
    mp_token: str, sim: RunningSimulator
) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", http_status=502)
    response = raw_get(sim, mp_token)
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text
    assert raw_get(sim, mp_token).status_code == 200


def test_a_body_fault_answers_garbage_with_http_200(mp_token: str, sim: RunningSimulator) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", body='{"errcode": 0, "rule_li')
    response = raw_get(sim, mp_token)
    assert response.status_code == 200
    assert response.text == '{"errcode": 0, "rule_li'
    with pytest.raises(ValueError):
        response.json()


def test_a_delay_fault_then_answers_normally(wechat, mp_token: str, sim: RunningSimulator) -> None:
    fault_id = sim.admin.add_fault(endpoint="qrcodejumpget", delay_s=0.2)
    assert wechat.get(mp_token)["list_size"] == 25
    assert sim.admin.calls(endpoint="qrcodejumpget")[0]["fault"] == fault_id


def test_a_drop_fault_closes_the_connection_without_an_answer(
    mp_token: str, sim: RunningSimulator
) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", drop=True)
    with pytest.raises(requests.ConnectionError):
        raw_get(sim, mp_token)
    assert raw_get(sim, mp_token).json()["errcode"] == 0
    assert sim.admin.calls(endpoint="qrcodejumpget")[0]["status"] is None


@pytest.mark.parametrize(
    "how",
    [
        "missing_rule_list",
        "rule_list_not_list",
        "rule_missing_prefix",
        "state_not_int",
        "missing_total_count",
    ],
)
def test_malformed_answers(wechat, oa_token: str, sim: RunningSimulator, how: str) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", malformed=how)
    answer = wechat.page(oa_token, 1)
    assert answer["errcode"] == 0
    if how == "missing_rule_list":
        assert "rule_list" not in answer
    elif how == "rule_list_not_list":
        assert isinstance(answer["rule_list"], dict) and answer["rule_list"]
    elif how == "rule_missing_prefix":
        assert "prefix" not in answer["rule_list"][0] and "prefix" in answer["rule_list"][1]
    elif how == "state_not_int":
        assert isinstance(answer["rule_list"][0]["state"], str)
    else:
        assert "total_count" not in answer
    assert isinstance(wechat.page(oa_token, 1)["rule_list"], list)


def test_drift_shifts_the_following_pages(wechat, oa_token: str, sim: RunningSimulator) -> None:
    truth = [rule["prefix"] for rule in sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)]
    first = wechat.page(oa_token, 1)
    assert [rule["prefix"] for rule in first["rule_list"]] == truth[:200]
    sim.admin.add_fault(endpoint="qrcodejumpget", page_num=2, drift={"add": 3, "delete": 5})
    second = wechat.page(oa_token, 2)
    # Five rules of page 1 went away: page 2 now starts five rules later; five were never seen.
    assert [rule["prefix"] for rule in second["rule_list"]] == truth[205:405]
    assert second["total_count"] == 12_000 - 5 + 3
    last = wechat.page(oa_token, 60)
    assert [rule["prefix"] for rule in last["rule_list"]][:195] == truth[11_805:]
    assert last["list_size"] == 198
    now = [rule["prefix"] for rule in sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)]
    assert now[:-3] == truth[5:] and not set(now[-3:]) & set(truth)


def test_after_skips_matching_requests_and_times_bounds_the_hits(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", errcode=-1, after=1, times=2)
    assert [wechat.get(mp_token)["errcode"] for _ in range(4)] == [0, -1, -1, 0]


def test_times_minus_one_hits_until_cleared(wechat, mp_token: str, sim: RunningSimulator) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", errcode=-1, times=-1)
    assert [wechat.get(mp_token)["errcode"] for _ in range(3)] == [-1, -1, -1]
    assert sim.admin.faults()[0]["remaining"] == -1
    sim.admin.clear_faults()
    assert sim.admin.faults() == []
    assert wechat.get(mp_token)["errcode"] == 0


def test_filters_narrow_a_fault(
    wechat, mp_token: str, oa_token: str, sim: RunningSimulator
) -> None:
    sim.admin.add_fault(endpoint="qrcodejumpget", appid=SERVICE_ACCOUNT, page_num=3, errcode=-1)
    sim.admin.add_fault(endpoint="qrcodejumpget", get_type=1, errcode=886001)
    assert wechat.get(mp_token, {"get_type": 2, "page_num": 3, "page_size": 5})["errcode"] == 0
    assert wechat.page(oa_token, 2)["errcode"] == 0
    assert wechat.page(oa_token, 3)["errcode"] == -1
    assert wechat.page(oa_token, 3)["errcode"] == 0
    body = {"appid": MINIPROGRAM, "get_type": 1, "prefix_list": ["http://x"]}
    assert wechat.get(oa_token, body)["errcode"] == 886001


def test_faults_reach_token_endpoints_too(wechat, sim: RunningSimulator) -> None:
    sim.admin.add_fault(endpoint="stable_token", appid=MINIPROGRAM, errcode=-1)
    assert wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)["errcode"] == -1
    assert "access_token" in wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)


@pytest.mark.parametrize(
    "fault",
    [
        {"endpoint": "qrcodejumpget"},
        {"endpoint": "qrcodejumpget", "errcode": -1, "drop": True},
        {"endpoint": "nowhere", "errcode": -1},
        {"endpoint": "stable_token", "malformed": "missing_rule_list"},
        {"endpoint": "qrcodejumpget", "malformed": "sideways"},
        {"endpoint": "qrcodejumpget", "errcode": 0},
        {"endpoint": "qrcodejumpget", "http_status": 200},
        {"endpoint": "qrcodejumpget", "errcode": -1, "times": 0},
        {"endpoint": "qrcodejumpget", "drift": {"add": -1}},
        {"endpoint": "qrcodejumpget", "wire": "sideways"},
        {"endpoint": "qrcodejumpget", "content_type": ""},
        {"endpoint": "qrcodejumpget", "content_type": "text/html\r\nX-Injected: 1"},
    ],
)
def test_bad_faults_are_refused(sim: RunningSimulator, fault: dict[str, object]) -> None:
    with pytest.raises(SimulatorAdminError) as refused:
        sim.admin.add_fault(**fault)
    assert refused.value.status == 400
    assert sim.admin.faults() == []
