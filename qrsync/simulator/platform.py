"""A third-party platform (服务商) of thousands of authorizers of every kind, for discovery.

:func:`platform_world` describes, in the world-file shape, one platform and ``size``
authorizers drawn from a seeded mix: mini programs (some that did not grant permission set 18,
some personal, which WeChat answers 85075), verified service accounts linking 0 to 3 of those
mini programs (some without permission set 3), unverified service accounts and subscription
accounts. :meth:`qrsync.simulator.world.World.churn` (``POST /sim/components/<appid>/churn``)
then makes them authorise, withdraw, come back and change their permission sets, seeded too.
Building 10,000 authorizers takes well under a second: each gets a handful of rules.
"""

from __future__ import annotations

import random
from typing import Any

PLATFORM = "wx0000000000platfm"
PLATFORM_SECRET = "sim-secret-platform"
PLATFORM_TICKET = "ticket@@@sim-verify-ticket-platform"

MIX: tuple[tuple[str, float], ...] = (
    ("miniprogram", 0.50),
    ("miniprogram_without_set_18", 0.05),
    ("personal_miniprogram", 0.03),
    ("service_account", 0.25),
    ("service_account_without_set_3", 0.04),
    ("unverified_service_account", 0.05),
    ("subscription_account", 0.08),
)
"""The share of each kind of authorizer (sums to 1)."""
MINIPROGRAM_KINDS = frozenset({"miniprogram", "miniprogram_without_set_18", "personal_miniprogram"})


def authorizer_appid(index: int) -> str:
    """The AppID of the platform's ``index``-th authorizer (18 characters, as WeChat's)."""
    return f"wxa{index:015d}"


def platform_world(
    size: int = 1000,
    *,
    pending: int | None = None,
    seed: int = 1,
    rules: int = 3,
    component_appid: str = PLATFORM,
    extra_accounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A world of one platform and ``size`` authorizers (plus ``extra_accounts``), each kind in
    :data:`MIX`'s share, deterministic for ``seed``; every mini program and every linked pair
    has ``rules`` rules; the first authorizers are one of each kind. ``pending`` more accounts
    (default a twentieth of ``size``) have not authorised the platform yet:
    :meth:`~qrsync.simulator.world.World.churn` makes them."""
    rng = random.Random(f"{seed}:platform")
    kinds = [kind for kind, _ in MIX]
    weights = [share for _, share in MIX]
    pending = max(1, size // 20) if pending is None else pending
    # One of each kind first (a small platform still has every kind), then the mix.
    drawn = kinds[: min(size, len(kinds))]
    drawn += rng.choices(kinds, weights, k=size + pending - len(drawn))
    miniprograms = [
        authorizer_appid(i) for i, kind in enumerate(drawn) if kind in MINIPROGRAM_KINDS
    ]
    accounts: list[dict[str, Any]] = list(extra_accounts or [])
    grants: list[dict[str, Any]] = []
    for index, kind in enumerate(drawn):
        appid = authorizer_appid(index)
        sets = [1, 2, 3, 18]
        account: dict[str, Any] = {"appid": appid, "kind": "miniprogram"}
        if kind in MINIPROGRAM_KINDS:
            account["personal"] = kind == "personal_miniprogram"
            if kind == "miniprogram_without_set_18":
                sets = [1, 2]
            account["rule_sets"] = [{"count": rules, "published_fraction": 0.5, "quirks": False}]
        else:
            linked = rng.sample(miniprograms, min(len(miniprograms), rng.choice((0, 1, 1, 2, 3))))
            account |= {
                "kind": "service_account",
                "verified": kind != "unverified_service_account",
                "service_type": 0 if kind == "subscription_account" else 2,
                "linked_miniprograms": linked,
                "rule_sets": [
                    {"miniprogram_appid": mp, "count": rules, "quirks": False} for mp in linked
                ],
            }
            if kind == "service_account_without_set_3":
                sets = [1, 2, 18]
        accounts.append(account)
        if index >= size:
            continue  # not authorised yet
        grants.append(
            {
                "authorizer_appid": appid,
                "refresh_token": f"refreshtoken@@@sim-{seed}-{index:06d}",
                "permission_sets": sets,
                "auth_time": 1_700_000_000 + index,
            }
        )
    return {
        "token_ttl_s": 7200,
        "accounts": accounts,
        "components": [
            {
                "appid": component_appid,
                "secret": PLATFORM_SECRET,
                "verify_ticket": PLATFORM_TICKET,
                "authorizations": grants,
            }
        ],
    }
