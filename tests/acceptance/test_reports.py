"""`qrsync accounts`, `status` and `report`, checked against the tables."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import (
    MP,
    MP_SECRET,
    WeChatUser,
    build_history,
    mp_account,
    mp_world,
    rows,
    rule,
    scalar,
    toml_config,
)


@pytest.fixture
def history(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Two syncs of a mini program: between them one rule published and one deleted; plus an
    account whose secret is wrong."""
    return build_history(
        simulator, qrsync, monkeypatch, [rule(f"https://a.example.com/{i}") for i in range(4)]
    )


def test_report_json_matches_the_tables(history: Any, qrsync: Any, db: Any) -> None:
    result = qrsync("report", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_account = {r["account"]: r for r in report["rules_by_state"]}
    assert by_account["mp"] == {
        "account": "mp",
        "kind": "miniprogram",
        "unpublished": 2,
        "published": 1,
        "other": 0,
        "deleted": 1,
    }
    assert [p["prefix"] for p in report["publications"]] == ["https://a.example.com/1"]
    assert [d["prefix"] for d in report["deletions"]] == ["https://a.example.com/2"]
    quota = {q["account"]: q for q in report["quota"]}
    assert quota["mp"]["qrcodejump_pub_quota"] == 19
    assert quota["mp"]["qrcodejump_pub_quota"] == scalar(
        db, "SELECT qrcodejump_pub_quota FROM account_snapshots ORDER BY id DESC LIMIT 1"
    )
    assert "broken" not in quota


def test_report_text_has_every_section(history: Any, qrsync: Any) -> None:
    text = qrsync("report").output
    for heading in ("Rules by state", "Publications since", "Deletions since", "Publish quota"):
        assert heading in text
    assert "https://a.example.com/1" in text and "https://a.example.com/2" in text


def test_report_for_one_account(history: Any, qrsync: Any) -> None:
    report = json.loads(qrsync("report", "--json", "--account", "broken").stdout)
    assert [r["account"] for r in report["rules_by_state"]] == ["broken"]
    assert report["publications"] == [] and report["quota"] == []


def test_status_puts_failing_accounts_first(history: Any, qrsync: Any) -> None:
    rows = json.loads(qrsync("status", "--json").stdout)
    assert [r["account"] for r in rows] == ["broken", "mp"]
    assert rows[0]["failure_streak"] == 2 and rows[0]["last_status"] == "failed"
    assert rows[0]["last_errcode"] == 40125
    assert "wrong-secret-value" not in json.dumps(rows)
    assert rows[1]["failure_streak"] == 0 and rows[1]["last_success_at"]
    text = qrsync("status").output
    assert text.index("broken") < text.index("mp ")


def test_status_check_exits_1_naming_the_failing_account(history: Any, qrsync: Any) -> None:
    result = qrsync("status", "--check")
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("qrsync: 1 of 2 enabled account(s) need attention: broken: failing")
    assert "40125" in line and "mp:" not in line and "wrong-secret-value" not in line
    assert "broken" in result.stdout, "the table is printed as without --check"
    healthy = qrsync("status", "--check", "--account", "mp")
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stderr.strip() == "qrsync: all 1 enabled account(s) healthy"
    rows = json.loads(qrsync("status", "--check", "--json").stdout)
    assert {r["account"]: r["attention"] is not None for r in rows} == {"broken": True, "mp": False}


def test_status_check_finds_a_stale_account(history: Any, qrsync: Any, db: Any) -> None:
    db.execute(
        "UPDATE sync_runs SET started_at = started_at - interval '2 days',"
        " finished_at = finished_at - interval '2 days'"
    )
    db.commit()
    # daemon.schedule defaults to every 15 minutes: stale after 30 minutes
    stale = qrsync("status", "--check", "--account", "mp")
    assert stale.exit_code == 1, stale.output
    assert "mp: stale: last success 2d ago (limit 30m)" in stale.stderr
    assert qrsync("status", "--check", "--account", "mp", "--stale-after", "3d").exit_code == 0
    assert qrsync("status", "--check", "--account", "mp", "--stale-after", "1d").exit_code == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--check", "--stale-after", "soon"], "--stale-after: 'soon' is not a duration"),
        (["--check", "--stale-after", "0h"], "--stale-after: '0h' is not a duration"),
        (["--stale-after", "2h"], "--stale-after goes with --check"),
    ],
)
def test_status_check_refuses_bad_options(
    history: Any, qrsync: Any, args: list[str], fragment: str
) -> None:
    result = qrsync("status", *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and "\n" not in result.stderr.strip()


def test_accounts_lists_live_rules_and_last_run(history: Any, qrsync: Any) -> None:
    accounts = {a["name"]: a for a in json.loads(qrsync("accounts", "--json").stdout)}
    assert accounts["mp"]["live_rules"] == 3 and accounts["mp"]["last_status"] == "succeeded"
    assert accounts["broken"]["last_status"] == "failed"
    assert "40125" in accounts["broken"]["last_error"]


def test_sync_json_summary(history: Any, qrsync: Any) -> None:
    result = qrsync("sync", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["succeeded"], summary["partial"], summary["failed"]) == (1, 0, 1)
    failed = next(a for a in summary["accounts"] if a["status"] == "failed")
    assert failed["errcode"] == 40125 and "account 'broken'" in failed["error"]


def test_reading_without_a_config_file_changes_nothing(
    history: Any,
    qrsync: Any,
    db: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    from click.testing import CliRunner

    from qrsync.cli import cli

    monkeypatch.chdir(tmp_path / "..")  # no qrsync.toml here
    monkeypatch.setenv("QRSYNC_DATABASE_URL", database_url)
    before = db.execute("SELECT name, enabled, xmin::text FROM accounts ORDER BY 1").fetchall()
    for args in (["report", "--json"], ["status"], ["accounts"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert db.execute("SELECT name, enabled, xmin::text FROM accounts ORDER BY 1").fetchall() == (
        before
    )
    refused = CliRunner().invoke(cli, ["report", "--account", "nope"])
    assert refused.exit_code == 2 and "no account named 'nope'" in refused.stderr


def test_a_rule_added_published_between_two_syncs_is_a_publication(
    fast_simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first listing (the baseline) holds rules whose publication qrsync could not see;
    a rule that appears published in a later listing was published in between, and counts."""
    base_published, base_waiting, added = (f"https://b.example.com/{n}" for n in ("p", "w", "n"))
    fast_simulator.admin.add_account(mp_world(pub_quota=20))
    fast_simulator.admin.put_rules(MP, [rule(base_published, state=2), rule(base_waiting, state=1)])
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(fast_simulator.url, mp_account()))
    assert qrsync("sync").exit_code == 0
    user = WeChatUser(fast_simulator.url, MP, MP_SECRET)
    user.add(added)
    user.publish(added)
    user.publish(base_waiting)
    assert qrsync("sync").exit_code == 0
    assert rows(
        db,
        "SELECT prefix, from_state, in_baseline, first_seen_published, previous_seen_at IS NULL"
        " FROM publications ORDER BY prefix",
    ) == [
        (added, None, False, False, False),
        (base_published, None, True, True, True),
        (base_waiting, 1, False, False, False),
    ]
    quota = [
        q for (q,) in rows(db, "SELECT qrcodejump_pub_quota FROM account_snapshots ORDER BY id")
    ]
    counted = scalar(db, "SELECT count(*) FROM publications WHERE NOT in_baseline")
    assert quota[0] - quota[-1] == counted == 2
    report = json.loads(qrsync("report", "--json").stdout)
    assert {(p["prefix"], p["added_published"]) for p in report["publications"]} == {
        (added, True),
        (base_waiting, False),
    }
    text = qrsync("report").output
    assert "added published" in text and base_published not in text.split("Publications")[1]
    assert rows(db, "SELECT DISTINCT account_name FROM rule_versions") == [("mp",)]
