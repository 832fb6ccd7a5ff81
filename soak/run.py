"""`make soak`: the daemon under random faults for a bounded time (issue 7, part 4).

Two `qrsync daemon` replicas share a fresh database (found like `make test` finds it) and sync
mini programs and service accounts of the bundled simulator (127.0.0.1 only, rate limit on) on
schedules of a few seconds. Meanwhile a seeded driver changes the world through WeChat's own
endpoints (publishes, edits, adds and deletes rules, recording every publication), arms one
random simulator fault every tick, and now and then SIGKILLs a replica in the middle of a run
and starts it again. Every few seconds it samples each daemon's RSS and open files and the
connections to the database.

Afterwards (faults cleared, the world still, a clean run of every account): the mirror equals
the simulator's rules, every publication the driver made is in `publications`, memory, open
files and connections are flat, no secret or token is in a log, and SPEC behaviour 8 held (one
run per slot, never two at once). Prints the figures, writes soak/RESULTS.md, exits 1 when a
check fails. ``--minutes`` (``SOAK_MINUTES``, default 20) bounds the run; ``--seed``
(``SOAK_SEED``) replays one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

from qrsync.simulator import RunningSimulator, SimulatorAdminError, start_simulator
from qrsync.simulator import faults as sim_faults
from qrsync.store.scratch import describe, scratch_database, scratch_server

ROOT = Path(__file__).resolve().parents[1]
QRSYNC = [sys.executable, "-m", "qrsync"]
SCHEMA = "qrsync"
DRIVER_APP = "qrsync-soak"
"""application_name of the driver's own connections, left out of the connection count."""

TICK_S = 2.0
"""The world changes, and one fault is armed, once a tick: the fixed fault rate."""
LATENCY_MS = 20
LEASE_S = 5
MAX_KILLS = 3
MAX_RESTARTS = 3
"""Replicas that die by themselves are started again this many times at most (a failed check)."""
FRONT = 10
"""While a drift fault of an account is armed, its first FRONT rules are neither published nor
deleted by the driver: drift deletes from the front, and a publication nobody could see is not
one qrsync can be blamed for missing."""
TOKEN_FAULTS_PER_ACCOUNT = 3
"""A faked 40001 / 42001 makes qrsync force a token refresh, which WeChat allows 20 times a day
and once in 30 s; more would fail the account for the rest of the (simulated) day."""
WARMUP_S = 240
SETTLE_S = 240
STOP_S = 60
WARM_FRACTION = 0.2
"""The first fifth of the soak is warm-up; the rest is cut in quarters for the flatness checks."""
RSS_BOUND_MB = 20.0
CONNECTION_SLACK = 2
FD_SLACK = 8
OBSERVED_SLACK = timedelta(seconds=1)


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, application_name=DRIVER_APP)


# --- the accounts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    kind: str
    appid: str
    book: str
    """The mini program whose rules are synced: the account itself, or the linked one."""
    rules: int
    schedule: str
    secret: str
    env: str

    @property
    def service_account(self) -> bool:
        return self.kind == "service_account"


def make_accounts(rng: random.Random) -> list[Account]:
    accounts = []
    for i, size in enumerate((300, 800, 1500, 3000)):
        appid = f"wx5{i:015d}"
        accounts.append(
            Account(
                f"mp-{i}",
                "miniprogram",
                appid,
                appid,
                size,
                "@every 5s",
                f"soak-secret-mp-{i}-{rng.getrandbits(64):016x}",
                f"SOAK_SECRET_MP_{i}",
            )
        )
    for i, size in enumerate((400, 1000, 2000, 3000)):
        accounts.append(
            Account(
                f"oa-{i}",
                "service_account",
                f"wx6{i:015d}",
                f"wx7{i:015d}",
                size,
                "@every 8s",
                f"soak-secret-oa-{i}-{rng.getrandbits(64):016x}",
                f"SOAK_SECRET_OA_{i}",
            )
        )
    return accounts


def build_world(sim: RunningSimulator, accounts: list[Account]) -> None:
    for a in accounts:
        world: dict[str, Any] = {
            "appid": a.appid,
            "kind": a.kind,
            "secret": a.secret,
            "pub_quota": 1_000_000,
            "rule_sets": [
                {"miniprogram_appid": a.book, "count": a.rules, "published_fraction": 0.3}
            ],
        }
        if a.service_account:
            world.update(verified=True, linked_miniprograms=[a.book])
        sim.admin.add_account(world)


def write_config(path: Path, url: str, base_url: str, accounts: list[Account]) -> Path:
    blocks = []
    for a in accounts:
        linked = f'miniprogram_appid = "{a.book}"\n' if a.service_account else ""
        blocks.append(
            f'[[accounts]]\nname = "{a.name}"\nkind = "{a.kind}"\nappid = "{a.appid}"\n{linked}'
            f'schedule = "{a.schedule}"\n'
            f'token = {{ source = "stable_token", secret_env = "{a.env}" }}\n'
        )
    path.write_text(
        f'[database]\nurl = "{url}"\nschema = "{SCHEMA}"\n'
        f'[api]\nbase_url = "{base_url}"\ntimeout_s = 5\nmax_retries = 3\nretry_backoff_s = 0.2\n'
        f"[sync]\nconcurrency = 4\n"
        f'[daemon]\nschedule = "@every 6s"\nlease_s = {LEASE_S}\nshutdown_grace_s = 10\n'
        f"http_port = 0\n\n" + "\n".join(blocks)
    )
    return path


