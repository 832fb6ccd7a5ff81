"""Where a no-op `qrsync sync` of a fleet spends its CPU: cProfile of the real CLI, every thread.

``python bench/sync_profile.py [--accounts 1000]``: the fleet of the fleet case (:mod:`fleet`),
at no latency, on a private PostgreSQL; a first sync, then the no-op sync under cProfile with
one profiler per thread (the listings happen in the main thread, but runs that change rules and
the batches of unchanged runs in a pool's threads, which cProfile alone does not see), each
timing its thread's CPU (``time.thread_time``), merged. Prints the
top functions by own time (tottime) and writes the whole profile to ``--output`` (pstats) if
given.
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from fleet import QRSYNC, env, fleet_accounts, simulator, world, write_config
from private_pg import private_postgres

RUNNER = """
import cProfile, os, pstats, runpy, sys, threading, time
# Each thread's own CPU time (time.thread_time), not the wall clock: waiting for the network
# or the database costs no CPU, so it shows as nothing here.
main = cProfile.Profile(time.thread_time)
finished = []
original = threading.Thread.run
def run(self):
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        original(self)
    finally:
        profile.disable()
        finished.append(profile)
threading.Thread.run = run
sys.argv = ["qrsync", *sys.argv[2:]]  # runner.py qrsync --config ... sync
main.enable()
try:
    runpy.run_module("qrsync", run_name="__main__")
except SystemExit:
    pass
finally:
    main.disable()
    # Only the threads that ended: a profiler still running in another thread would be read
    # with this thread's clock.
    stats = pstats.Stats(main)
    for profile in list(finished):
        stats.add(profile)
    stats.dump_stats(os.environ["PROFILE_OUT"])
    print(f"threads profiled: {len(finished)} ended, {threading.active_count() - 1} still running",
          file=sys.stderr)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--output", type=Path, help="write the merged profile here (pstats)")
    args = parser.parse_args()
    accounts = fleet_accounts(args.accounts)
    with tempfile.TemporaryDirectory(prefix="qrsync-profile-") as tmp:
        work = Path(tmp)
        world_file = work / "world.json"
        world_file.write_text(json.dumps(world(accounts)))
        with private_postgres() as pg, simulator(world_file, 0, work / "sim.log") as sim:
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute('CREATE DATABASE "qrsync_profile"')
            url = pg.url.rsplit("/", 1)[0] + "/qrsync_profile"
            config = write_config(work / "c.toml", url, sim.url, accounts, args.concurrency)
            base = [*QRSYNC, "--config", str(config)]
            for step in (["db", "upgrade"], ["sync", "--json"]):
                subprocess.run([*base, *step], env=env(), capture_output=True, check=True)
            out = args.output or work / "noop.prof"
            runner = work / "runner.py"
            runner.write_text(RUNNER)
            done = subprocess.run(
                [sys.executable, str(runner), "qrsync", "--config", str(config), "sync", "--json"],
                env={**env(), "PROFILE_OUT": str(out)},
                capture_output=True,
                text=True,
            )
            summary = json.loads(done.stdout)
            print(done.stderr.strip().splitlines()[-1])
            print(
                f"no-op sync of {args.accounts:,} accounts at concurrency {args.concurrency}, "
                f"no latency: {summary['succeeded']} succeeded, {summary['failed']} failed"
            )
            text = io.StringIO()
            stats = pstats.Stats(str(out), stream=text)
            stats.sort_stats("tottime").print_stats(args.top)
            print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
