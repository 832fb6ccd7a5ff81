"""The fleet at the latency floor (issue 15, part 2), measured from outside qrsync.

A platform's fleet: ``accounts`` qrsync accounts, nine in ten mini programs with 20 rules, one in
ten service accounts with 200 rules, each linking a mini program of its own; every WeChat call
answered after ``latency_ms`` by the bundled simulator (its own process, WeChat's 5 requests a
second per account on); a private PostgreSQL (:mod:`private_pg`) with ``pg_stat_statements``.

1. ``qrsync db upgrade`` and a first ``qrsync sync`` put tokens and rules in place (at no
   latency: it is not measured, and the rate limits stay on).
2. For each concurrency: a measured no-op ``qrsync sync`` run as a user runs it (the real CLI,
   a subprocess). Measured from outside: its wall time; the calls it made, from the simulator's
   call log (the latency floor is the successful listing and token calls × latency ÷
   concurrency); its own CPU (``os.wait4``: user + system of that process only); the
   statements the server ran for it (``pg_stat_statements`` of its database, reset before);
   its peak number of connections (``pg_stat_activity`` polled every 20 ms from another
   database); its exit code and failed accounts.
3. The daemon (``qrsync daemon``, one replica): its idle CPU with the whole fleet scheduled
   but nothing due, the CPU of two short slots in which a sample of the fleet runs at the
   rate the whole fleet would on ``*/15``, its idle CPU again after those runs, extrapolated
   to ``*/15`` (see :func:`daemon_case`); and how the runs' starts spread over their slot,
   from ``sync_runs``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from private_pg import PrivatePostgres

QRSYNC = [sys.executable, "-m", "qrsync"]
SECRET = "bench-secret"
PAGE_SIZE = 200
MINIPROGRAM_RULES = 20
SERVICE_ACCOUNT_RULES = 200
TOKEN_ENDPOINTS = ("stable_token", "token", "central", "component_token", "authorizer_token")
NEVER = "0 0 29 2 1"
"""A schedule with no slot in the last 400 days nor before 2044 (29 February on a Monday): the
daemon holds the accounts but neither catches a slot up nor fires one."""
POLL_S = 0.02
SIMULATOR_START_S = 300
SYNC_TIMEOUT_S = 600
"""A sync not done by then is killed and reported as such: every wait of the bench is bounded."""
DAEMON_START_S = 300
IDLE_WINDOW_S = 61.0
"""Longer than the daemon's 60-s refresh of the accounts, so the idle CPU includes one."""
SLOTS = 2
SLOT_15 = 900.0
TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|END|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE)\b", re.I
)


@dataclass(frozen=True)
class FleetOptions:
    accounts: int = 10_000
    latency_ms: int = 100
    concurrencies: tuple[int, ...] = (32, 64)
    daemon: bool = True


@dataclass(frozen=True)
class Account:
    name: str
    kind: str
    appid: str
    miniprogram_appid: str
    rules: int


@dataclass
class Statement:
    query: str
    calls: int
    mean_ms: float


@dataclass
class NoopRun:
    concurrency: int
    wall_s: float
    cpu_s: float
    exit_code: int
    succeeded: int
    partial: int
    failed: int
    failures: list[tuple[str, int]]
    calls_ok: int
    calls_other: int
    calls_needed: int
    floor_s: float
    statements: int | None
    transaction_control: int | None
    top_statements: list[Statement]
    peak_connections: int
    peak_threads: int
    peak_files: int
    simulator_cpu_s: float
    simulator_requests: int
    load_before: float


@dataclass
class DaemonRun:
    sample: int
    period_s: int
    startup_s: float
    idle_cpu_per_s: float
    idle_after_per_s: float
    idle_growth_per_account: float
    steady_idle_per_s: float
    threads: tuple[int, int]  # of the daemon: before it went idle again, at the end
    slot_cpu_s: list[float]
    runs: int
    runs_expected: int
    runs_failed: int
    cpu_per_run_s: float
    core_fraction_15: float
    offsets: list[float]  # start − slot, as a fraction of the slot
    peak_connections: int
    notes: list[str] = field(default_factory=list)


@dataclass
class FleetResult:
    options: FleetOptions
    first_sync: str
    runs: list[NoopRun]
    daemon: DaemonRun | None
    statements_note: str
    world_s: float
    ready: bool = True  # the first sync finished: the measured runs make sense


# --- the fleet --------------------------------------------------------------------------------


