"""`qrsync simulator`'s two files (the configuration and the fake secrets), its banner on standard
error, --stdout, and the files it refuses or keeps."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from click.testing import CliRunner

from qrsync.config import load_config
from qrsync.simulator import RunningSimulator, config_files
from qrsync.simulator import command as command_module
from qrsync.simulator.command import simulator_command
from qrsync.simulator.default_world import SECRET_ENV
from qrsync.simulator.platform import PLATFORM, PLATFORM_SECRET, PLATFORM_TICKET

WAIT_S = 60.0
CONFIG = "qrsync-simulator.toml"
ENV = "qrsync-simulator.env"


class Command:
    """`python -m qrsync simulator --port 0 ...` in a directory, its output read line by line
    in threads so that every wait for a line is bounded."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qrsync", "simulator", "--port", "0", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.lines: dict[str, queue.Queue[str | None]] = {
            "out": queue.Queue(),
            "err": queue.Queue(),
        }
        self.seen: dict[str, list[str]] = {"out": [], "err": []}
        for name, stream in (("out", self.process.stdout), ("err", self.process.stderr)):
            threading.Thread(target=self._pump, args=(stream, name), daemon=True).start()

    def _pump(self, stream: IO[str], name: str) -> None:
        for line in stream:
            self.lines[name].put(line.rstrip("\n"))
        self.lines[name].put(None)

    def read_until(self, name: str, pattern: str) -> re.Match[str]:
        """Lines of stdout ("out") or stderr ("err") until one matches ``pattern``."""
        deadline = time.monotonic() + WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines[name].get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen[name].append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} in std{name}: {self.seen}")

    def url(self) -> str:
        return self.read_until("err", r"listening on (http://127\.0\.0\.1:\d+) ")[1]

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the rest of its output is read."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=WAIT_S)
        for name in ("out", "err"):
            while (line := self.lines[name].get(timeout=WAIT_S)) is not None:
                self.seen[name].append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    """Starts `qrsync simulator` in tmp_path; whatever is left running is killed afterwards."""
    started: list[Command] = []

    def run(*args: str) -> Command:
        started.append(Command(tmp_path, *args))
        return started[-1]

    yield run
    for command in started:
        command.kill()


