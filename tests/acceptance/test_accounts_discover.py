"""`qrsync accounts discover`: a platform's authorizers become accounts by themselves, end to end
against the simulator (SPEC behaviour 12, docs/accounts-discovery.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import MP_SECRET, mp_account, mp_world, rows, scalar, toml_config

PLATFORM = "wx00000000000000d9"
PLATFORM_SECRET = "discover-platform-secret"
TICKET = "ticket@@@discover-test"
KEY = "zHcmM9VRbHs3s5Kjkz5r6eGr3rFSGwVZ8M7d2BdQyZ0="

MINE = "wx60000000000000f1"  # the configuration file's own mini program
MP1 = "wx60000000000000a1"  # mini program, set 18
MP2 = "wx60000000000000a2"  # mini program, sets 3 and 18; revokes later
MP_NOSET = "wx60000000000000a3"  # mini program without set 18; gains it later
MP_NEW = "wx60000000000000a4"  # authorises between the two discoveries
OA0 = "wx60000000000000b0"  # service account linking no mini program
OA1 = "wx60000000000000b1"  # service account linking MP1
OA2 = "wx60000000000000b2"  # service account linking MP1 and MP2
SUB = "wx60000000000000c1"  # subscription account
UNVERIFIED = "wx60000000000000c2"  # unverified service account

FIRST_ACCOUNTS = [
    f"mp-{MP1}",
    f"mp-{MP2}",
    f"oa-{OA1}-{MP1}",
    f"oa-{OA2}-{MP1}",
    f"oa-{OA2}-{MP2}",
]


def _refresh(appid: str) -> str:
    return f"refresh@@@secret-{appid}"


def _mp(appid: str, rules: int = 4) -> dict[str, Any]:
    return {"appid": appid, "kind": "miniprogram", "rule_sets": [{"count": rules}]}


def _oa(appid: str, linked: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "appid": appid,
        "kind": "service_account",
        "linked_miniprograms": linked,
        "rule_sets": [{"miniprogram_appid": mp, "count": 3} for mp in linked],
        **extra,
    }


def _grant(appid: str, sets: list[int]) -> dict[str, Any]:
    return {"authorizer_appid": appid, "refresh_token": _refresh(appid), "permission_sets": sets}


def _config(url: str, accounts: str, security: str = "") -> str:
    return toml_config(
        url,
        accounts,
        api="requests_per_second = 100",
        extra=(
            f'[component]\nappid = "{PLATFORM}"\nappsecret_env = "PLATFORM_SECRET"\n'
            f'verify_ticket_env = "PLATFORM_TICKET"\ndiscover = true\n{security}'
        ),
    )


@pytest.fixture
def platform(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A platform with authorizers of every kind, and a configuration file of one mini program
    of its own; refresh tokens sealed with a key."""
    admin = fast_simulator.admin
    admin.add_account(mp_world(appid=MINE, secret=MP_SECRET))
    for account in (
        _mp(MP1),
        _mp(MP2),
        _mp(MP_NOSET),
        _mp(MP_NEW),
        _oa(OA0, []),
        _oa(OA1, [MP1]),
        _oa(OA2, [MP1, MP2]),
        {"appid": SUB, "kind": "service_account", "service_type": 0},
        _oa(UNVERIFIED, [MP1], verified=False),
    ):
        admin.add_account(account)
    admin.add_component(
        {
            "appid": PLATFORM,
            "secret": PLATFORM_SECRET,
            "verify_ticket": TICKET,
            "authorizations": [
                _grant(MP1, [18]),
                _grant(MP2, [3, 18]),
                _grant(MP_NOSET, [1, 3]),
                _grant(OA0, [3]),
                _grant(OA1, [3]),
                _grant(OA2, [1, 3, 18]),
                _grant(SUB, [1, 3]),
                _grant(UNVERIFIED, [3]),
            ],
        }
    )
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", TICKET)
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("QRSYNC_TOKEN_KEY", KEY)
    qrsync.write_config(
        _config(
            fast_simulator.url,
            mp_account("mine", MINE),
            security='[security]\ntoken_key_env = "QRSYNC_TOKEN_KEY"\n',
        )
    )
    return fast_simulator


