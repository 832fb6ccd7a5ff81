"""Helpers for the token-source and API-fault tests: a third-party platform in the simulator,
the secrets a run must never show, the state of the rule tables, and bounded waits on the
simulator's call log."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import requests
from helpers import rows, scalar

COMPONENT = "wxc000000000000001"
COMPONENT_SECRET = "component-secret-value-321"
VERIFY_TICKET = "ticket@@@initial-verify-ticket-value-0001"
REFRESH_SEED = "refreshtoken@@@seed-value-for-the-first-run-0001"

_BARE_ACCESS_TOKEN = re.compile(r"access_token=(?!\*\*\*)[^&\s\"']+")


def component_world(
    authorizer: str,
    *,
    refresh_token: str = REFRESH_SEED,
    permission_sets: tuple[int, ...] = (3, 18),
    rotate_refresh_token: bool = False,
) -> dict[str, Any]:
    """A third-party platform (服务商) holding one authorization (world-file shape)."""
    return {
        "appid": COMPONENT,
        "secret": COMPONENT_SECRET,
        "verify_ticket": VERIFY_TICKET,
        "authorizations": [
            {
                "authorizer_appid": authorizer,
                "refresh_token": refresh_token,
                "permission_sets": list(permission_sets),
                "rotate_refresh_token": rotate_refresh_token,
            }
        ],
    }


def component_section(ticket: str = 'verify_ticket_env = "VERIFY_TICKET"') -> str:
    return f'[component]\nappid = "{COMPONENT}"\nappsecret_env = "COMPONENT_SECRET"\n{ticket}\n'


def component_oa_account(
    name: str, appid: str, miniprogram_appid: str, refresh_env: str = "OA_REFRESH_TOKEN"
) -> str:
    return (
        f'[[accounts]]\nname = "{name}"\nkind = "service_account"\nappid = "{appid}"\n'
        f'miniprogram_appid = "{miniprogram_appid}"\n'
        f'token = {{ source = "component", refresh_token_env = "{refresh_env}" }}\n'
    )


def account_with_token(name: str, kind: str, appid: str, token: str, mp: str | None = None) -> str:
    """An [[accounts]] entry with any token table, e.g. ``{ source = "central", url = ... }``."""
    linked = f'miniprogram_appid = "{mp}"\n' if mp else ""
    return (
        f'[[accounts]]\nname = "{name}"\nkind = "{kind}"\nappid = "{appid}"\n{linked}'
        f"token = {token}\n"
    )


def fetch_stable_token(base_url: str, appid: str, secret: str) -> str:
    """A token as another program would get it, straight from stable_token."""
    answer = requests.post(
        f"{base_url}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": appid, "secret": secret},
        timeout=10,
    ).json()
    token: str = answer["access_token"]
    return token


def current_refresh_token(sim: Any, authorizer: str) -> str:
    """The refresh token the simulator currently accepts for ``authorizer`` (in-process view)."""
    with sim.simulator.lock:
        grant = sim.simulator.world.components[COMPONENT].authorizations[authorizer]
        return str(grant.refresh_token)


def authorizer_token_answer(sim: Any, authorizer: str, refresh_token: str) -> dict[str, Any]:
    """Ask the simulator, as the platform would, for an authorizer token with ``refresh_token``."""
    ticket = sim.admin.ticket(COMPONENT)
    platform = requests.post(
        f"{sim.url}/cgi-bin/component/api_component_token",
        json={
            "component_appid": COMPONENT,
            "component_appsecret": COMPONENT_SECRET,
            "component_verify_ticket": ticket,
        },
        timeout=10,
    ).json()
    answer: dict[str, Any] = requests.post(
        f"{sim.url}/cgi-bin/component/api_authorizer_token",
        params={"component_access_token": platform["component_access_token"]},
        json={
            "component_appid": COMPONENT,
            "authorizer_appid": authorizer,
            "authorizer_refresh_token": refresh_token,
        },
        timeout=10,
    ).json()
    return answer


# --- secrets -------------------------------------------------------------------------------------


def issued_secrets(sim: Any) -> set[str]:
    """Every secret the simulator knows: app and platform secrets, verify tickets, every access
    and component token it ever issued, every authorizer refresh token (current and retired)."""
    with sim.simulator.lock:
        world = sim.simulator.world
        values = set(world.tokens)
        values |= {a.secret for a in world.accounts.values() if a.secret}
        for component in world.components.values():
            values |= {component.secret, component.ticket}
            if component.previous_ticket:
                values.add(component.previous_ticket)
            for grant in component.authorizations.values():
                values.add(grant.refresh_token)
                values |= set(grant.retired)
    return values


def stored_secrets(db: psycopg.Connection[Any]) -> set[str]:
    """The tokens and refresh tokens qrsync keeps in its own tables."""
    values = {r[0] for r in rows(db, "SELECT access_token FROM tokens")}
    values |= {r[0] for r in rows(db, "SELECT refresh_token FROM authorizer_refresh_tokens")}
    return values


def run_errors(db: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in rows(db, "SELECT error FROM sync_runs WHERE error IS NOT NULL")]


def assert_no_secret_shown(
    sim: Any, db: psycopg.Connection[Any], texts: Iterable[str], *extra: str
) -> None:
    """No secret or token appears in ``texts`` nor in any ``sync_runs.error`` (SPEC 7)."""
    secrets = issued_secrets(sim) | stored_secrets(db) | {e for e in extra if e}
    assert secrets, "the test should know at least one secret"
    shown = [*texts, *run_errors(db)]
    for index, text in enumerate(shown):
        leaked = sorted(s for s in secrets if s in text)
        # The leaked value itself is not repeated in the assertion message.
        assert not leaked, f"text {index} shows {len(leaked)} secret(s)"
        assert not _BARE_ACCESS_TOKEN.search(text), f"text {index} shows an access_token= value"


# --- the rule tables -----------------------------------------------------------------------------


def rule_tables(db: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything a failed run must leave as it was, rows' xmin included."""
    return {
        "rules": rows(
            db,
            "SELECT account_id, prefix, path, state, open_version, permit_sub_rule, "
            "first_seen_at, changed_at, published_at, deleted_at, xmin::text "
            "FROM rules ORDER BY account_id, prefix",
        ),
        "rule_versions": scalar(db, "SELECT count(*) FROM rule_versions"),
        "rule_state_changes": scalar(db, "SELECT count(*) FROM rule_state_changes"),
        "rule_debug_urls": scalar(db, "SELECT count(*) FROM rule_debug_urls"),
        "account_snapshots": scalar(db, "SELECT count(*) FROM account_snapshots"),
    }


