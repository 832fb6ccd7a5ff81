"""`qrsync init`: a commented configuration for each case that qrsync itself accepts, no secret
in it, the variables to set printed beside it, never written over an existing file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qrsync.config import load_config

CASES = {
    "--miniprogram": ["--appid", "wx1000000000000001"],
    "--service-account": [
        "--appid",
        "wx2000000000000002",
        "--miniprogram-appid",
        "wx1000000000000009",
    ],
    "--platform": ["--appid", "wx00000000000000c9", "--miniprogram-appid", "wx5000000000000001"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_init_writes_a_configuration_qrsync_accepts(qrsync: Any, tmp_path: Path, case: str) -> None:
    path = tmp_path / "new.toml"
    result = qrsync("init", case, *CASES[case], "--database-url", "postgresql://db/x",
                    config=path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output and "qrsync" in result.output
    text = path.read_text(encoding="utf-8")
    assert max(len(line) for line in text.splitlines()) <= 100
    config = load_config(path, environ={}, check_secrets=False)
    assert config.database.url == "postgresql://db/x"
    assert len(config.accounts) == 1
    exports = [line.strip() for line in result.output.splitlines() if "export " in line]
    named = [line.split()[1].split("=")[0] for line in exports]
    assert named and all(name in text for name in named), (named, text)
    assert "fill in" not in text  # every AppID was given
    for step in ("check", "db upgrade", "sync"):
        assert f"--config {path} {step}" in result.output


def test_init_without_appids_leaves_them_to_fill_in_and_is_still_valid(
    qrsync: Any, tmp_path: Path
) -> None:
    path = tmp_path / "q.toml"
    assert qrsync("init", "--service-account", "--embedded", config=path).exit_code == 0
    text = path.read_text(encoding="utf-8")
    assert text.count("fill in: the AppID") == 2
    config = load_config(path, environ={}, check_secrets=False)
    assert config.database.embedded and config.database.url is None


def test_init_never_overwrites(qrsync: Any, tmp_path: Path) -> None:
    path = tmp_path / "qrsync.toml"
    path.write_text("# mine\n")
    result = qrsync("init", config=path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"qrsync: {path} exists; qrsync init never overwrites a configuration: move it away, "
        "or write elsewhere with --config PATH"
    )
    assert path.read_text() == "# mine\n"


def test_init_refuses_two_databases(qrsync: Any, tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    result = qrsync("init", "--embedded", "--database-url", "postgresql://db/x", config=path)
    assert result.exit_code == 2 and "keep one" in result.stderr
    assert not path.exists()
