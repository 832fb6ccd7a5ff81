"""`make bench`: qrsync measured side by side with the floor and with dlt (issue 6's table).

Every figure is a ratio or a count measured in this one run against the local PostgreSQL (found
like `make test` finds it) and the bundled simulator, so that a noisy shared machine still gives
comparable numbers. Prints the table, writes bench/results.json and bench/RESULTS.md, and exits
1 when a goal is missed. ``--quick`` (``make bench QUICK=1``) runs a tenth of the sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests
from fleet import FleetOptions
from fleet import fleet_case as run_fleet
from fleet import rows as fleet_rows_of
from fleet import section as fleet_section
from sqlalchemy import make_url

from qrsync.simulator import RunningSimulator, start_simulator
from qrsync.store.scratch import describe, scratch_database, scratch_server

ROOT = Path(__file__).resolve().parents[1]
QRSYNC = [sys.executable, "-m", "qrsync"]
OA, MP = "wx2000000000000002", "wx1000000000000009"
SECRET = "bench-secret"
REPEATS = 3
RESULT = {True: "PASS", False: "FAIL", None: "—"}
WRITE_TABLES = ("rules", "rule_past_versions", "rule_state_changes", "rule_debug_urls")


@dataclass
class Row:
    case: str
    measures: str
    value: str
    goal: str
    passed: bool | None  # None: shown for information, no goal


# --- helpers -------------------------------------------------------------------------------------


def write_config(
    path: Path, url: str, base_url: str, accounts: str, *, rps: int = 100_000, concurrency: int = 8
) -> Path:
    path.write_text(
        f'[database]\nurl = "{url}"\n[api]\nbase_url = "{base_url}"\n'
        f"requests_per_second = {rps}\n[sync]\nconcurrency = {concurrency}\n\n{accounts}"
    )
    return path


def oa_account(name: str = "big", appid: str = OA) -> str:
    return (
        f'[[accounts]]\nname = "{name}"\nkind = "service_account"\nappid = "{appid}"\n'
        f'miniprogram_appid = "{MP}"\n'
        f'token = {{ source = "stable_token", secret_env = "BENCH_SECRET" }}\n'
    )


def run_qrsync(config: Path, *args: str, measure_rss: bool = False) -> tuple[float, int]:
    """Run the real command; return (wall seconds, peak RSS in KB or 0)."""
    env = {**os.environ, "BENCH_SECRET": SECRET}
    prefix = ["/usr/bin/time", "-f", "RSS %M"] if measure_rss else []
    started = time.perf_counter()
    done = subprocess.run(
        [*prefix, *QRSYNC, "--config", str(config), *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"qrsync {' '.join(args)} failed: {done.stderr[-2000:]}")
    rss = 0
    if measure_rss:
        found = re.search(r"RSS (\d+)", done.stderr)
        rss = int(found.group(1)) if found else 0
    return wall, rss


def big_account(sim: RunningSimulator, rules: int, appid: str = OA) -> None:
    sim.admin.add_account(
        {
            "appid": appid,
            "kind": "service_account",
            "secret": SECRET,
            "verified": True,
            "linked_miniprograms": [MP],
        }
    )
    sim.admin.generate_rules(appid, rules, miniprogram_appid=MP, published_fraction=0.5)


def floor(sim: RunningSimulator, server: str, appid: str = OA) -> float:
    """F: a bare requests loop over the same pages (JSON parsed, nothing kept but the rows to
    copy) plus COPY of the same rows, with every column of a rule, into an unindexed table."""
    session = requests.Session()
    token = session.post(
        f"{sim.url}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": appid, "secret": SECRET},
    ).json()["access_token"]
    started = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    page = 1
    while True:
        answer = session.post(
            f"{sim.url}/cgi-bin/wxopen/qrcodejumpget",
            params={"access_token": token},
            json={"appid": MP, "get_type": 2, "page_num": page, "page_size": 200},
        ).json()
        rows.extend(
            (
                r["prefix"],
                r.get("path"),
                r.get("state"),
                r.get("open_version"),
                r.get("permit_sub_rule"),
                r.get("debug_url"),
            )
            for r in answer["rule_list"]
        )
        if len(answer["rule_list"]) < 200:
            break
        page += 1
    fetched = time.perf_counter() - started
    with psycopg.connect(server) as conn:
        conn.execute(
            "CREATE TEMP TABLE floor_rules (prefix text, path text, state smallint,"
            " open_version smallint, permit_sub_rule smallint, debug_urls text[])"
        )
        started = time.perf_counter()
        with conn.cursor().copy("COPY floor_rules FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        copied = time.perf_counter() - started
    return fetched + copied


def tuples_written(url: str) -> int:
    """Rows inserted, updated or deleted in the rule tables, from pg_stat_user_tables (after
    waiting for the counters of the finished process to settle)."""

    def read() -> int:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
                " FROM pg_stat_user_tables WHERE schemaname = 'qrsync' AND relname = ANY(%s)",
                (list(WRITE_TABLES),),
            ).fetchone()
            return int(row[0]) if row else 0

    last, stable_since = read(), time.monotonic()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1.2:
        time.sleep(0.3)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def xmins(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT prefix, xmin::text FROM qrsync.rules").fetchall())


def ratio(value: float) -> str:
    return f"{value:.2f}"


# --- the cases -----------------------------------------------------------------------------------


def ingest_cases(server: str, n: int, work: Path) -> tuple[list[Row], dict[str, float]]:
    rows: list[Row] = []
    sim = start_simulator(port=0, seed=11, rate_limit=False)
    try:
        big_account(sim, n)
        # The floor and the no-op resync can be repeated as they are: the median of
        # REPEATS of each keeps one noisy second of a shared machine out of the ratios.
        f = statistics.median(floor(sim, server) for _ in range(REPEATS))
        with scratch_database(server, "qrsync_bench") as url:
            config = write_config(work / "ingest.toml", url, sim.url, oa_account())
            run_qrsync(config, "db", "upgrade")
            initial, _ = run_qrsync(config, "sync")
            rows.append(
                Row(
                    f"initial ingest, {n:,} rules",
                    "qrsync sync wall ÷ F",
                    ratio(initial / f),
                    "≤ 2.0",
                    initial / f <= 2.0,
                )
            )
            before_stat, before_xmin = tuples_written(url), xmins(url)
            noop = statistics.median(run_qrsync(config, "sync")[0] for _ in range(REPEATS))
            written = tuples_written(url) - before_stat
            rewritten = sum(1 for k, v in xmins(url).items() if before_xmin.get(k) != v)
            rows.append(
                Row(
                    f"no-op resync, {n:,} rules",
                    "rule rows written; wall ÷ F",
                    f"{written} (xmin changed: {rewritten}); {ratio(noop / f)}",
                    "0; ≤ 1.5",
                    written == 0 and rewritten == 0 and noop / f <= 1.5,
                )
            )
            expected = change_one_percent(sim, n)
            before_stat = tuples_written(url)
            changed, _ = run_qrsync(config, "sync")
            written = tuples_written(url) - before_stat
            rows.append(
                Row(
                    "1 % changed (publish, edit, delete)",
                    "rows written (expected); wall ÷ F",
                    f"{written} ({expected}); {ratio(changed / f)}",
                    "exact; ≤ 1.6",
                    written == expected and changed / f <= 1.6,
                )
            )
        timings = {"floor": f, "initial": initial, "noop": noop}
        return rows, timings
    finally:
        sim.stop()


def change_one_percent(sim: RunningSimulator, n: int) -> int:
    """Publish 0.4 %, edit 0.3 % (path), delete 0.3 % of the rules; return the rows a perfect
    merge writes: rules (changed + marked deleted), state changes, and the past version each
    change or deletion replaces (the current version is the rules row)."""
    rules = sim.admin.rules(OA, MP)
    rng = random.Random(7)
    unpublished = [r for r in rules if r["state"] == 1]
    published = [r for r in rules if r["state"] == 2]
    k = max(n // 100, 10)
    publish = rng.sample(unpublished, k * 4 // 10)
    edit = rng.sample([r for r in unpublished if r not in publish], k * 3 // 10)
    gone = {r["prefix"] for r in rng.sample(published, k - len(publish) - len(edit))}
    for r in publish:
        r["state"] = 2
    for r in edit:
        r["path"] = r["path"] + "/v2"
    kept = [r for r in rules if r["prefix"] not in gone]
    sim.admin.put_rules(OA, kept, miniprogram_appid=MP)
    changed = len(publish) + len(edit)
    return (changed + len(gone)) + (len(publish) + len(gone)) + (changed + len(gone))


def dlt_case(server: str, n: int, work: Path, qrsync_time: float) -> Row:
    try:
        from dlt_peer import run_dlt
    except ImportError:
        return Row("dlt peer", "dlt time ÷ qrsync time", "dlt not installed", "≥ 3", False)
    sim = start_simulator(port=0, seed=11, rate_limit=False)
    try:
        big_account(sim, n)
        with scratch_database(server, "qrsync_bench") as url:
            parsed = make_url(url)
            if not parsed.password:  # dlt insists on one; trust authentication ignores it
                url = parsed.set(password="unused").render_as_string(hide_password=False)
            initial = run_dlt(sim.url, OA, SECRET, MP, url, "rules_dlt", str(work / "dlt"))
            noop = run_dlt(sim.url, OA, SECRET, MP, url, "rules_dlt", str(work / "dlt"))
        value = (initial + noop) / qrsync_time
        return Row(
            "dlt peer (initial + no-op)", "dlt time ÷ qrsync time", ratio(value), "≥ 3", value >= 3
        )
    finally:
        sim.stop()


def fleet_case(server: str, accounts: int, work: Path) -> Row:
    concurrency = 8
    sim = start_simulator(port=0, seed=13, rate_limit=True, latency_ms=50)
    blocks, pages = [], []
    try:
        for i in range(accounts):
            appid = f"wx3{i:015d}"
            count = 200 * (i % 10 + 1)
            sim.admin.add_account(
                {
                    "appid": appid,
                    "kind": "service_account",
                    "secret": SECRET,
                    "verified": True,
                    "linked_miniprograms": [MP],
                }
            )
            sim.admin.generate_rules(appid, count, miniprogram_appid=MP)
            pages.append(count // 200)
            blocks.append(oa_account(f"fleet-{i}", appid))
        floor_s = max(max(pages) / 5, sum(pages) / (5 * concurrency))
        with scratch_database(server, "qrsync_bench") as url:
            config = write_config(
                work / "fleet.toml", url, sim.url, "".join(blocks), rps=5, concurrency=concurrency
            )
            run_qrsync(config, "db", "upgrade")
            sim.admin.clear_calls()
            wall, _ = run_qrsync(config, "sync")
        limited = sum(1 for c in sim.admin.calls() if c.get("errcode") == 44990)
        value = wall / floor_s
        return Row(
            f"API-bound fleet, {accounts} accounts, 50 ms, 5 req/s",
            "wall ÷ rate-limit floor; 44990 seen",
            f"{ratio(value)}; {limited}",
            "≤ 1.15; 0",
            value <= 1.15 and limited == 0,
        )
    finally:
        sim.stop()


def memory_case(server: str, n: int, small: int, work: Path) -> Row:
    peaks = []
    for size in (small, n):
        sim = start_simulator(port=0, seed=17, rate_limit=False)
        try:
            big_account(sim, size)
            with scratch_database(server, "qrsync_bench") as url:
                config = write_config(work / f"mem{size}.toml", url, sim.url, oa_account())
                run_qrsync(config, "db", "upgrade")
                _, rss = run_qrsync(config, "sync", measure_rss=True)
                peaks.append(rss)
        finally:
            sim.stop()
    grown = (peaks[1] - peaks[0]) / 1024
    return Row(
        f"memory, {n:,} − {small:,} rules",
        "peak RSS difference",
        f"{grown:.1f} MB",
        "≤ 30 MB",
        grown <= 30,
    )


# --- the table -----------------------------------------------------------------------------------


def render(rows: list[Row], meta: dict[str, Any], sections: list[str]) -> str:
    lines = [
        "| case | what it measures | value | goal | result |",
        "|---|---|---|---|---|",
        *(f"| {r.case} | {r.measures} | {r.value} | {r.goal} | {RESULT[r.passed]} |" for r in rows),
    ]
    head = (
        f"# qrsync benchmark\n\n{meta['date']} · {meta['machine']} · PostgreSQL "
        f"{meta['postgres']} · {'quick' if meta['quick'] else 'full'} sizes\n\n"
    )
    return head + "\n".join(lines) + "\n" + "".join(f"\n{s}" for s in sections if s)


def concurrencies(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"concurrencies must be 1 or more: {text!r}")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument(
        "--fleet-only",
        action="store_true",
        help="run just the fleet case (the other rows of RESULTS.md are kept from the last run)",
    )
    parser.add_argument(
        "--fleet-accounts",
        type=int,
        help="accounts in the fleet case (default 10,000; 1,000 with --quick)",
    )
    parser.add_argument(
        "--fleet-latency-ms", type=int, default=100, help="latency of each WeChat call (100)"
    )
    parser.add_argument(
        "--fleet-concurrency",
        type=concurrencies,
        default=(32, 64),
        help="sync.concurrency of the measured no-op syncs, comma-separated (32,64); the "
        "latency-floor goal and the daemon use the first",
    )
    parser.add_argument(
        "--no-fleet-daemon", action="store_true", help="skip the daemon part of the fleet case"
    )
    args = parser.parse_args()
    fleet = FleetOptions(
        accounts=args.fleet_accounts or (1_000 if args.quick else 10_000),
        latency_ms=args.fleet_latency_ms,
        concurrencies=args.fleet_concurrency,
        daemon=not args.no_fleet_daemon,
    )
    if fleet.accounts < 10:
        parser.error("--fleet-accounts: at least 10")
    with scratch_server("bench") as server:
        return _bench(server, args.quick, fleet, args.fleet_only)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


FLEET_CASES = ("fleet no-op sync", "daemon,", "fleet overhead")
_META = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d UTC) · (?P<machine>.*?) · PostgreSQL "
    r"(?P<postgres>.*) · (?P<sizes>quick|full) sizes$"
)


def earlier_rows(out: Path) -> tuple[list[Row], dict[str, Any] | None]:
    """The rows of the other cases from the last run, for --fleet-only: results.json if there
    is one, else the table of RESULTS.md (whose fleet rows are replaced)."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        previous = json.loads((out / "results.json").read_text())
        if previous["rows"]:
            return [Row(**r) for r in previous["rows"]], previous["meta"]
    try:
        text = (out / "RESULTS.md").read_text()
    except OSError:
        return [], None
    rows, meta = [], None
    for line in text.splitlines():
        found = _META.match(line)
        if found and meta is None:
            meta = {**found.groupdict(), "quick": found["sizes"] == "quick"}
            del meta["sizes"]
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) != 5 or cells[4] not in ("PASS", "FAIL", "—"):
            continue
        if cells[0].startswith(FLEET_CASES):
            continue
        passed = {v: k for k, v in RESULT.items()}[cells[4]]
        rows.append(Row(cells[0], cells[1], cells[2], cells[3], passed))
    return rows, meta