def daemon_env(accounts: list[Account]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QRSYNC_DATABASE_URL", "QRSYNC_CONFIG")}
    env.update({a.env: a.secret for a in accounts})
    return env


# --- the replicas ---------------------------------------------------------------------------------


class Replicas:
    """The daemon processes: r1 runs throughout; r2 is killed and started again as r2-2, r2-3..."""

    def __init__(self, config: Path, env: dict[str, str], work: Path) -> None:
        self.config, self.env, self.work = config, env, work
        self.lock = threading.Lock()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.exit_codes: dict[str, int | None] = {}
        self.unexpected: list[str] = []

    def start(self, name: str) -> None:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    *QRSYNC,
                    "--config",
                    str(self.config),
                    "daemon",
                    "--name",
                    name,
                    # The daemon's HTTP server listens on every interface: the soak keeps to
                    # 127.0.0.1, so it is off.
                    "--http-port",
                    "0",
                    "--log-format",
                    "json",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        with self.lock:
            self.procs[name] = proc
            self.logs[name] = log

    def running(self) -> dict[str, int]:
        with self.lock:
            return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def check_alive(self) -> list[str]:
        """Names of replicas that exited without being told to (each reported once)."""
        dead = []
        with self.lock:
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is not None and name not in self.exit_codes:
                    self.exit_codes[name] = code
                    self.unexpected.append(f"{name} exited with {code}")
                    dead.append(name)
        return dead

    def kill_mid_run(self, name: str, db: psycopg.Connection[Any]) -> bool:
        """SIGKILL ``name``, in the middle of a run if one is seen within a few seconds (frozen
        with SIGSTOP first, so that the run cannot finish between the look and the kill)."""
        proc = self.procs[name]
        mid_run = False
        for _ in range(50):
            proc.send_signal(signal.SIGSTOP)
            row = db.execute(
                f"SELECT 1 FROM {SCHEMA}.sync_runs WHERE replica = %s AND status = 'running'"
                " LIMIT 1",
                (name,),
            ).fetchone()
            if row is not None:
                mid_run = True
                break
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.1)
        proc.kill()
        proc.wait(timeout=30)
        with self.lock:
            self.exit_codes[name] = -signal.SIGKILL
        return mid_run

    def stop_all(self) -> None:
        """SIGTERM every live replica and wait for it (bounded); record the exit codes."""
        with self.lock:
            live = {n: p for n, p in self.procs.items() if p.poll() is None}
        for proc in live.values():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        for name, proc in live.items():
            try:
                code: int | None = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                code = None
            with self.lock:
                self.exit_codes[name] = code

    def close(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


# --- sampling ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    connections: int
    rss_kb: dict[str, int]
    fds: dict[str, int]


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Sampler(threading.Thread):
    """Every ``every_s``: each live daemon's RSS and open files, and the database's connections
    (the driver's own left out)."""

    def __init__(self, url: str, replicas: Replicas, every_s: float, limit: int) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.url, self.replicas, self.every_s, self.limit = url, replicas, every_s, limit
        self.samples: list[Sample] = []
        self.halt = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        with connect(self.url) as conn:
            while len(self.samples) < self.limit and not self.halt.wait(self.every_s):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name <> %s",
                    (DRIVER_APP,),
                ).fetchone()
                rss, fds = {}, {}
                for name, pid in self.replicas.running().items():
                    kb, n = rss_kb(pid), open_fds(pid)
                    if kb is not None and n is not None:
                        rss[name], fds[name] = kb, n
                t = time.monotonic() - self.started_at
                self.samples.append(Sample(t, int(row[0]) if row else 0, rss, fds))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)

    def write(self, path: Path) -> None:
        """The samples as CSV (work dir), one row per sample and replica."""
        rows = ["t_s,connections,replica,rss_kb,open_files"]
        for s in self.samples:
            for name in sorted(s.rss_kb):
                rows.append(f"{s.t:.1f},{s.connections},{name},{s.rss_kb[name]},{s.fds[name]}")
        path.write_text("\n".join(rows) + "\n")


# --- the driver: a person editing rules, and the faults ------------------------------------------


@dataclass(frozen=True)
class Publication:
    account: str
    prefix: str
    at: datetime


class WeChatUser:
    """Edits one account's rules through WeChat's own endpoints, as a person would; 44990 and a
    dead token are retried (a bounded number of times)."""

    def __init__(self, base_url: str, account: Account) -> None:
        self.base_url, self.account = base_url, account
        self.session = requests.Session()
        self.token: str | None = None

    def _fetch_token(self) -> str | None:
        # stable_token may carry a fault meant for qrsync: try a few times.
        for _ in range(5):
            try:
                answer = self.session.post(
                    f"{self.base_url}/cgi-bin/stable_token",
                    json={
                        "grant_type": "client_credential",
                        "appid": self.account.appid,
                        "secret": self.account.secret,
                    },
                    timeout=15,
                ).json()
            except (requests.RequestException, ValueError):
                answer = None
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if isinstance(token, str):
                return token
            time.sleep(0.5)
        return None

    def call(self, endpoint: str, body: dict[str, Any]) -> int | None:
        """The errcode of a rule endpoint's answer (0: done), None when none came."""
        if self.account.service_account:
            body = {**body, "appid": self.account.book}
        errcode: int | None = None
        for attempt in range(8):
            if self.token is None:
                self.token = self._fetch_token()
                if self.token is None:
                    return None
            try:
                answer = self.session.post(
                    f"{self.base_url}/cgi-bin/wxopen/{endpoint}",
                    params={"access_token": self.token},
                    json=body,
                    timeout=15,
                ).json()
                errcode = int(answer.get("errcode", 0))
            except (requests.RequestException, ValueError, TypeError, AttributeError):
                return None
            if errcode == 44990:
                time.sleep(0.3 + 0.2 * attempt)
            elif errcode in (40001, 40014, 42001):
                self.token = None
            else:
                return errcode
        return errcode

    def close(self) -> None:
        self.session.close()


