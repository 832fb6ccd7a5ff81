"""The token endpoints: stable_token, /cgi-bin/token, the central service, the component ones."""

from __future__ import annotations

import re

import pytest
import requests

from qrsync.simulator import RunningSimulator
from qrsync.simulator.default_world import (
    AUTHORIZER,
    AUTHORIZER_REFRESH_TOKEN,
    CENTRAL_MINIPROGRAM,
    COMPONENT,
    COMPONENT_SECRET,
    MINIPROGRAM,
    MINIPROGRAM_SECRET,
    SERVICE_ACCOUNT,
    SERVICE_ACCOUNT_SECRET,
    VERIFY_TICKET,
)

RID = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


def assert_error(answer: dict[str, object], errcode: int) -> None:
    assert answer["errcode"] == errcode, answer
    assert RID.search(str(answer["errmsg"])), answer


# --- stable_token ----------------------------------------------------------------------------


def test_stable_token_is_the_same_while_valid_and_counts_down(
    wechat, sim: RunningSimulator
) -> None:
    first = wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert set(first) == {"access_token", "expires_in"}
    assert 7190 <= first["expires_in"] <= 7200
    sim.admin.advance_clock(1000)
    second = wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] <= first["expires_in"] - 1000


def test_tokens_are_long_opaque_and_hold_no_secret(wechat) -> None:
    token = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert len(token) >= 64
    assert MINIPROGRAM_SECRET not in token and MINIPROGRAM not in token


def test_stable_token_renews_in_its_last_five_minutes_and_the_old_one_lives_on(
    wechat, sim: RunningSimulator
) -> None:
    old = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    sim.admin.advance_clock(7200 - 250)
    renewed = wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert renewed["access_token"] != old
    assert renewed["expires_in"] > 7000
    assert wechat.get(old)["errcode"] == 0
    sim.admin.advance_clock(300)
    assert_error(wechat.get(old), 42001)
    assert wechat.get(renewed["access_token"])["errcode"] == 0


def test_force_refresh_invalidates_the_previous_token_for_everybody(wechat) -> None:
    old = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    forced = wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, force_refresh=True)
    assert forced["access_token"] != old
    assert_error(wechat.get(old), 40001)
    assert wechat.get(forced["access_token"])["errcode"] == 0
    assert wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET) == {
        "access_token": forced["access_token"],
        "expires_in": pytest.approx(forced["expires_in"], abs=2),
    }


def test_force_refresh_needs_30_seconds_between_calls(wechat, sim: RunningSimulator) -> None:
    assert "access_token" in wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True)
    assert_error(wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True), 45011)
    sim.admin.advance_clock(31)
    assert "access_token" in wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True)


def test_force_refresh_is_limited_to_20_a_day(wechat, sim: RunningSimulator) -> None:
    sim.admin.advance_clock(86400 - (sim.admin.advance_clock(0) % 86400) + 1)  # a day's start
    for _ in range(20):
        assert "access_token" in wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True)
        sim.admin.advance_clock(31)
    assert_error(wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True), 45009)
    sim.admin.advance_clock(86400)
    assert "access_token" in wechat.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET, True)


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"grant_type": "client_credential", "appid": MINIPROGRAM, "secret": "wrong"}, 40125),
        (
            {"grant_type": "client_credential", "appid": "wx9999999999999999", "secret": "x"},
            40013,
        ),
        ({"grant_type": "password", "appid": MINIPROGRAM, "secret": MINIPROGRAM_SECRET}, 40002),
        ({"grant_type": "client_credential", "secret": MINIPROGRAM_SECRET}, 41002),
        ({"grant_type": "client_credential", "appid": MINIPROGRAM}, 41004),
    ],
)
def test_stable_token_errors(wechat, body: dict[str, str], errcode: int) -> None:
    assert_error(wechat.post("/cgi-bin/stable_token", body), errcode)


def test_stable_token_with_a_body_that_is_not_json_is_47001(sim: RunningSimulator) -> None:
    answer = requests.post(f"{sim.url}/cgi-bin/stable_token", data=b"{not json", timeout=10)
    assert_error(answer.json(), 47001)