def _bench(server: str, quick: bool, fleet: FleetOptions, fleet_only: bool) -> int:
    scale = 10 if quick else 1
    meta: dict[str, Any] = {**describe(server), "quick": quick}
    n = 100_000 // scale
    rows: list[Row] = []
    out = ROOT / "bench"
    with tempfile.TemporaryDirectory(prefix="qrsync-bench-") as tmp:
        work = Path(tmp)
        if fleet_only:
            rows, earlier = earlier_rows(out)
            meta = earlier or meta
        else:
            ingest, timings = ingest_cases(server, n, work)
            rows += ingest
            rows.append(dlt_case(server, n, work, timings["initial"] + timings["noop"]))
            rows.append(fleet_case(server, 50 if not quick else 10, work))
            rows.append(memory_case(server, n, 1_000 // scale, work))
        measured = run_fleet(fleet, work, say)
    fleet_rows = [Row(*row) for row in fleet_rows_of(measured)]
    fleet_meta = {**describe(server), "quick": quick}
    section = fleet_section(measured)
    table = render(rows + fleet_rows, meta, [section])
    if fleet_only and rows:
        table = table.replace(
            "\n\n| case",
            f"\n\nThe fleet rows and section: {fleet_meta['date']}, {fleet.accounts:,} accounts"
            " (make bench FLEET_ONLY=1); the other rows as the line above says.\n\n| case",
            1,
        )
    print(table)
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": [asdict(r) for r in rows],
                "fleet": {
                    "meta": fleet_meta,
                    "rows": [asdict(r) for r in fleet_rows],
                    "section": section,
                },
            },
            indent=2,
        )
        + "\n"
    )
    (out / "RESULTS.md").write_text(table)
    return 0 if all(r.passed is not False for r in rows + fleet_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
