"""qrcodejumpadd / qrcodejumppublish / qrcodejumpdelete and their errcodes (REFERENCE.md)."""

from __future__ import annotations

from typing import Any

import pytest

from qrsync.simulator import RunningSimulator
from qrsync.simulator.default_world import CENTRAL_MINIPROGRAM, MINIPROGRAM, SERVICE_ACCOUNT

NEW = "https://shop.example.com/qr/new"


def new_rule(prefix: str = NEW, **changes: Any) -> dict[str, Any]:
    rule = {
        "prefix": prefix,
        "permit_sub_rule": 1,
        "path": "pages/index/index",
        "open_version": 3,
        "debug_url": [f"{prefix}?a=1"],
        "is_edit": 0,
    }
    rule.update(changes)
    return rule


def prefixes(sim: RunningSimulator, appid: str = MINIPROGRAM, mp: str | None = None) -> list[str]:
    return [rule["prefix"] for rule in sim.admin.rules(appid, mp)]


def test_an_added_rule_goes_last_unpublished(wechat, mp_token: str, sim: RunningSimulator) -> None:
    assert wechat.rules_call("qrcodejumpadd", mp_token, new_rule()) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    answer = wechat.get(mp_token)
    assert answer["rule_list"][-1] == {
        "prefix": NEW,
        "open_version": 3,
        "state": 1,
        "permit_sub_rule": 1,
        "path": "pages/index/index",
        "debug_url": [f"{NEW}?a=1"],
    }
    assert (answer["list_size"], answer["total_count"]) == (26, 27)


def test_an_edited_rule_keeps_its_place(wechat, mp_token: str, sim: RunningSimulator) -> None:
    truth = sim.admin.rules(MINIPROGRAM)
    unpublished = next(i for i, rule in enumerate(truth) if rule["state"] == 1 and i > 0)
    prefix = truth[unpublished]["prefix"]
    edit = new_rule(prefix, path="pages/edited/index", open_version=1, debug_url=[], is_edit=1)
    assert wechat.rules_call("qrcodejumpadd", mp_token, edit)["errcode"] == 0
    after = sim.admin.rules(MINIPROGRAM)
    assert [rule["prefix"] for rule in after] == [rule["prefix"] for rule in truth]
    assert after[unpublished] == {
        "prefix": prefix,
        "path": "pages/edited/index",
        "state": 1,
        "open_version": 1,
        "permit_sub_rule": 1,
        "debug_url": [],
    }


def test_a_published_rule_cannot_be_edited(wechat, mp_token: str, sim: RunningSimulator) -> None:
    published = next(rule for rule in sim.admin.rules(MINIPROGRAM) if rule["state"] == 2)
    edit = new_rule(published["prefix"], debug_url=[], is_edit=1)
    assert wechat.rules_call("qrcodejumpadd", mp_token, edit)["errcode"] == 40097


def test_editing_a_missing_rule_is_40097(wechat, mp_token: str) -> None:
    edit = new_rule(is_edit=1)
    assert wechat.rules_call("qrcodejumpadd", mp_token, edit)["errcode"] == 40097


@pytest.mark.parametrize(
    ("rule", "errcode"),
    [
        (new_rule("ftp://shop.example.com/q", debug_url=[]), 85066),
        (new_rule("shop.example.com/q", debug_url=[]), 85066),
        (new_rule(debug_url=["https://elsewhere.example.com/?a=1"]), 85068),
        (new_rule(debug_url=[f"{NEW}?a={n}" for n in range(6)]), 40097),
        (new_rule(open_version=4), 40097),
        (new_rule(permit_sub_rule=0), 40097),
        (new_rule(is_edit=2), 40097),
        ({"prefix": NEW}, 40097),
    ],
    ids=[
        "ftp",
        "no-scheme",
        "debug-url-elsewhere",
        "six-debug-urls",
        "open-version",
        "permit-sub-rule",
        "is-edit",
        "missing-fields",
    ],
)
def test_add_refuses_bad_rules(wechat, mp_token: str, rule: dict[str, Any], errcode: int) -> None:
    assert wechat.rules_call("qrcodejumpadd", mp_token, rule)["errcode"] == errcode


def test_adding_an_existing_prefix_is_85071(wechat, mp_token: str, sim: RunningSimulator) -> None:
    existing = prefixes(sim)[3]
    rule = new_rule(existing, debug_url=[])
    assert wechat.rules_call("qrcodejumpadd", mp_token, rule)["errcode"] == 85071


