"""A real Prometheus (Debian's `prometheus`) scraping a real `qrsync daemon` (one healthy
account, one failing, against the simulator) with the alerting rules of deploy/prometheus/
loaded: every rule evaluates without error, every metric the rules read has data, and the
failing account shows in what they read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helpers import MP, MP_SECRET, mp_account, mp_world, require_tool, rule, toml_config

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "qrsync-alerts.yml"
PROMETHEUS = Path("/usr/bin/prometheus")
OPERATIONS = ROOT / "deploy" / "grafana" / "dashboards" / "qrsync-operations.json"
MAY_BE_EMPTY = {"Run duration (95th percentile)"}
"""Panels whose query may answer nothing a few seconds after start (a quantile of rates over
one minute of a young histogram); every query must still be valid PromQL."""
BROKEN = "wx1000000000000077"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, what: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def daemon_port(simulator: Any, qrsync: Any, tmp_path: Path) -> Iterator[int]:
    simulator.admin.add_account(mp_world(pub_quota=7))
    simulator.admin.put_rules(MP, [rule(f"https://p.example.com/{i}") for i in range(3)])
    simulator.admin.add_account(mp_world(appid=BROKEN, secret="right-one"))
    config = qrsync.write_config(
        toml_config(
            simulator.url,
            mp_account() + mp_account("broken", BROKEN, "BROKEN_SECRET"),
            extra='[daemon]\nschedule = "@every 2s"\nlease_s = 5\n',
        )
    )
    assert qrsync("db", "upgrade").exit_code == 0
    port = _free_port()
    env = {**os.environ, "MP_SECRET": MP_SECRET, "BROKEN_SECRET": "a-wrong-secret"}
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrsync", "--config", str(config), "daemon", "--name", "r1",
         "--http-port", str(port), "--log-format", "json"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


@pytest.fixture
def prometheus(daemon_port: int) -> Iterator[str]:
    require_tool(PROMETHEUS, "prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="qrsync-prometheus-"))
    shutil.copy(RULES, workdir / "qrsync-alerts.yml")
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["qrsync-alerts.yml"],
                "scrape_configs": [
                    {"job_name": "qrsync", "static_configs": [
                        {"targets": [f"127.0.0.1:{daemon_port}"]}
                    ]}
                ],
            }
        )
    )  # fmt: skip
    port = _free_port()
    proc = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _rule_groups(base: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"][
        "groups"
    ]
    return groups


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/-/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_prometheus_scrapes_a_daemon_and_evaluates_every_rule(prometheus: str) -> None:
    _wait(lambda: _ready(prometheus), "Prometheus to be ready")
    _wait(lambda: _query(prometheus, 'up{job="qrsync"} == 1'), "the daemon to be scraped")
    failed = 'qrsync_runs_total{account="broken",status="failed"}'
    _wait(lambda: _query(prometheus, failed), "a failed run of 'broken' to be scraped")
    _wait(lambda: _query(prometheus, "qrsync_quota_left"), "the database gauges")
    groups = _wait(
        lambda: [
            g for g in _rule_groups(prometheus)
            if all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown"
                   for r in g["rules"])
        ],
        "every rule to be evaluated",
    )  # fmt: skip
    evaluated = {r["name"]: r for g in groups for r in g["rules"]}
    alerts = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert set(evaluated) == {a["alert"] for a in alerts}
    for name, state in evaluated.items():
        assert state["health"] == "ok", (name, state.get("lastError"))
    for alert in alerts:  # each expression, and every metric it reads, through the HTTP API
        _query(prometheus, alert["expr"])
    for metric in (
        "qrsync_build_info",
        "qrsync_last_success_timestamp_seconds",
        "qrsync_schedule_period_seconds",
        "qrsync_runs_total",
        "qrsync_quota_left",
        "qrsync_api_calls_total",
        "qrsync_lease_takeovers_total",
        "qrsync_slots_skipped_total",
    ):
        assert _query(prometheus, metric), f"no data for {metric}"
    quota = _query(prometheus, 'max by (account) (qrsync_quota_left{account="mp"})')
    assert quota and float(quota[0]["value"][1]) == 7.0
    periods = _query(prometheus, "qrsync_schedule_period_seconds")
    assert {p["metric"]["account"]: float(p["value"][1]) for p in periods} == {
        "mp": 2.0,
        "broken": 2.0,
    }
    assert not _query(prometheus, "absent(qrsync_build_info)")
    # The *qrsync operations* dashboard: every panel's expression, as Grafana sends it.
    dashboard = json.loads(OPERATIONS.read_text(encoding="utf-8"))
    (account,) = [v for v in dashboard["templating"]["list"] if v["name"] == "account"]
    label = account["query"]["query"]  # label_values(metric, account): the variable's source
    assert label == "label_values(qrsync_schedule_period_seconds, account)"
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$account", ".*")
            result = _wait(
                lambda expr=expr, title=panel["title"]: (
                    _query(prometheus, expr) or title in MAY_BE_EMPTY
                ),
                f"data for the panel {panel['title']}",
                timeout_s=30,
            )
            assert result, panel["title"]
