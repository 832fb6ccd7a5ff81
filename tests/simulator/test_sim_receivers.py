"""The simulator's notification receivers, driven by qrsync's own channels.send: each kind
accepts what qrsync sends, refuses a wrong signature with the platform's answer, and fails the
ways the brief lists (in-body error, rate limit, 5xx, slowness, no answer, down)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from qrsync.notify import channels
from qrsync.notify.channels import Answer, Channel, Event, Message
from qrsync.simulator import RunningSimulator, SimulatorAdminError

HINT = "qrsync notify status"
SECRET = "sim-secret-0123456789"
IDS = {
    "wecom": "wecom-key-1",
    "dingtalk": "ding-token-1",
    "feishu": "feishu-hook-1",
    "lark": "lark-hook-1",
    "slack": "T0001/B0001/slack0001",
    "webhook": "ops-hook-1",
}
SIGNED = ("dingtalk", "feishu", "lark", "webhook")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def now() -> datetime:
    return datetime.now(UTC)


def events(count: int) -> list[Event]:
    return [
        Event(
            n,
            "rule_published",
            f"brand-{n % 3}",
            f"https://shop.example.cn/q/{n}",
            now(),
            {"waited_days": 3, "path": f"pages/item/item?id={n}"},
        )
        for n in range(1, count + 1)
    ]


def setup(
    sim: RunningSimulator, kind: str, secret: str | None = SECRET, **settings: object
) -> Channel:
    """A robot on the simulator and the channel that posts to it (signed where the kind is)."""
    secret = secret if kind in SIGNED else None
    settings.setdefault("rate_limit", False)
    sim.admin.set_receiver(kind, IDS[kind], secret=secret, **settings)  # type: ignore[arg-type]
    return Channel(f"ops-{kind}", kind, sim.admin.receiver_url(kind, IDS[kind]), secret)


def deliver(
    session: requests.Session, target: Channel, message: Message, timeout_s: float = 10
) -> Answer:
    return channels.send(session, target, message, now=now(), timeout_s=timeout_s)


def test_message(target: Channel) -> Message:
    return channels.test_message(target, now=now())


test_message.__test__ = False  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", channels.KINDS)
def test_what_qrsync_sends_is_accepted_and_recorded(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind)
    messages = channels.compose(target, events(5), max_messages=2, more_hint=HINT)
    for message in messages:
        answer = deliver(session, target, message)
        assert (answer.ok, answer.status) == (True, 200), answer.detail
    got = sim.admin.receiver_messages(kind, IDS[kind])
    assert [(r["accepted"], r["outcome"]) for r in got] == [(True, "accepted")] * len(messages)
    shown = "\n".join(r["title"] + "\n" + r["text"] for r in got)
    for n in range(1, 6):
        assert f"https://shop.example.cn/q/{n}" in shown
    if kind == "webhook":
        assert sorted(i for r in got for i in r["event_ids"]) == [1, 2, 3, 4, 5]
    view = sim.admin.receiver(kind, IDS[kind])
    assert (view["received"], view["accepted"]) == (len(messages), len(messages))
    assert "secret" not in view and view["secret_set"] is (kind in SIGNED)


@pytest.mark.parametrize("kind", channels.KINDS)
def test_big_digests_fit_each_receivers_own_limits(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind)
    messages = channels.compose(target, events(1500), max_messages=3, more_hint=HINT)
    assert len(messages) == 3
    for message in messages:
        answer = deliver(session, target, message)
        assert answer.ok, answer.detail
    got = sim.admin.receiver_messages(kind, IDS[kind], accepted=True)
    assert len(got) == 3
    if kind != "webhook":
        assert "more — see `qrsync notify status`" in got[-1]["text"]


@pytest.mark.parametrize(
    ("kind", "status", "code", "detail"),
    [
        (
            "dingtalk",
            200,
            310000,
            "DingTalk answered errcode 310000 (sign not match): check secret_env",
        ),
        ("feishu", 200, 19021, "Feishu answered code 19021 (sign match fail or timestamp"),
        ("lark", 200, 19021, "Lark answered code 19021"),
        ("webhook", 401, 401, "the webhook receiver answered HTTP 401"),
    ],
)
def test_a_wrong_secret_is_refused_with_the_platforms_answer(
    sim: RunningSimulator, session: requests.Session, kind: str, status: int, code: int, detail: str
) -> None:
    setup(sim, kind)
    wrong = Channel(f"ops-{kind}", kind, sim.admin.receiver_url(kind, IDS[kind]), "not-the-secret")
    answer = deliver(session, wrong, test_message(wrong))
    assert (answer.ok, answer.retryable, answer.status) == (False, False, status)
    assert answer.detail.startswith(detail)
    assert "secret_env" in answer.detail
    assert "not-the-secret" not in answer.detail and IDS[kind] not in answer.detail
    (record,) = sim.admin.receiver_messages(kind, IDS[kind])
    assert (record["accepted"], record["outcome"], record["code"]) == (False, "refused", code)


@pytest.mark.parametrize("kind", SIGNED)
def test_an_unsigned_request_to_a_robot_with_a_secret_is_refused(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    setup(sim, kind)
    unsigned = Channel(f"ops-{kind}", kind, sim.admin.receiver_url(kind, IDS[kind]), None)
    answer = deliver(session, unsigned, test_message(unsigned))
    assert not answer.ok and not answer.retryable


@pytest.mark.parametrize("kind", SIGNED)
def test_a_signature_more_than_an_hour_old_is_refused(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind)
    stale = now() - timedelta(hours=2)
    answer = channels.send(session, target, test_message(target), now=stale, timeout_s=10)
    assert not answer.ok and not answer.retryable
    fresh = deliver(session, target, test_message(target))
    assert fresh.ok, fresh.detail


@pytest.mark.parametrize("kind", channels.KINDS)
def test_an_error_in_the_body_is_not_a_delivery(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind, fault="in_body_error")
    answer = deliver(session, target, test_message(target))
    assert not answer.ok
    assert answer.status == (400 if kind == "webhook" else 200)
    (record,) = sim.admin.receiver_messages(kind, IDS[kind])
    assert (record["accepted"], record["outcome"]) == (False, "in_body_error")


def test_an_in_body_errcode_can_be_chosen(sim: RunningSimulator, session: requests.Session) -> None:
    target = setup(sim, "wecom", fault="in_body_error", errcode=93000, errmsg="invalid webhook url")
    answer = deliver(session, target, test_message(target))
    assert (answer.ok, answer.retryable) == (False, False)
    assert "WeCom answered errcode 93000 (invalid webhook url)" in answer.detail


@pytest.mark.parametrize("kind", channels.KINDS)
def test_a_rate_limit_answer_is_retryable_with_a_wait(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind, fault="rate_limited")
    answer = deliver(session, target, test_message(target))
    assert (answer.ok, answer.retryable) == (False, True)
    assert answer.retry_after_s is not None and answer.retry_after_s > 0
    (record,) = sim.admin.receiver_messages(kind, IDS[kind])
    assert record["outcome"] == "rate_limited"


@pytest.mark.parametrize(
    ("kind", "allowed", "code"),
    [("wecom", 20, 45009), ("dingtalk", 20, 130101), ("feishu", 100, 11232)],
)
def test_each_robots_minute_is_counted(
    sim: RunningSimulator, session: requests.Session, kind: str, allowed: int, code: int
) -> None:
    target = setup(sim, kind, rate_limit=True)
    message = test_message(target)
    answers = [deliver(session, target, message) for _ in range(allowed + 1)]
    # Feishu also allows only 5 a second: those refusals are retryable too, and counted apart.
    accepted = [a for a in answers if a.ok]
    refused = [a for a in answers if not a.ok]
    assert len(accepted) <= allowed and refused
    assert all(a.retryable and a.retry_after_s for a in refused)
    assert f" {code} " in refused[-1].detail
    records = sim.admin.receiver_messages(kind, IDS[kind])
    assert sum(r["accepted"] for r in records) == len(accepted)


def test_slack_allows_one_message_a_second(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "slack", rate_limit=True)
    message = test_message(target)
    answers = [deliver(session, target, message) for _ in range(5)]
    assert answers[0].ok
    refused = [a for a in answers if not a.ok]
    assert refused and all(a.status == 429 and a.retry_after_s == 1.0 for a in refused)


@pytest.mark.parametrize("kind", channels.KINDS)
def test_a_server_error_is_retryable(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind, fault="http_500")
    answer = deliver(session, target, test_message(target))
    assert (answer.ok, answer.retryable, answer.status) == (False, True, 500)


def test_a_slow_receiver_past_the_timeout_is_retryable_and_did_get_the_message(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "webhook", fault="slow", slow_s=3)
    answer = deliver(session, target, test_message(target), timeout_s=0.3)
    assert (answer.ok, answer.retryable, answer.status) == (False, True, None)
    assert "no answer within 0.3 s" in answer.detail
    # The platform posted it all the same: a resend would repeat it (at least once).
    (record,) = sim.admin.receiver_messages("webhook", IDS["webhook"])
    assert record["accepted"]


def test_a_slow_receiver_within_the_timeout_is_a_delivery(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "dingtalk", fault="slow", slow_s=0.2)
    assert deliver(session, target, test_message(target), timeout_s=10).ok


@pytest.mark.parametrize("kind", ["wecom", "feishu", "slack"])
def test_no_answer_is_retryable(
    sim: RunningSimulator, session: requests.Session, kind: str
) -> None:
    target = setup(sim, kind, fault="no_answer", slow_s=5)
    answer = deliver(session, target, test_message(target), timeout_s=0.3)
    assert (answer.ok, answer.retryable, answer.status) == (False, True, None)
    (record,) = sim.admin.receiver_messages(kind, IDS[kind])
    assert (record["accepted"], record["outcome"], record["status"]) == (False, "no_answer", None)


def test_a_receiver_that_closes_the_line_at_once_is_retryable(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "wecom", fault="down")
    answer = deliver(session, target, test_message(target))
    assert (answer.ok, answer.retryable, answer.status) == (False, True, None)
    assert answer.detail.startswith("could not reach WeCom")


def test_a_receiver_down_then_back_gets_what_is_sent_again(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "webhook", fault="down", times=2)
    message = channels.compose(target, events(30), max_messages=1, more_hint=HINT)[0]
    first, second, third = (deliver(session, target, message) for _ in range(3))
    assert (first.ok, second.ok, third.ok) == (False, False, True)
    (got,) = sim.admin.receiver_messages("webhook", IDS["webhook"], accepted=True)
    assert got["event_ids"] == list(range(1, 31))


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        ("wecom", "errcode 93000"),
        ("dingtalk", "errcode 300005"),
        ("feishu", "code 19001"),
        ("slack", "HTTP 404 'no_service'"),
        ("webhook", "HTTP 404"),
    ],
)
def test_an_unknown_robot_is_not_retried_and_says_to_check_the_url(
    sim: RunningSimulator, session: requests.Session, kind: str, detail: str
) -> None:
    target = setup(sim, kind, fault="unknown")
    answer = deliver(session, target, test_message(target))
    assert (answer.ok, answer.retryable) == (False, False)
    assert detail in answer.detail and "check url_env" in answer.detail


def oversized(kind: str, name: str) -> Message:
    """A message past the platform's size limit (or block count), built by hand."""
    big = "规则" * 4000  # 24,000 bytes
    payloads: dict[str, dict[str, object]] = {
        "wecom": {"msgtype": "markdown", "markdown": {"content": big[:1400]}},  # 4,200 bytes
        "dingtalk": {"msgtype": "markdown", "markdown": {"title": "t", "text": big}},
        "feishu": {"msg_type": "text", "content": {"text": big}},
        "slack": {
            "text": "t",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}] * 51,
        },
        "webhook": {
            "version": 1,
            "channel": name,
            "events": [
                {
                    "id": n,
                    "kind": "rule_deleted",
                    "account": "a",
                    "occurred_at": "2026-12-03T00:00:00Z",
                }
                for n in range(501)
            ],
            "more": 0,
        },
    }
    return Message((), "oversized", "", "", payloads["feishu" if kind == "lark" else kind])


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        ("wecom", "errcode 40058 (markdown.content exceed max length 4096)"),
        ("dingtalk", "errcode 460101 (message too long, exceed 20000 bytes)"),
        ("feishu", "code 9499 (Bad Request)"),
        ("lark", "code 9499 (Bad Request)"),
        ("slack", "HTTP 400 'invalid_blocks'"),
        ("webhook", "HTTP 413"),
    ],
)
def test_an_oversized_message_is_refused_like_the_platform_does(
    sim: RunningSimulator, session: requests.Session, kind: str, detail: str
) -> None:
    target = setup(sim, kind)
    answer = deliver(session, target, oversized(kind, target.name))
    assert not answer.ok and not answer.retryable
    assert detail in answer.detail