def test_a_token_expires_after_its_ttl(wechat, sim: RunningSimulator) -> None:
    token = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    sim.admin.advance_clock(7201)
    assert_error(wechat.get(token), 42001)


def test_admin_can_expire_and_invalidate_an_accounts_tokens(wechat, sim: RunningSimulator) -> None:
    token = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert sim.admin.expire_tokens(MINIPROGRAM) == 1
    assert_error(wechat.get(token), 42001)
    fresh = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert fresh != token
    sim.admin.invalidate_tokens(MINIPROGRAM)
    assert_error(wechat.get(fresh), 40001)


# --- /cgi-bin/token --------------------------------------------------------------------------


def plain_token(sim: RunningSimulator, secret: str = MINIPROGRAM_SECRET, **extra: str) -> dict:
    params = {"grant_type": "client_credential", "appid": MINIPROGRAM, "secret": secret, **extra}
    return requests.get(f"{sim.url}/cgi-bin/token", params=params, timeout=10).json()


def test_cgi_bin_token_issues_a_new_token_per_call_and_retires_the_previous_one(
    wechat, sim: RunningSimulator
) -> None:
    first = plain_token(sim)
    second = plain_token(sim)
    assert first["access_token"] != second["access_token"]
    assert first["expires_in"] == 7200
    assert wechat.get(first["access_token"])["errcode"] == 0  # five more minutes
    sim.admin.advance_clock(301)
    assert_error(wechat.get(first["access_token"]), 40001)
    assert wechat.get(second["access_token"])["errcode"] == 0


def test_cgi_bin_token_errors(sim: RunningSimulator) -> None:
    assert_error(plain_token(sim, secret="wrong"), 40125)
    assert_error(plain_token(sim, grant_type="authorization_code"), 40002)


# --- central token service -------------------------------------------------------------------


def test_central_token_shares_the_accounts_stable_token(wechat, sim: RunningSimulator) -> None:
    central = requests.get(f"{sim.url}/central/token/{CENTRAL_MINIPROGRAM}", timeout=10).json()
    assert set(central) == {"access_token", "expires_in"}
    again = requests.get(f"{sim.url}/central/token/{CENTRAL_MINIPROGRAM}", timeout=10).json()
    assert again["access_token"] == central["access_token"]
    assert wechat.get(central["access_token"])["total_count"] == 10


def test_central_token_of_an_unknown_appid_is_404(sim: RunningSimulator) -> None:
    answer = requests.get(f"{sim.url}/central/token/wx9999999999999999", timeout=10)
    assert answer.status_code == 404
    assert "error" in answer.json()


# --- third-party platform --------------------------------------------------------------------


def component_token(wechat, ticket: str = VERIFY_TICKET, secret: str = COMPONENT_SECRET) -> dict:
    body = {
        "component_appid": COMPONENT,
        "component_appsecret": secret,
        "component_verify_ticket": ticket,
    }
    return wechat.post("/cgi-bin/component/api_component_token", body)


def authorizer_token(wechat, ct: str, refresh: str = AUTHORIZER_REFRESH_TOKEN) -> dict:
    body = {
        "component_appid": COMPONENT,
        "authorizer_appid": AUTHORIZER,
        "authorizer_refresh_token": refresh,
    }
    return wechat.post("/cgi-bin/component/api_authorizer_token", body, component_access_token=ct)


def test_component_and_authorizer_tokens_reach_the_authorizers_rules(wechat) -> None:
    ct = component_token(wechat)
    assert set(ct) == {"component_access_token", "expires_in"}
    assert ct["expires_in"] == 7200
    answer = authorizer_token(wechat, ct["component_access_token"])
    assert set(answer) == {"authorizer_access_token", "expires_in", "authorizer_refresh_token"}
    assert answer["authorizer_refresh_token"] == AUTHORIZER_REFRESH_TOKEN
    rules = wechat.get(answer["authorizer_access_token"], {"appid": MINIPROGRAM, "get_type": 0})
    assert rules["errcode"] == 0 and rules["total_count"] == 300


