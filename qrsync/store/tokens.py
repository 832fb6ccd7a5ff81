"""The database side of token caching: one row per token, refreshed under an advisory lock.

Implements :class:`qrsync.wechat.tokens.TokenCache`. The lock is transaction-level
(``pg_advisory_xact_lock``), so it works behind PgBouncer in transaction pooling mode; the HTTP
call to the token endpoint is made while the lock is held, so that N processes (or threads)
refreshing the same token at once make one call and the others reuse its result.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from qrsync.store.queries import query
from qrsync.wechat.tokens import FetchedToken, reuse_seconds


class PgTokenCache:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(query("token_get"), {"key": key}).scalar_one_or_none()
        return value

    def refresh(
        self, key: str, fetch: Callable[[str | None], FetchedToken], failed: str | None
    ) -> str:
        with self.engine.begin() as conn:
            conn.execute(query("token_lock"), {"key": key})
            cached = conn.execute(query("token_get"), {"key": key}).scalar_one_or_none()
            if cached is not None and cached != failed:
                # Another process refreshed it while we waited for the lock.
                return str(cached)
            fetched = fetch(failed)
            conn.execute(
                query("token_put"),
                {
                    "key": key,
                    "access_token": fetched.access_token,
                    "expires_in": fetched.expires_in,
                    "reuse_s": reuse_seconds(fetched.expires_in),
                },
            )
        return fetched.access_token

    def load_refresh_token(
        self, component_appid: str, authorizer_appid: str
    ) -> tuple[str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                query("refresh_token_get"),
                {"component_appid": component_appid, "authorizer_appid": authorizer_appid},
            ).one_or_none()
        return None if row is None else (row.refresh_token, row.seed_fingerprint)

    def save_refresh_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str, seed_fingerprint: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                query("refresh_token_put"),
                {
                    "component_appid": component_appid,
                    "authorizer_appid": authorizer_appid,
                    "refresh_token": refresh_token,
                    "seed_fingerprint": seed_fingerprint,
                },
            )