def secrets_of(path: Path) -> dict[str, str]:
    """The NAME=value lines of a secrets file, as `set -a; . FILE; set +a` would set them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_writes_the_configuration_and_the_secrets_and_says_how_to_use_them(
    start: Callable[..., Command], tmp_path: Path
) -> None:
    command = start()
    url = command.url()
    command.read_until("err", r"^  qrsync --config")
    config, env = tmp_path / CONFIG, tmp_path / ENV
    assert requests.get(f"{url}/sim/stats", timeout=10).status_code == 200
    assert command.stop() == 0
    banner = "\n".join(command.seen["err"])
    assert f"wrote {CONFIG} (" in banner and f"wrote {ENV} (" in banner
    assert "set -a; . ./qrsync-simulator.env; set +a" in banner
    assert "qrsync --config qrsync-simulator.toml db upgrade" in banner
    assert command.seen["err"][-1] == "simulator stopped"
    assert command.seen["out"] == []  # standard output is for --stdout only
    for path in (config, env):
        assert path.read_text(encoding="utf-8").startswith(config_files.MARKER)
    assert env.stat().st_mode & 0o777 == 0o600
    assert secrets_of(env) == dict(SECRET_ENV)
    document = tomllib.loads(config.read_text(encoding="utf-8"))
    assert document["api"]["base_url"] == url
    assert len(document["accounts"]) == 4
    assert "database" not in document  # the reader adds it: commented out in the file
    assert "# [database]\n# embedded = true" in config.read_text(encoding="utf-8")


def test_the_configuration_loads_as_it_is_once_a_database_is_added(tmp_path: Path) -> None:
    config, env = tmp_path / CONFIG, tmp_path / ENV
    url = "http://127.0.0.1:8088"
    config_files.write(config, config_files.config_body(url, config, env), private=False)
    config_files.write(env, config_files.env_body(config, env), private=True)
    database = "postgresql://postgres@127.0.0.1:5432/test"
    loaded = load_config(config, {**secrets_of(env), "QRSYNC_DATABASE_URL": database})
    assert (loaded.api.base_url, loaded.database.url) == (url, database)
    assert [a.name for a in loaded.accounts] == [
        "sim-mp",
        "sim-oa",
        "sim-oa-platform",
        "sim-mp-central",
    ]
    # Or the embedded PostgreSQL: the two commented lines uncommented.
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("# [database]\n# embedded", "[database]\nembedded"), "utf-8")
    assert load_config(config, secrets_of(env)).database.embedded


def test_stdout_prints_the_configuration_and_exports_instead_of_files(
    start: Callable[..., Command], tmp_path: Path
) -> None:
    command = start("--stdout")
    url = command.url()
    # Each line reaches a pipe while the simulator runs: nothing waits in a buffer.
    command.read_until("out", r"^export QRSYNC_VERIFY_TICKET=")
    assert command.process.poll() is None
    assert command.stop() == 0
    printed = "\n".join(command.seen["out"])
    assert f'base_url = "{url}"' in printed
    assert "export SIM_MP_SECRET=sim-secret-mp" in printed
    assert not any(line.startswith(("WeChat", "wrote")) for line in command.seen["out"])
    assert list(tmp_path.iterdir()) == []  # no file written


def test_a_restart_rewrites_its_files_but_keeps_a_configuration_edited_since(
    start: Callable[..., Command], tmp_path: Path
) -> None:
    config, env = tmp_path / CONFIG, tmp_path / ENV
    first = start()
    first_url = first.url()
    first.read_until("err", r"^  qrsync --config")
    assert first.stop() == 0
    second = start()
    second_url = second.url()
    second.read_until("err", r"^  qrsync --config")
    assert second.stop() == 0
    assert f"wrote {CONFIG} (" in "\n".join(second.seen["err"])
    assert tomllib.loads(config.read_text("utf-8"))["api"]["base_url"] == second_url != first_url
    # The reader adds the embedded database: the next start keeps the file and says its URL is
    # now stale; the secrets file, unchanged, is rewritten.
    edited = config.read_text("utf-8").replace("# [database]\n# embedded", "[database]\nembedded")
    config.write_text(edited, encoding="utf-8")
    third = start()
    third_url = third.url()
    third.read_until("err", r"^  qrsync --config")
    assert third.stop() == 0
    banner = "\n".join(third.seen["err"])
    assert f"kept, as edited since the simulator wrote it, {CONFIG}" in banner
    assert f"its api.base_url is {second_url}, not {third_url}" in banner
    assert f"wrote {ENV} (" in banner
    assert config.read_text("utf-8") == edited
    assert env.stat().st_mode & 0o777 == 0o600


def test_a_file_it_did_not_write_is_refused_before_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "qrsync.toml"
    mine.write_text('[database]\nurl = "postgresql://me@db/prod"\n', encoding="utf-8")
    result = CliRunner().invoke(simulator_command, ["--port", "0", "--write-config", str(mine)])
    assert result.exit_code == 2
    assert f"{mine} exists and is not the simulator's: left alone" in result.output
    assert "--write-config PATH" in result.output and "--stdout" in result.output
    assert "listening" not in result.output
    assert mine.read_text(encoding="utf-8") == '[database]\nurl = "postgresql://me@db/prod"\n'
    assert not (tmp_path / ENV).exists()
    (tmp_path / ENV).write_text("SECRET=mine\n", encoding="utf-8")
    result = CliRunner().invoke(simulator_command, ["--port", "0"])
    assert result.exit_code == 2 and f"{ENV} exists and is not the simulator's" in result.output
    assert not (tmp_path / CONFIG).exists()
    result = CliRunner().invoke(simulator_command, ["--port", "0", "--write-env", "no/such.env"])
    assert result.exit_code == 2 and "directory no does not exist" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stdout", "--write-config", "x.toml"], "--stdout writes no file"),
        (["--write-config", "same", "--write-env", "same"], "name the same file"),
        (["--world", "world.toml", "--stdout"], "describe the default world"),
    ],
    ids=["stdout-and-a-file", "one-file-for-both", "world-file"],
)
def test_options_that_contradict_each_other_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(simulator_command, ["--port", "0", *args])
    assert result.exit_code == 2 and message in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_secrets_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        env, config = tmp_path / ENV, tmp_path / CONFIG
        config_files.write(env, config_files.env_body(config, env), private=True)
        config_files.write(config, "[api]\n", private=False)
    finally:
        os.umask(previous)
    assert env.stat().st_mode & 0o777 == 0o600
    assert config.stat().st_mode & 0o777 == 0o666  # no secret in it: the umask decides
    assert sorted(p.name for p in tmp_path.iterdir()) == [ENV, CONFIG]  # no temporary left


def test_whose_a_file_is(tmp_path: Path) -> None:
    path = tmp_path / CONFIG
    assert config_files.state(path) == "absent"
    config_files.write(path, "[api]\n", private=False)
    assert config_files.state(path) == "ours"
    assert config_files.write(path, "[sync]\n", private=False).kept is False
    assert path.read_text(encoding="utf-8").endswith("\n[sync]\n")
    path.write_text(path.read_text(encoding="utf-8") + "# mine\n", encoding="utf-8")
    assert config_files.state(path) == "edited"
    assert config_files.write(path, "[api]\n", private=False).kept is True
    assert path.read_text(encoding="utf-8").endswith("# mine\n")
    path.write_text("[api]\n", encoding="utf-8")
    assert config_files.state(path) == "foreign"
    with pytest.raises(config_files.NotOurs):
        config_files.write(path, "[api]\n", private=False)
    assert config_files.state(tmp_path) == "foreign"  # a directory


def test_a_file_that_cannot_be_written_stops_the_simulator_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    started: list[RunningSimulator] = []
    real_start = command_module.start_simulator

    def start_and_remember(**kwargs: Any) -> RunningSimulator:
        started.append(real_start(**kwargs))
        return started[-1]

    def refuse(path: Path, body: str, private: bool) -> config_files.Written:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(command_module, "start_simulator", start_and_remember)
    monkeypatch.setattr(config_files, "write", refuse)
    result = CliRunner().invoke(simulator_command, ["--port", "0"])
    assert result.exit_code == 2
    assert f"cannot write {CONFIG}: Permission denied" in result.output
    (sim,) = started
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/sim/stats", timeout=5)  # stopped: nothing listens any more


def test_platform_serves_thousands_of_authorizers_and_says_how_to_discover_them(
    start: Callable[..., Command], tmp_path: Path
) -> None:
    command = start("--platform", "1200", "--seed", "3")
    url = command.url()
    command.read_until("err", r"^change it: curl -X POST")
    banner = "\n".join(command.seen["err"])
    assert "a platform of 1,200 authorizers" in banner and "discover = true" in banner
    component = {
        "component_appid": PLATFORM,
        "component_appsecret": PLATFORM_SECRET,
        "component_verify_ticket": PLATFORM_TICKET,
    }
    ct = requests.post(
        f"{url}/cgi-bin/component/api_component_token", json=component, timeout=10
    ).json()["component_access_token"]
    page = requests.post(
        f"{url}/cgi-bin/component/api_get_authorizer_list",
        params={"component_access_token": ct},
        json={"component_appid": PLATFORM, "offset": 1000, "count": 500},
        timeout=10,
    ).json()
    assert page["total_count"] == 1200 and len(page["list"]) == 200
    assert command.stop() == 0
    assert list(tmp_path.iterdir()) == []  # no configuration written for it


def test_platform_goes_with_no_world_file_nor_files_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(simulator_command, ["--port", "0", "--platform", "5", "--stdout"])
    assert result.exit_code == 2 and "--platform" in result.output
