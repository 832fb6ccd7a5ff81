"""The channels' formats without a network: digests within each platform's limits, every event
covered once, cuts that say "and N more", signatures checked here with hmac, answers read the
platforms' way, and no URL or secret in anything shown."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from qrsync.masking import mask
from qrsync.notify import channels
from qrsync.notify.channels import KIND_LIMITS, KINDS, Answer, Channel, Event, Message

NOW = datetime(2026, 12, 3, 11, 43, 1, tzinfo=UTC)
HINT = "qrsync notify status"
SECRET = "SEC-sign-0123456789abcdef"
URLS = {
    "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wecom-key-0001",
    "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token=ding-token-0001",
    "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/feishu-hook-0001",
    "lark": "https://open.larksuite.com/open-apis/bot/v2/hook/lark-hook-0001",
    "slack": "https://hooks.slack.com/services/T0001/B0001/slackkey0001",
    "webhook": "https://hooks.example.cn/hooks/ops-0001",
}
KEYS = {
    "wecom": "wecom-key-0001",
    "dingtalk": "ding-token-0001",
    "feishu": "feishu-hook-0001",
    "lark": "lark-hook-0001",
    "slack": "slackkey0001",
    "webhook": "ops-0001",
}


def channel(kind: str, secret: str | None = SECRET) -> Channel:
    return Channel(f"ops-{kind}", kind, URLS[kind], secret)


def rule_event(number: int, kind: str = "rule_published", account: str = "brand-mp") -> Event:
    details: dict[str, Any] = {}
    if kind == "rule_published":
        details = {"waited_days": 3, "path": f"pages/item/item?id={number}"}
    elif kind == "rule_path_changed":
        details = {"path": f"pages/new/{number}", "old_path": f"pages/old/{number}"}
    return Event(number, kind, account, f"https://shop.example.cn/q/{number}", NOW, details)


def many_events(count: int, accounts: int = 5) -> list[Event]:
    kinds = ("rule_published", "rule_deleted", "rule_path_changed", "rule_unpublished")
    return [
        rule_event(n, kinds[n % len(kinds)], f"brand-{n % accounts}") for n in range(1, count + 1)
    ]


def covered(messages: list[Message]) -> list[int]:
    return [event_id for message in messages for event_id in message.event_ids]


def check_limits(kind: str, message: Message) -> None:
    """What each platform checks, measured here independently of the module's own budget."""
    body = json.dumps(message.payload, ensure_ascii=False, separators=(",", ":")).encode()
    if kind == "wecom":
        assert message.payload["msgtype"] == "markdown"
        assert len(message.payload["markdown"]["content"].encode()) <= 4096
    elif kind == "dingtalk":
        assert message.payload["msgtype"] == "markdown"
        assert message.payload["markdown"]["title"] and message.payload["markdown"]["text"]
        assert len(body) <= 20_000
    elif kind in ("feishu", "lark"):
        assert message.payload["msg_type"] == "interactive"
        assert len(body) + 120 <= 20_000  # room for the timestamp and sign added at send time
    elif kind == "slack":
        blocks = message.payload["blocks"]
        assert len(blocks) <= 50
        assert message.payload["text"]
        for block in blocks:
            limit = 150 if block["type"] == "header" else 3000
            assert 0 < len(block["text"]["text"]) <= limit
    else:
        assert len(message.payload["events"]) <= 500
        assert len(body) <= 1_000_000
    assert channels.measure(kind, message) <= KIND_LIMITS[kind].max_bytes


# --- composing ------------------------------------------------------------------------------


def test_the_human_line_says_what_happened() -> None:
    event = Event(
        7, "rule_published", "brand-mp", "https://shop.example.cn/q/123", NOW, {"waited_days": 3}
    )
    assert channels.describe(event) == (
        "brand-mp: rule https://shop.example.cn/q/123 published after 3 days"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_events_that_fit_get_a_message_each(kind: str) -> None:
    events = [rule_event(n) for n in (3, 1, 2)]
    messages = channels.compose(channel(kind), events, max_messages=5, more_hint=HINT)
    assert [m.event_ids for m in messages] == (
        [(1, 2, 3)] if kind == "webhook" else [(1,), (2,), (3,)]
    )
    for message in messages:
        check_limits(kind, message)
        if kind != "webhook":
            assert "https://shop.example.cn/q/" in message.text


def test_no_events_make_no_message() -> None:
    assert channels.compose(channel("wecom"), [], max_messages=3, more_hint=HINT) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("count", "max_messages"), [(7, 3), (400, 2), (1500, 1), (1500, 5)])