def test_a_prefix_of_another_account_is_85072(wechat, mp_token: str, sim: RunningSimulator) -> None:
    theirs = prefixes(sim, CENTRAL_MINIPROGRAM)[0]
    rule = new_rule(theirs, debug_url=[])
    assert wechat.rules_call("qrcodejumpadd", mp_token, rule)["errcode"] == 85072


def test_a_full_account_is_85073(wechat, mp_token: str, sim: RunningSimulator) -> None:
    sim.admin.patch_account(MINIPROGRAM, max_rules=25)
    assert wechat.rules_call("qrcodejumpadd", mp_token, new_rule())["errcode"] == 85073


def test_publish_uses_one_of_the_months_publishes(
    wechat, mp_token: str, sim: RunningSimulator
) -> None:
    prefix = next(rule["prefix"] for rule in sim.admin.rules(MINIPROGRAM) if rule["state"] == 1)
    assert wechat.rules_call("qrcodejumppublish", mp_token, {"prefix": prefix})["errcode"] == 0
    answer = wechat.get(mp_token, {"get_type": 1, "prefix_list": [prefix]})
    assert answer["rule_list"][0]["state"] == 2
    assert answer["qrcodejump_pub_quota"] == 19
    # Publishing it again changes nothing and costs nothing.
    assert wechat.rules_call("qrcodejumppublish", mp_token, {"prefix": prefix})["errcode"] == 0
    assert wechat.get(mp_token)["qrcodejump_pub_quota"] == 19


def test_publish_errors(wechat, mp_token: str, sim: RunningSimulator) -> None:
    prefix = next(rule["prefix"] for rule in sim.admin.rules(MINIPROGRAM) if rule["state"] == 1)
    missing = {"prefix": "https://nowhere.example.com/q"}
    assert wechat.rules_call("qrcodejumppublish", mp_token, missing)["errcode"] == 40097
    sim.admin.patch_account(MINIPROGRAM, pub_quota=0)
    assert wechat.rules_call("qrcodejumppublish", mp_token, {"prefix": prefix})["errcode"] == 886000
    sim.admin.patch_account(MINIPROGRAM, pub_quota=5, released=False)
    assert wechat.rules_call("qrcodejumppublish", mp_token, {"prefix": prefix})["errcode"] == 85074


def test_a_deleted_rule_disappears(wechat, mp_token: str, sim: RunningSimulator) -> None:
    victim = prefixes(sim)[4]
    assert wechat.rules_call("qrcodejumpdelete", mp_token, {"prefix": victim})["errcode"] == 0
    answer = wechat.get(mp_token)
    assert victim not in [rule["prefix"] for rule in answer["rule_list"]]
    assert (answer["list_size"], answer["total_count"]) == (24, 25)
    assert wechat.rules_call("qrcodejumpdelete", mp_token, {"prefix": victim})["errcode"] == 40097


def test_service_account_rules_change_through_appid(
    wechat, oa_token: str, sim: RunningSimulator
) -> None:
    prefix = "http://weixin.qq.com/q/02simulatortest0000000"
    add = {"appid": MINIPROGRAM, "prefix": prefix, "path": "pages/a/b", "is_edit": 0}
    assert wechat.rules_call("qrcodejumpadd", oa_token, add)["errcode"] == 0
    last = wechat.page(oa_token, 61)
    assert last["rule_list"] == [{"prefix": prefix, "state": 1, "path": "pages/a/b"}]
    assert last["total_count"] == 12_001
    body = {"appid": MINIPROGRAM, "prefix": prefix}
    assert wechat.rules_call("qrcodejumppublish", oa_token, body)["errcode"] == 0
    assert prefixes(sim, SERVICE_ACCOUNT, MINIPROGRAM)[-1] == prefix
    assert sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)[-1]["state"] == 2
    assert wechat.rules_call("qrcodejumpdelete", oa_token, body)["errcode"] == 0
    assert wechat.page(oa_token, 61)["rule_list"] == []
    without_appid = {"prefix": prefix, "path": "pages/a/b"}
    assert wechat.rules_call("qrcodejumpadd", oa_token, without_appid)["errcode"] == 40097