@pytest.mark.parametrize(("kind", "code"), [("dingtalk", 310000), ("feishu", 19024)])
def test_a_robot_with_a_keyword_refuses_messages_without_it(
    sim: RunningSimulator, session: requests.Session, kind: str, code: int
) -> None:
    target = setup(sim, kind, secret=None, keyword="qrsync")
    assert deliver(session, target, test_message(target)).ok  # qrsync's titles say qrsync
    for count in (1, 9):  # an event's own message, a digest
        for message in channels.compose(target, events(count), max_messages=2, more_hint=HINT):
            assert deliver(session, target, message).ok
    target = setup(sim, kind, secret=None, keyword="告警")
    answer = deliver(session, target, test_message(target))
    assert not answer.ok and f" {code} " in answer.detail and "keyword" in answer.detail


def test_a_fault_for_some_requests_then_ok_again(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "feishu", fault="http_500", times=1)
    message = test_message(target)
    assert not deliver(session, target, message).ok
    assert deliver(session, target, message).ok
    assert sim.admin.receiver("feishu", IDS["feishu"])["fault"] == "ok"


def test_a_robot_is_created_on_first_use(sim: RunningSimulator, session: requests.Session) -> None:
    target = Channel("ops", "wecom", sim.admin.receiver_url("wecom", "fresh-key"), None)
    assert deliver(session, target, test_message(target)).ok
    assert sim.admin.receiver("wecom", "fresh-key")["accepted"] == 1


