"""Shared by the crash and database-fault tests: an account with something to write, and ways
to hold a real `qrsync sync` child process at one step of its run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from conftest import SCHEMA
from helpers import (
    OA,
    OA_MP,
    OA_SECRET,
    WeChatUser,
    blocked_backend,
    oa_account,
    oa_world,
    toml_config,
    wait_for,
)

RULES = 180  # four pages of 50


@pytest.fixture
def account(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A service account synced once, then edited by a person (a publish, a delete, a new
    rule), so that the next run has something to write."""
    sim = fast_simulator
    sim.admin.add_account(oa_world())
    sim.admin.generate_rules(OA, RULES, miniprogram_appid=OA_MP, published_fraction=0.3)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    qrsync.write_config(
        toml_config(sim.url, oa_account(), api="requests_per_second = 100", sync="page_size = 50")
    )
    assert qrsync("sync").exit_code == 0
    current = sim.admin.rules(OA, OA_MP)
    user = WeChatUser(sim.url, OA, OA_SECRET, miniprogram_appid=OA_MP)
    user.publish(next(r["prefix"] for r in current if r["state"] == 1))
    user.delete(current[70]["prefix"])
    user.add("http://weixin.qq.com/q/added-before-the-crash", path="pages/new/index")
    return sim


@contextmanager
def locked(database_url: str, table: str) -> Iterator[None]:
    """Hold ``table`` against writes (SHARE mode: readers go on) until the block ends."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.execute(f"LOCK TABLE {table} IN SHARE MODE")
        try:
            yield
        finally:
            conn.rollback()


def start_sync(config: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "sync"],
        env={**os.environ, "OA_SECRET": OA_SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


__all__ = ["account", "blocked_backend", "locked", "start_sync", "wait_for"]