def test_digests_cover_every_event_once_within_the_limits(
    kind: str, count: int, max_messages: int
) -> None:
    events = many_events(count)
    messages = channels.compose(channel(kind), events, max_messages=max_messages, more_hint=HINT)
    assert 1 <= len(messages) <= max_messages
    ids = covered(messages)
    assert sorted(ids) == list(range(1, count + 1))  # none lost, none twice
    for message in messages:
        check_limits(kind, message)
        assert URLS[kind] not in message.summary and SECRET not in message.summary


@pytest.mark.parametrize("kind", ["wecom", "dingtalk", "feishu", "lark", "slack"])
def test_a_cut_digest_says_how_many_more_and_where_to_see_them(kind: str) -> None:
    events = many_events(2000)
    messages = channels.compose(channel(kind), events, max_messages=2, more_hint=HINT)
    text = "\n".join(m.text for m in messages)
    mores = [int(n) for n in re.findall(r"and (\d+) more — see `qrsync notify status`", text)]
    assert mores, text[:500]
    listed = len(re.findall(r"https://shop\.example\.cn/q/\d+", text))
    assert listed + sum(mores) == 2000  # every event is either listed or counted in a cut
    # Each group (account, kind) has its header with its full count.
    assert "brand-0" in text and "(100)" in text


def test_a_webhook_digest_counts_what_it_leaves_out() -> None:
    events = many_events(1200)
    messages = channels.compose(channel("webhook"), events, max_messages=2, more_hint=HINT)
    assert [len(m.payload["events"]) for m in messages] == [500, 500]
    assert [m.payload["more"] for m in messages] == [0, 200]
    assert messages[-1].payload["more_hint"] == HINT
    assert sorted(covered(messages)) == list(range(1, 1201))


def test_too_many_groups_for_the_budget_end_with_one_line_for_the_rest() -> None:
    events = [
        Event(n, "account_failing", f"account-{n:05d}", None, NOW, {"failed_runs": 3})
        for n in range(1, 1001)
    ]
    messages = channels.compose(channel("wecom"), events, max_messages=1, more_hint=HINT)
    assert len(messages) == 1
    tail = messages[0].text.splitlines()[-1]
    assert re.fullmatch(r"> and \d+ more in \d+ groups — see `qrsync notify status`", tail)
    assert sorted(covered(messages)) == list(range(1, 1001))
    check_limits("wecom", messages[0])


def test_digests_group_by_account_and_kind_and_put_what_needs_a_person_first() -> None:
    events = [rule_event(n, "rule_published", "brand-mp") for n in range(1, 5)]
    events.append(
        Event(
            9,
            "deletions_held",
            "brand-oa",
            None,
            NOW,
            {"held_deletions": 12, "command": "qrsync sync --account brand-oa --allow-mass-delete"},
        )
    )
    (message,) = channels.compose(channel("dingtalk"), events, max_messages=1, more_hint=HINT)
    lines = message.text.splitlines()
    headers = [line for line in lines if line.startswith("**")]
    assert headers == [
        "**brand-oa** · deletions held 删除已拦截 (1)",
        "**brand-mp** · rule published 规则已发布 (4)",
    ]
    assert message.payload["markdown"]["title"] == "qrsync: 2 accounts, 5 events"


@pytest.mark.parametrize("kind", KINDS)
def test_held_deletions_show_the_exact_command_to_confirm(kind: str) -> None:
    command = "qrsync sync --account brand-oa --allow-mass-delete"
    event = Event(
        5, "deletions_held", "brand-oa", None, NOW, {"held_deletions": 12, "command": command}
    )
    (message,) = channels.compose(channel(kind), [event], max_messages=1, more_hint=HINT)
    shown = json.dumps(message.payload, ensure_ascii=False)
    assert f"`{command}`" in shown
    assert "12 rule deletions held back by the mass-delete guard" in shown


