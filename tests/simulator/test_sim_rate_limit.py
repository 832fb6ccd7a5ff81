"""The per-account limit of 5 requests a second (44990), on by default and switchable live."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qrsync.simulator import RunningSimulator, start_simulator
from qrsync.simulator.default_world import (
    MINIPROGRAM,
    MINIPROGRAM_SECRET,
    SERVICE_ACCOUNT,
    SERVICE_ACCOUNT_SECRET,
    default_world,
)


@pytest.fixture
def limited() -> Iterator[RunningSimulator]:
    """A simulator with its default rate limit on."""
    with start_simulator(host="127.0.0.1", port=0, seed=1, world=default_world()) as sim:
        yield sim


def burst(client: Any, token: str, count: int = 8) -> list[int]:
    return [client.get(token)["errcode"] for _ in range(count)]


def test_a_burst_of_eight_requests_meets_44990(
    limited: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    client = make_wechat(limited.url)
    token = client.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    codes = burst(client, token)
    assert 44990 in codes
    assert set(codes) <= {0, 44990}
    assert codes[:4] == [0, 0, 0, 0]  # the token call and four gets fit in the window
    rejected = [c for c in limited.admin.calls(endpoint="qrcodejumpget") if c["errcode"] == 44990]
    assert rejected and rejected[0]["appid"] == MINIPROGRAM


def test_the_limit_is_per_caller_account(
    limited: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    client = make_wechat(limited.url)
    mp = client.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    oa = client.access_token(SERVICE_ACCOUNT, SERVICE_ACCOUNT_SECRET)
    assert 44990 in burst(client, mp)
    body = {"appid": MINIPROGRAM, "get_type": 1, "prefix_list": ["x"]}
    assert client.get(oa, body)["errcode"] == 0


def test_stable_token_takes_10000_calls_a_minute_per_appid(
    limited: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    """stable_token's own limit (REFERENCE.md "Tokens"): 10,000 calls a minute, not the rule
    endpoints' 5 a second; the 10,001st within the minute meets 45011, and the minute after
    it is answered again."""
    client = make_wechat(limited.url)
    answers = [client.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET) for _ in range(8)]
    assert all("access_token" in answer for answer in answers)
    state = limited.simulator
    with state.lock:  # 10,000 calls over HTTP would take minutes: fill the window in place
        world = state.world
        window = world._minute_windows[f"stable_token:{MINIPROGRAM}"]
        now = world.clock.now()
        window.extend([now] * (10_000 - len(window)))
    assert client.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)["errcode"] == 45011
    assert "access_token" in client.stable_token(SERVICE_ACCOUNT, SERVICE_ACCOUNT_SECRET)
    limited.admin.advance_clock(61)
    assert "access_token" in client.stable_token(MINIPROGRAM, MINIPROGRAM_SECRET)


def test_the_limit_can_be_switched_off_and_tightened_live(
    limited: RunningSimulator, make_wechat: Callable[[str], Any]
) -> None:
    client = make_wechat(limited.url)
    token = client.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert limited.admin.settings(rate_limit=False)["rate_limit"] is False
    assert 44990 not in burst(client, token)
    limited.admin.settings(rate_limit=True, requests_per_second=2)
    limited.admin.advance_clock(2)  # start from an empty window
    codes = burst(client, token, 4)
    assert codes[:2] == [0, 0] and 44990 in codes[2:]


def test_rate_limit_false_never_answers_44990(sim: RunningSimulator, wechat) -> None:
    token = wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)
    assert 44990 not in burst(wechat, token)
