"""Shared test helpers: simulated accounts, config text, and a WeChat "user" who edits rules
through the simulator's own API (qrcodejumpadd / publish / delete), as a person would."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

MP = "wx1000000000000001"
OA = "wx2000000000000002"
OA_MP = "wx1000000000000009"
MP_SECRET = "mp-secret-value-123"
OA_SECRET = "oa-secret-value-456"


def require_tool(path: Path, package: str) -> Path:
    """A real tool a test drives (PgBouncer, libfaketime, Chromium): skipped with one line
    saying what to install where it is missing, but failed in CI (``CI=true``), whose
    ``.ci/run`` installs it: a promise tested only on some machines is not tested."""
    if path.exists():
        return path
    message = f"{path} is missing: apt-get install {package}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def mp_world(appid: str = MP, secret: str = MP_SECRET, **extra: Any) -> dict[str, Any]:
    return {"appid": appid, "kind": "miniprogram", "secret": secret, **extra}


def oa_world(
    appid: str = OA, secret: str = OA_SECRET, linked: str = OA_MP, **extra: Any
) -> dict[str, Any]:
    return {
        "appid": appid,
        "kind": "service_account",
        "secret": secret,
        "verified": True,
        "linked_miniprograms": [linked],
        **extra,
    }


def toml_config(
    base_url: str,
    accounts: str,
    *,
    api: str = "",
    sync: str = "",
    extra: str = "",
) -> str:
    """Config text (without [database], which the qrsync fixture adds)."""
    return (
        f'[api]\nbase_url = "{base_url}"\nretry_backoff_s = 0.01\nmax_retries = 3\n{api}\n'
        f"[sync]\n{sync}\n{extra}\n{accounts}"
    )


def mp_account(name: str = "mp", appid: str = MP, secret_env: str = "MP_SECRET") -> str:
    return (
        f'[[accounts]]\nname = "{name}"\nkind = "miniprogram"\nappid = "{appid}"\n'
        f'token = {{ source = "stable_token", secret_env = "{secret_env}" }}\n'
    )


def oa_account(
    name: str = "oa",
    appid: str = OA,
    miniprogram_appid: str = OA_MP,
    secret_env: str = "OA_SECRET",
) -> str:
    return (
        f'[[accounts]]\nname = "{name}"\nkind = "service_account"\nappid = "{appid}"\n'
        f'miniprogram_appid = "{miniprogram_appid}"\n'
        f'token = {{ source = "stable_token", secret_env = "{secret_env}" }}\n'
    )


def rule(
    prefix: str,
    state: int = 1,
    path: str = "pages/index/index",
    **extra: Any,
) -> dict[str, Any]:
    return {"prefix": prefix, "state": state, "path": path, **extra}


class WeChatUser:
    """Changes rules through the simulator's WeChat endpoints, with a stable token."""

    def __init__(
        self, base_url: str, appid: str, secret: str, miniprogram_appid: str | None = None
    ):
        self.base_url = base_url
        self.miniprogram_appid = miniprogram_appid
        answer = requests.post(
            f"{base_url}/cgi-bin/stable_token",
            json={"grant_type": "client_credential", "appid": appid, "secret": secret},
            timeout=10,
        ).json()
        self.token = answer["access_token"]

    def _call(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.miniprogram_appid:
            body = {**body, "appid": self.miniprogram_appid}
        answer: dict[str, Any] = requests.post(
            f"{self.base_url}/cgi-bin/wxopen/{name}",
            params={"access_token": self.token},
            json=body,
            timeout=10,
        ).json()
        assert answer.get("errcode", 0) == 0, answer
        return answer

    def add(self, prefix: str, path: str = "pages/index/index", **extra: Any) -> None:
        body = {
            "prefix": prefix,
            "path": path,
            "is_edit": 0,
            "permit_sub_rule": 1,
            "open_version": 3,
            "debug_url": [],
            **extra,
        }
        self._call("qrcodejumpadd", body)

    def edit(self, prefix: str, path: str, **extra: Any) -> None:
        body = {
            "prefix": prefix,
            "path": path,
            "is_edit": 1,
            "permit_sub_rule": 1,
            "open_version": 3,
            "debug_url": [],
            **extra,
        }
        self._call("qrcodejumpadd", body)

    def publish(self, prefix: str) -> None:
        self._call("qrcodejumppublish", {"prefix": prefix})

    def delete(self, prefix: str) -> None:
        self._call("qrcodejumpdelete", {"prefix": prefix})


def rows(db: psycopg.Connection[Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return db.execute(sql, params).fetchall()


def scalar(db: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]


# The rules of qrcodejumpget.zh.md example 5.1, quirks and all.
DOCUMENT_EXAMPLE_RULES: list[dict[str, Any]] = [
    {
        "prefix": "https://weixin.qq.com/qrcodejump",
        "open_version": 1,
        "state": 1,
        "permit_sub_rule": 1,
        "path": "pages / index / index ",
        "debug_url": [
            "https://weixin.qq.com/qrcodejump?a=1",
            "https://weixin.qq.com/qrcodejump?a=1",
            "https://weixin.qq.com/qrcodejump?a=2",
            "https: //weixin.qq.com/qrcodejump?a=2",
        ],
    },
    {
        "prefix": "https://weixin.qq.com/qrcodejumptest",
        "open_version": 1,
        "state": 1,
        "permit_sub_rule": 1,
        "path": "pages/index/index",
        "debug_url": [
            "https://weixin.qq.com/qrcodejumptest?a=1",
            "https://weixin.qq.com/qrcodejumptest?a=1",
            "https://weixin.qq.com/qrcodejumptest?a=2",
            "https: //weixin.qq.com/qrcodejumptest?a=2",
        ],
    },
]


def build_history(
    simulator: Any, qrsync: Any, monkeypatch: Any, rules: list[dict[str, Any]]
) -> Any:
    """Two syncs of a mini program holding ``rules`` (between them https://a.example.com/1 is
    published and https://a.example.com/2 deleted), beside an account whose secret is wrong, so
    that it fails twice. Returns the simulator."""
    simulator.admin.add_account(mp_world(pub_quota=20))
    simulator.admin.add_account(mp_world(appid="wx1000000000000077", secret="right"))
    simulator.admin.put_rules(MP, rules)
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("BAD_SECRET", "wrong-secret-value")
    accounts = mp_account() + mp_account("broken", "wx1000000000000077", "BAD_SECRET")
    qrsync.write_config(toml_config(simulator.url, accounts))
    assert qrsync("sync").exit_code == 1
    user = WeChatUser(simulator.url, MP, MP_SECRET)
    user.publish("https://a.example.com/1")
    user.delete("https://a.example.com/2")
    assert qrsync("sync").exit_code == 1
    return simulator


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    """Poll ``predicate`` until it returns something true (returned), for at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


STATEMENT_IN_FLIGHT_S = 0.25
"""Long enough for a statement already sent to end at the server (not a timed assertion: a
wait before looking)."""


def running_of(db: Any, replica: str) -> int | None:
    """The id of a run ``replica`` has open, if any (read directly from the database)."""
    row = db.execute(
        "SELECT id FROM sync_runs WHERE replica = %s AND status = 'running' LIMIT 1", (replica,)
    ).fetchone()
    return None if row is None else int(row[0])


def kill_mid_run(proc: subprocess.Popen[Any], db: Any, replica: str) -> int:
    """SIGKILL daemon ``replica`` while one of its runs is open, and return that run's id.

    A run can finish between seeing it open and the signal, so the replica is frozen with
    SIGSTOP first and only killed once a run is seen open while it cannot move; and a statement
    it sent just before (the COMMIT closing the run) is given time to end at the server first.
    """
    deadline = time.monotonic() + 60
    for _ in range(1200):
        if time.monotonic() > deadline:
            break
        proc.send_signal(signal.SIGSTOP)
        time.sleep(STATEMENT_IN_FLIGHT_S)
        run = running_of(db, replica)
        if run is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            return run
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {replica} to be in the middle of a run")


def blocked_backend(db: Any, statement: str) -> int | None:
    """The pid of a backend of this database waiting for a lock in ``statement``."""
    row = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (f"%{statement}%",),
    ).fetchone()
    return None if row is None else int(row[0])
