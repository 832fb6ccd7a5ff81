"""Bad configuration: exit 2, one line naming the file, the account and the key; nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import mp_account, oa_account, scalar, toml_config

BASE = "http://127.0.0.1:9"


def _assert_refused(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("qrsync: ")
    assert "\n" not in message, "the error must be one line"
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def _nothing_written(db: Any) -> None:
    assert scalar(db, "SELECT count(*) FROM accounts") == 0
    assert scalar(db, "SELECT count(*) FROM sync_runs") == 0


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (toml_config(BASE, mp_account(), api="colour = 1"), ["api.colour", "unknown key"]),
        (
            toml_config(BASE, mp_account().replace('kind = "miniprogram"', 'kind = "mp"')),
            ["account 'mp'", "kind", "miniprogram, service_account"],
        ),
        (
            toml_config(BASE, mp_account() + 'secret = "abc"\n'),
            ["account 'mp'", "secret", "secret_env"],
        ),
        (toml_config(BASE, mp_account(), sync="page_size = 500"), ["sync.page_size", "1 to 200"]),
        (toml_config(BASE, mp_account(), sync='concurrency = "8"'), ["sync.concurrency", "whole"]),
        (toml_config(BASE, mp_account(), api="timeout_s = true"), ["api.timeout_s", "number"]),
        (toml_config(BASE, mp_account() + mp_account()), ["account 'mp'", "duplicate"]),
        (
            toml_config(
                BASE, oa_account().replace('miniprogram_appid = "wx1000000000000009"\n', "")
            ),
            ["account 'oa'", "miniprogram_appid"],
        ),
        (
            toml_config(BASE, mp_account().replace("stable_token", "magic")),
            ["account 'mp'", "token.source"],
        ),
        (
            toml_config(
                BASE,
                mp_account().replace(
                    'token = { source = "stable_token", secret_env = "MP_SECRET" }',
                    'token = { source = "component", refresh_token_env = "MP_SECRET" }',
                ),
            ),
            ["account 'mp'", "[component]"],
        ),
        (toml_config("ftp://x", mp_account()), ["api.base_url"]),
        ("[api\nbase_url = 1", ["not valid TOML"]),
        (toml_config(BASE, '[[accounts]]\nkind = "miniprogram"\n'), ["accounts[0].name"]),
    ],
    ids=[
        "unknown-key",
        "bad-kind",
        "secret-in-file",
        "page-size-too-big",
        "wrong-type-int",
        "wrong-type-number",
        "duplicate-name",
        "service-account-without-miniprogram",
        "unknown-token-source",
        "component-without-section",
        "bad-base-url",
        "bad-toml",
        "account-without-name",
    ],
)
def test_invalid_configuration_is_refused(
    qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch, text: str, fragments: list[str]
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    monkeypatch.setenv("OA_SECRET", "y" * 10)
    config = qrsync.write_config(text)
    _assert_refused(qrsync("sync"), str(config), *fragments)
    _nothing_written(db)


def test_missing_environment_variable_names_account_and_key(qrsync: Any, db: Any) -> None:
    config = qrsync.write_config(toml_config(BASE, mp_account(secret_env="NOT_SET_ANYWHERE")))
    _assert_refused(
        qrsync("sync"), str(config), "account 'mp'", "token.secret_env", "NOT_SET_ANYWHERE"
    )
    _nothing_written(db)


def test_missing_secret_file_names_the_file(qrsync: Any, db: Any, tmp_path: Path) -> None:
    account = mp_account().replace('secret_env = "MP_SECRET"', 'secret_file = "nowhere.txt"')
    config = qrsync.write_config(toml_config(BASE, account))
    _assert_refused(qrsync("sync"), str(config), "token.secret_file", "nowhere.txt")
    _nothing_written(db)


def test_secret_file_is_read_without_its_trailing_newline(
    qrsync: Any, tmp_path: Path, simulator: Any
) -> None:
    from helpers import MP, MP_SECRET, mp_world

    simulator.admin.add_account(mp_world())
    (tmp_path / "secret.txt").write_text(f"  {MP_SECRET}\n")
    account = mp_account().replace('secret_env = "MP_SECRET"', 'secret_file = "secret.txt"')
    qrsync.write_config(toml_config(simulator.url, account))
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    assert simulator.admin.calls(endpoint="stable_token", appid=MP)[0]["errcode"] == 0


def test_disabled_account_does_not_need_its_secret(qrsync: Any, db: Any) -> None:
    account = mp_account(secret_env="NOT_SET_ANYWHERE") + "enabled = false\n"
    qrsync.write_config(toml_config(BASE, account))
    result = qrsync("accounts")
    assert result.exit_code == 0, result.output
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = 'mp'") is False


def test_missing_config_file_says_how_to_give_one(qrsync: Any, tmp_path: Path) -> None:
    result = qrsync("sync", config=tmp_path / "absent.toml")
    _assert_refused(result, "absent.toml", "--config", "QRSYNC_CONFIG")


def test_config_from_environment_variable(
    qrsync: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from qrsync.cli import cli
    from qrsync.store.schema import HEAD_REVISION

    config = qrsync.write_config(toml_config(BASE, ""))
    monkeypatch.setenv("QRSYNC_CONFIG", str(config))
    result = CliRunner().invoke(cli, ["db", "current"])
    assert result.exit_code == 0, result.output
    assert HEAD_REVISION in result.output


def test_database_url_from_environment_overrides_the_file(
    qrsync: Any, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    qrsync.write_config(
        '[database]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n', with_database=False
    )
    monkeypatch.setenv("QRSYNC_DATABASE_URL", database_url)
    result = qrsync("db", "current")
    assert result.exit_code == 0, result.output


def test_unreachable_database_is_exit_2_with_the_masked_url(qrsync: Any) -> None:
    qrsync.write_config(
        '[database]\nurl = "postgresql://user:hunter2pass@127.0.0.1:1/none"\n', with_database=False
    )
    result = qrsync("db", "current")
    _assert_refused(result, "cannot connect", "127.0.0.1:1")
    assert "hunter2pass" not in result.output


def test_unmigrated_database_asks_for_db_upgrade(
    qrsync: Any, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    qrsync.write_config(
        f'[database]\nurl = "{empty_database_url}"\n' + toml_config(BASE, mp_account()),
        with_database=False,
    )
    _assert_refused(qrsync("sync"), "qrsync db upgrade")


def test_unknown_account_on_the_command_line(
    qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    qrsync.write_config(toml_config(BASE, mp_account()))
    _assert_refused(qrsync("sync", "--account", "nope"), "no account named 'nope'", "mp")
    _nothing_written(db)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["sync", "--prefix", "https://x"], "--prefix needs exactly one --account"),
        (["sync", "--allow-mass-delete"], "--allow-mass-delete needs --account"),
        (["report", "--since", "yesterday-ish"], "--since"),
    ],
)
def test_bad_arguments_are_exit_2(
    qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch, args: list[str], fragment: str
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    qrsync.write_config(toml_config(BASE, mp_account()))
    _assert_refused(qrsync(*args), fragment)
    _nothing_written(db)


def test_accounts_removed_from_the_file_are_disabled_not_deleted(
    qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    monkeypatch.setenv("OA_SECRET", "y" * 10)
    qrsync.write_config(toml_config(BASE, mp_account() + oa_account()))
    assert qrsync("accounts").exit_code == 0
    qrsync.write_config(toml_config(BASE, oa_account()))
    result = qrsync("accounts")
    assert result.exit_code == 0
    assert "removed" in result.output
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = 'mp'") is False
    assert scalar(db, "SELECT in_config FROM accounts WHERE name = 'mp'") is False
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = 'oa'") is True
    qrsync.write_config(toml_config(BASE, mp_account() + oa_account()))
    qrsync("accounts")
    assert scalar(db, "SELECT enabled FROM accounts WHERE name = 'mp'") is True


def test_unchanged_accounts_are_not_rewritten_at_start(
    qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    qrsync.write_config(toml_config(BASE, mp_account()))
    qrsync("accounts")
    before = scalar(db, "SELECT xmin::text FROM accounts")
    qrsync("accounts")
    assert scalar(db, "SELECT xmin::text FROM accounts") == before


def test_reports_need_no_secrets(qrsync: Any, db: Any) -> None:
    qrsync.write_config(toml_config(BASE, mp_account(secret_env="NOT_SET_ANYWHERE")))
    for command in (["accounts"], ["status"], ["report"], ["db", "current"]):
        result = qrsync(*command)
        assert result.exit_code == 0, (command, result.output)
    _assert_refused(qrsync("sync"), "NOT_SET_ANYWHERE")


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ('[daemon]\nschedule = "every day"\n', "daemon.schedule"),
        ('[daemon]\nschedule = "61 * * * *"\n', "daemon.schedule"),
        ('[daemon]\ntimezone = "Mars/Olympus"\n', "time zone"),
    ],
)
def test_bad_schedules_are_refused(qrsync: Any, db: Any, section: str, fragment: str) -> None:
    qrsync.write_config(toml_config(BASE, "", extra=section))
    _assert_refused(qrsync("accounts"), fragment)
    _nothing_written(db)


def test_bad_account_schedule_names_the_account(qrsync: Any, db: Any) -> None:
    qrsync.write_config(toml_config(BASE, mp_account() + 'schedule = "@every 0s"\n'))
    _assert_refused(qrsync("accounts"), "account 'mp'", "schedule")
    _nothing_written(db)
