"""``qrsync simulator``: run the WeChat API simulator in the foreground until Ctrl-C or SIGTERM.

With the default world it writes a qrsync configuration and the (fake) secrets it names to two
files (config_files.py says which files it rewrites, keeps or refuses), or with ``--stdout``
prints both on standard output instead; what it does goes to standard error.
"""

from __future__ import annotations

import shlex
import signal
import threading
import tomllib
from pathlib import Path
from types import FrameType

import click
from click.core import ParameterSource

from qrsync.simulator import config_files
from qrsync.simulator.default_world import default_world, qrsync_config, secret_exports
from qrsync.simulator.platform import PLATFORM, PLATFORM_SECRET, PLATFORM_TICKET, platform_world
from qrsync.simulator.server import RunningSimulator, start_simulator
from qrsync.simulator.world import WorldError, load_world_file

DEFAULT_CONFIG = Path("qrsync-simulator.toml")
DEFAULT_ENV = Path("qrsync-simulator.env")


class CannotListen(click.ClickException):
    """The address is taken or not this machine's: the command could not run (exit 2)."""

    exit_code = 2


class CannotWrite(click.ClickException):
    """A file to write is somebody else's or cannot be written: the command could not run."""

    exit_code = 2


@click.command(name="simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8088, show_default=True,
    help="Port to listen on; 0 picks a free one.",
)  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of tokens and rules.")
@click.option(
    "--world", "world_path", type=click.Path(dir_okay=False, path_type=Path),
    help="World file (TOML, or JSON if it ends in .json); default: the built-in default world.",
)  # fmt: skip
@click.option(
    "--platform", "platform_size", type=click.IntRange(1, 100_000),
    help="Serve a third-party platform of N authorizers of every kind instead of the default "
    "world (POST /sim/components/<appid>/churn makes them come and go); prints the [component] "
    "table and the fake secrets that discover them.",
)  # fmt: skip
@click.option("--no-rate-limit", is_flag=True, help="Do not answer 44990 above 5 requests/s.")
@click.option(
    "--latency-ms", type=click.IntRange(min=0), default=0, show_default=True,
    help="Added to every WeChat answer.",
)  # fmt: skip
@click.option(
    "--write-config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
    help=f"Where to write qrsync's configuration of the default world (./{DEFAULT_CONFIG}).",
)  # fmt: skip
@click.option(
    "--write-env", "env_path", type=click.Path(path_type=Path), default=DEFAULT_ENV,
    help=f"Where to write the fake secrets it names, NAME=value, mode 0600 (./{DEFAULT_ENV}).",
)  # fmt: skip
@click.option(
    "--stdout", "to_stdout", is_flag=True,
    help="Print the configuration and `export` lines of the secrets on standard output "
    "instead of writing files.",
)  # fmt: skip
@click.pass_context
def simulator_command(
    ctx: click.Context,
    host: str,
    port: int,
    seed: int,
    world_path: Path | None,
    platform_size: int | None,
    no_rate_limit: bool,
    latency_ms: int,
    config_path: Path,
    env_path: Path,
    to_stdout: bool,
) -> None:
    """Serve a simulated api.weixin.qq.com (tokens and QR-code jump rules) to try qrsync against.

    With the default world it writes a qrsync configuration syncing every simulated account
    (./qrsync-simulator.toml; add a database) and the fake secrets it names
    (./qrsync-simulator.env), then says on standard error how to use them. It rewrites those
    files at each start, but never a file it did not write, nor one edited since it wrote it.
    The admin API under /sim/ shapes the world and injects faults.
    """
    given = {
        name
        for name in ("config_path", "env_path", "to_stdout")
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }
    if world_path is not None and given:
        raise click.UsageError(
            "--write-config, --write-env and --stdout describe the default world; "
            "a --world file's accounts are yours to configure"
        )
    if platform_size is not None and (world_path is not None or given):
        raise click.UsageError(
            "--platform serves a world of its own and prints its [component] table: drop "
            "--world, --write-config, --write-env and --stdout"
        )
    if to_stdout and given & {"config_path", "env_path"}:
        raise click.UsageError("--stdout writes no file: drop it or --write-config / --write-env")
    writes_files = world_path is None and platform_size is None and not to_stdout
    if writes_files:
        if config_path.resolve() == env_path.resolve():
            raise click.UsageError("--write-config and --write-env name the same file")
        try:
            config_files.check_writable(config_path, "--write-config")
            config_files.check_writable(env_path, "--write-env")
        except config_files.NotOurs as exc:
            raise CannotWrite(str(exc)) from exc
    try:
        if platform_size is not None:
            world = platform_world(platform_size, seed=seed)
        elif world_path is not None:
            world = load_world_file(world_path)
        else:
            world = default_world()
    except WorldError as exc:
        raise click.BadParameter(str(exc), param_hint="--world") from exc
    try:
        sim = start_simulator(
            host=host,
            port=port,
            seed=seed,
            world=world,
            rate_limit=not no_rate_limit,
            latency_ms=latency_ms,
        )
    except WorldError as exc:
        raise click.BadParameter(str(exc), param_hint="--world") from exc
    except OSError as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from exc

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        say(f"WeChat API simulator listening on {sim.url} (seed {seed}; Ctrl-C stops it)")
        if platform_size is not None:
            _say_platform(sim, platform_size)
        elif world_path is not None:
            say(f"world: {world_path} (no qrsync configuration written for it)")
        elif to_stdout:
            click.echo(qrsync_config(sim.url))
            click.echo("# the simulated secrets (fake, for this simulator only):")
            click.echo("\n".join(secret_exports()))
        else:
            _write_files(sim, config_path, env_path)
        while not stopping.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    say("simulator stopped")


