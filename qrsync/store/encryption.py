"""Access tokens and authorizer refresh tokens encrypted at rest (``[security] token_key_env``).

With a key configured, every token qrsync writes to ``tokens`` and ``authorizer_refresh_tokens``
is sealed with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) and stored as
``fernet:<token>``; a database dump or a too-curious BI role then holds nothing usable. The
setting may list several keys (comma or space separated): the first seals, every one opens, so
that a key is rotated by putting the new one first, running ``qrsync db rotate-token-key`` and
then dropping the old one (docs/security.md).

A sealed value that cannot be opened is an error that names the fix, never a reason to fetch
a new token: an authorizer refresh token cannot be fetched again without the merchant
authorising again. Values stored before a key was configured are read as they are and sealed
the next time they are written.
"""

from __future__ import annotations

import re

from qrsync.config import Config
from qrsync.errors import ConfigError, TokenKeyError

SEALED_PREFIX = "fernet:"
_KEY_SEPARATORS = re.compile(r"[\s,]+")


class TokenSealer:
    """Seals and opens stored tokens; without keys, stores them as they are."""

    def __init__(self, keys: tuple[str, ...] = (), *, source: str = "security.token_key") -> None:
        """Raises ValueError if a key is not a Fernet key."""
        self.source = source
        self._fernet = None
        if keys:
            from cryptography.fernet import Fernet, MultiFernet

            try:
                self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
            except (ValueError, TypeError):
                raise ValueError(
                    "is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                    "`qrsync db new-token-key`)"
                ) from None

    @classmethod
    def from_setting(cls, value: str, *, source: str) -> TokenSealer:
        """Keys from the secret's value: one key, or several separated by commas or spaces."""
        keys = tuple(k for k in _KEY_SEPARATORS.split(value) if k)
        return cls(keys, source=source)

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str) -> str:
        if self._fernet is None:
            return value
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str, what: str) -> str:
        """The stored value in clear; ``what`` names it in errors ("the cached access token of
        wx...")."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        if self._fernet is None:
            raise TokenKeyError(
                f"{what} is stored encrypted but no key is configured: set [security] "
                "token_key_env (or token_key_file) to the key it was encrypted with"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise TokenKeyError(
                f"{what} cannot be decrypted with the configured {self.source} (a wrong key? "
                "while rotating, list the new key first and keep the old one after it)"
            ) from None

    def reseal(self, stored: str, what: str) -> str:
        """``stored`` sealed with the first key (for rotation); unchanged without keys."""
        return self.seal(self.open(stored, what))


def sealer_for(config: Config) -> TokenSealer:
    """The sealer the configuration asks for (keys read from their variable or file now)."""
    ref = config.security.token_key
    if ref is None:
        return TokenSealer()
    source = f"security.token_key_{ref.kind}"
    try:
        return TokenSealer.from_setting(ref.read(), source=source)
    except (LookupError, ValueError) as exc:
        raise ConfigError(str(exc), file=config.path, key=source) from None


def new_key() -> str:
    """A fresh Fernet key, for ``qrsync db new-token-key``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