def fleet_accounts(n: int) -> list[Account]:
    """n accounts: n // 10 service accounts, each linking a mini program of its own, and
    n - n // 10 mini programs."""
    services = n // 10
    accounts = [
        Account(f"mp-{i:05d}", "miniprogram", f"wx5{i:015d}", f"wx5{i:015d}", MINIPROGRAM_RULES)
        for i in range(n - services)
    ]
    accounts += [
        Account(f"oa-{i:05d}", "service_account", f"wx6{i:015d}", f"wx5{i:015d}", 200)
        for i in range(services)
    ]
    return accounts


def world(accounts: list[Account]) -> dict[str, Any]:
    described = []
    for a in accounts:
        entry: dict[str, Any] = {"appid": a.appid, "kind": a.kind, "secret": SECRET}
        if a.kind == "service_account":
            entry["linked_miniprograms"] = [a.miniprogram_appid]
        entry["rule_sets"] = [{"count": a.rules, "miniprogram_appid": a.miniprogram_appid}]
        described.append(entry)
    return {"accounts": described}


def write_config(
    path: Path,
    url: str,
    base_url: str,
    accounts: list[Account],
    concurrency: int,
    schedules: dict[str, str] | None = None,
) -> Path:
    """A configuration as a platform would write it: WeChat's 5 requests a second (qrsync's
    default), stable tokens, the daemon's HTTP port off."""
    lines = [
        f'[database]\nurl = "{url}"\n',
        f'[api]\nbase_url = "{base_url}"\n',
        f"[sync]\nconcurrency = {concurrency}\n",
        "[daemon]\nhttp_port = 0\nshutdown_grace_s = 10\n",
    ]
    token = 'token = { source = "stable_token", secret_env = "BENCH_SECRET" }\n'
    for a in accounts:
        block = f'[[accounts]]\nname = "{a.name}"\nkind = "{a.kind}"\nappid = "{a.appid}"\n'
        if a.kind == "service_account":
            block += f'miniprogram_appid = "{a.miniprogram_appid}"\n'
        if schedules is not None:
            block += f'schedule = "{schedules.get(a.name, NEVER)}"\n'
        lines.append(block + token)
    path.write_text("\n".join(lines))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "BENCH_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}


# --- the simulator, in a process of its own ------------------------------------------------------


@dataclass
class Simulator:
    process: subprocess.Popen[bytes]
    url: str
    admin: Any

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)