def live_rules(db: psycopg.Connection[Any], account: str) -> set[tuple[Any, ...]]:
    return set(
        rows(
            db,
            "SELECT r.prefix, r.path, r.state FROM rules r JOIN accounts a ON a.id = r.account_id "
            "WHERE a.name = %s AND r.deleted_at IS NULL",
            account,
        )
    )


def truth(sim: Any, appid: str, miniprogram_appid: str | None = None) -> set[tuple[Any, ...]]:
    return {(r["prefix"], r["path"], r["state"]) for r in sim.admin.rules(appid, miniprogram_appid)}


def last_run(db: psycopg.Connection[Any], account: str) -> dict[str, Any]:
    cursor = db.execute(
        "SELECT s.* FROM sync_runs s JOIN accounts a ON a.id = s.account_id "
        "WHERE a.name = %s ORDER BY s.id DESC LIMIT 1",
        (account,),
    )
    row = cursor.fetchone()
    assert row is not None, f"no run of account '{account}'"
    names = [c.name for c in cursor.description or ()]
    return dict(zip(names, row, strict=True))


# --- the simulator's call log --------------------------------------------------------------------


def wait_for_calls(
    sim: Any,
    endpoint: str,
    enough: Callable[[list[dict[str, Any]]], bool],
    *,
    attempts: int = 100,
    pause_s: float = 0.05,
) -> list[dict[str, Any]]:
    """The calls of ``endpoint`` once ``enough`` holds for them, or as they are after a bounded
    wait (a delayed request is logged by the simulator only when its delay is over)."""
    calls: list[dict[str, Any]] = sim.admin.calls(endpoint=endpoint)
    for _ in range(attempts):
        if enough(calls):
            break
        time.sleep(pause_s)
        calls = sim.admin.calls(endpoint=endpoint)
    return calls
