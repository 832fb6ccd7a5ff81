"""Fixtures of the simulator's own tests: a fresh simulator per test and a small WeChat client.

Every test talks HTTP to a real simulator on 127.0.0.1 (any free port), started with the default
world and the rate limit off unless the test says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from qrsync.simulator import RunningSimulator, start_simulator
from qrsync.simulator.default_world import (
    MINIPROGRAM,
    MINIPROGRAM_SECRET,
    SERVICE_ACCOUNT,
    SERVICE_ACCOUNT_SECRET,
    default_world,
)


class WeChat:
    """Calls the simulated WeChat endpoints as a client would and returns the decoded answers."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def post(self, path: str, body: Any = None, **params: str) -> Any:
        response = self.session.post(f"{self.base_url}{path}", json=body, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def stable_token(self, appid: str, secret: str, force_refresh: bool = False) -> Any:
        body = {
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret,
            "force_refresh": force_refresh,
        }
        return self.post("/cgi-bin/stable_token", body)

    def access_token(self, appid: str, secret: str) -> str:
        answer = self.stable_token(appid, secret)
        assert "access_token" in answer, answer
        return str(answer["access_token"])

    def rules_call(self, endpoint: str, token: str, body: Any = None) -> Any:
        return self.post(f"/cgi-bin/wxopen/{endpoint}", body, access_token=token)

    def get(self, token: str, body: Any = None) -> Any:
        return self.rules_call("qrcodejumpget", token, {} if body is None else body)

    def page(self, token: str, page_num: int, page_size: int = 200) -> Any:
        body = {
            "appid": MINIPROGRAM,
            "get_type": 2,
            "page_num": page_num,
            "page_size": page_size,
        }
        return self.get(token, body)


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    """The default world, seed 1, rate limit off."""
    with start_simulator(
        host="127.0.0.1", port=0, seed=1, world=default_world(), rate_limit=False
    ) as s:
        yield s


@pytest.fixture
def make_wechat() -> Iterator[Callable[[str], WeChat]]:
    """Makes WeChat clients for any simulator URL, closed after the test."""
    clients: list[WeChat] = []

    def make(base_url: str) -> WeChat:
        clients.append(WeChat(base_url))
        return clients[-1]

    yield make
    for client in clients:
        client.session.close()


@pytest.fixture
def wechat(sim: RunningSimulator, make_wechat: Callable[[str], WeChat]) -> WeChat:
    """A WeChat client of the ``sim`` simulator."""
    return make_wechat(sim.url)


@pytest.fixture
def mp_token(wechat: WeChat) -> str:
    """An access token of the default mini program."""
    return wechat.access_token(MINIPROGRAM, MINIPROGRAM_SECRET)


@pytest.fixture
def oa_token(wechat: WeChat) -> str:
    """An access token of the default service account (12,000 rules for the mini program)."""
    return wechat.access_token(SERVICE_ACCOUNT, SERVICE_ACCOUNT_SECRET)


@pytest.fixture
def limited() -> Iterator[RunningSimulator]:
    """A simulator of the default world with its default rate limit on."""
    with start_simulator(host="127.0.0.1", port=0, seed=1, world=default_world()) as sim:
        yield sim