def test_feishu_and_lark_robots_share_the_hook_path(sim: RunningSimulator) -> None:
    assert sim.admin.receiver_url("lark", "h1") == sim.admin.receiver_url("feishu", "h1")
    sim.admin.set_receiver("lark", "h1")
    assert sim.admin.receiver("feishu", "h1")["kind"] == "lark"


def test_the_admin_api_refuses_bad_settings_and_unknown_robots(sim: RunningSimulator) -> None:
    with pytest.raises(SimulatorAdminError, match="kind: one of"):
        sim.admin.set_receiver("teams", "x")
    with pytest.raises(SimulatorAdminError, match="fault: one of"):
        sim.admin.set_receiver("wecom", "x", fault="sometimes")
    with pytest.raises(SimulatorAdminError, match="slow_s: at most"):
        sim.admin.set_receiver("wecom", "x", fault="slow", slow_s=3600)
    with pytest.raises(SimulatorAdminError) as missing:
        sim.admin.receiver_messages("wecom", "never-used")
    assert missing.value.status == 404


def test_clearing_and_reset_forget_the_robots(
    sim: RunningSimulator, session: requests.Session
) -> None:
    target = setup(sim, "slack")
    assert deliver(session, target, test_message(target)).ok
    sim.admin.clear_receiver_messages("slack", IDS["slack"])
    assert sim.admin.receiver_messages("slack", IDS["slack"]) == []
    assert [r["id"] for r in sim.admin.receivers()] == [IDS["slack"]]
    sim.admin.reset()
    assert sim.admin.receivers() == []


def test_records_keep_the_body_as_sent(sim: RunningSimulator, session: requests.Session) -> None:
    target = setup(sim, "feishu")
    assert deliver(session, target, test_message(target)).ok
    (record,) = sim.admin.receiver_messages("feishu", IDS["feishu"])
    assert record["body"]["msg_type"] == "interactive"
    assert record["body"]["timestamp"].isdigit() and record["body"]["sign"]
    assert record["bytes"] == len(
        json.dumps(record["body"], ensure_ascii=False, separators=(",", ":")).encode()
    )
