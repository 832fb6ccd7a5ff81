"""Issue 7, security: one whole fault suite, and every secret and token it used looked for in
everything it printed, logged (-vv: debug, every HTTP request included), answered as JSON and
stored as a run's error, and in the configuration's repr. Also: text from WeChat cannot forge
log lines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import MP, MP_SECRET, mp_account, mp_world, rule, toml_config
from tokenfaults_helpers import assert_no_secret_shown, issued_secrets, stored_secrets

from qrsync.config import load_config
from qrsync.simulator.faults import MALFORMATIONS, WIRE_FAULTS
from qrsync.wechat.errcodes import HINTS

# Every way a listing can fail, each armed for good (times -1). A mini program lists its rules
# in one answer (REFERENCE.md), so each fault meets the listing.
FAULTS: list[dict[str, Any]] = [
    *({"errcode": code} for code in sorted(HINTS)),
    *({"http_status": status} for status in (400, 403, 404, 429, 500, 502, 503, 504)),
    *({"wire": wire} for wire in WIRE_FAULTS),
    *({"malformed": how} for how in MALFORMATIONS),
    {"drop": True},
    {"delay_s": 0.6},
    {"content_type": "text/html"},
    {"drift": {"add": 3, "delete": 2}},
]


def _echoing(secret: str) -> list[dict[str, Any]]:
    """Answers that try to put a secret in front of a person: WeChat echoing it in errmsg, a
    proxy page quoting the request URL, a token endpoint's garbage."""
    return [
        {"errcode": 40097, "errmsg": f"invalid args secret={secret} hint: [x] rid: 1-2-3"},
        {"body": f"<html>GET /cgi-bin/wxopen/qrcodejumpget?access_token={secret}</html>"},
        {"body": json.dumps({"errcode": 0, "rule_list": "x", "secret": secret})},
    ]


@pytest.fixture
def world(fast_simulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The simulator shares this process: its own debug log (connections the faults broke, with
    # their tracebacks) is not qrsync's output.
    monkeypatch.setattr(logging.getLogger("qrsync.simulator"), "level", logging.WARNING)
    fast_simulator.admin.add_account(mp_world())
    fast_simulator.admin.put_rules(MP, [rule(f"https://a.example.com/{i}") for i in range(20)])
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    return fast_simulator


def test_a_whole_fault_suite_shows_no_secret_anywhere(world: Any, qrsync: Any, db: Any) -> None:
    config = qrsync.write_config(
        toml_config(
            world.url,
            mp_account(),
            api="requests_per_second = 100\ntimeout_s = 0.3",
        )
    )
    shown: list[str] = []

    def sync() -> None:
        result = qrsync("-vv", "sync", "--json")
        assert "Traceback" not in result.output
        shown.extend([result.stdout, result.stderr])

    sync()  # a first listing, and a token
    tried = 0
    for fault in [*FAULTS, *_echoing(MP_SECRET)]:
        world.admin.clear_faults()
        world.admin.add_fault(endpoint="qrcodejumpget", times=-1, **fault)
        sync()
        tried += 1
    for fault in ({"errcode": 40001}, {"errcode": -1}, {"body": "{garbage"}, {"drop": True}):
        world.admin.clear_faults()
        world.admin.invalidate_tokens(MP)  # the next call must fetch a token, and meets this
        world.admin.add_fault(endpoint="stable_token", times=-1, **fault)
        sync()
        tried += 1
    world.admin.clear_faults()
    world.admin.invalidate_tokens(MP)
    world.admin.add_fault(endpoint="qrcodejumpget", errcode=40001)  # rejected: fetch again
    sync()
    shown.append(repr(load_config(Path(config))))

    secrets = issued_secrets(world) | stored_secrets(db)
    assert MP_SECRET in secrets and len(secrets) >= 3, "the suite must have used tokens"
    assert tried == len(FAULTS) + 3 + 4
    errors = db.execute("SELECT count(*) FROM sync_runs WHERE status = 'failed'").fetchone()[0]
    assert errors >= len(FAULTS) // 2, "most faults must really have failed a run"
    assert "qrcodejumpget" in "".join(shown)  # the debug log really shows the requests
    assert_no_secret_shown(world, db, shown)


def test_text_from_wechat_cannot_forge_log_lines_or_move_the_cursor(
    world: Any, qrsync: Any, db: Any
) -> None:
    qrsync.write_config(toml_config(world.url, mp_account(), api="requests_per_second = 100"))
    forged = "bad\n12:00:01 ERROR account 'other': forged\x1b[2J\u202egnp.\r rid: 9-9"
    world.admin.add_fault(endpoint="qrcodejumpget", times=-1, errcode=12345, errmsg=forged)
    result = qrsync("-v", "sync")
    assert result.exit_code == 1
    for text in (result.stdout, result.stderr):
        for line in text.splitlines():
            assert not line.startswith("12:00:01 ERROR"), line
        assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert "bad\\n12:00:01 ERROR" in result.output and "forged\\x1b[2J\\u202egnp." in result.output
    error = db.execute("SELECT error FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert "\n" not in error and "\x1b" not in error and "bad\\n12:00:01" in error


def test_a_huge_errmsg_gives_a_bounded_error(world: Any, qrsync: Any, db: Any) -> None:
    qrsync.write_config(toml_config(world.url, mp_account(), api="requests_per_second = 100"))
    # (Not a run of one letter: masking is process-wide, and another test of this process may
    # have registered "xxxxxxxxxx" as a secret, which would turn the whole errmsg into one mask.)
    errmsg = "".join(f"系统繁忙{i:04d};" for i in range(1250))  # 10,000 characters
    world.admin.add_fault(endpoint="qrcodejumpget", times=-1, errcode=12345, errmsg=errmsg)
    result = qrsync("sync")
    assert result.exit_code == 1
    error = db.execute("SELECT error FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert error.startswith("account 'mp': WeChat answered 12345") and len(error) == 1000
    assert all(len(line) < 1100 for line in result.output.splitlines())
