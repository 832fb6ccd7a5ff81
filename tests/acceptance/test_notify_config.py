"""Bad [[notify]] channels: exit 2, one line naming the file, the channel and the key; nothing
written. Good ones are mirrored into notify_channels (settings only, never a URL or secret)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import mp_account, rows, scalar, toml_config

BASE = "http://127.0.0.1:9"
HOOK = "https://oapi.dingtalk.com/robot/send?access_token=abcdef0123456789"


def notify(body: str, name: str = "ops") -> str:
    return f'[[notify]]\nname = "{name}"\n{body}\n'


DING = 'kind = "dingtalk"\nurl_env = "DING_URL"\nsecret_env = "DING_SECRET"\n'


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_SECRET", "mp-secret-value-123")
    monkeypatch.setenv("DING_URL", HOOK)
    monkeypatch.setenv("DING_SECRET", "SEC0123456789abcdef")
    monkeypatch.setenv("NOT_A_URL", "oapi.dingtalk.com/robot/send")


@pytest.mark.parametrize(
    ("channels", "fragments"),
    [
        (notify(DING.replace("dingtalk", "teams")), ["notify 'ops'.kind", "wecom, dingtalk"]),
        (notify(DING, name=""), ["notify[0].name", "needs a name"]),
        (notify(DING, name="ops team"), ["notify[0].name", "letters, digits"]),
        (notify(DING) + notify(DING), ["notify 'ops'.name", "duplicate"]),
        (notify(DING + "colour = 1"), ["notify 'ops'.colour", "unknown key"]),
        (notify(DING + f'url = "{HOOK}"'), ["notify 'ops'.url", "url_env or url_file"]),
        (notify(DING + 'secret = "abc"'), ["notify 'ops'.secret", "secret_env"]),
        (notify('kind = "dingtalk"'), ["notify 'ops'.url", "url_env or url_file is required"]),
        (
            notify(DING.replace("DING_URL", "NO_SUCH_URL")),
            ["notify 'ops'.url_env", "NO_SUCH_URL is not set"],
        ),
        (
            notify(DING.replace("DING_URL", "NOT_A_URL")),
            ["notify 'ops'.url_env", "http:// or https://"],
        ),
        (
            notify(DING.replace("DING_SECRET", "NO_SUCH_SECRET")),
            ["notify 'ops'.secret_env", "NO_SUCH_SECRET is not set"],
        ),
        (
            notify(DING.replace("dingtalk", "wecom")),
            ["notify 'ops'.secret_env", "wecom robot signs nothing"],
        ),
        (notify(DING + 'events = ["rule_eaten"]'), ["notify 'ops'.events", "rule_eaten"]),
        (notify(DING + "events = []"), ["notify 'ops'.events", "non-empty list"]),
        (notify(DING + 'accounts = "brand-*"'), ["notify 'ops'.accounts", "list"]),
        (notify(DING + "failing_runs = 0"), ["notify 'ops'.failing_runs", "at least 1"]),
        (notify(DING + "waiting_days = 0"), ["notify 'ops'.waiting_days", "more than 0"]),
        (notify(DING + 'quota_below = "10"'), ["notify 'ops'.quota_below", "whole number"]),
    ],
)
def test_bad_channel_is_refused_before_anything_is_written(
    qrsync: Any, db: Any, channels: str, fragments: list[str]
) -> None:
    config = qrsync.write_config(toml_config(BASE, mp_account() + channels))
    result = qrsync("sync")
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith(f"qrsync: {config}: ")
    assert "\n" not in message and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "abcdef0123456789" not in result.output and "SEC0123456789abcdef" not in result.output
    assert scalar(db, "SELECT count(*) FROM accounts") == 0
    assert scalar(db, "SELECT count(*) FROM notify_channels") == 0


def test_channels_are_mirrored_with_their_settings_only(qrsync: Any, db: Any) -> None:
    channels = notify(DING + 'events = ["rule_published"]\naccounts = ["brand-*", "shop"]') + (
        notify('kind = "webhook"\nurl_env = "DING_URL"\nquota_below = 3', name="hook")
    )
    qrsync.write_config(toml_config(BASE, mp_account() + channels))
    assert qrsync("notify", "deliver").exit_code == 0  # (nothing to deliver)
    got = rows(
        db,
        "SELECT name, kind, events, account_patterns, failing_runs, waiting_days, quota_below,"
        " configured FROM notify_channels ORDER BY name",
    )
    assert got[0][:2] == ("hook", "webhook") and got[0][4:] == (3, 7.0, 3, True)
    assert got[1] == (
        "ops",
        "dingtalk",
        ["rule_published"],
        ["^brand\\-.*$", "^shop$"],
        3,
        7.0,
        10,
        True,
    )
    dump = str(rows(db, "SELECT * FROM notify_channels"))
    assert "abcdef0123456789" not in dump and "SEC0123456789abcdef" not in dump
    # A channel removed from the file stops wanting events.
    qrsync.write_config(toml_config(BASE, mp_account() + notify(DING)))
    assert qrsync("notify", "deliver").exit_code == 0
    assert rows(db, "SELECT name, configured FROM notify_channels ORDER BY name") == [
        ("hook", False),
        ("ops", True),
    ]
