"""Unit tests of pure functions: masking, page validation, listing judgement, named SQL, config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from qrsync.config import load_config
from qrsync.errors import (
    ConfigError,
    FatalApiError,
    MalformedResponse,
    RateLimited,
    RetryableApiError,
    TokenRejected,
)
from qrsync.masking import MASK, mask, register_secret
from qrsync.model import Page, reuse_seconds
from qrsync.store.queries import parse_queries, query
from qrsync.wechat.errcodes import api_error, quota_resets_at
from qrsync.wechat.listing import ListingTally, judge_listing, parse_page


def test_access_token_in_a_url_is_masked() -> None:
    text = "POST https://api.weixin.qq.com/x?access_token=ABC.def-123&b=1 failed"
    assert mask(text) == f"POST https://api.weixin.qq.com/x?access_token={MASK}&b=1 failed"


def test_secret_members_of_json_are_masked() -> None:
    text = '{"appid": "wx1", "secret": "s3cr3t", "authorizer_refresh_token": "rt"}'
    masked = mask(text)
    assert "s3cr3t" not in masked and '"rt"' not in masked and '"wx1"' in masked


def test_registered_secret_is_masked_anywhere() -> None:
    register_secret("very-special-value-42")
    assert "very-special-value-42" not in mask("error: got very-special-value-42 back")


def test_password_in_a_database_url_is_masked() -> None:
    assert "pw" not in mask("postgresql://user:pw@host/db").split("@")[0].split(":")[-1]


def _page(**payload: Any) -> Page:
    return parse_page({"errcode": 0, **payload}, page_num=1, account="a")


def test_page_keeps_quirks_verbatim() -> None:
    page = _page(
        rule_list=[
            {
                "prefix": "https://x",
                "state": 1,
                "path": "pages / index / index ",
                "debug_url": ["https: //x?a=1", "https: //x?a=1"],
                "open_version": 1,
                "permit_sub_rule": 1,
            }
        ],
        total_count=3,
        list_size=1,
        qrcodejump_open=0,
        qrcodejump_pub_quota=20,
    )
    rule = page.rules[0]
    assert rule.path == "pages / index / index "
    assert rule.debug_urls == ("https: //x?a=1", "https: //x?a=1")
    assert (page.total_count, page.qrcodejump_pub_quota) == (3, 20)


@pytest.mark.parametrize(
    "payload",
    [
        {"total_count": 5},
        {"rule_list": {"a": 1}, "total_count": 1},
        {"rule_list": [{"state": 1, "path": "p"}], "total_count": 1},
        {"rule_list": [{"prefix": "x", "state": "2", "path": "p"}], "total_count": 1},
        {"rule_list": [{"prefix": "x", "state": True, "path": "p"}], "total_count": 1},
        {"rule_list": [{"prefix": "x", "state": 1, "path": 3}], "total_count": 1},
        {"rule_list": [{"prefix": "x", "state": 1, "debug_url": "u"}], "total_count": 1},
        {"rule_list": [{"prefix": "x", "state": 1, "debug_url": [None]}], "total_count": 1},
        {"rule_list": [{"prefix": "x", "state": 99999999}], "total_count": 1},
        {"rule_list": ["x"], "total_count": 1},
        {"rule_list": [], "total_count": "1"},
    ],
)
def test_malformed_pages_are_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse) as caught:
        _page(**payload)
    assert "account 'a'" in str(caught.value)


def test_empty_listing_may_omit_rule_list() -> None:
    assert _page(total_count=0).rules == ()


def _tally(*totals: int, ended: bool = True) -> ListingTally:
    tally = ListingTally()
    for total in totals:
        tally.add(Page(1, (), total, 0, None, None))
    tally.ended = ended
    return tally


def test_consistent_listing_has_no_problems() -> None:
    assert judge_listing(_tally(400, 400), 400) == []


def test_changing_total_count_is_a_problem() -> None:
    assert "changed between pages" in judge_listing(_tally(400, 401), 401)[0]


def test_distinct_rules_must_match_total_count() -> None:
    assert "399 distinct rules" in judge_listing(_tally(400, 400), 399)[0]


def test_unfinished_pager_is_a_problem() -> None:
    assert judge_listing(_tally(400, ended=False), 400)


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (-1, RetryableApiError),
        (886001, RetryableApiError),
        (44990, RateLimited),
        (40001, TokenRejected),
        (40014, TokenRejected),
        (42001, TokenRejected),
        (40097, FatalApiError),
        (61007, FatalApiError),
    ],
)
def test_errcodes_map_to_what_to_do(errcode: int, kind: type) -> None:
    error = api_error(errcode, "bad thing rid: 6f2a-1", endpoint="qrcodejumpget", account="oa")
    assert type(error) is kind
    assert error.rid == "6f2a-1" and error.errcode == errcode
    assert str(error).startswith("account 'oa': WeChat answered")


def test_permission_error_carries_a_hint() -> None:
    error = api_error(61007, "api is unauthorized rid: 1", endpoint="qrcodejumpget", account="oa")
    assert "permission set 3" in str(error) and "rid: 1" in str(error)


def test_tokens_are_reused_until_five_minutes_before_expiry() -> None:
    assert reuse_seconds(7200) == 6900
    assert reuse_seconds(120) == 60


def test_named_queries_are_parsed() -> None:
    parsed = parse_queries("-- name: a --\n-- does a\nSELECT 1;\n\n-- name: b --\nSELECT 2;\n")
    assert parsed == {"a": "-- does a\nSELECT 1", "b": "SELECT 2"}
    assert "INSERT INTO rules" in str(query("merge_chunk"))


def test_duplicate_query_names_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a --\nSELECT 1;\n-- name: a --\nSELECT 2;\n")


def test_config_defaults(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('[database]\nurl = "postgresql://x@h/d"\n')
    config = load_config(path, environ={})
    assert config.api.base_url == "https://api.weixin.qq.com"
    assert (config.sync.page_size, config.sync.concurrency) == (200, 8)
    assert config.sync.max_delete_fraction == 0.5
    assert config.database.schema == "qrsync"


def test_secret_value_never_appears_in_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text(
        '[[accounts]]\nname = "a"\nkind = "miniprogram"\nappid = "wx1"\n'
        'token = { source = "stable_token", secret = "plain-secret-in-file" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "plain-secret-in-file" not in str(caught.value)
    assert "secret_env" in str(caught.value)


@pytest.mark.parametrize(
    ("errcode", "now", "resets"),
    [
        # The daily quota resets at midnight China time (UTC+8, no daylight saving).
        (
            45009,
            datetime(2026, 11, 25, 15, 59, 59, tzinfo=UTC),
            datetime(2026, 11, 25, 16, 0, tzinfo=UTC),
        ),
        (
            45009,
            datetime(2026, 11, 25, 16, 0, 0, tzinfo=UTC),
            datetime(2026, 11, 26, 16, 0, tzinfo=UTC),
        ),
        (
            45009,
            datetime(2026, 12, 31, 20, 0, 0, tzinfo=UTC),
            datetime(2027, 1, 1, 16, 0, tzinfo=UTC),
        ),
        # The per-minute quota at the next minute.
        (
            45011,
            datetime(2026, 11, 25, 9, 30, 59, 999, tzinfo=UTC),
            datetime(2026, 11, 25, 9, 31, tzinfo=UTC),
        ),
    ],
)
def test_quota_resets_at_midnight_china_time_or_the_next_minute(
    errcode: int, now: datetime, resets: datetime
) -> None:
    assert quota_resets_at(errcode, now) == resets


def test_44990_names_wechats_limit_not_a_count_of_ours() -> None:
    message = str(api_error(44990, "api freq out of limit", endpoint="qrcodejumpget", account="mp"))
    assert "its limit is 5 requests a second per account" in message
    assert "api.requests_per_second" in message and "more than 5 requests" not in message
