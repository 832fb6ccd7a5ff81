"""``qrsync simulator``: run the WeChat API simulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from qrsync.simulator.default_world import default_world, qrsync_config, secret_exports
from qrsync.simulator.server import start_simulator
from qrsync.simulator.world import WorldError, load_world_file


class CannotListen(click.ClickException):
    """The address is taken or not this machine's: the command could not run (exit 2)."""

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
@click.option("--no-rate-limit", is_flag=True, help="Do not answer 44990 above 5 requests/s.")
@click.option(
    "--latency-ms", type=click.IntRange(min=0), default=0, show_default=True,
    help="Added to every WeChat answer.",
)  # fmt: skip
def simulator_command(
    host: str, port: int, seed: int, world_path: Path | None, no_rate_limit: bool, latency_ms: int
) -> None:
    """Serve a simulated api.weixin.qq.com (tokens and QR-code jump rules) to try qrsync against.

    With the default world it prints a qrsync.toml fragment and the environment variables that
    sync every simulated account; the admin API under /sim/ shapes the world and injects faults.
    """
    try:
        world = load_world_file(world_path) if world_path is not None else default_world()
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
        click.echo(f"WeChat API simulator listening on {sim.url} (seed {seed}; Ctrl-C stops it)")
        if world_path is None:
            click.echo("\n# qrsync.toml for the simulated accounts:\n")
            click.echo(qrsync_config(sim.url))
            click.echo("# the simulated secrets (fake, for this simulator only):")
            click.echo("\n".join(secret_exports()))
        while not stopping.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sim.stop()
    click.echo("simulator stopped")
