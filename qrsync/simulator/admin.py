"""A Python client of the simulator's admin endpoints (``/sim/...``), for tests and the demo.

Each method wraps one endpoint and returns its decoded JSON answer; a refused request raises
:class:`SimulatorAdminError` with the simulator's explanation.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from qrsync.simulator.receivers import receiver_path

Json = dict[str, Any]


class SimulatorAdminError(RuntimeError):
    """The simulator refused an admin request (bad input, unknown account, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"simulator answered HTTP {status}: {message}")
        self.status = status


class SimulatorAdmin:
    """Drives a running simulator: its world, clock, tokens, faults, settings and call log."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SimulatorAdmin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        response = self._session.request(
            method, f"{self.base_url}{path}", json=body, params=params, timeout=self.timeout_s
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise SimulatorAdminError(response.status_code, str(message or response.text[:200]))
        return answer

    # --- the world -----------------------------------------------------------------------

    def reset(self, seed: int | None = None, world: Json | None = None) -> Json:
        """Start over from the start world and seed unless given; no faults or calls are kept."""
        body: Json = {}
        if seed is not None:
            body["seed"] = seed
        if world is not None:
            body["world"] = world
        result: Json = self._call("POST", "/sim/reset", body)
        return result

    def add_account(self, account: Json) -> Json:
        """Add or replace one account (world-file shape, ``rule_sets`` included)."""
        result: Json = self._call("POST", "/sim/accounts", account)
        return result

    def account(self, appid: str) -> Json:
        result: Json = self._call("GET", f"/sim/accounts/{appid}")
        return result

    def patch_account(self, appid: str, **changes: Any) -> Json:
        """Change qrcodejump_open, pub_quota, released, total_count_offset, secret, verified,
        nick_name, principal_name (as api_get_authorizer_info shows them), ..."""
        result: Json = self._call("PATCH", f"/sim/accounts/{appid}", changes)
        return result

    def add_component(self, component: Json) -> Json:
        """Add or replace one third-party platform (world-file shape)."""
        result: Json = self._call("POST", "/sim/components", component)
        return result

    def rotate_ticket(self, component_appid: str) -> str:
        """Push a new verify ticket; the previous one stays valid too."""
        result: Json = self._call("POST", f"/sim/components/{component_appid}/ticket")
        return str(result["verify_ticket"])

    def ticket(self, component_appid: str) -> str:
        result: Json = self._call("GET", f"/sim/components/{component_appid}/ticket")
        return str(result["verify_ticket"])

    def authorize(self, component_appid: str, authorizer_appid: str, **grant: Any) -> Json:
        """Grant the platform an authorization or change one (``refresh_token``,
        ``permission_sets``, ``rotate_refresh_token``, ``auth_time``); a change moves its
        ``auth_time`` to now unless given, as a new authorisation does."""
        path = f"/sim/components/{component_appid}/authorizations/{authorizer_appid}"
        result: Json = self._call("PUT", path, grant)
        return result

    def revoke_authorization(self, component_appid: str, authorizer_appid: str) -> None:
        """The authorizer withdraws its grant: its refresh tokens answer 61023."""
        path = f"/sim/components/{component_appid}/authorizations/{authorizer_appid}"
        self._call("DELETE", path)

    def churn(
        self,
        component_appid: str,
        *,
        revoke: int = 0,
        authorize: int = 0,
        change: int = 0,
        seed: int = 0,
    ) -> dict[str, list[str]]:
        """A seeded turn of the platform's life: ``revoke`` authorizers withdraw, ``authorize``
        authorise (the withdrawn ones first), ``change`` change their permission sets."""
        body = {"revoke": revoke, "authorize": authorize, "change": change, "seed": seed}
        result: dict[str, list[str]] = self._call(
            "POST", f"/sim/components/{component_appid}/churn", body
        )
        return result

    # --- rules ---------------------------------------------------------------------------

    def generate_rules(
        self,
        appid: str,
        count: int,
        miniprogram_appid: str | None = None,
        published_fraction: float | None = None,
        quirks: bool | None = None,
    ) -> Json:
        """Append ``count`` generated rules to an account's rules (for one mini program)."""
        body: Json = {"count": count}
        if miniprogram_appid is not None:
            body["miniprogram_appid"] = miniprogram_appid
        if published_fraction is not None:
            body["published_fraction"] = published_fraction
        if quirks is not None:
            body["quirks"] = quirks
        result: Json = self._call("POST", f"/sim/accounts/{appid}/rules", body)
        return result

    def put_rules(
        self, appid: str, rules: list[Json], miniprogram_appid: str | None = None
    ) -> Json:
        """Replace an account's rules verbatim, in this add order, bypassing WeChat's checks."""
        body: Json = {"rules": rules}
        if miniprogram_appid is not None:
            body["miniprogram_appid"] = miniprogram_appid
        result: Json = self._call("PUT", f"/sim/accounts/{appid}/rules", body)
        return result

    def rules(self, appid: str, miniprogram_appid: str | None = None) -> list[Json]:
        """The ground truth: every rule with every field, in add order."""
        params = {"miniprogram_appid": miniprogram_appid} if miniprogram_appid else None
        result: Json = self._call("GET", f"/sim/accounts/{appid}/rules", params=params)
        rules: list[Json] = result["rules"]
        return rules

    # --- tokens and time -----------------------------------------------------------------

    def expire_tokens(self, appid: str) -> int:
        """Every token of ``appid`` answers 42001 from now on; returns how many."""
        result: Json = self._call("POST", "/sim/tokens/expire", {"appid": appid})
        return int(result["tokens"])

    def invalidate_tokens(self, appid: str) -> int:
        """Every token of ``appid`` answers 40001 from now on; returns how many."""
        result: Json = self._call("POST", "/sim/tokens/invalidate", {"appid": appid})
        return int(result["tokens"])

    def advance_clock(self, seconds: float) -> float:
        """Move simulated time forward; returns the simulated now (epoch seconds)."""
        result: Json = self._call("POST", "/sim/clock", {"advance_s": seconds})
        return float(result["now"])

    # --- faults, calls, settings ---------------------------------------------------------

    def add_fault(self, **fault: Any) -> str:
        """Arm a fault, e.g. ``add_fault(endpoint="qrcodejumpget", page_num=3, errcode=-1)``."""
        result: Json = self._call("POST", "/sim/faults", fault)
        return str(result["id"])

    def faults(self) -> list[Json]:
        result: list[Json] = self._call("GET", "/sim/faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/sim/faults")

    def calls(self, endpoint: str | None = None, appid: str | None = None) -> list[Json]:
        """The request log: endpoint, appid, get_type, page_num, errcode, status, fault, at."""
        params = {k: v for k, v in (("endpoint", endpoint), ("appid", appid)) if v is not None}
        result: list[Json] = self._call("GET", "/sim/calls", params=params)
        return result

    def clear_calls(self) -> None:
        self._call("DELETE", "/sim/calls")

    def stats(self) -> dict[str, int]:
        """Requests per endpoint since the start or the last clear_calls / reset."""
        result: dict[str, int] = self._call("GET", "/sim/stats")
        return result

    def settings(
        self,
        rate_limit: bool | None = None,
        requests_per_second: int | None = None,
        latency_ms: int | None = None,
    ) -> Json:
        """Change the given settings and return them all."""
        changes = {
            key: value
            for key, value in (
                ("rate_limit", rate_limit),
                ("requests_per_second", requests_per_second),
                ("latency_ms", latency_ms),
            )
            if value is not None
        }
        result: Json = self._call("POST", "/sim/settings", changes)
        return result

    # --- notification receivers (receivers.py) --------------------------------------------

    def receiver_url(self, kind: str, receiver_id: str) -> str:
        """The URL a channel of ``kind`` posts to for the robot ``receiver_id`` (for the
        ``[[notify]]`` channel's url_env)."""
        return f"{self.base_url}{receiver_path(kind, receiver_id)}"

    def _receiver_path(self, kind: str, receiver_id: str) -> str:
        return f"/sim/receivers/{quote(kind, safe='')}/{quote(receiver_id, safe='')}"

    def set_receiver(
        self,
        kind: str,
        receiver_id: str,
        *,
        secret: str | None = None,
        fault: str = "ok",
        slow_s: float = 0.0,
        errcode: int | None = None,
        errmsg: str | None = None,
        times: int = -1,
        keyword: str | None = None,
        rate_limit: bool = True,
    ) -> Json:
        """Set a robot up (its whole set-up; what it received is kept): its signing secret,
        its fault (ok, in_body_error, rate_limited, http_500, slow, no_answer, down, unknown)
        for ``times`` requests (-1: until changed), ``slow_s`` for slow and no_answer, the
        in-body ``errcode``/``errmsg``, a required ``keyword``, and its rate limit."""
        body: Json = {
            "secret": secret,
            "fault": fault,
            "slow_s": slow_s,
            "errcode": errcode,
            "errmsg": errmsg,
            "times": times,
            "keyword": keyword,
            "rate_limit": rate_limit,
        }
        result: Json = self._call("PUT", self._receiver_path(kind, receiver_id), body)
        return result

    def receiver(self, kind: str, receiver_id: str) -> Json:
        """A robot's set-up (``secret_set``, not the secret) and its received/accepted counts."""
        result: Json = self._call("GET", self._receiver_path(kind, receiver_id))
        return result

    def receivers(self) -> list[Json]:
        result: list[Json] = self._call("GET", "/sim/receivers")
        return result

    def receiver_messages(
        self, kind: str, receiver_id: str, accepted: bool | None = None
    ) -> list[Json]:
        """What a robot got, oldest first: ``accepted``, ``outcome``, ``status``, ``code``,
        ``reason``, ``title``, ``text``, ``event_ids`` (webhook), ``bytes``, ``body``, ``at``;
        only the accepted (or refused) ones when ``accepted`` is given."""
        result: list[Json] = self._call("GET", self._receiver_path(kind, receiver_id) + "/messages")
        if accepted is None:
            return result
        return [record for record in result if record["accepted"] is accepted]

    def clear_receiver_messages(self, kind: str, receiver_id: str) -> None:
        self._call("DELETE", self._receiver_path(kind, receiver_id) + "/messages")

    def clear_receivers(self) -> None:
        """Forget every robot, its set-up and what it received."""
        self._call("DELETE", "/sim/receivers")