def _discover(qrsync: Any, *args: str) -> Any:
    result = qrsync("accounts", "discover", *args)
    assert "Traceback" not in result.output
    return result


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert "refresh@@@" not in text, text
        assert PLATFORM_SECRET not in text and "SIM_" not in text


def _reasons(db: Any) -> dict[str, str]:
    return dict(
        rows(db, "SELECT authorizer_appid, reason FROM discovered_authorizers WHERE NOT synced")
    )


def test_discovery_makes_accounts_of_every_syncable_authorizer_and_says_why_not_the_others(
    platform: Any, qrsync: Any, db: Any
) -> None:
    result = _discover(qrsync)
    assert result.exit_code == 0, result.output
    assert "8 authorizers, 8 looked at, 5 accounts to sync" in result.output
    assert rows(
        db,
        "SELECT name, source, kind, appid, miniprogram_appid, token_source FROM accounts"
        " WHERE source = 'discover' ORDER BY name",
    ) == [
        (f"mp-{MP1}", "discover", "miniprogram", MP1, None, "component"),
        (f"mp-{MP2}", "discover", "miniprogram", MP2, None, "component"),
        (f"oa-{OA1}-{MP1}", "discover", "service_account", OA1, MP1, "component"),
        (f"oa-{OA2}-{MP1}", "discover", "service_account", OA2, MP1, "component"),
        (f"oa-{OA2}-{MP2}", "discover", "service_account", OA2, MP2, "component"),
    ]
    reasons = _reasons(db)
    assert set(reasons) == {MP_NOSET, OA0, SUB, UNVERIFIED}
    assert "permission set 18" in reasons[MP_NOSET]
    assert "links no mini program" in reasons[OA0]
    assert "subscription account" in reasons[SUB]
    assert "unverified" in reasons[UNVERIFIED]
    # Refresh tokens stored sealed (the key is configured), for the synced authorizers only.
    stored = rows(db, "SELECT authorizer_appid, refresh_token FROM authorizer_refresh_tokens")
    assert {appid for appid, _ in stored} == {MP1, MP2, OA1, OA2}
    assert all("refresh@@@" not in value for _, value in stored)
    # qrsync sync syncs the file's account and the discovered ones; never the others.
    platform.admin.clear_calls()
    synced = qrsync("sync", "--json")
    assert synced.exit_code == 0, synced.output
    summary = json.loads(synced.stdout)
    seen = {a["account"]: a["rules_seen"] for a in summary["accounts"]}
    assert seen == {
        "mine": 0,
        **{name: (4 if name.startswith("mp-") else 3) for name in FIRST_ACCOUNTS},
    }
    called = {c["appid"] for c in platform.admin.calls(endpoint="qrcodejumpget")}
    assert called.isdisjoint({MP_NOSET, OA0, SUB, UNVERIFIED})
    listing = qrsync("accounts")
    assert listing.exit_code == 0
    assert "authorizers not synced" in listing.output and SUB in listing.output
    _no_secret(result.output, result.stderr, synced.output, listing.output)


