"""What users expect of a command line (dbt, Alembic, psql, exporters): `--version`, `-h` on
every command, and on a terminal a progress display that moves with the pages and rules."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from helpers import OA_MP, OA_SECRET, oa_account, oa_world, toml_config

from qrsync import __version__
from qrsync.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


def test_version_long_and_short() -> None:
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(cli, [flag])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"qrsync {__version__}"


@pytest.mark.parametrize("command", _commands(cli), ids=" ".join)
def test_dash_h_is_help_everywhere(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "-h, --help" in result.output


def _read_terminal(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """Everything the process writes to its terminal until it exits (bounded in time)."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    return b"".join(chunks)


def test_progress_on_a_terminal_counts_pages_and_rules(
    simulator: Any, qrsync: Any, tmp_path: Path
) -> None:
    simulator.admin.add_account(oa_world(rule_sets=[{"miniprogram_appid": OA_MP, "count": 2000}]))
    config = qrsync.write_config(toml_config(simulator.url, oa_account()))
    env = {**os.environ, "OA_SECRET": OA_SECRET, "COLUMNS": "160", "TERM": "xterm"}
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "sync"],
        stdin=child, stdout=child, stderr=child, env=env, close_fds=True,
    )  # fmt: skip
    os.close(child)
    try:
        shown = _read_terminal(main, proc, 120).decode("utf-8", "replace")
    finally:
        os.close(main)
        proc.wait(timeout=60)
    assert proc.returncode == 0, shown
    # 2,000 rules at 200 a page, 5 requests a second: the display is refreshed on the way
    assert "of 2,000 rules" in shown, shown[-2000:]
    assert "page " in shown and "oa: succeeded" in shown


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_as_the_readme_gives_it(shell: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"_QRSYNC_COMPLETE={shell}_source qrsync" in readme
    script = subprocess.run(
        [sys.executable, "-m", "qrsync"],
        env={**os.environ, "_QRSYNC_COMPLETE": f"{shell}_source"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert script.returncode == 0 and "_qrsync_completion" in script.stdout, script.stderr
    # and the completions themselves: the commands, then a group's subcommands
    words = subprocess.run(
        [sys.executable, "-m", "qrsync"],
        env={**os.environ, "_QRSYNC_COMPLETE": "bash_complete", "COMP_WORDS": "qrsync db ",
             "COMP_CWORD": "2"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "upgrade" in words.stdout and "downgrade" in words.stdout, words.stdout


def test_account_names_complete_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "qrsync.toml"
    config.write_text(
        "".join(
            f'[[accounts]]\nname = "{name}"\nkind = "miniprogram"\nappid = "wx{i}"\n'
            'token = { source = "static", token_env = "UNSET_HERE" }\n'
            for i, name in enumerate(("brand-mp", "brand-oa", "shop"))
        )
    )
    words = subprocess.run(
        [sys.executable, "-m", "qrsync"],
        env={**os.environ, "_QRSYNC_COMPLETE": "bash_complete",
             "COMP_WORDS": f"qrsync --config {config} sync --account br", "COMP_CWORD": "5"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert words.stdout.split() == ["plain,brand-mp", "plain,brand-oa"], words.stdout
