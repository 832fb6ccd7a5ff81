"""The Dockerfile, checked by reading it (no registry is reachable to build it here): a slim
Python base, a non-root user, the package without the embedded PostgreSQL, ``qrsync`` as the
entry point, a HEALTHCHECK on the daemon's /healthz, and what the Kubernetes examples expect."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from qrsync.config import DaemonConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_the_image_runs_a_production_install_as_a_non_root_user() -> None:
    final = _final_stage()
    base = final[0][1]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    installs = [args for keyword, args in _instructions() if keyword == "RUN" and "pip" in args]
    assert installs, "the package is installed with pip"
    assert not any("embedded" in args or "[dev]" in args for args in installs), installs
    assert any("pip wheel" in args and args.rstrip().endswith(" .") for args in installs)
    for keyword, args in _instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"


def test_the_entry_point_is_qrsync_and_the_health_check_asks_healthz() -> None:
    final = dict(_final_stage())
    assert json.loads(final["ENTRYPOINT"]) == ["qrsync"]
    assert json.loads(final["CMD"]) == ["daemon"]
    port = DaemonConfig().http_port
    assert final["EXPOSE"] == str(port)
    assert "HEALTHCHECK" in final
    assert f"http://127.0.0.1:{port}/healthz" in final["HEALTHCHECK"]


def _containers(node: object) -> list[dict[str, object]]:
    """Every container and init container of a manifest."""
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += [c for c in value if isinstance(c, dict)]
            else:
                found += _containers(value)
    elif isinstance(node, list):
        for item in node:
            found += _containers(item)
    return found


def test_the_kubernetes_examples_run_the_image_as_its_user() -> None:
    uid = int([args for keyword, args in _final_stage() if keyword == "USER"][-1].split(":")[0])
    for name in ("deployment.yaml", "cronjob.yaml"):
        text = (ROOT / "deploy" / "kubernetes" / name).read_text(encoding="utf-8")
        assert "Dockerfile" in text, f"{name} should say where its image comes from"
        assert {int(v) for v in re.findall(r"runAsUser: (\d+)", text)} <= {uid}, name
        containers = [c for doc in yaml.safe_load_all(text) for c in _containers(doc)]
        assert containers, name
        for container in containers:
            # the image's entry point is qrsync: the arguments are qrsync's own
            args = container.get("args")
            assert isinstance(args, list) and args[0] != "qrsync", (name, args)
            assert "command" not in container, (name, container)