def test_every_event_kind_reads_as_a_sentence() -> None:
    details: dict[str, Mapping[str, Any]] = {
        "rule_unpublished": {"from_state": 2, "to_state": 1},
        "rule_waiting": {"waited_days": 8},
        "quota_low": {"quota": 5, "threshold": 10},
        "account_failing": {"failed_runs": 3, "errcode": 61007, "error": "api unauthorized"},
        "account_recovered": {"failed_runs": 4},
        "authorization_needed": {"errcode": 61023, "error": "refresh_token is invalid"},
    }
    expected = {
        "rule_published": "brand-mp: rule https://x.cn/q published",
        "rule_unpublished": "brand-mp: rule https://x.cn/q unpublished (state 2 → 1)",
        "rule_deleted": "brand-mp: rule https://x.cn/q deleted",
        "rule_restored": "brand-mp: rule https://x.cn/q is back after its deletion",
        "rule_path_changed": "brand-mp: rule https://x.cn/q now opens ?",
        "rule_waiting": "brand-mp: rule https://x.cn/q still unpublished for 8 days",
        "quota_low": "brand-mp: publish quota down to 5 (alert at 10 or below)",
        "account_failing": (
            "brand-mp: syncing fails: 3 failed runs in a row; WeChat errcode 61007; "
            "last error: api unauthorized"
        ),
        "account_recovered": "brand-mp: syncing again after 4 failed runs",
        "authorization_needed": (
            "brand-mp: needs a person: the token source was refused (errcode 61023): "
            "refresh_token is invalid"
        ),
    }
    for kind, line in expected.items():
        prefix = "https://x.cn/q" if kind.startswith("rule") else None
        event = Event(1, kind, "brand-mp", prefix, NOW, details.get(kind, {}))
        assert channels.describe(event) == line


def test_chinese_text_is_cut_on_character_boundaries_within_the_byte_limits() -> None:
    error = "接口调用失败，请检查授权。" * 400  # 15,600 bytes in UTF-8
    events = [
        Event(n, "account_failing", f"品牌-{n}", None, NOW, {"failed_runs": 3, "error": error})
        for n in range(1, 41)
    ]
    line = channels.describe(events[0])
    assert len(line.encode()) <= channels.MAX_LINE_BYTES
    assert line.endswith("…")
    for kind in KINDS:
        messages = channels.compose(channel(kind), events, max_messages=4, more_hint=HINT)
        assert sorted(covered(messages)) == list(range(1, 41))
        for message in messages:
            check_limits(kind, message)
            json.dumps(message.payload, ensure_ascii=False).encode().decode("utf-8")


def test_text_from_wechat_cannot_add_lines_or_break_out_of_code() -> None:
    event = Event(
        1,
        "rule_path_changed",
        "brand-mp",
        "https://x.cn/q\n### forged heading",
        NOW,
        {"path": "p`ath\r\nmore", "old_path": "old"},
    )
    line = channels.describe(event)
    assert "\n" not in line and "\r" not in line and "`" not in line


def test_a_secret_in_an_error_is_masked_in_the_text() -> None:
    event = Event(
        1,
        "authorization_needed",
        "brand-oa",
        None,
        NOW,
        {"error": "refused https://api.weixin.qq.com/cgi-bin/token?secret=abcdef123456"},
    )
    for kind in KINDS:
        (message,) = channels.compose(channel(kind), [event], max_messages=1, more_hint=HINT)
        assert "abcdef123456" not in json.dumps(message.payload)


@pytest.mark.parametrize("kind", KINDS)
def test_the_test_message_covers_no_event(kind: str) -> None:
    message = channels.test_message(channel(kind), now=NOW)
    assert message.event_ids == ()
    check_limits(kind, message) if kind != "webhook" else None
    assert "ops-" + kind in json.dumps(message.payload, ensure_ascii=False)
    if kind == "webhook":
        assert message.payload == {
            "version": 1,
            "channel": "ops-webhook",
            "events": [],
            "more": 0,
            "test": True,
        }


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown channel kind"):
        channels.compose(
            Channel("x", "teams", "https://x", None),
            [rule_event(1)],
            max_messages=1,
            more_hint=HINT,
        )


