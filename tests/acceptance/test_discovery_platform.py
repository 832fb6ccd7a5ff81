"""Discovery of a platform whose authorizers change between discoveries, end to end against the
simulator's platform of every kind of authorizer (qrsync.simulator.platform): through `qrsync
accounts discover` (recorded in discovery_runs, shown by `qrsync status`), with tokens from the
platform's own token service (central), with the platform endpoints' own limits rather than the
rule endpoints' 5 a second, and the errcodes met on the way."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from helpers import rows, scalar, toml_config

from qrsync.simulator.platform import (
    PLATFORM,
    PLATFORM_SECRET,
    PLATFORM_TICKET,
    platform_world,
)


def truth(sim: Any) -> set[str]:
    """The accounts the platform's authorizers give, read from the simulator's own world (as
    docs/accounts-discovery.md says they should be made)."""
    state = sim.simulator
    with state.lock:
        world = state.world
        names: set[str] = set()
        for appid, grant in world.components[PLATFORM].authorizations.items():
            account = world.accounts[appid]
            sets = set(grant.permission_sets)
            if account.kind == "miniprogram":
                if not account.personal and 18 in sets:
                    names.add(f"mp-{appid}")
            elif account.service_type == 2 and account.verified and 3 in sets:
                names |= {f"oa-{appid}-{mp}" for mp in account.linked_miniprograms}
        return names


def enabled_accounts(db: Any) -> set[str]:
    return {
        name
        for (name,) in rows(db, "SELECT name FROM accounts WHERE source = 'discover' AND enabled")
    }


def platform_config(url: str, *, component_extra: str = "", sync: str = "") -> str:
    return toml_config(
        url,
        "",
        api="requests_per_second = 100",
        sync=sync,
        extra=(
            f'[component]\nappid = "{PLATFORM}"\nappsecret_env = "PLATFORM_SECRET"\n'
            f'verify_ticket_env = "PLATFORM_TICKET"\ndiscover = true\n{component_extra}'
        ),
    )


@pytest.fixture
def changing_platform(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A platform of 120 authorizers of every kind, its rate limits off."""
    fast_simulator.admin.reset(world=platform_world(120, seed=3, rules=2))
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", PLATFORM_TICKET)
    qrsync.write_config(platform_config(fast_simulator.url))
    return fast_simulator


def _discover(qrsync: Any, *args: str) -> Any:
    result = qrsync("accounts", "discover", *args)
    assert "Traceback" not in result.output
    return result


