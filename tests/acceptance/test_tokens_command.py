"""`qrsync tokens` and `qrsync tokens drop ACCOUNT`: the cached tokens without their values, and
a way to make the next run fetch a fresh one (e.g. to see at once that a new secret works)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import MP, MP_SECRET, mp_account, mp_world, toml_config

STATIC = (
    '[[accounts]]\nname = "fixed"\nkind = "miniprogram"\nappid = "wx1000000000000055"\n'
    'token = { source = "static", token_env = "FIXED_TOKEN" }\n'
)


@pytest.fixture
def synced(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Two accounts sharing one AppID (one token), synced once; and a static-token account."""
    simulator.admin.add_account(mp_world())
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("FIXED_TOKEN", "not-a-real-token")
    qrsync.write_config(
        toml_config(simulator.url, mp_account() + mp_account("mp-again", MP) + STATIC)
    )
    assert qrsync("sync", "--account", "mp", "--account", "mp-again").exit_code == 0
    return simulator


def test_tokens_lists_keys_and_accounts_never_values(synced: Any, qrsync: Any, db: Any) -> None:
    token = db.execute("SELECT access_token FROM tokens").fetchone()[0]
    listed = qrsync("tokens")
    assert listed.exit_code == 0, listed.output
    assert f"stable_token:{MP}" in listed.output and "mp, mp-again" in listed.output
    as_json = qrsync("tokens", "--json")
    assert [(t["key"], t["accounts"]) for t in json.loads(as_json.stdout)] == [
        (f"stable_token:{MP}", ["mp", "mp-again"])
    ]
    assert token not in listed.output + as_json.output


def test_tokens_drop_makes_the_next_run_fetch_a_fresh_one(
    synced: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", "a-wrong-secret-value")
    assert qrsync("sync", "--account", "mp").exit_code == 0  # the cached token hides it
    dropped = qrsync("tokens", "drop", "mp")
    assert dropped.exit_code == 0, dropped.output
    assert dropped.output.strip() == (
        "dropped the cached token of 'mp' (shared with mp-again): the next run fetches a fresh one"
    )
    assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 0
    failed = qrsync("sync", "--account", "mp")  # now the wrong secret shows
    assert failed.exit_code == 1 and "40125" in failed.output
    again = qrsync("tokens", "drop", "mp")
    assert again.exit_code == 0
    assert again.output.strip() == "no token cached for 'mp': the next run fetches one anyway"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("nobody", "no account named 'nobody'"), ("fixed", "caches no token for it")],
)
def test_tokens_drop_refuses_what_it_cannot_drop(
    synced: Any, qrsync: Any, db: Any, name: str, fragment: str
) -> None:
    result = qrsync("tokens", "drop", name)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and "\n" not in result.stderr.strip()
    assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 1
