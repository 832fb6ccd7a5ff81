"""`qrsync accounts import FILE.csv`: accounts kept in the database, for platforms."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import mp_account, rows, scalar, toml_config

PLATFORM = "wx00000000000000c9"
PLATFORM_SECRET = "platform-secret-value"
TICKET = "ticket@@@import-test"


def _oa(appid: str) -> dict[str, Any]:
    return {
        "appid": appid,
        "kind": "service_account",
        "verified": True,
        "linked_miniprograms": ["wx1000000000000009"],
        "rule_sets": [{"miniprogram_appid": "wx1000000000000009", "count": 30}],
    }


@pytest.fixture
def platform(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    authorizers = [f"wx50000000000000{i:02d}" for i in range(3)]
    for appid in authorizers:
        fast_simulator.admin.add_account(_oa(appid))
    fast_simulator.admin.add_component(
        {
            "appid": PLATFORM,
            "secret": PLATFORM_SECRET,
            "verify_ticket": TICKET,
            "authorizations": [
                {"authorizer_appid": a, "refresh_token": f"refresh-{a}", "permission_sets": [3]}
                for a in authorizers
            ],
        }
    )
    monkeypatch.setenv("PLATFORM_SECRET", PLATFORM_SECRET)
    monkeypatch.setenv("PLATFORM_TICKET", TICKET)
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    qrsync.write_config(
        toml_config(
            fast_simulator.url,
            mp_account(),
            api="requests_per_second = 100",
            extra=(
                f'[component]\nappid = "{PLATFORM}"\nappsecret_env = "PLATFORM_SECRET"\n'
                'verify_ticket_env = "PLATFORM_TICKET"\n'
            ),
        )
    )
    return fast_simulator


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(["name,kind,appid,miniprogram_appid,refresh_token", *lines]) + "\n")
    return path


def _line(i: int, refresh: str | None = None) -> str:
    appid = f"wx50000000000000{i:02d}"
    return f"shop-{i},service_account,{appid},wx1000000000000009,{refresh or 'refresh-' + appid}"


def test_imported_accounts_are_synced(platform: Any, qrsync: Any, db: Any, tmp_path: Path) -> None:
    csv_file = _csv(tmp_path / "a.csv", [_line(0), _line(1), _line(2)])
    result = qrsync("accounts", "import", str(csv_file))
    assert result.exit_code == 0, result.output
    assert "3 accounts; 3 added or changed" in result.output
    assert "refresh-wx" not in result.output
    synced = qrsync("sync", "--account", "shop-0", "--account", "shop-2", "--json")
    assert synced.exit_code == 0, synced.output
    summary = json.loads(synced.stdout)
    assert [a["rules_seen"] for a in summary["accounts"]] == [30, 30]
    assert rows(db, "SELECT name, source, enabled FROM accounts ORDER BY name") == [
        ("mp", "config", True),
        ("shop-0", "import", True),
        ("shop-1", "import", True),
        ("shop-2", "import", True),
    ]


def test_an_account_no_longer_listed_is_disabled_and_unchanged_rows_not_written(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    qrsync("accounts", "import", str(_csv(tmp_path / "a.csv", [_line(0), _line(1)])))
    before = scalar(db, "SELECT xmin::text FROM accounts WHERE name = 'shop-0'")
    again = qrsync("accounts", "import", str(_csv(tmp_path / "b.csv", [_line(0)])))
    assert again.exit_code == 0 and "1 unchanged, 1 no longer listed" in again.output
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = 'shop-1'") is False
    assert scalar(db, "SELECT xmin::text FROM accounts WHERE name = 'shop-0'") == before
    # The configuration file's mirror leaves imported accounts alone.
    assert qrsync("accounts").exit_code == 0
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = 'shop-0'") is True


def test_reimporting_a_seed_keeps_a_rotated_refresh_token(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    csv_file = _csv(tmp_path / "a.csv", [_line(0)])
    qrsync("accounts", "import", str(csv_file))
    db.execute("UPDATE authorizer_refresh_tokens SET refresh_token = 'rotated-since'")
    qrsync("accounts", "import", str(csv_file))
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == "rotated-since"
    qrsync("accounts", "import", str(_csv(tmp_path / "b.csv", [_line(0, "new-seed-value")])))
    assert scalar(db, "SELECT refresh_token FROM authorizer_refresh_tokens") == "new-seed-value"


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("name,kind,appid,colour\nx,miniprogram,wx1,red\n", ["header", "colour"]),
        ("kind,appid\nminiprogram,wx1\n", ["header", "'name'"]),
        ("name,kind,appid\n,miniprogram,wx1\n", [":2", "name"]),
        ("name,kind,appid\nx,blog,wx1\n", [":2", "account 'x'", "kind"]),
        ("name,kind,appid\nx,service_account,wx1\n", ["account 'x'", "miniprogram_appid"]),
        ("name,kind,appid,token_source\nx,miniprogram,wx1,central\n", ["central_url"]),
        ("name,kind,appid,central_url\nx,miniprogram,wx1,http://t\n", ["central_url", "component"]),
        (
            "name,kind,appid,refresh_token\nx,miniprogram,wx1,r1\nx,miniprogram,wx2,r2\n",
            [":3", "duplicate"],
        ),
        ("name,kind,appid,enabled\nx,miniprogram,wx1,maybe\n", ["enabled"]),
        ("name,kind,appid,schedule\nx,miniprogram,wx1,soon\n", ["schedule"]),
        (
            "name,kind,appid,refresh_token\nmp,miniprogram,wx1,r1\n",
            ["bad.csv:2: 'mp'", "configuration file"],
        ),
        ("name,kind,appid\nx,miniprogram,wx1\n", [":2", "account 'x'", "refresh_token"]),
        (
            "name,kind,appid,refresh_token\nx,miniprogram,wx1,\n",
            [":2", "account 'x'", "refresh_token", "empty"],
        ),
    ],
)
def test_bad_imports_are_refused_and_write_nothing(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path, content: str, fragments: list[str]
) -> None:
    qrsync("accounts")  # the configuration's account exists
    before = rows(db, "SELECT name, xmin::text FROM accounts ORDER BY name")
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = qrsync("accounts", "import", str(path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert rows(db, "SELECT name, xmin::text FROM accounts ORDER BY name") == before


ACCOUNT_TABLES = (
    "SELECT name, kind, appid, miniprogram_appid, token_source, schedule, enabled, source,"
    " xmin::text FROM accounts ORDER BY name"
)
TOKEN_TABLE = "SELECT authorizer_appid, xmin::text FROM authorizer_refresh_tokens ORDER BY 1"


def _tables(db: Any) -> tuple[list[Any], list[Any]]:
    return rows(db, ACCOUNT_TABLES), rows(db, TOKEN_TABLE)


def _three_imported(qrsync: Any, tmp_path: Path) -> None:
    path = _csv(tmp_path / "three.csv", [_line(0), _line(1), _line(2)])
    assert qrsync("accounts", "import", str(path)).exit_code == 0


def _assert_mass_disable_refused(result: Any, disabled: int, enabled: int) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert f"would disable {disabled} of the {enabled} enabled imported accounts" in message
    assert "--allow-mass-disable" in message and "sync.max_delete_fraction" in message


def test_an_empty_import_disables_nothing_without_confirmation(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    _three_imported(qrsync, tmp_path)
    before = _tables(db)
    empty = _csv(tmp_path / "empty.csv", [])
    _assert_mass_disable_refused(qrsync("accounts", "import", str(empty)), 3, 3)
    assert _tables(db) == before


def test_a_one_row_import_of_many_disables_nothing_without_confirmation(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    _three_imported(qrsync, tmp_path)
    before = _tables(db)
    one = _csv(tmp_path / "one.csv", [_line(0)])
    _assert_mass_disable_refused(qrsync("accounts", "import", str(one)), 2, 3)
    assert _tables(db) == before


def test_allow_mass_disable_applies_the_import(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    _three_imported(qrsync, tmp_path)
    one = _csv(tmp_path / "one.csv", [_line(0)])
    result = qrsync("accounts", "import", "--allow-mass-disable", str(one))
    assert result.exit_code == 0, result.output
    assert "2 no longer listed (disabled)" in result.output
    assert rows(db, "SELECT name, enabled FROM accounts WHERE source = 'import' ORDER BY 1") == [
        ("shop-0", True),
        ("shop-1", False),
        ("shop-2", False),
    ]
    empty = _csv(tmp_path / "empty.csv", [])
    assert qrsync("accounts", "import", "--allow-mass-disable", str(empty)).exit_code == 0
    assert scalar(db, "SELECT count(*) FROM accounts WHERE source = 'import' AND enabled") == 0


def test_dry_run_lists_the_changes_and_writes_nothing(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    _three_imported(qrsync, tmp_path)
    before = _tables(db)
    changed = _line(1).replace("wx1000000000000009", "wx1000000000000008")
    path = _csv(tmp_path / "next.csv", [_line(0), changed, _line(3, "refresh-new")])
    result = qrsync("accounts", "import", "--dry-run", str(path))
    assert result.exit_code == 0, result.output
    assert "dry run, nothing written" in result.output
    assert "  add: 1: shop-3\n" in result.output
    assert "  update: 1: shop-1\n" in result.output
    assert "  disable: 1: shop-2\n" in result.output
    assert "  unchanged: 1: shop-0\n" in result.output
    assert "refresh-" not in result.output
    assert _tables(db) == before
    # A dry run of a mass disable says it would need confirmation, and still writes nothing.
    empty = _csv(tmp_path / "empty.csv", [])
    result = qrsync("accounts", "import", "--dry-run", str(empty))
    assert result.exit_code == 0, result.output
    assert "  disable: 3: shop-0, shop-1, shop-2\n" in result.output
    assert "needs --allow-mass-disable" in result.output
    assert _tables(db) == before
    # The same, for a machine: JSON, dry run or not.
    planned = json.loads(qrsync("accounts", "import", "--dry-run", "--json", str(path)).stdout)
    assert planned["dry_run"] is True and planned["needs_allow_mass_disable"] is False
    assert (planned["added"], planned["updated"], planned["disabled"], planned["unchanged"]) == (
        ["shop-3"],
        ["shop-1"],
        ["shop-2"],
        ["shop-0"],
    )
    assert _tables(db) == before
    applied = qrsync("accounts", "import", "--json", str(path))
    assert applied.exit_code == 0, applied.output
    done = json.loads(applied.stdout)
    assert done["dry_run"] is False and sorted(done["written"]) == ["shop-1", "shop-3"]
    assert done["disabled"] == ["shop-2"] and "refresh-" not in applied.stdout


def test_every_bad_row_is_reported_with_its_line_and_nothing_is_written(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    qrsync("accounts")
    before = _tables(db)
    path = _csv(
        tmp_path / "bad.csv",
        [
            _line(0),
            "bad-kind,blog,wx5000000000000001,,r",
            _line(2),
            "no-mp,service_account,wx5000000000000003,,r",
            ",miniprogram,wx5000000000000004,,r",
        ],
    )
    result = qrsync("accounts", "import", str(path))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert "3 bad row(s), nothing imported" in message
    for where in (f"{path}:3: account 'bad-kind'", f"{path}:5: account 'no-mp'", f"{path}:6"):
        assert where in message, (where, message)
    assert f"{path}:2" not in message and f"{path}:4" not in message
    assert _tables(db) == before


def test_a_dash_reads_the_import_from_standard_input(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from qrsync.cli import cli

    text = "name,kind,appid,miniprogram_appid,refresh_token\n" + _line(0) + "\n"
    result = CliRunner().invoke(
        cli,
        ["--config", str(qrsync.config_path), "accounts", "import", "-"],
        input=text,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "<stdin>: 1 accounts; 1 added or changed" in result.output
    assert rows(db, "SELECT name, source FROM accounts WHERE source = 'import'") == [
        ("shop-0", "import")
    ]


def test_an_unset_secret_variable_is_a_warning_and_the_account_is_imported(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "name,kind,appid,token_source,secret_env\n"
        "ok,miniprogram,wx1,stable_token,MP_SECRET\n"
        "own,miniprogram,wx2,stable_token,NOT_SET_X\n"
    )
    result = qrsync("accounts", "import", str(path))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert f"{path}:3: account 'own': secret_env" in warnings[0] and "NOT_SET_X" in warnings[0]
    assert rows(db, "SELECT name, enabled FROM accounts WHERE source = 'import' ORDER BY 1") == [
        ("ok", True),
        ("own", True),
    ]


def test_component_rows_need_a_component_table(
    qrsync: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    config = qrsync.write_config(toml_config("http://127.0.0.1:9", mp_account()))
    path = _csv(tmp_path / "a.csv", [_line(0), _line(1)])
    result = qrsync("accounts", "import", str(path))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "refresh-wx" not in message
    assert f"{path}:2: account 'shop-0'" in message and f"{path}:3: account 'shop-1'" in message
    assert f"needs a [component] table in {config}" in message
    assert scalar(db, "SELECT count(*) FROM accounts WHERE source = 'import'") == 0


def _import_with_one_unset_secret(qrsync: Any, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "name,kind,appid,miniprogram_appid,refresh_token,token_source,secret_env\n"
        f"{_line(0)},component,\n"
        "se1,miniprogram,wx5000000000000099,,,stable_token,NOPE_NOT_SET\n"
    )
    assert qrsync("accounts", "import", str(path)).exit_code == 0


def test_one_imported_account_missing_its_secret_fails_alone(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    _import_with_one_unset_secret(qrsync, tmp_path)
    result = qrsync("sync", "--account", "shop-0", "--account", "se1")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "shop-0: succeeded" in result.output
    failed = [line for line in result.output.splitlines() if line.startswith("se1: failed")]
    assert len(failed) == 1 and "NOPE_NOT_SET" in failed[0] and "secret_env" in failed[0]
    assert rows(
        db,
        "SELECT a.name, r.status FROM sync_runs r JOIN accounts a ON a.id = r.account_id"
        " ORDER BY 1",
    ) == [("se1", "failed"), ("shop-0", "succeeded")]


def test_the_daemon_starts_beside_an_imported_account_missing_its_secret(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    _import_with_one_unset_secret(qrsync, tmp_path)
    config = qrsync.config_path
    # the daemon syncs the two imported accounts (the file's own is paused) every 2 s
    text = config.read_text().replace('name = "mp"\n', 'name = "mp"\nenabled = false\n')
    config.write_text(text + '\n[daemon]\nschedule = "@every 2s"\nlease_s = 5\n')
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "daemon", "--http-port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        seen: set[tuple[str, str]] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            seen = set(
                rows(
                    db,
                    "SELECT DISTINCT a.name, r.status FROM sync_runs r"
                    " JOIN accounts a ON a.id = r.account_id WHERE r.status <> 'running'",
                )
            )
            if {("shop-0", "succeeded"), ("se1", "failed")} <= seen:
                break
            time.sleep(0.3)
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        assert {("shop-0", "succeeded"), ("se1", "failed")} <= seen, seen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert proc.returncode == 0
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


def test_a_component_account_without_the_component_table_fails_alone(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    qrsync("accounts", "import", str(_csv(tmp_path / "a.csv", [_line(0)])))
    config = qrsync.config_path
    text = config.read_text()
    config.write_text(text[: text.index("[component]")] + text[text.index("[[accounts]]") :])
    result = qrsync("sync", "--account", "shop-0")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"account 'shop-0': token source component needs a [component] table in {config}" in (
        result.output
    )
    assert rows(db, "SELECT status FROM sync_runs") == [("failed",)]


def test_a_name_of_the_configuration_file_is_refused_by_a_dry_run_too(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        f"name,kind,appid,refresh_token\n{_line(0).split(',')[0]},miniprogram,wx1,r1\n"
        "mp,miniprogram,wx2,r2\n"
    )
    before = _tables(db)
    for extra in ([], ["--dry-run"]):
        result = qrsync("accounts", "import", str(path), *extra)
        assert result.exit_code == 2, result.output
        message = result.stderr.strip()
        assert "\n" not in message
        assert f"{path}:3: 'mp'" in message and "belong to the configuration file" in message
    assert _tables(db) == before