def test_the_webhook_event_object_follows_the_schema() -> None:
    event = rule_event(42, "rule_path_changed")
    (message,) = channels.compose(channel("webhook"), [event], max_messages=1, more_hint=HINT)
    assert message.payload == {
        "version": 1,
        "channel": "ops-webhook",
        "events": [
            {
                "id": 42,
                "kind": "rule_path_changed",
                "account": "brand-mp",
                "prefix": "https://shop.example.cn/q/42",
                "occurred_at": "2026-12-03T11:43:01Z",
                "text": (
                    "brand-mp: rule https://shop.example.cn/q/42 now opens pages/new/42 "
                    "(was pages/old/42)"
                ),
                "path": "pages/new/42",
                "old_path": "pages/old/42",
            }
        ],
        "more": 0,
    }


# --- sending: signatures and answers, through a recording session ----------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self, amount: int, decode_content: bool = False) -> bytes:
        return self.body[:amount]


class _Response:
    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = status
        self.raw = _Raw(body)
        self.headers = requests.structures.CaseInsensitiveDict(headers)

    def close(self) -> None:
        pass


class Recorder:
    """A stand-in for requests.Session: records each request and gives a set answer."""

    def __init__(
        self,
        status: int = 200,
        body: bytes | str = b'{"errcode":0,"errmsg":"ok"}',
        headers: Mapping[str, str] | None = None,
        raises: Exception | None = None,
    ) -> None:
        self.answer = (status, body.encode() if isinstance(body, str) else body, headers or {})
        self.raises = raises
        self.requests: list[requests.PreparedRequest] = []

    def post(self, url: str, **kwargs: Any) -> _Response:
        prepared = requests.Request(
            "POST",
            url,
            params=kwargs.get("params"),
            data=kwargs.get("data"),
            headers=kwargs.get("headers"),
        ).prepare()
        self.requests.append(prepared)
        if self.raises is not None:
            raise self.raises
        return _Response(*self.answer)


def send(kind: str, recorder: Recorder, secret: str | None = SECRET) -> Answer:
    message = channels.compose(
        channel(kind, secret), [rule_event(1)], max_messages=1, more_hint=HINT
    )[0]
    return channels.send(
        cast(requests.Session, recorder), channel(kind, secret), message, now=NOW, timeout_s=5
    )


def test_dingtalk_signs_the_query_with_the_millisecond_timestamp() -> None:
    recorder = Recorder()
    assert send("dingtalk", recorder).ok
    url = recorder.requests[0].url or ""
    query = parse_qs(urlsplit(url).query)
    millis = int(NOW.timestamp() * 1000)
    digest = hmac.new(SECRET.encode(), f"{millis}\n{SECRET}".encode(), hashlib.sha256).digest()
    assert query["access_token"] == ["ding-token-0001"]
    assert query["timestamp"] == [str(millis)]
    assert query["sign"] == [base64.b64encode(digest).decode()]  # URL-encoded on the wire
    assert "sign=" + base64.b64encode(digest).decode() not in url or "%" not in url


def test_dingtalk_without_a_secret_is_not_signed() -> None:
    recorder = Recorder()
    assert send("dingtalk", recorder, secret=None).ok
    assert "sign" not in parse_qs(urlsplit(recorder.requests[0].url or "").query)


@pytest.mark.parametrize("kind", ["feishu", "lark"])
def test_feishu_and_lark_sign_the_body_with_the_second_timestamp(kind: str) -> None:
    recorder = Recorder(body='{"code":0,"msg":"success","data":{}}')
    assert send(kind, recorder).ok
    body = json.loads(recorder.requests[0].body or b"")
    seconds = int(NOW.timestamp())
    digest = hmac.new(f"{seconds}\n{SECRET}".encode(), b"", hashlib.sha256).digest()
    assert body["timestamp"] == str(seconds)
    assert body["sign"] == base64.b64encode(digest).decode()
    assert body["msg_type"] == "interactive"


