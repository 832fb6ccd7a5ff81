"""Every command is documented (it has help, and the README names it), and every test the fault
matrix in docs/reliability.md names exists."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qrsync.cli import cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RELIABILITY = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            names += _commands(command, full + " ")
        else:
            names.append(full)
    return names


@pytest.mark.parametrize("command", _commands(cli))
def test_command_has_help_and_is_in_the_readme(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert f"qrsync {command}" in README, f"README does not document `qrsync {command}`"


def _named_tests() -> list[tuple[str, str | None]]:
    """(file, test or None) for every test docs/reliability.md names, e.g.
    `test_api_faults.py::test_x` (under tests/acceptance/) or `tests/fuzz/test_fuzz_config.py`."""
    found = []
    for ref in re.findall(r"`((?:tests/[\w/]+/)?test_\w+\.py)(?:::(test_\w+))?`", RELIABILITY):
        found.append(ref if ref[1] else (ref[0], None))
    return found


def test_every_test_the_fault_matrix_names_exists() -> None:
    named = _named_tests()
    assert len(named) >= 40
    for file, test in named:
        path = ROOT / (file if file.startswith("tests/") else f"tests/acceptance/{file}")
        assert path.exists(), f"docs/reliability.md names {file}, which does not exist"
        if test:
            assert f"def {test}(" in path.read_text(encoding="utf-8"), (
                f"docs/reliability.md names {file}::{test}, which does not exist"
            )