def say(line: str) -> None:
    """What the simulator does goes to standard error: standard output is for --stdout."""
    click.echo(line, err=True)


def _say_platform(sim: RunningSimulator, size: int) -> None:
    """How to point qrsync at the platform: its [component] table and its fake secrets."""
    say(
        f"a platform of {size:,} authorizers of every kind; discover them with this in qrsync.toml:"
    )
    say(f'  [api]\n  base_url = "{sim.url}"')
    say(f'  [component]\n  appid = "{PLATFORM}"\n  appsecret_env = "PLATFORM_SECRET"')
    say('  verify_ticket_env = "PLATFORM_TICKET"\n  discover = true')
    say("and its fake secrets in the environment:")
    say(f"  export PLATFORM_SECRET={PLATFORM_SECRET} PLATFORM_TICKET={PLATFORM_TICKET}")
    say(f"change it: curl -X POST {sim.url}/sim/components/{PLATFORM}/churn "
        "-d '{\"revoke\": 5, \"authorize\": 5, \"change\": 5}'")  # fmt: skip


def _write_files(sim: RunningSimulator, config_path: Path, env_path: Path) -> None:
    """Write (or keep) both files and say where they are and how to use them."""
    config = _write(config_path, config_files.config_body(sim.url, config_path, env_path), False)
    env = _write(env_path, config_files.env_body(config_path, env_path), True)
    for written, what in (
        (config, "qrsync configuration of the simulated accounts; add a database"),
        (env, "their fake secrets, mode 0600"),
    ):
        verb = "kept, as edited since the simulator wrote it," if written.kept else "wrote"
        say(f"{verb} {written.path} ({what})")
    if config.kept:
        stale = _stale_base_url(config_path, sim.url)
        if stale:
            say(f"  its api.base_url is {stale}, not {sim.url}: remove it and start again")
    say("use them:")
    say(f"  set -a; . {config_files.shell_path(env_path)}; set +a")
    say(f"  qrsync --config {shlex.quote(str(config_path))} db upgrade   # then sync, report, ...")


def _write(path: Path, body: str, private: bool) -> config_files.Written:
    try:
        return config_files.write(path, body, private)
    except config_files.NotOurs as exc:  # it became somebody else's since the start
        raise CannotWrite(str(exc)) from exc
    except OSError as exc:
        raise CannotWrite(f"cannot write {path}: {exc.strerror or exc}") from exc


def _stale_base_url(config_path: Path, url: str) -> str | None:
    """The kept configuration's api.base_url when it is not the simulator's ``url``."""
    try:
        document = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    api = document.get("api")
    base_url = api.get("base_url") if isinstance(api, dict) else None
    return str(base_url) if base_url != url else None
