"""`qrsync accounts import FILE.csv`: accounts kept in the database, for platforms."""

from __future__ import annotations

import json
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
        ("name,kind,appid\nx,miniprogram,wx1\nx,miniprogram,wx2\n", [":3", "duplicate"]),
        ("name,kind,appid,enabled\nx,miniprogram,wx1,maybe\n", ["enabled"]),
        ("name,kind,appid,schedule\nx,miniprogram,wx1,soon\n", ["schedule"]),
        ("name,kind,appid\nmp,miniprogram,wx1\n", ["account 'mp'", "configuration file"]),
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


def test_imported_account_needs_its_environment_variable_at_sync(
    platform: Any, qrsync: Any, db: Any, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "name,kind,appid,token_source,secret_env\nown,miniprogram,wx1,stable_token,NOT_SET_X\n"
    )
    assert qrsync("accounts", "import", str(path)).exit_code == 0
    result = qrsync("sync", "--account", "own")
    assert result.exit_code == 2
    assert "account 'own'" in result.stderr and "NOT_SET_X" in result.stderr
    assert scalar(db, "SELECT count(*) FROM sync_runs") == 0
