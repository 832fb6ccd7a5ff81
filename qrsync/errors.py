"""Every exception qrsync raises, in one place (httpx style).

Each class's docstring says when it is raised. Errors that reach a person carry a one-line
message naming the account, file, key or errcode at fault, and a hint; ``exit_code`` is what the
CLI exits with (SPEC "Command line": 2 = the command could not run, 1 = an account failed).
Third-party exceptions (requests, psycopg, SQLAlchemy) are translated at the edge that sees them.
"""

from __future__ import annotations

from qrsync.masking import mask


class QrsyncError(Exception):
    """Base of every error qrsync raises on purpose."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(mask(message or (self.__doc__ or self.__class__.__name__).strip()))

    @property
    def message(self) -> str:
        return str(self)


# --- the command cannot run (exit 2) -------------------------------------------------------


class UsageError(QrsyncError):
    """The command could not run as asked: bad arguments, no database, bad configuration."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration file is missing, unreadable or invalid."""

    def __init__(
        self, problem: str, *, file: str, account: str | None = None, key: str | None = None
    ) -> None:
        where = file
        if account is not None:
            where += f": account '{account}'"
        if key is not None:
            where += f": {key}"
        self.file, self.account, self.key = file, account, key
        super().__init__(f"{where}: {problem}")


READ_ONLY_HINT = (
    "hint: the database failed over or is in recovery; point database.url at the primary"
)
UNREACHABLE_HINT = "hint: the database is down, failing over or refusing connections"

# PostgreSQL's words for a database that takes no writes, and for one that went away or turns
# connections down (libpq's and the server's messages; SQLSTATE 25006, 57P01..57P03, 08xxx).
_READ_ONLY_SIGNS = ("read-only transaction", "recovery is in progress")
_UNREACHABLE_SIGNS = (
    "connection failed",
    "terminating connection",
    "server closed the connection",
    "not currently accepting connections",
    "the database system is",  # ... starting up / shutting down / in recovery mode
    "connection refused",
    "consuming input failed",
    "the connection is closed",
    "connection timeout expired",
)


def database_hint(message: str) -> str | None:
    """The hint for a database error met mid-run or at start: read-only (a failover, a
    standby) or unreachable; None when the message is neither."""
    text = message.lower()
    if any(sign in text for sign in _READ_ONLY_SIGNS):
        return READ_ONLY_HINT
    if any(sign in text for sign in _UNREACHABLE_SIGNS):
        return UNREACHABLE_HINT
    return None


class DatabaseError(UsageError):
    """The database cannot be reached or is not ready (e.g. not migrated)."""

    def __init__(self, message: str | None = None) -> None:
        text = message or (self.__doc__ or "").strip()
        hint = database_hint(text)
        if hint is not None and "hint:" not in text:
            if hint is READ_ONLY_HINT and "database is read-only" not in text:
                text = text.replace("database error: ", "database is read-only: ", 1)
            text = f"{text}; {hint}"
        super().__init__(text)


# --- one account's sync failed (exit 1, the others go on) ---------------------------------


class AccountError(QrsyncError):
    """Something went wrong while syncing one account; the run is recorded as failed."""

    errcode: int | None = None

    def __init__(self, message: str, *, account: str | None = None) -> None:
        self.account = account
        prefix = f"account '{account}': " if account else ""
        super().__init__(prefix + message)


class TransportError(AccountError):
    """The HTTP exchange failed: network error, timeout, connection reset or HTTP status."""

    def __init__(self, message: str, *, account: str | None = None, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message, account=account)


class TokenKeyError(AccountError):
    """A token stored encrypted cannot be opened with the configured key (or no key is set)."""


class MalformedResponse(AccountError):
    """WeChat answered something that is not the documented JSON (garbage, missing fields)."""


class ApiError(AccountError):
    """WeChat answered with a non-zero errcode."""

    retryable = False

    def __init__(
        self,
        *,
        errcode: int,
        errmsg: str,
        rid: str | None,
        endpoint: str,
        account: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.rid = rid
        self.endpoint = endpoint
        text = f"WeChat answered {errcode} to {endpoint}"
        explanation = errmsg.split(" rid:")[0].strip() if errmsg else ""
        if hint:
            text += f" ({hint})"
        elif explanation:
            text += f" ({explanation})"
        if rid:
            text += f" rid: {rid}"
        super().__init__(text, account=account)


class RetryableApiError(ApiError):
    """An errcode that means "try again later" (-1, 886001): retried with backoff."""

    retryable = True


class RateLimited(RetryableApiError):
    """44990: WeChat's rate limit (5 requests a second per account) was hit; backed off and
    retried."""


class TokenRejected(ApiError):
    """40001 / 40014 / 42001: the access token is invalid or expired; a fresh one is fetched."""


class FatalApiError(ApiError):
    """Any other errcode: retrying will not help (bad arguments, permissions, quota)."""


class TokenError(AccountError):
    """No access token could be obtained from the account's token source."""


class QuotaHeld(AccountError):
    """The account's AppID used up its API quota (45009, 45011): not called until it resets."""

    def __init__(self, message: str, *, account: str | None, errcode: int) -> None:
        super().__init__(message, account=account)
        self.errcode = errcode


class RunInterrupted(AccountError):
    """The run was stopped (Ctrl-C, SIGTERM) before its listing was applied; nothing changed."""
