"""Bad configuration: exit 2, one line naming the file, the account and the key; nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import mp_account, oa_account, rows, scalar, toml_config

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
        (
            toml_config(
                BASE,
                mp_account(),
                extra=(
                    '[component]\nappid = "wxc"\nappsecret_env = "MP_SECRET"\n'
                    'verify_ticket_env = "OA_SECRET"\ndiscover = "yes"\n'
                ),
            ),
            ["component.discover", "true or false"],
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
        "component-discover-not-boolean",
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


def _one_account_missing_its_secret(
    qrsync: Any, simulator: Any, broken_token: str, key: str, where: str
) -> None:
    """A secret missing for one account fails that account's run only (exit 1), naming the
    account, the key and the variable or file; the other account syncs; nothing of the broken
    one is written but its failed run."""
    from helpers import MP_SECRET, mp_world, rule

    good = "wx00000000000000a1"
    qrsync.monkeypatch.setenv("MP_SECRET", MP_SECRET)
    simulator.admin.add_account(mp_world(appid=good, secret=MP_SECRET))
    simulator.admin.put_rules(good, [rule("https://ok.example.com/a", state=2)])
    broken = mp_account().replace(
        'token = { source = "stable_token", secret_env = "MP_SECRET" }', broken_token
    )
    qrsync.write_config(toml_config(simulator.url, broken + mp_account("good", good)))
    result = qrsync("sync")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    failed = [line for line in result.output.splitlines() if line.startswith("mp: failed")]
    assert len(failed) == 1, result.output
    assert "account 'mp'" in failed[0] and key in failed[0] and where in failed[0]
    assert "good: succeeded" in result.output


def test_missing_environment_variable_fails_that_account_only(
    qrsync: Any, db: Any, simulator: Any
) -> None:
    _one_account_missing_its_secret(
        qrsync,
        simulator,
        'token = { source = "stable_token", secret_env = "NOT_SET_ANYWHERE" }',
        "token.secret_env",
        "NOT_SET_ANYWHERE",
    )
    assert rows(
        db,
        "SELECT a.name, r.status, count(*) FROM sync_runs r JOIN accounts a ON a.id = r.account_id"
        " GROUP BY 1, 2 ORDER BY 1",
    ) == [("good", "succeeded", 1), ("mp", "failed", 1)]
    assert rows(
        db, "SELECT DISTINCT a.name FROM rules r JOIN accounts a ON a.id = r.account_id"
    ) == [("good",)]


def test_missing_secret_file_fails_that_account_only(qrsync: Any, db: Any, simulator: Any) -> None:
    _one_account_missing_its_secret(
        qrsync,
        simulator,
        'token = { source = "stable_token", secret_file = "nowhere.txt" }',
        "token.secret_file",
        "nowhere.txt",
    )
    assert scalar(db, "SELECT count(*) FROM sync_runs WHERE status = 'failed'") == 1


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
    synced = qrsync("sync")  # the account's run fails: its secret is needed now
    assert synced.exit_code == 1 and "NOT_SET_ANYWHERE" in synced.output, synced.output


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


def _schemas(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


LONG_SCHEMA = "s" * 64
LONG_SCHEMA_IN_CHINESE = "规则" * 11  # 22 characters, 66 bytes


@pytest.mark.parametrize(
    ("database", "fragments"),
    [
        ('schema = "pg_catalog"', ["database.schema", "system schema"]),
        ('schema = "information_schema"', ["database.schema", "system schema"]),
        ('schema = "pg_toast"', ["database.schema", "system schema"]),
        ('schema = "pg_qrsync"', ["database.schema", "pg_ are reserved"]),
        (f'schema = "{LONG_SCHEMA}"', ["database.schema", "64 bytes", "at most 63"]),
        (f'schema = "{LONG_SCHEMA_IN_CHINESE}"', ["database.schema", "66 bytes"]),
        ('embedded = "yes"', ["database.embedded", "true or false"]),
        ("embedded = true", ["database.embedded", "database.url", "keep one"]),
        ('schema = ""', ["database.schema", "must not be empty"]),
        ("schema = 7", ["database.schema", "must be a string, not"]),
    ],
    ids=[
        "pg-catalog",
        "information-schema",
        "pg-toast",
        "pg-prefix",
        "schema-too-long",
        "schema-too-long-in-bytes",
        "embedded-not-boolean",
        "embedded-and-url",
        "schema-empty",
        "schema-not-a-string",
    ],
)
def test_bad_database_settings_are_refused_before_anything_is_created(
    qrsync: Any, empty_database_url: str, database: str, fragments: list[str]
) -> None:
    config = qrsync.write_config(
        f'[database]\nurl = "{empty_database_url}"\n{database}\n', with_database=False
    )
    before = _schemas(empty_database_url)
    for command in (["db", "upgrade"], ["status"]):
        _assert_refused(qrsync(*command), str(config), *fragments)
    assert _schemas(empty_database_url) == before, "no schema may be created, not even cut"


@pytest.mark.parametrize("source", ["file", "environment"])
def test_a_database_url_that_is_not_postgresql_names_where_it_came_from(
    qrsync: Any, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    url = "mysql://app:hunter2-secret@db.internal/app"
    if source == "file":
        config = qrsync.write_config(f'[database]\nurl = "{url}"\n', with_database=False)
        where = "database.url"
    else:
        config = qrsync.write_config("", with_database=False)
        monkeypatch.setenv("QRSYNC_DATABASE_URL", url)
        where = "QRSYNC_DATABASE_URL"
    result = qrsync("status")
    _assert_refused(result, str(config), where, "must be a PostgreSQL URL", "mysql://app:")
    assert "hunter2-secret" not in result.output


def test_embedded_and_the_url_variable_together_are_refused(
    qrsync: Any, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    qrsync.write_config("[database]\nembedded = true\n", with_database=False)
    monkeypatch.setenv("QRSYNC_DATABASE_URL", empty_database_url)
    _assert_refused(qrsync("db", "upgrade"), "database.embedded", "QRSYNC_DATABASE_URL")
    assert "qrsync" not in _schemas(empty_database_url)


@pytest.mark.parametrize(
    "command",
    [["sync"], ["status"], ["report"], ["accounts"], ["db", "upgrade"], ["db", "current"]],
    ids=lambda c: "-".join(c),
)
def test_lost_database_setting_is_refused_not_embedded(
    qrsync: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("MP_SECRET", "x" * 10)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = qrsync.write_config(toml_config(BASE, mp_account()), with_database=False)
    _assert_refused(
        qrsync(*command),
        f"{config}: no database configured: set database.url or QRSYNC_DATABASE_URL, or "
        f"`embedded = true` under [database] for the embedded PostgreSQL in {tmp_path / 'data'}",
    )
    assert not (tmp_path / "data").exists(), "no embedded server may be started"


def test_city_as_time_zone_names_the_key_and_an_iana_name(qrsync: Any, db: Any) -> None:
    for schedule in ("*/15 * * * *", "@every 30s"):  # intervals need no zone, but it is wrong
        extra = f'[daemon]\ntimezone = "Beijing"\nschedule = "{schedule}"\n'
        qrsync.write_config(toml_config(BASE, "", extra=extra))
        result = qrsync("accounts")
        _assert_refused(result, "daemon.timezone", "'Beijing'", "Asia/Shanghai")
        assert "daemon.schedule" not in result.stderr
    _nothing_written(db)