def test_component_token_errors(wechat, sim: RunningSimulator) -> None:
    assert_error(component_token(wechat, ticket="ticket@@@forged"), 61006)
    assert_error(component_token(wechat, secret="wrong"), 40125)
    sim.admin.advance_clock(12 * 3600 + 1)
    assert_error(component_token(wechat), 61006)  # a ticket is valid 12 hours


def test_the_current_and_the_previous_ticket_are_valid(wechat, sim: RunningSimulator) -> None:
    second = sim.admin.rotate_ticket(COMPONENT)
    assert second.startswith("ticket@@@") and sim.admin.ticket(COMPONENT) == second
    assert "component_access_token" in component_token(wechat, ticket=VERIFY_TICKET)
    assert "component_access_token" in component_token(wechat, ticket=second)
    sim.admin.rotate_ticket(COMPONENT)
    assert_error(component_token(wechat, ticket=VERIFY_TICKET), 61006)
    assert "component_access_token" in component_token(wechat, ticket=second)


def test_authorizer_token_errors(wechat, sim: RunningSimulator) -> None:
    ct = component_token(wechat)["component_access_token"]
    assert_error(authorizer_token(wechat, "not-a-token"), 40001)
    assert_error(authorizer_token(wechat, ct, refresh="sim-refresh-unknown"), 61023)
    access = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert_error(authorizer_token(wechat, access), 40001)  # not a component token
    sim.admin.expire_tokens(COMPONENT)
    assert_error(authorizer_token(wechat, ct), 42001)


def test_a_revoked_authorization_refuses_its_refresh_token(wechat, sim: RunningSimulator) -> None:
    ct = component_token(wechat)["component_access_token"]
    sim.admin.revoke_authorization(COMPONENT, AUTHORIZER)
    assert_error(authorizer_token(wechat, ct), 61023)


def test_rotated_refresh_token_and_its_five_minute_grace(wechat, sim: RunningSimulator) -> None:
    sim.admin.add_component(
        {
            "appid": COMPONENT,
            "secret": COMPONENT_SECRET,
            "verify_ticket": VERIFY_TICKET,
            "authorizations": [
                {
                    "authorizer_appid": AUTHORIZER,
                    "refresh_token": AUTHORIZER_REFRESH_TOKEN,
                    "rotate_refresh_token": True,
                }
            ],
        }
    )
    ct = component_token(wechat)["component_access_token"]
    first = authorizer_token(wechat, ct)["authorizer_refresh_token"]
    assert first != AUTHORIZER_REFRESH_TOKEN
    second = authorizer_token(wechat, ct, refresh=first)["authorizer_refresh_token"]
    assert second not in (first, AUTHORIZER_REFRESH_TOKEN)
    # The original still works within its five minutes of grace, and rotates once more.
    grace = authorizer_token(wechat, ct)
    assert "authorizer_access_token" in grace
    newest = grace["authorizer_refresh_token"]
    assert newest not in (first, second, AUTHORIZER_REFRESH_TOKEN)
    sim.admin.advance_clock(301)
    for retired in (AUTHORIZER_REFRESH_TOKEN, first, second):
        assert_error(authorizer_token(wechat, ct, refresh=retired), 61023)
    assert authorizer_token(wechat, ct, refresh=newest)["authorizer_refresh_token"] != newest


def test_an_authorizer_without_permission_set_3_gets_61007(wechat, sim: RunningSimulator) -> None:
    sim.admin.add_component(
        {
            "appid": COMPONENT,
            "secret": COMPONENT_SECRET,
            "verify_ticket": VERIFY_TICKET,
            "authorizations": [
                {
                    "authorizer_appid": AUTHORIZER,
                    "refresh_token": AUTHORIZER_REFRESH_TOKEN,
                    "permission_sets": [18],
                }
            ],
        }
    )
    ct = component_token(wechat)["component_access_token"]
    token = authorizer_token(wechat, ct)["authorizer_access_token"]
    assert_error(wechat.get(token, {"appid": MINIPROGRAM}), 61007)


def test_direct_tokens_of_the_service_account_work_too(wechat) -> None:
    token = wechat.access_token(SERVICE_ACCOUNT, SERVICE_ACCOUNT_SECRET)
    assert wechat.get(token, {"appid": MINIPROGRAM})["total_count"] == 12_000
