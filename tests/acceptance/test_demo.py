"""`make demo` from a fresh copy of the repository, as a new user runs it: nothing configured,
no PostgreSQL server used, no WeChat credentials."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fresh_copy(target: Path) -> None:
    """The repository's files as a fresh clone would have them (tracked and new, not ignored)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.slow
def test_make_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "qrsync"
    clone.mkdir()
    _fresh_copy(clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRSYNC_", "PYTEST"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    try:
        demo = subprocess.run(
            ["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        out = demo.stdout
        assert "embedded PostgreSQL" in out and "Round 5" in out
        assert "legacy-mp: failed" in out and "40125" in out
        # The demo's notification channel: what the simulator's DingTalk robot received.
        assert "Notifications: the simulator's DingTalk robot received" in out
        assert "authorization needed" in out and "SECdemo-dingtalk-signing-secret" not in out
        # The platform's accounts are discovered, not listed: found, synced, one more mid-week.
        assert "Discovering platform wx00000000000000dc's authorizers" in out
        assert "add: 2: oa-wx00000000000000d4-wx00000000000000d1, mp-wx00000000000000d6" in out
        assert "not synced: wx00000000000000d7: a subscription account" in out
        assert "not synced: wx00000000000000d8: a personal mini program" in out
        assert "add: 1: mp-wx00000000000000d9" in out
        assert "oa-wx00000000000000d4-wx00000000000000d1: succeeded" in out
        assert "mp-wx00000000000000d9: succeeded" in out
        for heading in ("Sync health", "Rules by state", "Publications since", "Publish quota"):
            assert heading in out
        assert (clone / "qrsync-demo-report.html").stat().st_size > 10_000
        url = re.search(r'psql "([^"]+)"', out)
        assert url, out[-2000:]
        with psycopg.connect(url.group(1)) as conn:
            publications = conn.execute(
                "SELECT count(*), count(DISTINCT CAST(published_observed_at AS date))"
                " FROM qrsync.publications WHERE NOT first_seen_published"
            ).fetchone()
            assert publications is not None and publications[0] >= 40 and publications[1] == 4
            big = conn.execute(
                "SELECT count(*) FROM qrsync.current_rules WHERE account = 'brand-oa'"
            ).fetchone()
            assert big is not None and big[0] > 10_000
        again = subprocess.run(
            [".venv/bin/qrsync", "demo", "--rounds", "2"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "Reset the demo database" in again.stdout
    finally:
        subprocess.run(
            [str(clone / ".venv/bin/qrsync"), "db", "stop"],
            cwd=clone,
            env=env,
            capture_output=True,
            timeout=120,
        )
