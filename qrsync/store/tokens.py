"""The database side of token caching: one row per token, refreshed under an advisory lock.

Implements :class:`qrsync.wechat.tokens.TokenCache`. The lock is transaction-level
(``pg_advisory_xact_lock``), so it works behind PgBouncer in transaction pooling mode; the HTTP
call to the token endpoint is made while the lock is held, so that N processes (or threads)
refreshing the same token at once make one call and the others reuse its result. What the
fetch reads meanwhile (the authorizer's refresh token, the platform's cached token) is read on
the refreshing transaction's own connection: a thread holding one connection for its run and
one for the refresh must not need a third to read, or a fleet's first tokens, all fetched at
once, would wait for connections held by each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qrsync.model import FetchedToken, reuse_seconds
from qrsync.store.encryption import TokenSealer
from qrsync.store.engine import Connection, Engine
from qrsync.store.queries import query


class PgTokenCache:
    """Tokens sealed with ``sealer`` when a key is configured (:mod:`qrsync.store.encryption`)."""

    def __init__(self, engine: Engine, sealer: TokenSealer | None = None) -> None:
        self.engine = engine
        self.sealer = sealer or TokenSealer()
        self._refreshing = threading.local()

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """The connection of this thread's refresh in progress, else one of its own."""
        current: Connection | None = getattr(self._refreshing, "conn", None)
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            yield conn

    def cached(self) -> list[dict[str, Any]]:
        """Every cached token's key and times, never its value (``qrsync tokens``)."""
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query("cached_tokens")).mappings()]

    def drop(self, key: str) -> bool:
        """Forget the token cached under ``key`` (``qrsync tokens drop``); whether there was one.
        A run holding it keeps it until WeChat refuses it, then fetches a fresh one."""
        with self.engine.begin() as conn:
            return conn.execute(query("drop_token"), {"key": key}).first() is not None

    def get(self, key: str) -> str | None:
        with self._reading() as conn:
            value = conn.execute(query("token_get"), {"key": key}).scalar_one_or_none()
        return None if value is None else self._open_token(value, key)

    def _open_token(self, stored: str, key: str) -> str:
        return self.sealer.open(stored, _access_token_name(key))

    def refresh(
        self, key: str, fetch: Callable[[str | None], FetchedToken], failed: str | None
    ) -> str:
        with self.engine.begin() as conn:
            conn.execute(query("token_lock"), {"key": key})
            stored = conn.execute(query("token_get"), {"key": key}).scalar_one_or_none()
            cached = None if stored is None else self._open_token(stored, key)
            if cached is not None and cached != failed:
                # Another process refreshed it while we waited for the lock.
                return cached
            outer = getattr(self._refreshing, "conn", None)
            self._refreshing.conn = conn
            try:
                fetched = fetch(failed)
            finally:
                self._refreshing.conn = outer
            conn.execute(
                query("token_put"),
                {
                    "key": key,
                    "access_token": self.sealer.seal(fetched.access_token),
                    "expires_in": fetched.expires_in,
                    "reuse_s": reuse_seconds(fetched.expires_in),
                },
            )
        return fetched.access_token

    def load_refresh_token(
        self, component_appid: str, authorizer_appid: str
    ) -> tuple[str, str] | None:
        with self._reading() as conn:
            row = conn.execute(
                query("refresh_token_get"),
                {"component_appid": component_appid, "authorizer_appid": authorizer_appid},
            ).one_or_none()
        if row is None:
            return None
        refresh_token = self.sealer.open(row.refresh_token, _refresh_token_name(authorizer_appid))
        return refresh_token, row.seed_fingerprint

    def save_refresh_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str, seed_fingerprint: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                query("refresh_token_put"),
                {
                    "component_appid": component_appid,
                    "authorizer_appid": authorizer_appid,
                    "refresh_token": self.sealer.seal(refresh_token),
                    "seed_fingerprint": seed_fingerprint,
                },
            )


def reseal_tokens(engine: Engine, sealer: TokenSealer) -> int:
    """Seal every stored token with the first configured key (after a key was added or put
    first); return how many were rewritten. Tokens that cannot be opened stop it unchanged."""
    rewritten = 0
    with engine.begin() as conn:
        for row in conn.execute(query("sealed_tokens")).all():
            if row.tab == "tokens":
                name, statement = _access_token_name(row.id), "reseal_token"
            else:
                name, statement = _refresh_token_name(row.id2), "reseal_refresh_token"
            value = sealer.reseal(row.value, name)
            params = {"id": row.id, "id2": row.id2, "old": row.value, "value": value}
            rewritten += conn.execute(query(statement), params).rowcount
    return rewritten


def _access_token_name(key: str) -> str:
    return f"the cached access token '{key}'"


def _refresh_token_name(authorizer_appid: str) -> str:
    return f"the authorizer refresh token of {authorizer_appid}"