def test_the_accounts_follow_a_platform_whose_authorizers_change(
    changing_platform: Any, qrsync: Any, db: Any
) -> None:
    sim = changing_platform
    first = _discover(qrsync, "--json")
    assert first.exit_code == 0, first.output
    assert enabled_accounts(db) == truth(sim) and len(truth(sim)) > 50
    reasons = {
        reason
        for (reason,) in rows(db, "SELECT reason FROM discovered_authorizers WHERE NOT synced")
    }
    assert any("subscription account" in r for r in reasons)
    assert any("unverified service account" in r for r in reasons)
    assert any("personal mini program" in r for r in reasons)
    assert any("permission set 18" in r for r in reasons)
    assert any("permission set 3" in r for r in reasons)
    synced = qrsync("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert {a["account"] for a in json.loads(synced.stdout)["accounts"]} == truth(sim)
    # Authorizers that cannot have rules are never called for them.
    ruled = {c["appid"] for c in sim.admin.calls(endpoint="qrcodejumpget")}
    unsyncable = {
        appid for (appid,) in rows(db, "SELECT authorizer_appid FROM discovered_authorizers")
    } - {name.split("-")[1] for name in truth(sim)}
    assert not ruled & unsyncable

    # A turn of the platform's life: some withdraw, some change their permission sets, a
    # subscription account becomes a service account, new ones authorise.
    before = enabled_accounts(db)
    churn = sim.admin.churn(PLATFORM, revoke=8, change=6, authorize=3, seed=1)
    subscription = next(
        appid
        for (appid,) in rows(
            db,
            "SELECT authorizer_appid FROM discovered_authorizers "
            "WHERE kind = 'subscription_account' ORDER BY 1",
        )
        if appid not in churn["revoked"] and appid not in churn["changed"]
    )
    sim.admin.patch_account(subscription, service_type=2, linked_miniprograms=[])
    second = _discover(qrsync, "--json")
    assert second.exit_code == 0, second.output
    plan = json.loads(second.stdout)
    assert enabled_accounts(db) == truth(sim)
    gone = {n for n in before if n.split("-")[1] in churn["revoked"]}
    assert gone and gone <= set(plan["disabled"])
    assert scalar(db, "SELECT kind FROM discovered_authorizers WHERE authorizer_appid = %s",
                  subscription) == "service_account"  # fmt: skip
    # Disabled, not deleted: their history stays.
    assert scalar(
        db,
        "SELECT count(*) FROM sync_runs s JOIN accounts a ON a.id = s.account_id "
        "WHERE a.name = ANY(%s) AND NOT a.enabled",
        sorted(gone),
    ) == len(gone)

    # The ones that withdrew come back: the same accounts, enabled again.
    back = sim.admin.churn(PLATFORM, authorize=len(churn["revoked"]), seed=2)
    assert set(churn["revoked"]) <= set(back["authorized"])
    third = _discover(qrsync, "--json")
    assert third.exit_code == 0, third.output
    assert enabled_accounts(db) == truth(sim)
    assert gone <= set(json.loads(third.stdout)["enabled_again"]) | enabled_accounts(db)

    # Every discovery is recorded, and the last one is shown.
    recorded = rows(
        db,
        "SELECT trigger, status, scheduled_for, authorizers FROM discovery_runs ORDER BY id",
    )
    assert [r[:3] for r in recorded] == [("cli", "succeeded", None)] * 3
    assert recorded[0][3] == 120
    status = qrsync("status")
    assert f"platform {PLATFORM}: last discovery" in status.stdout
    assert "qrsync accounts discover" in status.stdout and "authorizers" in status.stdout
    listing = qrsync("accounts")
    assert f"platform {PLATFORM}: last discovery" in listing.stdout


def test_a_failed_discovery_changes_no_account_and_is_recorded_masked(
    changing_platform: Any, qrsync: Any, db: Any
) -> None:
    assert _discover(qrsync).exit_code == 0
    before = rows(db, "SELECT name, enabled FROM accounts ORDER BY name")
    changing_platform.admin.churn(PLATFORM, revoke=5, authorize=2, seed=4)
    changing_platform.admin.add_fault(endpoint="authorizer_list", errcode=-1, times=50)
    failed = _discover(qrsync)
    assert failed.exit_code == 1
    assert rows(db, "SELECT name, enabled FROM accounts ORDER BY name") == before
    status, errcode, error = rows(
        db, "SELECT status, errcode, error FROM discovery_runs ORDER BY id DESC LIMIT 1"
    )[0]
    assert (status, errcode) == ("failed", -1)
    assert "\n" not in error and "api_get_authorizer_list" in error
    assert PLATFORM_SECRET not in error and "refreshtoken@@@" not in error
    assert "SIMC_" not in error
    shown = qrsync("status").stdout
    assert "failed -1, no account changed" in shown


@pytest.mark.parametrize(
    ("endpoint", "errcode", "hint"),
    [
        ("component_token", 61004, "allow-list"),
        ("component_token", 61006, "verify_ticket"),
        ("authorizer_list", 40170, "500"),
        ("authorizer_list", 61004, "allow-list"),
    ],
)
def test_a_platform_errcode_stops_discovery_after_one_try_with_a_hint(
    changing_platform: Any, qrsync: Any, db: Any, endpoint: str, errcode: int, hint: str
) -> None:
    admin = changing_platform.admin
    admin.add_fault(endpoint=endpoint, errcode=errcode, times=50)
    result = _discover(qrsync)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message and str(errcode) in message and hint in message
    assert f"platform {PLATFORM}" in message and "nothing written" in message
    assert len(admin.calls(endpoint=endpoint)) == 1  # no retry storm
    assert scalar(db, "SELECT count(*) FROM accounts WHERE source = 'discover'") == 0
    assert rows(db, "SELECT status, errcode FROM discovery_runs") == [("failed", errcode)]


def test_an_authorizer_that_withdrew_while_discovery_looked_is_recorded_with_61003(
    changing_platform: Any, qrsync: Any, db: Any
) -> None:
    sim = changing_platform
    sim.admin.add_fault(endpoint="authorizer_info", errcode=61003, times=1)
    result = _discover(qrsync)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if "61003" in line]
    assert len(lines) == 1 and "has not authorised the platform" in lines[0]
    assert len(sim.admin.calls(endpoint="authorizer_info")) == 120  # one try each
    assert scalar(db, "SELECT count(*) FROM discovered_authorizers WHERE errcode = 61003") == 1
    assert len(enabled_accounts(db)) >= len(truth(sim)) - 3  # the others became accounts
    assert rows(db, "SELECT status FROM discovery_runs") == [("succeeded",)]