def test_a_second_discovery_follows_the_platform(platform: Any, qrsync: Any, db: Any) -> None:
    assert _discover(qrsync).exit_code == 0
    assert qrsync("sync").exit_code == 0
    admin = platform.admin
    admin.revoke_authorization(PLATFORM, MP2)
    admin.advance_clock(60)
    admin.authorize(PLATFORM, MP_NEW, refresh_token=_refresh(MP_NEW), permission_sets=[18])
    admin.authorize(PLATFORM, MP_NOSET, permission_sets=[3, 18])
    admin.clear_calls()
    again = _discover(qrsync, "--allow-mass-disable")
    assert again.exit_code == 0, again.output
    # Unchanged authorizers that were synced are not asked about again.
    looked = {c["appid"] for c in admin.calls(endpoint="authorizer_info")}
    assert looked == {PLATFORM}  # every call counts against the platform
    assert len(admin.calls(endpoint="authorizer_info")) == 5  # 2 changed + 3 not synced before
    enabled = dict(rows(db, "SELECT name, enabled FROM accounts WHERE source = 'discover'"))
    assert enabled[f"mp-{MP2}"] is False and enabled[f"oa-{OA2}-{MP2}"] is True
    assert enabled[f"mp-{MP_NEW}"] is True and enabled[f"mp-{MP_NOSET}"] is True
    assert (
        scalar(db, "SELECT listed FROM discovered_authorizers WHERE authorizer_appid = %s", MP2)
        is False
    )
    # The revoked one's history stays; it is not synced any more.
    assert (
        scalar(
            db,
            "SELECT count(*) FROM rules r JOIN accounts a ON a.id = r.account_id WHERE a.name = %s",
            f"mp-{MP2}",
        )
        == 4
    )
    synced = qrsync("sync", "--json")
    assert synced.exit_code == 0, synced.output
    names = {a["account"] for a in json.loads(synced.stdout)["accounts"]}
    assert f"mp-{MP2}" not in names and {f"mp-{MP_NEW}", f"mp-{MP_NOSET}"} <= names
    # It comes back: enabled again, same name, same history.
    admin.authorize(PLATFORM, MP2, refresh_token=_refresh(MP2), permission_sets=[18])
    back = _discover(qrsync, "--json")
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["enabled_again"] == [f"mp-{MP2}"]
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = %s", f"mp-{MP2}") is True