@contextmanager
def simulator(world_file: Path, latency_ms: int, log: Path) -> Iterator[Simulator]:
    from qrsync.simulator import SimulatorAdmin

    with open(log, "wb") as err:
        process = subprocess.Popen(
            [
                *QRSYNC,
                "simulator",
                "--world",
                str(world_file),
                *("--port", "0"),
                *("--latency-ms", str(latency_ms)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env(),
        )
    try:
        url = wait_for(
            lambda: _listening(log), SIMULATOR_START_S, f"the simulator (see {log})", process
        )
        admin = SimulatorAdmin(url, timeout_s=120)
        try:
            yield Simulator(process, url, admin)
        finally:
            admin.close()
    finally:
        stop(process, 15)


def _listening(log: Path) -> str | None:
    found = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
    return found.group(1) if found else None


def wait_for(
    check: Callable[[], Any], timeout_s: float, what: str, process: subprocess.Popen[bytes]
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"{what}: nothing after {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- measuring one qrsync process ---------------------------------------------------------------


class ConnectionPeak:
    """Polls pg_stat_activity every 20 ms from the ``postgres`` database: the most client
    connections to ``database`` seen at once (the measured process is its only client); and
    every half second the threads and open files of the process ``pid`` (once set)."""

    def __init__(self, server: str, database: str) -> None:
        self.server, self.database = server, database
        self.peak = 0
        self.pid: int | None = None
        self.threads = 0
        self.files = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-connections", daemon=True)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        polls = 0
        with psycopg.connect(self.server, autocommit=True) as conn:
            while not self._stop.wait(POLL_S):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND backend_type = 'client backend'",
                    (self.database,),
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                polls += 1
                if self.pid is not None and polls % 25 == 0:
                    with suppress(OSError):
                        self.threads = max(self.threads, len(os.listdir(f"/proc/{self.pid}/task")))
                        self.files = max(self.files, len(os.listdir(f"/proc/{self.pid}/fd")))


def run_measured(
    command: list[str],
    stdout: Path,
    timeout_s: float,
    started_pid: Callable[[int], None] | None = None,
) -> tuple[int, float, float]:
    """Run ``command``; return (exit code, wall seconds, user + system CPU seconds of that
    process alone, from ``os.wait4``). Killed after ``timeout_s`` (exit code -9)."""
    with open(stdout, "wb") as out, open(stdout.with_suffix(".err"), "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env())
        if started_pid is not None:
            started_pid(process.pid)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, wall, usage.ru_utime + usage.ru_stime


def statements_of(server: str, database: str) -> list[Statement]:
    with psycopg.connect(server) as conn:
        rows = conn.execute(
            "SELECT query, calls, mean_exec_time FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND toplevel"
            " ORDER BY calls DESC",
            (database,),
        ).fetchall()
    return [Statement(str(q), int(c), float(m)) for q, c, m in rows]


def reset_statements(server: str) -> None:
    with psycopg.connect(server) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def summary_of(path: Path) -> tuple[int, int, int, list[tuple[str, int]]]:
    """succeeded, partial, failed and the commonest errors, from ``qrsync sync --json``."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0, 0, 0, [("no JSON summary (see the .err file)", 1)]
    errors = Counter(
        re.sub(r"rid: \S+", "rid: …", re.sub(r"^account '[^']*': ", "", str(a.get("error"))))
        for a in document.get("accounts", [])
        if a.get("status") == "failed"
    )
    return (
        int(document.get("succeeded", 0)),
        int(document.get("partial", 0)),
        int(document.get("failed", 0)),
        errors.most_common(3),
    )


def noop_run(
    pg: PrivatePostgres,
    database: str,
    sim: Simulator,
    config: Path,
    accounts: list[Account],
    concurrency: int,
    latency_ms: int,
    work: Path,
) -> NoopRun:
    sim.admin.clear_calls()
    if pg.statements_available:
        reset_statements(pg.url)
    load = os.getloadavg()[0]
    sim_cpu = sim.cpu_s()
    out = work / f"noop-{concurrency}.json"
    with ConnectionPeak(pg.url, database) as peak:
        code, wall, cpu = run_measured(
            [*QRSYNC, "--config", str(config), "sync", "--json"],
            out,
            SYNC_TIMEOUT_S,
            lambda pid: setattr(peak, "pid", pid),
        )
    sim_cpu = sim.cpu_s() - sim_cpu
    calls = sim.admin.calls()
    counted = [c for c in calls if c["endpoint"] in ("qrcodejumpget", *TOKEN_ENDPOINTS)]
    ok = sum(1 for c in counted if c.get("errcode") == 0)
    statements = statements_of(pg.url, database) if pg.statements_available else []
    total = sum(s.calls for s in statements) if pg.statements_available else None
    control = (
        sum(s.calls for s in statements if TRANSACTION_CONTROL.match(s.query))
        if pg.statements_available
        else None
    )
    succeeded, partial, failed, failures = summary_of(out)
    needed = sum(max(1, math.ceil(a.rules / PAGE_SIZE)) for a in accounts)
    return NoopRun(
        concurrency=concurrency,
        wall_s=wall,
        cpu_s=cpu,
        exit_code=code,
        succeeded=succeeded,
        partial=partial,
        failed=failed,
        failures=failures,
        calls_ok=ok,
        calls_other=len(counted) - ok,
        calls_needed=needed,
        floor_s=ok * latency_ms / 1000 / concurrency,
        statements=total,
        transaction_control=control,
        top_statements=statements[:8],
        peak_connections=peak.peak,
        peak_threads=peak.threads,
        peak_files=peak.files,
        simulator_cpu_s=sim_cpu,
        simulator_requests=len(calls),
        load_before=load,
    )


# --- the daemon --------------------------------------------------------------------------------


def daemon_sample(n: int) -> tuple[int, int]:
    """How many accounts run in the short slots, and the slot's length: a twentieth of the
    fleet in a slot of 30 s at full size, which starts them (over 80 % of the slot) faster than
    the whole fleet starts on */15 (over its first 720 s): 500 / 24 s = 21 a second against
    10,000 / 720 s = 14 a second, so a run's CPU is measured under more load, not less."""
    sample = max(n // 20, 10)
    return sample, max(10, round(sample * 0.06))


class CpuSampler:
    """The CPU seconds of one process (every thread), as read over time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []

    def read(self) -> float:
        value = process_cpu_s(self.pid)
        self.samples.append((time.time(), value))
        return value


def _log_actions(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                found.append(record)
    return found


def _seen(log: Path, action: str, after: int = 0) -> bool:
    return sum(1 for r in _log_actions(log) if r.get("action") == action) > after


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def sleep_until(when: float) -> None:
    while (left := when - time.time()) > 0:
        time.sleep(min(left, 1.0))


def daemon_case(
    pg: PrivatePostgres,
    url: str,
    database: str,
    sim: Simulator,
    accounts: list[Account],
    concurrency: int,
    work: Path,
) -> DaemonRun:
    """One replica, in three phases of one process:

    idle: the whole fleet on a schedule with nothing due; its CPU over 61 s (one refresh of the
    accounts included) is the idle CPU per second, *i*.
    slots: SIGHUP with a sample of *k* accounts on ``@every P s`` (the others still scheduled,
    never due); the CPU *C* of the two whole slots that follow, the runs *r* they started.
    idle again: SIGHUP back, one slot later its CPU over 61 s, *i'*; what an account that ran
    leaves behind costs *g* = max(*i'* − *i*, 0) ÷ *k* per second.
    CPU per run *c* = (*C* − *i* × 2*P*) ÷ *r*; on ``*/15``, where all *n* run, the replica
    would use ((*i* + *n* × *g*) × 900 + *n* × *c*) ÷ 900 of one core.
    """
    sample, period = daemon_sample(len(accounts))
    step = max(len(accounts) // sample, 1)
    chosen = {a.name: f"@every {period}s" for a in accounts[::step][:sample]}
    config = work / "daemon.toml"
    write_config(config, url, sim.url, accounts, concurrency, schedules={})
    log = work / "daemon.log"
    notes: list[str] = []
    with open(log, "wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [
                *QRSYNC,
                "--config",
                str(config),
                "daemon",
                *("--name", "bench"),
                *("--http-port", "0", "--log-format", "json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env(),
        )
    try:
        wait_for(lambda: _seen(log, "daemon_started"), DAEMON_START_S, "the daemon", process)
        startup = time.monotonic() - started
        cpu = CpuSampler(process.pid)
        time.sleep(2)
        idle_from, idle_cpu0 = time.time(), cpu.read()
        time.sleep(IDLE_WINDOW_S)
        idle_cpu = (cpu.read() - idle_cpu0) / (time.time() - idle_from)
        write_config(config, url, sim.url, accounts, concurrency, schedules=chosen)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: _seen(log, "reloaded"), DAEMON_START_S, "the daemon's reload", process)
        first = (math.floor(time.time() / period) + 1) * period
        if first - time.time() < 1:
            first += period
        sleep_until(first)
        slot_cpu = []
        with ConnectionPeak(pg.url, database) as peak:
            before = cpu.read()
            for index in range(1, SLOTS + 1):
                end = first + index * period
                while time.time() < end:
                    time.sleep(min(1.0, max(end - time.time(), 0.0)))
                    cpu.read()
                now = cpu.read()
                slot_cpu.append(now - before)
                before = now
        if process.poll() is not None:
            notes.append(f"the daemon exited with {process.returncode} during the slots")
        # Idle again, now that k accounts have run in this process: what a run leaves behind
        # (threads, caches) costs every second from then on. The slot that fires at the end
        # still runs (its starts were queued): measured from one slot after the reload.
        threads_before = threads_of(process.pid)
        write_config(config, url, sim.url, accounts, concurrency, schedules={})
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: _seen(log, "reloaded", 1), DAEMON_START_S, "the reload", process)
        sleep_until(first + (SLOTS + 1) * period + 2)
        after_from, after_cpu0 = time.time(), cpu.read()
        time.sleep(IDLE_WINDOW_S)
        idle_after = (cpu.read() - after_cpu0) / (time.time() - after_from)
        threads_after = threads_of(process.pid)
    finally:
        stop(process, 60)
    slots = [datetime.fromtimestamp(first + i * period, UTC) for i in range(SLOTS)]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT scheduled_for, started_at, status FROM qrsync.sync_runs"
            " WHERE trigger = 'schedule' AND scheduled_for = ANY(%s)",
            (slots,),
        ).fetchall()
        ran = {
            (name, slot)
            for name, slot in conn.execute(
                "SELECT a.name, r.scheduled_for FROM qrsync.sync_runs r"
                " JOIN qrsync.accounts a ON a.id = r.account_id"
                " WHERE r.trigger = 'schedule' AND r.scheduled_for = ANY(%s)",
                (slots,),
            )
        }
        leases = {
            name: f"lease of slot {slot:%H:%M:%S} held by {holder} until {until:%H:%M:%S}"
            for name, slot, holder, until in conn.execute(
                "SELECT a.name, l.scheduled_for, l.holder, l.lease_until"
                " FROM qrsync.account_leases l JOIN qrsync.accounts a ON a.id = l.account_id"
                " WHERE a.name = ANY(%s)",
                (list(chosen),),
            )
            if slot is not None and until is not None
        }
    offsets = sorted((started - slot).total_seconds() / period for slot, started, _ in rows)
    late = sum(1 for o in offsets if o >= 1)
    if late:
        notes.append(f"{late} runs started after their slot had ended")
    missing = sorted({(name, slot) for name in chosen for slot in slots} - ran)
    for name, slot in missing[:5]:  # what the daemon said of a due run that did not start
        said = [
            line.strip()[:300]
            for line in log.read_text(errors="replace").splitlines()
            if f'"{name}"' in line or f"'{name}'" in line
        ]
        notes.append(
            f"no run of {name} for the slot {slot:%H:%M:%S} ({leases.get(name, 'no lease')}); "
            "the daemon's lines about it: " + (" | ".join(said[-6:]) or "none")
        )
    total = sum(slot_cpu)
    runs = len(rows)
    per_run = (total - idle_cpu * SLOTS * period) / runs if runs else float("nan")
    growth = max(idle_after - idle_cpu, 0.0) / sample
    steady = idle_cpu + len(accounts) * growth
    fraction = (steady * SLOT_15 + len(accounts) * per_run) / SLOT_15
    return DaemonRun(
        sample=sample,
        period_s=period,
        startup_s=startup,
        idle_cpu_per_s=idle_cpu,
        idle_after_per_s=idle_after,
        idle_growth_per_account=growth,
        steady_idle_per_s=steady,
        threads=(threads_before, threads_after),
        slot_cpu_s=slot_cpu,
        runs=runs,
        runs_expected=sample * SLOTS,
        runs_failed=sum(1 for *_, status in rows if status == "failed"),
        cpu_per_run_s=per_run,
        core_fraction_15=fraction,
        offsets=offsets,
        peak_connections=peak.peak,
        notes=notes,
    )


# --- the whole case ------------------------------------------------------------------------------


def fleet_case(options: FleetOptions, work: Path, say: Callable[[str], None]) -> FleetResult:
    from private_pg import private_postgres

    accounts = fleet_accounts(options.accounts)
    world_file = work / "fleet-world.json"
    world_file.write_text(json.dumps(world(accounts)))
    with private_postgres() as pg:
        statements_note = (
            "" if pg.statements_available else f"pg_stat_statements unavailable: {pg.why_not}"
        )
        database = "qrsync_fleet"
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = pg.url.rsplit("/", 1)[0] + f"/{database}"
        say(f"fleet: {options.accounts:,} accounts; starting the simulator")
        started = time.monotonic()
        with simulator(world_file, options.latency_ms, work / "simulator.log") as sim:
            world_s = time.monotonic() - started
            say(f"fleet: simulator up in {world_s:.1f} s; first sync")
            first = options.concurrencies[0]
            config = write_config(work / "fleet.toml", url, sim.url, accounts, first)
            code, _, _ = run_measured(
                [*QRSYNC, "--config", str(config), "db", "upgrade"], work / "upgrade.out", 300
            )
            if code != 0:
                raise RuntimeError(f"qrsync db upgrade failed: see {work / 'upgrade.err'}")
            sim.admin.settings(latency_ms=0)
            first_sync, ready = _first_sync(config, work)
            sim.admin.settings(latency_ms=options.latency_ms)
            say(f"fleet: {first_sync}")
            runs = []
            for concurrency in options.concurrencies if ready else ():
                config = write_config(
                    work / f"fleet-{concurrency}.toml", url, sim.url, accounts, concurrency
                )
                say(f"fleet: measured no-op sync at concurrency {concurrency}")
                runs.append(
                    noop_run(
                        pg, database, sim, config, accounts, concurrency, options.latency_ms, work
                    )
                )
                say(f"fleet:   wall {runs[-1].wall_s:.1f} s, CPU {runs[-1].cpu_s:.1f} s")
            daemon = None
            if options.daemon and ready:
                say("fleet: the daemon (idle, two short slots, idle again)")
                daemon = daemon_case(
                    pg, url, database, sim, accounts, options.concurrencies[0], work
                )
    return FleetResult(options, first_sync, runs, daemon, statements_note, world_s, ready)


def _first_sync(config: Path, work: Path) -> tuple[str, bool]:
    """The unmeasured first sync, once more for the accounts it failed (if any); False when it
    did not finish in time (nothing to measure then)."""
    told = []
    for attempt in (1, 2):
        out = work / f"first-{attempt}.json"
        code, wall, _ = run_measured(
            [*QRSYNC, "--config", str(config), "sync", "--json"], out, SYNC_TIMEOUT_S
        )
        succeeded, partial, failed, failures = summary_of(out)
        told.append(
            f"first sync{' (again)' if attempt == 2 else ''}: exit {code}, {wall:.0f} s, "
            f"{succeeded} succeeded, {partial} partial, {failed} failed"
            + (f" ({failures[0][0]} ×{failures[0][1]})" if failures else "")
        )
        if code == 0:
            break
        if code < 0:
            told[-1] += f" (killed after {SYNC_TIMEOUT_S} s)" if wall >= SYNC_TIMEOUT_S else ""
            return "; ".join(told), False
    return "; ".join(told), True


# --- rendering ---------------------------------------------------------------------------------


def short(text: str, width: int) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]
        if len(values) > 1
        else values[0]
    )


def busiest_tenth(offsets: list[float]) -> float:
    """The share of the starts in the busiest tenth of the slot."""
    if not offsets:
        return float("nan")
    counts = Counter(min(int(o * 10), 9) for o in offsets if o >= 0)
    return max(counts.values()) / len(offsets)


def rows(result: FleetResult) -> list[tuple[str, str, str, str, bool | None]]:
    """(case, measures, value, goal, passed) rows for the main table."""
    n = result.options.accounts
    latency = result.options.latency_ms
    out: list[tuple[str, str, str, str, bool | None]] = []
    if not result.ready:
        out.append(
            (
                f"fleet no-op sync, {n:,} accounts, {latency} ms",
                "the first sync (tokens and rules in place) finishes",
                short(result.first_sync, 300),
                "in the bounded time",
                False,
            )
        )
    for index, run in enumerate(result.runs):
        c = run.concurrency
        case = f"fleet no-op sync, {n:,} accounts, {latency} ms, concurrency {c}"
        ratio = run.wall_s / run.floor_s if run.floor_s else float("inf")
        if index == 0:
            out.append(
                (
                    case,
                    "wall ÷ latency floor (calls × latency ÷ concurrency)",
                    f"{ratio:.2f} ({run.wall_s:.1f} s ÷ {run.floor_s:.1f} s)",
                    "≤ 1.3",
                    ratio <= 1.3,
                )
            )
        else:
            out.append(
                (case, "wall ÷ latency floor", f"{ratio:.2f} ({run.wall_s:.1f} s ÷ "
                 f"{run.floor_s:.1f} s)", "— (the goal is at the first concurrency)", None)
            )  # fmt: skip
        cpu_ms = run.cpu_s / n * 1000
        out.append(
            (case, "qrsync CPU per no-op account", f"{cpu_ms:.2f} ms", "≤ 1 ms", cpu_ms <= 1)
        )
        if run.statements is not None and run.transaction_control is not None:
            plain = (run.statements - run.transaction_control) / n
            every = run.statements / n
            out.append(
                (
                    case,
                    "SQL statements per account (server-side): without / with BEGIN, COMMIT…",
                    f"{plain:.2f} / {every:.2f}",
                    "≤ 5",
                    plain <= 5,
                )
            )
        else:
            out.append((case, "SQL statements per account", result.statements_note, "≤ 5", False))
        out.append(
            (
                case,
                "peak PostgreSQL connections",
                str(run.peak_connections),
                f"≤ {c + 2}",
                run.peak_connections <= c + 2,
            )
        )
        failures = "; ".join(f"{short(text, 90)} ×{count}" for text, count in run.failures)
        out.append(
            (
                case,
                "accounts failed (exit code)",
                f"{run.failed} (exit {run.exit_code})" + (f": {failures}" if failures else ""),
                "0",
                run.failed == 0 and run.exit_code == 0,
            )
        )
    d = result.daemon
    o_c = result.options.concurrencies[0]
    if d is not None:
        out.append(
            (
                f"daemon, {n:,} accounts on */15, one replica (extrapolated)",
                "share of one core: (steady idle CPU/s × 900 + accounts × CPU per run) ÷ 900",
                f"{d.core_fraction_15:.2f} ({d.steady_idle_per_s * 1000:.1f} ms/s idle, "
                f"{d.cpu_per_run_s * 1000:.1f} ms per run)",
                "≤ 0.25",
                d.core_fraction_15 <= 0.25 and d.runs == d.runs_expected,
            )
        )
        out.append(
            (
                f"daemon, {SLOTS} slots of {d.period_s} s, {d.sample} accounts",
                "peak PostgreSQL connections",
                str(d.peak_connections),
                f"≤ {o_c + 2}",
                d.peak_connections <= o_c + 2,
            )
        )
        tenth = busiest_tenth(d.offsets)
        out.append(
            (
                f"daemon, runs' starts over {SLOTS} slots of {d.period_s} s",
                "share of starts in the busiest tenth of the slot; p90 of start ÷ slot",
                f"{tenth:.0%}; {quantile(d.offsets, 0.9):.2f}",
                "≤ 15 %; (spread over the slot)",
                tenth <= 0.15,
            )
        )
    return out


def section(result: FleetResult) -> str:
    """The fleet's own section of RESULTS.md: the details behind the table's rows."""
    o = result.options
    lines = [
        "## Fleet at the latency floor (issue 15)",
        "",
        f"{o.accounts:,} accounts ({o.accounts - o.accounts // 10:,} mini programs × "
        f"{MINIPROGRAM_RULES} rules, {o.accounts // 10:,} service accounts × "
        f"{SERVICE_ACCOUNT_RULES} rules, each linking a mini program of its own); "
        f"{o.latency_ms} ms per WeChat call; WeChat's rate limits on (5 requests a second per "
        "account); stable tokens. The simulator runs in a process of its own (its world built "
        f"in {result.world_s:.1f} s); PostgreSQL is a private server started for the bench "
        "(stock settings, max_connections = 100, pg_stat_statements). Every figure is "
        "measured outside qrsync: wall and CPU (user + system, `os.wait4`) of the `qrsync "
        "sync --json` process, calls from the simulator's call log, statements from "
        "pg_stat_statements of qrsync's database (reset before each run), connections from "
        "pg_stat_activity polled every 20 ms.",
        "",
        f"Setup: {result.first_sync}.",
        "",
        "| concurrency | wall | latency floor | calls counted (needed) | other calls | qrsync CPU "
        "| statements (without transaction control) | peak connections | peak threads / open "
        "files of qrsync | simulator CPU per request | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result.runs:
        statements = (
            "n/a"
            if run.statements is None or run.transaction_control is None
            else f"{run.statements:,} ({run.statements - run.transaction_control:,})"
        )
        per_request = run.simulator_cpu_s / max(run.simulator_requests, 1) * 1000
        lines.append(
            f"| {run.concurrency} | {run.wall_s:.1f} s | {run.floor_s:.1f} s | "
            f"{run.calls_ok:,} ({run.calls_needed:,}) | {run.calls_other:,} | "
            f"{run.cpu_s:.1f} s | {statements} | {run.peak_connections} | "
            f"{run.peak_threads:,} / {run.peak_files:,} | "
            f"{per_request:.2f} ms ({run.simulator_cpu_s:.1f} s) | {run.load_before:.2f} |"
        )
    lines += [
        "",
        "*Calls counted*: successful `qrcodejumpget` and token calls in the simulator's log "
        "during the run; *needed*: one listing page per account (a mini program's one answer, "
        "a service account's 200 rules in one page of 200), no token call (tokens are cached). "
        "*Other calls*: the same endpoints answering an error (44990 above the rate limit, "
        "…). The floor uses the calls counted.",
        "",
    ]
    for run in result.runs:
        if run.failures:
            lines.append(f"Failed accounts at concurrency {run.concurrency}, commonest errors:")
            lines += [f"- ×{count}: {short(text, 400)}" for text, count in run.failures]
            lines.append("")
    if result.runs and result.runs[0].top_statements:
        run = result.runs[0]
        from qrsync.masking import mask

        lines += [
            f"### The statements of the no-op sync at concurrency {run.concurrency}, top 8 by "
            "calls",
            "",
            "| calls | per account | mean ms | statement | its comment in queries.sql |",
            "|---|---|---|---|---|",
        ]
        for s in run.top_statements:
            comment = " ".join(
                line.strip().removeprefix("--").strip()
                for line in s.query.splitlines()
                if line.strip().startswith("--")
            )
            sql = " ".join(
                line.split("--", 1)[0] for line in s.query.splitlines()
            )  # a -- inside a literal is cut too: this is a label, not the statement
            cells = [short(" ".join(mask(text).split()), width) for text, width in
                     ((sql, 110), (comment, 90))]  # fmt: skip
            lines.append(
                f"| {s.calls:,} | {s.calls / o.accounts:.2f} | {s.mean_ms:.3f} | "
                f"`{cells[0]}` | {cells[1]} |"
            )
        lines.append("")
    elif result.statements_note:
        lines += [result.statements_note, ""]
    d = result.daemon
    if d is not None:
        q = [quantile(d.offsets, p) for p in (0.1, 0.5, 0.9)]
        lines += [
            "### The daemon",
            "",
            "A 15-minute slot is too long for a bench, so one replica (`qrsync daemon`, "
            f"sync.concurrency {o.concurrencies[0]}) is measured in three phases of one process "
            f"(started in {d.startup_s:.0f} s):",
            "",
            f"1. *idle*: all {o.accounts:,} accounts scheduled, none due (`{NEVER}`: 29 "
            "February on a Monday); its CPU over 61 s, which includes one of the daemon's "
            "60-s refreshes of the accounts, gives the idle CPU per second *i* = "
            f"{d.idle_cpu_per_s * 1000:.1f} ms/s.",
            f"2. *slots*: after a SIGHUP, a sample of *k* = {d.sample} accounts (every "
            f"{o.accounts // d.sample}th) runs on `@every {d.period_s}s`, the rest as before "
            "(at full size 500 runs in 30-s slots: started over 80 % of the slot, as qrsync "
            "starts them now, 21 a second, faster than 10,000 accounts on `*/15` started over its "
            "first 720 s, 14 a second). Over the two whole slots that follow the reload it "
            f"used *C* = {sum(d.slot_cpu_s):.1f} s of CPU (per slot: "
            + ", ".join(f"{c:.1f} s" for c in d.slot_cpu_s)
            + f") and started *r* = {d.runs} runs ({d.runs_expected} due, "
            f"{d.runs_failed} failed); peak connections {d.peak_connections}.",
            "3. *idle again*: after another SIGHUP back to the idle schedule, and one more slot "
            "for the runs already queued, its CPU over 61 s is *i'* = "
            f"{d.idle_after_per_s * 1000:.1f} ms/s: what each account that ran left behind "
            f"costs *g* = max(*i'* − *i*, 0) ÷ *k* = {d.idle_growth_per_account * 1e6:.1f} µs/s "
            f"(threads of the process: {d.threads[0]:,} after the slots, {d.threads[1]:,} at "
            "the end).",
            "",
            f"CPU per scheduled run *c* = (*C* − *i* × {SLOTS} × {d.period_s} s) ÷ *r* = "
            f"{d.cpu_per_run_s * 1000:.1f} ms. On `*/15` every one of the *n* = "
            f"{o.accounts:,} accounts runs in every slot, so the replica idles at *i* + *n* × *g* "
            f"= {d.steady_idle_per_s * 1000:.1f} ms/s and uses ((*i* + *n* × *g*) × 900 s + *n* "
            f"× *c*) ÷ 900 s = **{d.core_fraction_15:.2f}** of one core (goal ≤ 0.25). The "
            "extrapolation assumes that a run costs the same whether 500 or 10,000 accounts "
            "share the slot, and that what a run leaves behind grows linearly with the accounts.",
            "",
            f"Start of each run after its slot, as a share of the {d.period_s}-s slot "
            f"(from sync_runs.started_at − scheduled_for): p10 {q[0]:.2f}, median {q[1]:.2f}, "
            f"p90 {q[2]:.2f}, max {max(d.offsets, default=float('nan')):.2f}; the busiest "
            f"tenth of the slot holds {busiest_tenth(d.offsets):.0%} of the starts (10 % if "
            "evenly spread). A short slot cannot show how the spread behaves on a long one"
            + _spread_at_15(o.accounts),
        ]
        lines += [f"- {note}" for note in d.notes]
        lines.append("")
    return "\n".join(lines)


def _spread_at_15(n: int) -> str:
    """The offsets qrsync's own spreading function gives the fleet on */15, if it has one by
    that name: computed, not measured, and said so."""
    try:
        from qrsync.schedules import spread_offset
    except ImportError:
        return "."
    names = [a.name for a in fleet_accounts(n)]
    offsets = sorted(spread_offset(name, timedelta(seconds=SLOT_15)) / SLOT_15 for name in names)
    return (
        f"; computed (not measured) with qrsync.schedules.spread_offset for these {n:,} "
        f"accounts on `*/15`: p90 of start ÷ slot {quantile(offsets, 0.9):.2f}, max "
        f"{offsets[-1]:.2f}, busiest tenth {busiest_tenth(offsets):.0%} of the starts."
    )