def test_discovery_with_the_platforms_own_token_service_never_refreshes_a_token(
    fast_simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """authorizer_tokens = "central": the platform's token service already refreshes its
    authorizers' tokens (WeChat rotates refresh tokens: a second refresher would race it);
    discovery still lists and looks at the authorizers, and every discovered account reads its
    token from the service."""
    sim = fast_simulator
    sim.admin.reset(world=platform_world(40, seed=5, rules=2))
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", PLATFORM_TICKET)
    qrsync.write_config(
        platform_config(
            sim.url,
            component_extra=(
                'authorizer_tokens = "central"\n'
                f'authorizer_token_url = "{sim.url}/central/token/{{appid}}"\n'
            ),
        )
    )
    found = _discover(qrsync)
    assert found.exit_code == 0, found.output
    assert enabled_accounts(db) == truth(sim)
    assert set(
        source for (source,) in rows(db, "SELECT token_source FROM accounts WHERE enabled")
    ) == {"central"}
    synced = qrsync("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.stdout)["succeeded"] == len(truth(sim))
    assert sim.admin.calls(endpoint="authorizer_token") == []
    assert len(sim.admin.calls(endpoint="central")) >= len({n.split("-")[1] for n in truth(sim)})
    assert scalar(db, "SELECT count(*) FROM authorizer_refresh_tokens") == 0


def test_a_bad_central_url_is_one_line_naming_the_key(
    fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", PLATFORM_TICKET)
    qrsync.write_config(
        platform_config(
            fast_simulator.url,
            component_extra='authorizer_tokens = "central"\n'
            'authorizer_token_url = "http://tokens.example/token"\n',
        )
    )
    result = qrsync("accounts", "discover")
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert "\n" not in message and "component.authorizer_token_url" in message
    assert "{appid}" in message


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ('discover_schedule = "every hour"', "component.discover_schedule"),
        ('discover_schedule = "61 * * * *"', "component.discover_schedule"),
        ('authorizer_tokens = "both"', "component.authorizer_tokens"),
    ],
)
def test_a_bad_discovery_setting_is_one_line_naming_the_key(
    fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, value: str, key: str
) -> None:
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", PLATFORM_TICKET)
    qrsync.write_config(platform_config(fast_simulator.url, component_extra=value + "\n"))
    result = qrsync("accounts", "discover")
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert "\n" not in message and key in message


def test_200_authorizers_tokens_are_not_held_to_5_a_second(
    simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WeChat documents no per-second limit for api_authorizer_token (and the simulator, rate
    limits on, enforces none): a fleet's tokens come as fast as sync.concurrency allows, not at
    qrcodejumpget's 5 a second per platform. Counted from the simulator's call log."""
    sim = simulator  # WeChat's limits on
    world = platform_world(200, pending=0, seed=6, rules=1)
    for grant in world["components"][0]["authorizations"]:
        grant["permission_sets"] = [18]
    world["accounts"] = [
        {"appid": a["appid"], "kind": "miniprogram", "rule_sets": [{"count": 1}]}
        for a in world["accounts"]
    ]
    sim.admin.reset(world=world)
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", PLATFORM_TICKET)
    qrsync.write_config(platform_config(sim.url, sync="concurrency = 8"))
    assert _discover(qrsync).exit_code == 0
    assert len(enabled_accounts(db)) == 200
    sim.admin.clear_calls()
    synced = qrsync("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.stdout)["succeeded"] == 200
    tokens = sim.admin.calls(endpoint="authorizer_token")
    assert len(tokens) == 200 and {c["errcode"] for c in tokens} == {0}
    per_second = Counter(int(c["at"]) for c in tokens)
    span = max(c["at"] for c in tokens) - min(c["at"] for c in tokens)
    print(
        f"200 authorizer_token calls over {span:.2f} s; the busiest second: "
        f"{max(per_second.values())} (held to 5 a second they would need 40 s)"
    )
    assert max(per_second.values()) > 5
    refused = [c for c in sim.admin.calls() if c["errcode"] in (44990, 45011)]
    assert refused == []