def test_dry_run_writes_nothing_and_says_what_would_change(
    platform: Any, qrsync: Any, db: Any
) -> None:
    dry = _discover(qrsync, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run, nothing written" in dry.output
    assert f"add: 5: mp-{MP1}" in dry.output and f"not synced: {SUB}" in dry.output
    assert scalar(db, "SELECT count(*) FROM accounts WHERE source = 'discover'") == 0
    assert scalar(db, "SELECT count(*) FROM discovered_authorizers") == 0
    assert scalar(db, "SELECT count(*) FROM authorizer_refresh_tokens") == 0
    assert scalar(db, "SELECT count(*) FROM tokens WHERE key LIKE 'authorizer:%%'") == 0
    as_json = _discover(qrsync, "--dry-run", "--json")
    document = json.loads(as_json.stdout)
    assert document["dry_run"] is True and sorted(document["added"]) == FIRST_ACCOUNTS
    assert {n["authorizer_appid"] for n in document["not_synced"]} == {
        MP_NOSET, OA0, SUB, UNVERIFIED,
    }  # fmt: skip
    _no_secret(dry.output, as_json.output)


def test_a_discovery_that_would_disable_most_accounts_waits_for_confirmation(
    platform: Any, qrsync: Any, db: Any
) -> None:
    assert _discover(qrsync).exit_code == 0
    for appid in (MP1, MP2, OA1):  # 3 of the 5 discovered accounts would go
        platform.admin.revoke_authorization(PLATFORM, appid)
    dry = _discover(qrsync, "--dry-run")
    assert "needs --allow-mass-disable: it disables 3 of the 5" in dry.output
    refused = _discover(qrsync)
    assert refused.exit_code == 2
    assert "would disable 3 of the 5 enabled discovered accounts" in refused.stderr
    assert "\n" not in refused.stderr.strip()
    assert scalar(db, "SELECT count(*) FROM accounts WHERE source = 'discover' AND enabled") == 5
    confirmed = _discover(qrsync, "--allow-mass-disable")
    assert confirmed.exit_code == 0, confirmed.output
    assert rows(
        db, "SELECT name FROM accounts WHERE source = 'discover' AND enabled ORDER BY name"
    ) == [(f"oa-{OA2}-{MP1}",), (f"oa-{OA2}-{MP2}",)]


def test_an_empty_list_does_not_switch_the_platform_off(
    platform: Any, qrsync: Any, db: Any
) -> None:
    assert _discover(qrsync).exit_code == 0
    for grant in ("MP1", "MP2", "MP_NOSET", "OA0", "OA1", "OA2", "SUB", "UNVERIFIED"):
        platform.admin.revoke_authorization(PLATFORM, globals()[grant])
    refused = _discover(qrsync)
    assert refused.exit_code == 2 and "disable 5 of the 5" in refused.stderr
    assert scalar(db, "SELECT count(*) FROM accounts WHERE source = 'discover' AND enabled") == 5


def test_a_pair_the_file_already_has_is_not_made_twice(
    platform: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OA1_SECRET", "oa1-secret-value")
    file_accounts = (
        mp_account("mine", MINE)
        + f'[[accounts]]\nname = "brand-oa"\nkind = "service_account"\nappid = "{OA1}"\n'
        f'miniprogram_appid = "{MP1}"\n'
        'token = { source = "stable_token", secret_env = "OA1_SECRET" }\n'
    )
    qrsync.write_config(_config(platform.url, file_accounts))
    result = _discover(qrsync)
    assert result.exit_code == 0, result.output
    assert f"oa-{OA1}-{MP1}: skipped: {OA1}/{MP1} is already account 'brand-oa'" in result.output
    assert scalar(db, "SELECT count(*) FROM accounts WHERE appid = %s", OA1) == 1
    assert scalar(db, "SELECT source FROM accounts WHERE appid = %s", OA1) == "config"


@pytest.mark.parametrize("errcode", [61003, 61007, 48001])
def test_an_errcode_names_the_authorizer_with_a_hint_and_leaves_its_accounts(
    platform: Any, qrsync: Any, db: Any, errcode: int
) -> None:
    assert _discover(qrsync).exit_code == 0
    platform.admin.advance_clock(60)
    platform.admin.authorize(PLATFORM, OA1, permission_sets=[3])  # changed: looked at again
    platform.admin.add_fault(endpoint="amplinkget", appid=OA1, errcode=errcode, times=5)
    platform.admin.clear_calls()
    result = _discover(qrsync)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if OA1 in line]
    assert len(lines) == 1 and f"WeChat answered {errcode} to wxamplinkget" in lines[0]
    assert len(platform.admin.calls(endpoint="amplinkget", appid=OA1)) == 1  # no retry storm
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = %s", f"oa-{OA1}-{MP1}") is True
    assert (
        scalar(db, "SELECT errcode FROM discovered_authorizers WHERE authorizer_appid = %s", OA1)
        == errcode
    )
    # Looked at again next time; without the fault it is synced again.
    platform.admin.clear_faults()
    assert _discover(qrsync).exit_code == 0
    assert scalar(db, "SELECT synced FROM discovered_authorizers WHERE authorizer_appid = %s", OA1)


def test_a_platform_errcode_stops_discovery_with_one_line(
    platform: Any, qrsync: Any, db: Any
) -> None:
    platform.admin.add_fault(endpoint="authorizer_list", errcode=61004, times=5)
    result = _discover(qrsync)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message and "61004" in message and "allow-list" in message
    assert scalar(db, "SELECT count(*) FROM discovered_authorizers") == 0


def test_without_a_component_table_discovery_is_refused(
    fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(fast_simulator.url, mp_account()))
    result = _discover(qrsync)
    assert result.exit_code == 2
    assert "[component]" in result.stderr and "\n" not in result.stderr.strip()


def test_accounts_json_shows_the_authorizers_not_synced(platform: Any, qrsync: Any) -> None:
    assert _discover(qrsync, "--json").exit_code == 0
    listing = qrsync("accounts", "--json")
    documents = json.loads(listing.stdout)
    by_appid = {d["appid"]: d for d in documents if d["source"] == "discover"}
    assert "subscription account" in by_appid[SUB]["not_synced"]
    assert by_appid[SUB]["name"] is None and by_appid[SUB]["enabled"] is False
    assert by_appid[MP1]["not_synced"] is None and by_appid[MP1]["name"] == f"mp-{MP1}"
    _no_secret(listing.output)
