"""What WeChat's errcodes mean for qrsync: retry, refresh the token, or give up (with a hint).

Sources: ../shared/api/REFERENCE.md and the original qrcodejumpget document.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from qrsync.errors import (
    ApiError,
    FatalApiError,
    RateLimited,
    RetryableApiError,
    TokenRejected,
)

RATE_LIMITED = 44990
RETRYABLE = frozenset({-1, 886001})
DAILY_QUOTA, MINUTE_QUOTA = 45009, 45011
QUOTA_USED_UP = frozenset({DAILY_QUOTA, MINUTE_QUOTA})
"""Not retried: the AppID is held (not called at all) until its quota resets."""
CHINA_TIME = timezone(timedelta(hours=8), "China time")
TOKEN_REJECTED = frozenset({40001, 40014, 42001})

HINTS: dict[int, str] = {
    -1: "WeChat is busy; retried with backoff",
    40001: "the access token is invalid or not the latest; check the AppSecret, or whether "
    "another program refreshed the token with /cgi-bin/token",
    40002: "invalid grant_type",
    40013: "invalid AppID; check the account's appid",
    40014: "invalid access token",
    40097: "WeChat rejected the request's arguments",
    40125: "invalid AppSecret; check the account's secret",
    40164: "the caller's IP is not on the account's allow-list",
    40166: "invalid appid in the request; for a service account check miniprogram_appid",
    41001: "the access token is missing",
    42001: "the access token has expired",
    44990: "WeChat refused the request rate: its limit is 5 requests a second per account, "
    "shared with every program using this AppID (check api.requests_per_second)",
    45009: "the daily API quota is used up; it resets at midnight (China time)",
    45011: "the per-minute API quota is used up; it resets at the next minute",
    48001: "this API is not open to this account (e.g. an unverified service account)",
    61004: "the caller's IP is not on the allow-list of the account or platform",
    61006: "the component_verify_ticket is invalid or stale; check that the platform's callback "
    "still stores the latest ticket",
    61007: "this service account has not granted permission set 3 to the platform; ask its "
    "administrator to re-authorise",
    61023: "the authorizer refresh token is invalid; the merchant must authorise the platform "
    "again, then put the new refresh token in the configuration",
    85075: "personal mini programs cannot have QR-code jump rules",
    886001: "WeChat is busy; retried with backoff",
}


def api_error(errcode: int, errmsg: str, *, endpoint: str, account: str | None) -> ApiError:
    """Map an errcode to the exception type that says what to do about it."""
    rid = _rid(errmsg)
    kwargs = {
        "errcode": errcode,
        "errmsg": errmsg,
        "rid": rid,
        "endpoint": endpoint,
        "account": account,
        "hint": HINTS.get(errcode),
    }
    if errcode == RATE_LIMITED:
        return RateLimited(**kwargs)  # type: ignore[arg-type]
    if errcode in RETRYABLE:
        return RetryableApiError(**kwargs)  # type: ignore[arg-type]
    if errcode in TOKEN_REJECTED:
        return TokenRejected(**kwargs)  # type: ignore[arg-type]
    return FatalApiError(**kwargs)  # type: ignore[arg-type]


def _rid(errmsg: str) -> str | None:
    """The request id WeChat appends to errmsg (``... rid: 6f2a...``), worth logging."""
    marker = "rid:"
    if marker not in errmsg:
        return None
    tail = errmsg.rsplit(marker, 1)[1].split()
    return tail[0] if tail else None


def quota_resets_at(errcode: int, now: datetime) -> datetime:
    """When a used-up quota comes back: the next midnight in China (UTC+8, no daylight
    saving) for the daily one, the next minute for the per-minute one."""
    if errcode == DAILY_QUOTA:
        local = now.astimezone(CHINA_TIME)
        return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), CHINA_TIME)
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)