# The string forms: WeChat's older page of qrcodejumpadd sends "permit_sub_rule": "1" and
# "open_version": "1", and SDKs such as WxJava (WxQrcodeJumpRule: String permitSubRule,
# openVersion, isEdit) send all three flags as strings; WeChat takes them.


@pytest.mark.parametrize(
    "flags",
    [
        {"permit_sub_rule": "1", "open_version": "1", "is_edit": "0"},
        {"permit_sub_rule": "2", "open_version": "2", "is_edit": 0},
        {"permit_sub_rule": 2, "open_version": "3"},
    ],
    ids=["all-strings", "mixed", "no-is-edit"],
)
def test_add_takes_the_flags_as_decimal_strings_and_get_answers_integers(
    wechat, mp_token: str, sim: RunningSimulator, flags: dict[str, Any]
) -> None:
    assert wechat.rules_call("qrcodejumpadd", mp_token, new_rule(**flags))["errcode"] == 0
    (listed,) = wechat.get(mp_token, {"get_type": 1, "prefix_list": [NEW]})["rule_list"]
    assert listed["permit_sub_rule"] == int(flags["permit_sub_rule"])
    assert listed["open_version"] == int(flags["open_version"])
    assert all(type(listed[key]) is int for key in ("permit_sub_rule", "open_version", "state"))
    assert sim.admin.rules(MINIPROGRAM)[-1]["permit_sub_rule"] == int(flags["permit_sub_rule"])


def test_an_edit_with_is_edit_as_a_string(wechat, mp_token: str, sim: RunningSimulator) -> None:
    add = new_rule(permit_sub_rule="1", open_version="1", is_edit="0")
    assert wechat.rules_call("qrcodejumpadd", mp_token, add)["errcode"] == 0
    edit = new_rule(path="pages/edited/index", permit_sub_rule="2", open_version="3", is_edit="1")
    assert wechat.rules_call("qrcodejumpadd", mp_token, edit)["errcode"] == 0
    assert sim.admin.rules(MINIPROGRAM)[-1] == {
        "prefix": NEW,
        "path": "pages/edited/index",
        "state": 1,
        "open_version": 3,
        "permit_sub_rule": 2,
        "debug_url": [f"{NEW}?a=1"],
    }
    # "0" adds: adding the same prefix again is 85071, as with 0.
    again = new_rule(is_edit="0")
    assert wechat.rules_call("qrcodejumpadd", mp_token, again)["errcode"] == 85071


@pytest.mark.parametrize(
    "changes",
    [
        {"permit_sub_rule": "0"},
        {"permit_sub_rule": "3"},
        {"open_version": "4"},
        {"open_version": "0"},
        {"is_edit": "2"},
        {"permit_sub_rule": "01"},
        {"open_version": " 1"},
        {"open_version": "1.0"},
        {"open_version": "+1"},
        {"permit_sub_rule": "one"},
        {"permit_sub_rule": ""},
        {"open_version": 1.0},
        {"permit_sub_rule": True},
        {"is_edit": False},
        {"open_version": [1]},
        {"permit_sub_rule": None},
        {"open_version": None},
        {"is_edit": "true"},
    ],
    ids=lambda changes: f"{next(iter(changes))}={next(iter(changes.values()))!r}",
)
def test_add_refuses_other_forms_and_values_with_40097(
    wechat, mp_token: str, sim: RunningSimulator, changes: dict[str, Any]
) -> None:
    answer = wechat.rules_call("qrcodejumpadd", mp_token, new_rule(**changes))
    assert answer["errcode"] == 40097
    assert NEW not in prefixes(sim)


def test_a_service_account_rule_with_is_edit_as_a_string(
    wechat, oa_token: str, sim: RunningSimulator
) -> None:
    prefix = "http://weixin.qq.com/q/02simulatorstring000000"
    add = {"appid": MINIPROGRAM, "prefix": prefix, "path": "pages/a/b", "is_edit": "0"}
    assert wechat.rules_call("qrcodejumpadd", oa_token, add)["errcode"] == 0
    edit = {**add, "path": "pages/a/c", "is_edit": "1"}
    assert wechat.rules_call("qrcodejumpadd", oa_token, edit)["errcode"] == 0
    assert sim.admin.rules(SERVICE_ACCOUNT, MINIPROGRAM)[-1]["path"] == "pages/a/c"
    assert wechat.rules_call("qrcodejumpadd", oa_token, {**add, "is_edit": "2"})["errcode"] == 40097