PATHS = (
    "pages/index/index",
    "pages/goods/detail",
    "pages/soak/landing",
    "pages / soak / spaced ",
    "pages/活动/index",
)
CHANGES = ("publish", "edit", "add", "delete")
CHANGE_WEIGHTS = (35, 25, 22, 18)
FAULT_KINDS = (
    "retryable errcode",
    "quota errcode",
    "token errcode",
    "fatal errcode",
    "http_status",
    "delay_s",
    "drop",
    "body",
    "malformed",
    "drift",
    "wire",
    "token expired",
)
FAULT_WEIGHTS = (12, 3, 2, 4, 8, 5, 5, 3, 5, 6, 3, 2)
RETRYABLE = (-1, 886001, 44990)
FATAL = (48001, 40097, 61007)
DAILY_QUOTA, MINUTE_QUOTA = 45009, 45011
"""qrsync holds an AppID whose quota is used up (table quota_holds) until the quota resets: the
next minute for 45011, midnight China time for 45009, whose holds the driver lifts after
HOLD_LIFT_S as an operator would (by deleting the row), so that the account is soaked on."""
DAILY_QUOTA_PER_ACCOUNT = 2
HOLD_LIFT_S = 30
WIRE = tuple(w for w in ("reset", "truncated") if w in getattr(sim_faults, "WIRE_FAULTS", ()))
"""Cheap wire faults, when the simulator has them (oversize and drip would swamp a 2-core box)."""


