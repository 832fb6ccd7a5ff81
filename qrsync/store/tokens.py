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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from qrsync.errors import TokenKeyError
from qrsync.masking import register_secrets
from qrsync.model import FetchedToken, reuse_seconds
from qrsync.store.encryption import TokenSealer
from qrsync.store.engine import Conn, Engine, dicts, scalar
from qrsync.store.queries import query


class PgTokenCache:
    """Tokens sealed with ``sealer`` when a key is configured (:mod:`qrsync.store.encryption`)."""

    def __init__(self, engine: Engine, sealer: TokenSealer | None = None) -> None:
        self.engine = engine
        self.sealer = sealer or TokenSealer()
        self._refreshing = threading.local()
        self._primed: dict[str, tuple[str, float]] = {}  # key -> (stored value, monotonic end)
        self._primed_lock = threading.Lock()

    def prime(self, keys: Sequence[str]) -> None:
        """Read the reusable tokens among ``keys`` in one statement; :meth:`get` answers from
        them until they are no longer reusable (timed by this process's clock from the
        seconds the database gave, so that a skewed clock cannot stretch them)."""
        if not keys:
            return
        with self.engine.transaction() as conn:
            rows = conn.execute(query("tokens_reusable"), {"keys": list(keys)}).fetchall()
        now = time.monotonic()
        opened: list[str] = []
        for row in rows:
            with suppress(TokenKeyError):  # (said by get(), where it is the run's error)
                opened.append(self._open_token(row.access_token, row.key))
        register_secrets(opened)  # at once, not one by one as the runs use them
        with self._primed_lock:
            for row in rows:
                self._primed[row.key] = (row.access_token, now + float(row.reuse_s))

    @contextmanager
    def _reading(self) -> Iterator[Conn]:
        """The connection of this thread's refresh in progress, else one of its own."""
        current: Conn | None = getattr(self._refreshing, "conn", None)
        if current is not None:
            yield current
            return
        with self.engine.transaction() as conn:
            yield conn

    def cached(self) -> list[dict[str, Any]]:
        """Every cached token's key and times, never its value (``qrsync tokens``)."""
        with self.engine.transaction() as conn:
            return dicts(conn, query("cached_tokens"))

    def drop(self, key: str) -> bool:
        """Forget the token cached under ``key`` (``qrsync tokens drop``); whether there was one.
        A run holding it keeps it until WeChat refuses it, then fetches a fresh one."""
        with self.engine.transaction() as conn:
            return conn.execute(query("drop_token"), {"key": key}).fetchone() is not None

    def get(self, key: str) -> str | None:
        token = self.at_hand(key)
        if token is not None:
            return token
        with self._reading() as conn:
            value = scalar(conn, query("token_get"), {"key": key})
        return None if value is None else self._open_token(value, key)

    def at_hand(self, key: str) -> str | None:
        """The token read ahead by :meth:`prime` if still reusable (read once: then the memory
        of its provider keeps it), else None."""
        with self._primed_lock:
            primed = self._primed.pop(key, None)
        if primed is not None and time.monotonic() < primed[1]:
            return self._open_token(primed[0], key)
        return None

    def _open_token(self, stored: str, key: str) -> str:
        return self.sealer.open(stored, _access_token_name(key))

    def refresh(
        self, key: str, fetch: Callable[[str | None], FetchedToken], failed: str | None
    ) -> str:
        with self._primed_lock:
            self._primed.pop(key, None)
        with self.engine.transaction() as conn:
            conn.execute(query("token_lock"), {"key": key})
            stored = scalar(conn, query("token_get"), {"key": key})
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
            ).fetchone()
        if row is None:
            return None
        refresh_token = self.sealer.open(row.refresh_token, _refresh_token_name(authorizer_appid))
        return refresh_token, row.seed_fingerprint

    def save_refresh_token(
        self, component_appid: str, authorizer_appid: str, refresh_token: str, seed_fingerprint: str
    ) -> None:
        with self.engine.transaction() as conn:
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
    with engine.transaction() as conn:
        for row in conn.execute(query("sealed_tokens")).fetchall():
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
