"""`qrsync check`: the configuration, the database and every account's token source, one line
each, failing accounts first; exit 0 only when everything holds. A wrong secret hidden by a
cached token is found; the check invalidates no token others use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import MP, MP_SECRET, mp_account, mp_world, rule, toml_config


def _init_and_export(
    qrsync: Any, simulator: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, secret: str
) -> Path:
    """`qrsync init` as a new user runs it, then the variable it names set to ``secret``."""
    path = qrsync.tmp_path / "qrsync.toml"
    made = qrsync(
        "init", "--miniprogram", "--appid", MP, "--name", "brand-mp",
        "--database-url", database_url, "--api-base-url", simulator.url, config=path,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    (line,) = [line for line in made.output.splitlines() if "export " in line]
    monkeypatch.setenv(line.split()[1].split("=")[0], secret)
    return path


def _lines(result: Any) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_init_then_check_against_the_simulator(
    qrsync: Any, simulator: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world(pub_quota=42))
    simulator.admin.put_rules(MP, [rule(f"https://c.example.com/{i}") for i in range(7)])
    path = _init_and_export(qrsync, simulator, database_url, monkeypatch, MP_SECRET)
    result = qrsync("check", "--call", config=path)
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert [line.split()[:2] for line in lines] == [
        ["ok", "configuration"],
        ["ok", "database"],
        ["ok", "brand-mp"],
    ]
    assert "schema 'qrsync' at revision" in lines[1] and "privileges qrsync needs" in lines[1]
    assert "stable_token accepted the AppSecret" in lines[2]
    assert "qrcodejumpget answered: 7 rules, 42 publishes left" in lines[2]
    assert result.stderr.strip() == (
        "qrsync: all good: the configuration, the database and 1 account(s)"
    )
    assert MP_SECRET not in result.output


def test_a_wrong_secret_hidden_by_a_cached_token_fails_the_check(
    qrsync: Any, simulator: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.add_account(mp_world(appid="wx1000000000000077", secret="other-secret"))
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("OTHER_SECRET", "other-secret")
    qrsync.write_config(
        toml_config(
            simulator.url, mp_account() + mp_account("other", "wx1000000000000077", "OTHER_SECRET")
        )
    )
    assert qrsync("sync").exit_code == 0  # tokens cached in the database
    monkeypatch.setenv("MP_SECRET", "wrong-secret-value")
    assert qrsync("sync").exit_code == 0  # the cached token hides it...
    result = qrsync("check")  # ...but not from the check
    assert result.exit_code == 1, result.output
    lines = _lines(result)
    assert lines[2].startswith("FAIL  mp "), lines  # failing accounts first
    assert "account 'mp'" in lines[2] and "40125" in lines[2]
    assert lines[3].startswith("ok    other "), lines
    assert "wrong-secret-value" not in result.output
    assert result.stderr.strip() == "qrsync: 1 of 4 checks failed"
    checked = json.loads(qrsync("check", "--json").stdout)
    assert checked["ok"] is False
    assert [(c["subject"], c["ok"]) for c in checked["checks"]] == [
        ("configuration", True),
        ("database", True),
        ("mp", False),
        ("other", True),
    ]
    only = qrsync("check", "--account", "other")
    assert only.exit_code == 0, only.output


def test_the_check_invalidates_no_token(
    qrsync: Any, simulator: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    assert qrsync("sync").exit_code == 0
    cached = db.execute("SELECT access_token FROM tokens").fetchone()[0]
    assert qrsync("check").exit_code == 0
    simulator.admin.clear_calls()
    assert qrsync("sync").exit_code == 0  # with the token cached before the check
    calls = simulator.admin.calls()
    assert [c["endpoint"] for c in calls] == ["qrcodejumpget"], calls
    assert calls[0]["errcode"] in (0, None)
    assert db.execute("SELECT access_token FROM tokens").fetchone()[0] == cached


def test_a_database_not_set_up_yet_is_fine_when_the_role_may_create_the_schema(
    qrsync: Any, simulator: Any, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    path = _init_and_export(qrsync, simulator, empty_database_url, monkeypatch, MP_SECRET)
    result = qrsync("check", config=path)
    assert result.exit_code == 0, result.output
    database = _lines(result)[1]
    assert "schema 'qrsync' not created yet (`qrsync db upgrade` creates it)" in database
    assert qrsync("db", "upgrade", config=path).exit_code == 0
    assert qrsync("sync", config=path).exit_code == 0


def test_an_unreachable_database_fails_the_check_in_one_line(
    qrsync: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    url = "postgresql://postgres@127.0.0.1:9/nowhere"
    path = _init_and_export(qrsync, simulator, url, monkeypatch, MP_SECRET)
    result = qrsync("check", config=path)
    assert result.exit_code == 1, result.output
    lines = _lines(result)
    assert lines[1].startswith("FAIL  database ") and "Traceback" not in result.output
    # the account's token source is checked all the same: it needs no database
    assert lines[2].startswith("ok    brand-mp "), lines


@pytest.mark.parametrize(
    ("granted", "ok"), [((3, 18), True), ((18,), False)], ids=["granted", "set-3-missing"]
)
def test_an_authorizer_without_the_permission_set_fails_the_check(
    qrsync: Any, fast_simulator: Any, db: Any, monkeypatch: pytest.MonkeyPatch, granted: Any,
    ok: bool,
) -> None:  # fmt: skip
    from helpers import OA, OA_MP, oa_world
    from tokenfaults_helpers import (
        COMPONENT_SECRET,
        REFRESH_SEED,
        VERIFY_TICKET,
        component_oa_account,
        component_section,
        component_world,
    )

    fast_simulator.admin.add_account(oa_world(secret=None))
    fast_simulator.admin.add_component(component_world(OA, permission_sets=granted))
    monkeypatch.setenv("COMPONENT_SECRET", COMPONENT_SECRET)
    monkeypatch.setenv("VERIFY_TICKET", VERIFY_TICKET)
    monkeypatch.setenv("OA_REFRESH_TOKEN", REFRESH_SEED)
    qrsync.write_config(
        toml_config(
            fast_simulator.url,
            component_oa_account("oa", OA, OA_MP),
            extra=component_section(),
        )
    )
    result = qrsync("check")
    assert result.exit_code == (0 if ok else 1), result.output
    line = _lines(result)[2]
    if ok:
        assert line.startswith("ok    oa ") and "permission set 3 granted" in line, line
    else:
        assert line.startswith("FAIL  oa "), line
        assert "has not granted the platform permission set 3 (granted: 18)" in line
        assert "61007" in line
    assert REFRESH_SEED not in result.output and COMPONENT_SECRET not in result.output