class Driver:
    """Changes the world and arms faults, seeded; remembers what it did."""

    def __init__(
        self, sim: RunningSimulator, accounts: list[Account], rng: random.Random, journal: Path
    ) -> None:
        self.sim, self.accounts, self.rng = sim, accounts, rng
        self.journal = journal.open("a", encoding="utf-8")
        self.users = {a.name: WeChatUser(sim.url, a) for a in accounts}
        self.publications: list[Publication] = []
        self.mine: dict[str, set[str]] = {a.name: set() for a in accounts}
        self.changes: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.errcodes: Counter[int] = Counter()
        self.token_faults: Counter[str] = Counter()
        self.daily_faults: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.drift: dict[str, set[str]] = {a.name: set() for a in accounts}  # armed, by id
        self.added = 0

    def close(self) -> None:
        for user in self.users.values():
            user.close()
        self.journal.close()

    def note(self, what: str, account: Account, **details: Any) -> None:
        """One JSON line in the journal (work dir), to line up with the daemons' logs."""
        line = {"at": datetime.now(UTC).isoformat(), "what": what, "account": account.name}
        self.journal.write(json.dumps({**line, **details}, ensure_ascii=False) + "\n")
        self.journal.flush()

    def rules(self, account: Account) -> list[dict[str, Any]]:
        return self.sim.admin.rules(account.appid, account.book)

    def drift_armed(self, account: Account) -> bool:
        """Whether a drift fault of the account may still fire."""
        armed = self.drift[account.name]
        if armed:
            live = {f["id"] for f in self.sim.admin.faults() if f["remaining"] != 0}
            armed &= live
        return bool(armed)

    # --- the world ------------------------------------------------------------------------------

    def change_world(self) -> None:
        account = self.rng.choice(self.accounts)
        rules = self.rules(account)
        locked = FRONT if self.drift_armed(account) else 0
        for _ in range(self.rng.randint(1, 3)):
            change = self.rng.choices(CHANGES, CHANGE_WEIGHTS)[0]
            if change == "delete" and len(rules) < account.rules // 2:
                change = "add"
            getattr(self, change)(account, rules, locked)

    def _done(
        self, change: str, account: Account, body: dict[str, Any], errcode: int | None
    ) -> bool:
        self.note(change, account, errcode=errcode, **body)
        if errcode == 0:
            self.changes[change] += 1
            return True
        self.changes[f"{change} refused ({errcode})"] += 1
        return False

    def publish(self, account: Account, rules: list[dict[str, Any]], locked: int) -> None:
        candidates = [i for i, r in enumerate(rules) if r["state"] == 1 and i >= locked]
        if not candidates:
            return
        rule = rules[self.rng.choice(candidates)]
        at = datetime.now(UTC)
        body = {"prefix": rule["prefix"]}
        errcode = self.users[account.name].call("qrcodejumppublish", body)
        if self._done("publish", account, body, errcode):
            rule["state"] = 2
            self.mine[account.name].add(rule["prefix"])
            self.publications.append(Publication(account.name, rule["prefix"], at))

    def _body(self, account: Account, prefix: str, is_edit: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prefix": prefix,
            "path": self.rng.choice(PATHS),
            "is_edit": is_edit,
        }
        if not account.service_account:
            urls = [
                f"{prefix}?soak={self.rng.randrange(10**6)}" for _ in range(self.rng.randint(0, 4))
            ]
            if urls and self.rng.random() < 0.2:
                urls.insert(1, urls[0])  # WeChat keeps duplicates; so must the mirror
            body.update(
                open_version=self.rng.randint(1, 3),
                permit_sub_rule=self.rng.randint(1, 2),
                debug_url=urls,
            )
        return body

    def edit(self, account: Account, rules: list[dict[str, Any]], locked: int) -> None:
        candidates = [i for i, r in enumerate(rules) if r["state"] == 1]
        if not candidates:
            return
        rule = rules[self.rng.choice(candidates)]
        body = self._body(account, rule["prefix"], is_edit=1)
        if self._done("edit", account, body, self.users[account.name].call("qrcodejumpadd", body)):
            rule["path"] = body["path"]

    def add(self, account: Account, rules: list[dict[str, Any]], locked: int) -> None:
        self.added += 1
        if account.service_account:
            prefix = f"http://weixin.qq.com/q/02soak{account.appid[-2:]}{self.added:012d}"
        else:
            prefix = f"https://soak-{account.appid[-4:]}.example.com/r/{self.added}"
        body = self._body(account, prefix, is_edit=0)
        if self._done("add", account, body, self.users[account.name].call("qrcodejumpadd", body)):
            rules.append({"prefix": prefix, "state": 1, "path": body["path"]})

    def delete(self, account: Account, rules: list[dict[str, Any]], locked: int) -> None:
        mine = self.mine[account.name]
        candidates = [i for i, r in enumerate(rules) if i >= locked and r["prefix"] not in mine]
        if not candidates:
            return
        index = self.rng.choice(candidates)
        body = {"prefix": rules[index]["prefix"]}
        errcode = self.users[account.name].call("qrcodejumpdelete", body)
        if self._done("delete", account, body, errcode):
            del rules[index]

    # --- faults ---------------------------------------------------------------------------------

    def arm_fault(self) -> None:
        account = self.rng.choice(self.accounts)
        kind = self.rng.choices(FAULT_KINDS, FAULT_WEIGHTS)[0]
        if kind == "token errcode" and self.token_faults[account.name] >= TOKEN_FAULTS_PER_ACCOUNT:
            kind = "retryable errcode"
        daily = kind == "quota errcode" and self.rng.random() < 0.3
        if daily and self.daily_faults[account.name] >= DAILY_QUOTA_PER_ACCOUNT:
            daily = False
        if kind == "wire" and not WIRE:
            kind = "drop"
        if kind == "token expired":
            if self.rng.random() < 0.5:
                self.sim.admin.expire_tokens(account.appid)
                self.note("fault", account, tokens="expired")
            else:
                self.sim.admin.invalidate_tokens(account.appid)
                self.note("fault", account, tokens="invalidated")
            self.faults[kind] += 1
            return
        fault: dict[str, Any] = {
            "endpoint": "qrcodejumpget",
            "appid": account.appid,
            "times": self.rng.randint(1, 2),
        }
        if kind in ("retryable errcode", "fatal errcode", "http_status", "drop", "delay_s"):
            if self.rng.random() < 0.15:
                fault["endpoint"] = "stable_token"
        if fault["endpoint"] == "qrcodejumpget" and account.service_account:
            if self.rng.random() < 0.4:
                pages = max(1, len(self.rules(account)) // 200)
                fault.update(get_type=2, page_num=self.rng.randint(1, pages))
        if kind == "retryable errcode":
            fault["errcode"] = self.rng.choice(RETRYABLE)
        elif kind == "quota errcode":
            fault.update(errcode=DAILY_QUOTA if daily else MINUTE_QUOTA, times=1)
            self.daily_faults[account.name] += daily
        elif kind == "token errcode":
            fault.update(errcode=self.rng.choice((40001, 42001)), times=1)
            self.token_faults[account.name] += 1
        elif kind == "fatal errcode":
            fault.update(errcode=self.rng.choice(FATAL), times=1)
        elif kind == "http_status":
            fault["http_status"] = self.rng.choice((500, 502, 503, 504))
        elif kind == "delay_s":
            fault.update(delay_s=round(self.rng.uniform(0.5, 8.0), 2), times=1)
        elif kind == "drop":
            fault["drop"] = True
        elif kind == "body":
            fault["body"] = self.rng.choice(("<html>502 Bad Gateway</html>", "", '{"errcode": 0'))
        elif kind == "malformed":
            fault.update(malformed=self.rng.choice(sim_faults.MALFORMATIONS), times=1)
        elif kind == "wire":
            fault.update(wire=self.rng.choice(WIRE), times=1)
        elif kind == "drift":
            fault.update(drift=self._drift(account), times=1)
        fault_id = self.sim.admin.add_fault(**fault)
        self.note("fault", account, id=fault_id, **fault)
        if kind == "drift":
            self.drift[account.name].add(fault_id)
        if "errcode" in fault:
            self.errcodes[fault["errcode"]] += 1
        self.faults[kind] += 1

    def _drift(self, account: Account) -> dict[str, int]:
        """Rules added and deleted mid-listing; the deleted ones are the first of the book, so
        none of them may be a publication of the driver (qrsync may not have seen it yet)."""
        delete = 0
        if not self.drift_armed(account):
            front = self.rules(account)[: self.rng.randint(0, 3)]
            mine = self.mine[account.name]
            while delete < len(front) and front[delete]["prefix"] not in mine:
                delete += 1
        return {"add": self.rng.randint(0, 3), "delete": delete}


# --- the soak ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    minutes: float
    seed: int
    accounts: list[Account]
    driver: Driver
    replicas: Replicas
    samples: list[Sample]
    soak_s: float = 0.0
    warmup_s: float = 0.0
    settle_s: float = 0.0
    kills: int = 0
    mid_run_kills: int = 0
    holds_lifted: int = 0
    warm: bool = False
    settled: bool = False
    problems: list[str] = field(default_factory=list)


def qrsync_cli(config: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [*QRSYNC, "--config", str(config), *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"qrsync {' '.join(args)} failed: {done.stderr[-2000:]}")


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(1.0)
    return predicate()


def succeeded_since(db: psycopg.Connection[Any], since: datetime, names: list[str]) -> bool:
    """Every account has a succeeded run started after ``since`` (database time)."""
    row = db.execute(
        f"SELECT count(DISTINCT a.name) FROM {SCHEMA}.sync_runs r"
        f" JOIN {SCHEMA}.accounts a ON a.id = r.account_id"
        " WHERE r.status = 'succeeded' AND r.started_at > %s AND a.name = ANY(%s)",
        (since, names),
    ).fetchone()
    return bool(row) and int(row[0]) == len(names)


def lift_holds(db: psycopg.Connection[Any], errcode: int | None, older_than_s: float) -> int:
    """Delete quota holds (the documented way to lift one) of ``errcode`` (None: all) held for
    longer than ``older_than_s``; how many. Nothing to do before quota holds existed."""
    row = db.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.quota_holds",)).fetchone()
    if row is None or row[0] is None:
        return 0
    lifted = db.execute(
        f"DELETE FROM {SCHEMA}.quota_holds WHERE (CAST(%s AS integer) IS NULL OR errcode = %s)"
        " AND held_since < now() - make_interval(secs => %s) RETURNING appid",
        (errcode, errcode, older_than_s),
    ).fetchall()
    return len(lifted)


def db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def soak(
    sim: RunningSimulator, url: str, minutes: float, seed: int, work: Path
) -> tuple[Outcome, psycopg.Connection[Any]]:
    """Warm up, drive, settle and stop the replicas; the checks are left to the caller."""
    rng = random.Random(seed)
    accounts = make_accounts(rng)
    names = [a.name for a in accounts]
    build_world(sim, accounts)
    env = daemon_env(accounts)
    config = write_config(work / "soak.toml", url, sim.url, accounts)
    qrsync_cli(config, env, "db", "upgrade")
    duration = minutes * 60
    every = max(1.0, min(5.0, duration / 60))
    replicas = Replicas(config, env, work)
    driver = Driver(sim, accounts, rng, work / "journal.jsonl")
    db = connect(url)
    sampler = Sampler(url, replicas, every, limit=int(duration / every) + 10)
    outcome = Outcome(minutes, seed, accounts, driver, replicas, sampler.samples)
    try:
        started = db_now(db)
        replicas.start("r1")
        replicas.start("r2-1")
        warm_start = time.monotonic()
        say(f"warm-up: {len(accounts)} accounts, first sync of every one ...")
        outcome.warm = wait_for(lambda: succeeded_since(db, started, names), WARMUP_S)
        outcome.warmup_s = time.monotonic() - warm_start
        if not outcome.warm:
            outcome.problems.append(f"not every account synced within {WARMUP_S} s of the start")
        sampler.started_at = time.monotonic()
        sampler.start()
        try:
            drive(outcome, driver, replicas, db, duration, rng)
        finally:
            sampler.stop()
            sampler.write(work / "samples.csv")
        # The world stands still: no faults, no changes; wait for a clean run of every account.
        sim.admin.clear_faults()
        time.sleep(1.0)  # a drift taken just before the clear lands within the latency
        still = db_now(db)
        settle_start = time.monotonic()
        say("settling: faults cleared, waiting for a clean run of every account ...")

        def settled() -> bool:
            outcome.holds_lifted += lift_holds(db, None, 0)
            return succeeded_since(db, still, names)

        outcome.settled = wait_for(settled, SETTLE_S)
        outcome.settle_s = time.monotonic() - settle_start
        if not outcome.settled:
            outcome.problems.append(f"not every account had a clean run within {SETTLE_S} s")
        replicas.check_alive()
        replicas.stop_all()
    except BaseException:
        replicas.close()
        driver.close()
        db.close()
        raise
    return outcome, db


def drive(
    outcome: Outcome,
    driver: Driver,
    replicas: Replicas,
    db: psycopg.Connection[Any],
    duration: float,
    rng: random.Random,
) -> None:
    """The soak proper: a tick every TICK_S until the time or the tick budget runs out."""
    start = time.monotonic()
    kills = min(MAX_KILLS, max(1, int(duration // 300) + 1))
    kill_at = [start + duration * (i + 1) / (kills + 1) for i in range(kills)]
    victim, incarnation, restarts = "r2-1", 1, 0
    max_ticks = int(duration / TICK_S) + 1
    say(f"soak: {duration / 60:g} min, a change and a fault every {TICK_S:g} s, {kills} kills")
    for tick in range(max_ticks):
        now = time.monotonic()
        if now - start >= duration:
            break
        for name in replicas.check_alive():
            outcome.problems.append(f"replica {name} died by itself (its log says why)")
            if restarts < MAX_RESTARTS:
                restarts += 1
                replacement = f"{name.split('.')[0]}.{restarts}"
                replicas.start(replacement)
                victim = replacement if name == victim else victim
        try:
            driver.change_world()
            driver.arm_fault()
            outcome.holds_lifted += lift_holds(db, DAILY_QUOTA, HOLD_LIFT_S)
        except (SimulatorAdminError, requests.RequestException, psycopg.Error) as exc:
            driver.errors[type(exc).__name__] += 1
        if kill_at and now >= kill_at[0]:
            kill_at.pop(0)
            outcome.kills += 1
            outcome.mid_run_kills += replicas.kill_mid_run(victim, db)
            time.sleep(rng.uniform(1.0, 3.0))
            incarnation += 1
            victim = f"r2-{incarnation}"
            replicas.start(victim)
        if tick % 30 == 0:
            elapsed = time.monotonic() - start
            say(
                f"  {elapsed:5.0f} s: {sum(driver.changes.values())} changes, "
                f"{sum(driver.faults.values())} faults, {outcome.kills} kills"
            )
        time.sleep(max(0.0, start + (tick + 1) * TICK_S - time.monotonic()))
    outcome.soak_s = time.monotonic() - start


# --- the checks ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    detail: str
    passed: bool


def expected_rules(outcome: Outcome) -> dict[tuple[str, str], tuple[Any, ...]]:
    truth: dict[tuple[str, str], tuple[Any, ...]] = {}
    for a in outcome.accounts:
        for r in outcome.driver.rules(a):
            if a.service_account:  # the listing carries prefix, state and path only
                truth[(a.name, r["prefix"])] = (r["path"], r["state"], None, None, None)
            else:
                truth[(a.name, r["prefix"])] = (
                    r["path"],
                    r["state"],
                    r["open_version"],
                    r["permit_sub_rule"],
                    list(r["debug_url"]),
                )
    return truth


def check_mirror(outcome: Outcome, db: psycopg.Connection[Any]) -> Check:
    truth = expected_rules(outcome)
    rows = db.execute(
        f"SELECT a.name, r.prefix, r.path, r.state, r.open_version, r.permit_sub_rule,"
        f" r.debug_urls FROM {SCHEMA}.rules r JOIN {SCHEMA}.accounts a ON a.id = r.account_id"
        " WHERE r.deleted_at IS NULL"
    ).fetchall()
    mirror = {(r[0], r[1]): tuple(r[2:]) for r in rows}
    missing = sorted(set(truth) - set(mirror))
    extra = sorted(set(mirror) - set(truth))
    differ = sorted(k for k in set(truth) & set(mirror) if truth[k] != mirror[k])
    # The history and the debug URLs must say the same as the rules.
    versions = db.execute(
        f"SELECT a.name, v.prefix, v.path, v.state, v.open_version, v.permit_sub_rule,"
        f" v.debug_urls FROM {SCHEMA}.rule_versions v"
        f" JOIN {SCHEMA}.accounts a ON a.id = v.account_id"
        " WHERE v.valid_to IS NULL AND NOT v.deleted"
    ).fetchall()
    current = {(v[0], v[1]): tuple(v[2:]) for v in versions}
    bad_versions = sorted(k for k in truth if current.get(k) != truth[k])
    extra_versions = sorted(set(current) - set(truth))
    urls = db.execute(
        f"SELECT a.name, u.prefix, u.url, u.position FROM {SCHEMA}.rule_debug_urls u"
        f" JOIN {SCHEMA}.accounts a ON a.id = u.account_id"
        f" JOIN {SCHEMA}.rules r ON r.account_id = u.account_id AND r.prefix = u.prefix"
        " WHERE r.deleted_at IS NULL"
    ).fetchall()
    stored: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for name, prefix, url, position in urls:
        stored.setdefault((name, prefix), set()).add((url, position))
    bad_urls = []
    for key, value in truth.items():
        listed = value[4] or []
        wanted = {(u, listed.index(u) + 1) for u in listed}
        if stored.get(key, set()) != wanted:
            bad_urls.append(key)
    examples = [*missing[:2], *extra[:2], *differ[:2], *bad_versions[:2], *bad_urls[:2]]
    for key in examples:
        outcome.problems.append(
            f"mirror {key}: simulator {truth.get(key)!r}, rules {mirror.get(key)!r},"
            f" current version {current.get(key)!r}, urls {sorted(stored.get(key, set()))!r}"
        )
    passed = not (missing or extra or differ or bad_versions or extra_versions or bad_urls)
    detail = (
        f"{len(truth):,} live rules in {len(outcome.accounts)} accounts; missing {len(missing)},"
        f" extra {len(extra)}, different {len(differ)}; rule_versions off {len(bad_versions)}"
        f" (+{len(extra_versions)}), rule_debug_urls off {len(bad_urls)}"
    )
    return Check("mirror equals the simulator", detail, passed)


def check_publications(outcome: Outcome, db: psycopg.Connection[Any]) -> tuple[Check, int]:
    seen: dict[tuple[str, str], list[datetime]] = {}
    for account, prefix, observed in db.execute(
        f"SELECT account, prefix, published_observed_at FROM {SCHEMA}.publications"
    ).fetchall():
        seen.setdefault((account, prefix), []).append(observed)
    made = outcome.driver.publications
    lost = [
        p
        for p in made
        if not any(t >= p.at - OBSERVED_SLACK for t in seen.get((p.account, p.prefix), []))
    ]
    for p in lost[:3]:
        outcome.problems.append(f"publication not in the view: {p.account} {p.prefix} at {p.at}")
    found = len(made) - len(lost)
    detail = f"{found} of {len(made)} publications made by the driver found"
    return Check("every publication in `publications`", detail, not lost and bool(made)), found


def quarters(samples: list[Sample], end: float) -> tuple[list[Sample], list[Sample]]:
    """The first and last quarters after the warm-up."""
    warm = end * WARM_FRACTION
    quarter = (end - warm) / 4
    first = [s for s in samples if warm <= s.t < warm + quarter]
    last = [s for s in samples if s.t >= end - quarter]
    return first, last


def peak(samples: list[Sample], pick: Callable[[Sample], int | None]) -> int | None:
    values = [v for v in (pick(s) for s in samples) if v is not None]
    return max(values) if values else None


def check_flat(outcome: Outcome) -> tuple[list[Check], dict[str, str]]:
    first, last = quarters(outcome.samples, outcome.soak_s)
    checks, figures = [], {}
    flat = [
        # (check, figure, what is sampled, slack, unit divisor and name)
        ("memory flat (r1)", "RSS of r1", lambda s: s.rss_kb.get("r1"), RSS_BOUND_MB, 1024, "MB"),
        ("open files flat (r1)", "open files of r1", lambda s: s.fds.get("r1"), FD_SLACK, 1, ""),
        (
            "connections flat",
            "database connections",
            lambda s: s.connections,
            CONNECTION_SLACK,
            1,
            "",
        ),
    ]
    for name, figure, pick, slack, divisor, unit in flat:
        early, late = (peak(q, pick) for q in (first, last))
        if early is None or late is None:
            checks.append(Check(name, "not enough samples", False))
            continue
        a, b = early / divisor, late / divisor
        shown = f"{a:.1f} / {b:.1f} {unit}" if unit else f"{a:g} / {b:g}"
        detail = f"max {shown.replace(' / ', ' -> ')}, slack {slack:g}{' ' + unit if unit else ''}"
        checks.append(Check(name, detail, b - a <= slack))
        figures[f"{figure}, first / last quarter (max)"] = shown
    r2 = [n for n in outcome.replicas.logs if n.startswith("r2")]
    if r2:
        name = r2[-1]
        values = [s.rss_kb[name] for s in outcome.samples if name in s.rss_kb]
        if values:
            figures[f"RSS of {name} (last incarnation), first / last sample"] = (
                f"{values[0] / 1024:.1f} / {values[-1] / 1024:.1f} MB"
            )
    figures["samples (every, count)"] = (
        f"{outcome.samples[1].t - outcome.samples[0].t:.0f} s, {len(outcome.samples)}"
        if len(outcome.samples) > 1
        else str(len(outcome.samples))
    )
    return checks, figures


def check_secrets(outcome: Outcome, sim: RunningSimulator) -> Check:
    with sim.simulator.lock:
        tokens = list(sim.simulator.world.tokens)
    secrets = [a.secret for a in outcome.accounts] + tokens
    leaks = []
    for name, path in outcome.replicas.logs.items():
        text = path.read_text(errors="replace")
        hits = sum(1 for s in secrets if s in text)
        if hits:
            leaks.append(f"{name}: {hits}")
    detail = (
        f"{len(outcome.accounts)} secrets and {len(tokens)} issued tokens searched in"
        f" {len(outcome.replicas.logs)} logs" + (f"; found in {', '.join(leaks)}" if leaks else "")
    )
    return Check("no secret or token in a log", detail, not leaks)


def check_replicas(outcome: Outcome, db: psycopg.Connection[Any]) -> list[Check]:
    overlaps = db.execute(
        f"SELECT count(*) FROM {SCHEMA}.sync_runs a JOIN {SCHEMA}.sync_runs b"
        " ON a.account_id = b.account_id AND a.id < b.id"
        " WHERE b.started_at < COALESCE(a.finished_at, 'infinity')"
        "   AND a.started_at < COALESCE(b.finished_at, 'infinity')"
    ).fetchone()
    doubles = db.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {SCHEMA}.sync_runs WHERE NOT abandoned"
        " GROUP BY account_id, scheduled_for HAVING count(*) > 1) d"
    ).fetchone()
    running = db.execute(
        f"SELECT count(*) FROM {SCHEMA}.sync_runs WHERE status = 'running'"
    ).fetchone()
    n_overlaps, n_doubles, n_running = (
        int(r[0]) if r else -1 for r in (overlaps, doubles, running)
    )
    codes = outcome.replicas.exit_codes
    stopped = {n: c for n, c in codes.items() if c != -signal.SIGKILL}
    clean = all(c == 0 for c in stopped.values()) and not outcome.replicas.unexpected
    return [
        Check(
            "one run per slot, never two at once",
            f"overlapping runs {n_overlaps}, slots run twice {n_doubles}, left running {n_running}",
            n_overlaps == 0 and n_doubles == 0 and n_running == 0,
        ),
        Check(
            "replicas stop cleanly on SIGTERM",
            ", ".join(f"{n} exit {c}" for n, c in stopped.items())
            + "".join(f"; {u}" for u in outcome.replicas.unexpected),
            clean,
        ),
        Check(
            "warm-up and settling",
            f"first sync of every account in {outcome.warmup_s:.0f} s; clean run of every"
            f" account {outcome.settle_s:.0f} s after the last change",
            outcome.warm and outcome.settled,
        ),
    ]


def run_figures(db: psycopg.Connection[Any]) -> tuple[dict[str, str], list[str]]:
    figures = {}
    statuses = db.execute(
        f"SELECT status, count(*), count(*) FILTER (WHERE abandoned) FROM {SCHEMA}.sync_runs"
        " GROUP BY status ORDER BY status"
    ).fetchall()
    figures["runs per status"] = ", ".join(
        f"{s} {n}" + (f" ({k} abandoned)" if k else "") for s, n, k in statuses
    )
    errors = db.execute(
        f"SELECT left(regexp_replace(error, '\\d+', 'N', 'g'), 110), count(*)"
        f" FROM {SCHEMA}.sync_runs WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
    ).fetchall()
    partial = db.execute(
        f"SELECT left(regexp_replace(message, '\\d+', 'N', 'g'), 110), count(*)"
        f" FROM {SCHEMA}.sync_runs WHERE status = 'partial' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    ).fetchall()
    reasons = [f"failed ×{n}: {e}" for e, n in errors] + [f"partial ×{n}: {m}" for m, n in partial]
    return figures, reasons


def log_figures(outcome: Outcome) -> tuple[dict[str, str], list[str]]:
    levels: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for path in outcome.replicas.logs.values():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                levels["not JSON"] += 1
                errors[line[:110]] += 1
                continue
            level = str(record.get("level", "?"))
            levels[level] += 1
            if level in ("ERROR", "CRITICAL"):
                errors[str(record.get("message", ""))[:110]] += 1
    figures = {
        "daemon log lines by level": ", ".join(f"{k} {v}" for k, v in sorted(levels.items()))
    }
    return figures, [f"log ×{n}: {m}" for m, n in errors.most_common(8)]


# --- the report ----------------------------------------------------------------------------------


def render(
    meta: dict[str, str], figures: dict[str, str], checks: list[Check], notes: list[str]
) -> str:
    lines = [
        "# qrsync soak test",
        "",
        f"{meta['date']} · {meta['machine']} · PostgreSQL {meta['postgres']} · "
        f"{meta['minutes']} min · seed {meta['seed']}",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in figures.items()),
        "",
        "| check | detail | result |",
        "|---|---|---|",
        *(f"| {c.name} | {c.detail} | {'PASS' if c.passed else 'FAIL'} |" for c in checks),
    ]
    if notes:
        lines += [
            "",
            "What went wrong along the way (expected under faults unless a check failed):",
            "",
        ]
        lines += [f"- {n.replace('|', '/')}" for n in notes]
    return "\n".join(lines) + "\n"


def report(
    outcome: Outcome, sim: RunningSimulator, db: psycopg.Connection[Any]
) -> tuple[list[Check], dict[str, str], list[str]]:
    d = outcome.driver
    checks = [check_mirror(outcome, db)]
    publications, found = check_publications(outcome, db)
    checks.append(publications)
    flat, flat_figures = check_flat(outcome)
    checks += flat
    checks.append(check_secrets(outcome, sim))
    checks += check_replicas(outcome, db)
    figures = {
        "duration": f"soak {outcome.soak_s / 60:.1f} min (warm-up {outcome.warmup_s:.0f} s before,"
        f" settling {outcome.settle_s:.0f} s after)",
        "accounts": ", ".join(f"{a.name} {a.rules:,}" for a in outcome.accounts),
        "world changes": ", ".join(f"{k} {v}" for k, v in sorted(d.changes.items())),
        "faults armed by effect": ", ".join(f"{k} {v}" for k, v in d.faults.most_common()),
        "errcodes armed": ", ".join(f"{k} ×{v}" for k, v in sorted(d.errcodes.items())),
        "publications made / found": f"{len(d.publications)} / {found}",
        "kills (mid-run)": f"{outcome.kills} ({outcome.mid_run_kills})",
        "quota holds lifted (by deleting the row)": str(outcome.holds_lifted),
    }
    runs, reasons = run_figures(db)
    figures.update(runs)
    figures.update(flat_figures)
    logs, log_notes = log_figures(outcome)
    figures.update(logs)
    if d.errors:
        figures["driver errors"] = ", ".join(f"{k} {v}" for k, v in d.errors.items())
    return checks, figures, [*outcome.problems, *reasons, *log_notes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 20)
    )
    seed_env = os.environ.get("SOAK_SEED")
    parser.add_argument("--seed", type=int, default=int(seed_env) if seed_env else None)
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    say(f"soak: seed {seed} (SOAK_SEED={seed} replays the same driver), {args.minutes:g} min")
    with scratch_server("soak") as server:
        meta = {**describe(server), "minutes": f"{args.minutes:g}", "seed": str(seed)}
        return _run(server, args.minutes, seed, args.keep, meta)


def _run(server: str, minutes: float, seed: int, keep: bool, meta: dict[str, str]) -> int:
    work = Path(tempfile.mkdtemp(prefix="qrsync-soak-"))
    sim = start_simulator(host="127.0.0.1", port=0, seed=seed, latency_ms=LATENCY_MS)
    passed = False
    try:
        with scratch_database(server, "qrsync_soak", keep=keep) as url:
            if keep:
                say(f"database kept: {url}")
            outcome, db = soak(sim, url, minutes, seed, work)
            try:
                checks, figures, notes = report(outcome, sim, db)
            finally:
                db.close()
                outcome.replicas.close()
                outcome.driver.close()
        table = render(meta, figures, checks, notes)
        say(table)
        (ROOT / "soak" / "RESULTS.md").write_text(table)
        passed = all(c.passed for c in checks)
    finally:
        sim.stop()
        if passed and not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs kept in {work}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
