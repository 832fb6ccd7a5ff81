"""The world ``qrsync simulator`` starts with when no world file is given, its qrsync.toml and the
(fake) secrets that configuration names.

It holds one account of each way qrsync gets a token: a mini program by stable_token (rules in
mini-program mode, with the document's quirks and a total_count one more than its rules), a
verified service account by stable_token (12,000 rules: paging needed), a service account
authorised to a third-party platform (component), and a mini program behind a central token
service. The rules are generated from the simulator's seed.
"""

from __future__ import annotations

import shlex
from typing import Any

MINIPROGRAM = "wx00000000000000a1"
SERVICE_ACCOUNT = "wx00000000000000b1"
COMPONENT = "wx00000000000000c1"
AUTHORIZER = "wx00000000000000b2"
CENTRAL_MINIPROGRAM = "wx00000000000000a2"

MINIPROGRAM_SECRET = "sim-secret-mp"
SERVICE_ACCOUNT_SECRET = "sim-secret-oa"
AUTHORIZER_SECRET = "sim-secret-oa2"
CENTRAL_MINIPROGRAM_SECRET = "sim-secret-mp2"
COMPONENT_SECRET = "sim-secret-component"
VERIFY_TICKET = "ticket@@@sim-verify-ticket-c1-0001"
AUTHORIZER_REFRESH_TOKEN = "sim-refresh-b2"

# The environment variables the qrsync.toml of qrsync_config() names, and their values.
SECRET_ENV: tuple[tuple[str, str], ...] = (
    ("SIM_MP_SECRET", MINIPROGRAM_SECRET),
    ("SIM_OA_SECRET", SERVICE_ACCOUNT_SECRET),
    ("SIM_OA2_REFRESH_TOKEN", AUTHORIZER_REFRESH_TOKEN),
    ("QRSYNC_COMPONENT_SECRET", COMPONENT_SECRET),
    ("QRSYNC_VERIFY_TICKET", VERIFY_TICKET),
)


def default_world() -> dict[str, Any]:
    """A fresh copy of the default world, in the world-file shape."""
    return {
        "token_ttl_s": 7200,
        "accounts": [
            {
                "appid": MINIPROGRAM,
                "kind": "miniprogram",
                "secret": MINIPROGRAM_SECRET,
                "qrcodejump_open": 1,
                "pub_quota": 20,
                "total_count_offset": 1,  # the document's example: total_count 3 for 2 rules
                "rule_sets": [{"count": 25, "published_fraction": 0.4, "quirks": True}],
            },
            {
                "appid": SERVICE_ACCOUNT,
                "kind": "service_account",
                "secret": SERVICE_ACCOUNT_SECRET,
                "verified": True,
                "linked_miniprograms": [MINIPROGRAM],
                "rule_sets": [
                    {
                        "miniprogram_appid": MINIPROGRAM,
                        "count": 12_000,
                        "published_fraction": 0.6,
                        "quirks": True,
                    }
                ],
            },
            {
                "appid": AUTHORIZER,
                "kind": "service_account",
                "secret": AUTHORIZER_SECRET,
                "verified": True,
                "linked_miniprograms": [MINIPROGRAM],
                "rule_sets": [
                    {"miniprogram_appid": MINIPROGRAM, "count": 300, "published_fraction": 0.5}
                ],
            },
            {
                "appid": CENTRAL_MINIPROGRAM,
                "kind": "miniprogram",
                "secret": CENTRAL_MINIPROGRAM_SECRET,
                "rule_sets": [{"count": 10, "published_fraction": 0.5, "quirks": True}],
            },
        ],
        "components": [
            {
                "appid": COMPONENT,
                "secret": COMPONENT_SECRET,
                "verify_ticket": VERIFY_TICKET,
                "authorizations": [
                    {
                        "authorizer_appid": AUTHORIZER,
                        "refresh_token": AUTHORIZER_REFRESH_TOKEN,
                        "permission_sets": [3, 18],
                        "rotate_refresh_token": False,
                    }
                ],
            }
        ],
    }


def qrsync_config(base_url: str) -> str:
    """A qrsync.toml syncing every default-world account from a simulator at base_url; qrsync
    loads it as it is once it has a database (which the file leaves to the reader)."""
    return f"""\
# qrsync needs a database: set QRSYNC_DATABASE_URL, or uncomment [database] and one of the two
# lines under it (only one: qrsync refuses two databases, QRSYNC_DATABASE_URL included).
# [database]
# embedded = true                                      # a PostgreSQL qrsync runs by itself
# url = "postgresql://postgres@127.0.0.1:5432/postgres"  # yours; qrsync owns schema "qrsync"

[api]
base_url = "{base_url}"

[component]
appid = "{COMPONENT}"
appsecret_env = "QRSYNC_COMPONENT_SECRET"
verify_ticket_env = "QRSYNC_VERIFY_TICKET"

[[accounts]]
name = "sim-mp"
kind = "miniprogram"
appid = "{MINIPROGRAM}"
token = {{ source = "stable_token", secret_env = "SIM_MP_SECRET" }}

[[accounts]]
name = "sim-oa"
kind = "service_account"
appid = "{SERVICE_ACCOUNT}"
miniprogram_appid = "{MINIPROGRAM}"
token = {{ source = "stable_token", secret_env = "SIM_OA_SECRET" }}

[[accounts]]
name = "sim-oa-platform"
kind = "service_account"
appid = "{AUTHORIZER}"
miniprogram_appid = "{MINIPROGRAM}"
token = {{ source = "component", refresh_token_env = "SIM_OA2_REFRESH_TOKEN" }}

[[accounts]]
name = "sim-mp-central"
kind = "miniprogram"
appid = "{CENTRAL_MINIPROGRAM}"
token = {{ source = "central", url = "{base_url}/central/token/{CENTRAL_MINIPROGRAM}" }}
"""


def secret_assignments() -> list[str]:
    """``NAME=value`` lines for the simulated (fake) secrets the configuration names: a shell
    reads them with ``set -a; . FILE; set +a`` (so do docker's --env-file and systemd)."""
    return [f"{name}={shlex.quote(value)}" for name, value in SECRET_ENV]


def secret_exports() -> list[str]:
    """``export NAME=value`` lines for the simulated (fake) secrets the configuration names."""
    return [f"export {line}" for line in secret_assignments()]