def test_the_webhook_signs_timestamp_dot_body() -> None:
    recorder = Recorder(body="")
    assert send("webhook", recorder).ok
    request = recorder.requests[0]
    body = request.body if isinstance(request.body, bytes) else b""
    stamp = request.headers["X-Qrsync-Timestamp"]
    assert stamp == str(int(NOW.timestamp()))
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert request.headers["X-Qrsync-Signature"] == f"sha256={expected}"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body)["events"][0]["id"] == 1


def test_an_unsigned_webhook_has_a_timestamp_and_no_signature() -> None:
    recorder = Recorder(body="")
    assert send("webhook", recorder, secret=None).ok
    headers = recorder.requests[0].headers
    assert "X-Qrsync-Timestamp" in headers and "X-Qrsync-Signature" not in headers


@pytest.mark.parametrize(
    ("kind", "status", "body", "headers", "ok", "retryable", "wait", "detail"),
    [
        ("wecom", 200, '{"errcode":0,"errmsg":"ok"}', {}, True, False, None, "WeCom answered ok"),
        (
            "wecom",
            200,
            '{"errcode":45009,"errmsg":"api freq out of limit"}',
            {},
            False,
            True,
            60.0,
            "WeCom answered errcode 45009 (api freq out of limit): rate limited",
        ),
        (
            "wecom",
            200,
            '{"errcode":93000,"errmsg":"invalid webhook url"}',
            {},
            False,
            False,
            None,
            "check url_env",
        ),
        (
            "dingtalk",
            200,
            '{"errcode":310000,"errmsg":"sign not match"}',
            {},
            False,
            False,
            None,
            "DingTalk answered errcode 310000 (sign not match): check secret_env",
        ),
        (
            "dingtalk",
            200,
            '{"errcode":310000,"errmsg":"keywords not in content"}',
            {},
            False,
            False,
            None,
            "keyword",
        ),
        (
            "dingtalk",
            200,
            '{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}',
            {},
            False,
            True,
            60.0,
            "130101",
        ),
        (
            "dingtalk",
            200,
            '{"errcode":460101,"errmsg":"message too long, exceed 20000 bytes"}',
            {},
            False,
            False,
            None,
            "too long",
        ),
        ("feishu", 200, '{"code":0,"msg":"success","data":{}}', {}, True, False, None, "ok"),
        ("lark", 200, '{"StatusCode":0,"StatusMessage":"success"}', {}, True, False, None, "ok"),
        (
            "feishu",
            200,
            '{"code":19021,"msg":"sign match fail or timestamp is not within one hour"}',
            {},
            False,
            False,
            None,
            "Feishu answered code 19021 (sign match fail or timestamp is not within one hour): "
            "check secret_env",
        ),
        (
            "lark",
            200,
            '{"code":11232,"msg":"frequency limited psm[lark]"}',
            {},
            False,
            True,
            10.0,
            "Lark answered code 11232",
        ),
        ("feishu", 200, '{"code":9499,"msg":"too many request"}', {}, False, True, 60.0, "9499"),
        (
            "feishu",
            400,
            '{"code":19001,"msg":"param invalid: incoming webhook access token invalid"}',
            {},
            False,
            False,
            None,
            "Feishu answered code 19001 (param invalid: incoming webhook access token invalid): "
            "the hook id is wrong or the bot was removed: check url_env",
        ),
        ("slack", 200, "ok", {}, True, False, None, "Slack answered ok"),
        ("slack", 200, "invalid_payload", {}, False, False, None, "malformed"),
        ("slack", 429, "rate_limited", {"Retry-After": "7"}, False, True, 7.0, "429"),
        ("slack", 404, "no_service", {}, False, False, None, "check url_env"),
        ("webhook", 204, "", {}, True, False, None, "HTTP 204"),
        ("webhook", 401, '{"error":"signature mismatch"}', {}, False, False, None, "secret_env"),
        ("webhook", 503, "busy", {"Retry-After": "30"}, False, True, 30.0, "HTTP 503"),
        ("webhook", 413, "too big", {}, False, False, None, "too large"),
        ("wecom", 502, "<html>bad gateway</html>", {}, False, True, None, "HTTP 502"),
        ("dingtalk", 200, "<html>not json</html>", {}, False, True, None, "no JSON object"),
    ],
)
def test_answers_are_read_the_platforms_way(
    kind: str,
    status: int,
    body: str,
    headers: dict[str, str],
    ok: bool,
    retryable: bool,
    wait: float | None,
    detail: str,
) -> None:
    answer = send(kind, Recorder(status, body, headers))
    assert (answer.ok, answer.retryable, answer.status, answer.retry_after_s) == (
        ok,
        retryable,
        status,
        wait,
    )
    assert detail in answer.detail


