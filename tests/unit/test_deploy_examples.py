"""The deployment examples in deploy/ parse, and every qrsync command line in them is valid."""

from __future__ import annotations

import configparser
import shlex
import warnings
from pathlib import Path

import click
import pytest
import yaml

from qrsync.cli import cli
from qrsync.schedules import validate

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _remaining(ctx: click.Context) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # protected_args, Click < 9
        return [*ctx.protected_args, *ctx.args]


def _parses(args: list[str]) -> None:
    """Click accepts the arguments (options exist, values valid); nothing is run."""
    ctx = cli.make_context("qrsync", list(args), resilient_parsing=False)
    name, command, rest = cli.resolve_command(ctx, _remaining(ctx))
    assert command is not None, args
    if isinstance(command, click.Group):
        sub = command.make_context(name or "", rest, parent=ctx)
        _, subcommand, rest = command.resolve_command(sub, _remaining(sub))
        assert subcommand is not None
        subcommand.make_context("", rest, parent=sub)
    else:
        command.make_context(name or "", rest, parent=ctx)


def _qrsync_args(command_line: str) -> list[str]:
    words = shlex.split(command_line)
    index = next(i for i, w in enumerate(words) if w.endswith("/qrsync") or w == "qrsync")
    return [w for w in words[index + 1 :] if ">" not in w]  # shell redirections


def test_cron_line() -> None:
    lines = [
        line
        for line in (DEPLOY / "cron").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    validate(" ".join(fields[:5]))
    assert fields[5] == "qrsync"  # /etc/cron.d lines name the user
    command = fields[6].split("&&")[-1].split("|")[0]
    _parses(_qrsync_args(command))


@pytest.mark.parametrize(
    "unit", ["qrsync-sync.service", "qrsync-sync.timer", "qrsync-daemon.service"]
)
def test_systemd_units(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / unit).read_text())
    assert parser.has_section("Unit")
    if unit.endswith(".service"):
        service = parser["Service"]
        for key in ("ExecStart", "ExecStartPre"):
            if key in service:
                _parses(_qrsync_args(service[key]))
        if "daemon" in unit:
            assert service["KillSignal"] == "SIGTERM" and "HUP" in service["ExecReload"]
    else:
        assert "OnCalendar" in parser["Timer"]


def _pod_spec(document: dict) -> dict:  # type: ignore[type-arg]
    if document["kind"] == "CronJob":
        return document["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return document["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("manifest", ["cronjob.yaml", "deployment.yaml"])
def test_kubernetes_manifests(manifest: str) -> None:
    document = yaml.safe_load((DEPLOY / "kubernetes" / manifest).read_text())
    spec = _pod_spec(document)
    for container in spec["initContainers"] + spec["containers"]:
        args = [a.replace("$(POD_NAME)", "qrsync-0") for a in container["args"]]
        _parses(args)
    if document["kind"] == "CronJob":
        validate(document["spec"]["schedule"])
        assert document["spec"]["concurrencyPolicy"] == "Forbid"
    else:
        assert document["kind"] == "Deployment" and document["spec"]["replicas"] == 3
        daemon = spec["containers"][0]
        # Liveness never depends on the database (an outage must not restart the pods);
        # readiness does.
        assert daemon["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert daemon["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe"):
            assert daemon[probe]["httpGet"]["port"] in ("http", 9108)
        assert daemon["ports"][0]["containerPort"] == 9108
        assert spec["terminationGracePeriodSeconds"] >= 30