def test_a_timeout_is_retryable() -> None:
    answer = send("wecom", Recorder(raises=requests.ReadTimeout("read timed out")))
    assert (answer.ok, answer.retryable, answer.status) == (False, True, None)
    assert answer.detail == "WeCom gave no answer within 5 s"


def test_a_url_that_is_not_http_is_not_retried() -> None:
    bad = Channel("ops", "wecom", "ftp://example.cn/send?key=wecom-key-0001", None)
    message = channels.test_message(bad, now=NOW)
    answer = channels.send(cast(requests.Session, Recorder()), bad, message, now=NOW, timeout_s=5)
    assert (answer.ok, answer.retryable) == (False, False)
    assert "check url_env" in answer.detail


@pytest.mark.parametrize("kind", KINDS)
def test_neither_url_nor_secret_shows_in_details_summaries_or_reprs(kind: str) -> None:
    leak = f"refused {URLS[kind]} with secret {SECRET} and key {KEYS[kind]}"
    failures = [
        Recorder(
            raises=requests.ConnectionError(f"HTTPSConnectionPool: Max retries: {URLS[kind]}")
        ),
        Recorder(status=400, body=leak),
        Recorder(
            status=200, body=json.dumps({"errcode": 1, "code": 1, "errmsg": leak, "msg": leak})
        ),
        Recorder(status=500, body=leak),
    ]
    for recorder in failures:
        answer = send(kind, recorder)
        assert not answer.ok or kind == "webhook"  # any 2xx is a delivery to a webhook
        for secret in (URLS[kind], SECRET, KEYS[kind]):
            assert secret not in answer.detail
    messages = channels.compose(channel(kind), many_events(50), max_messages=2, more_hint=HINT)
    for message in messages:
        for secret in (URLS[kind], SECRET, KEYS[kind]):
            assert secret not in message.summary
            assert secret not in json.dumps(message.payload)
    assert SECRET not in repr(channel(kind)) and KEYS[kind] not in repr(channel(kind))


def test_robot_keys_in_webhook_paths_are_masked_wherever_they_appear() -> None:
    text = (
        "POST https://open.feishu.cn/open-apis/bot/v2/hook/2f1e-aa77 then "
        "https://hooks.slack.com/services/T00AB/B00CD/XyZ123 then "
        "/cgi-bin/webhook/send?key=abcd-1234 and /robot/send?access_token=ffee9988&timestamp=1"
    )
    shown = mask(text)
    for secret in ("2f1e-aa77", "T00AB/B00CD/XyZ123", "abcd-1234", "ffee9988"):
        assert secret not in shown
    assert "/open-apis/bot/v2/hook/***" in shown and "timestamp=1" in shown


def test_limits_match_the_platforms_documents() -> None:
    assert KIND_LIMITS["wecom"].per_minute == 20 and KIND_LIMITS["wecom"].max_bytes == 4096
    assert KIND_LIMITS["dingtalk"].per_minute == 20
    assert KIND_LIMITS["feishu"].per_minute == 100 and KIND_LIMITS["feishu"].per_second == 5
    assert KIND_LIMITS["slack"].per_second == 1
    assert set(KIND_LIMITS) == set(KINDS)


def test_a_signature_is_valid_for_an_hour_around_now() -> None:
    # The receivers refuse timestamps more than an hour away: signing uses the given now.
    recorder = Recorder()
    later = NOW + timedelta(minutes=30)
    message = channels.test_message(channel("dingtalk"), now=later)
    channels.send(
        cast(requests.Session, recorder), channel("dingtalk"), message, now=later, timeout_s=5
    )
    query = parse_qs(urlsplit(recorder.requests[0].url or "").query)
    assert query["timestamp"] == [str(int(later.timestamp() * 1000))]
