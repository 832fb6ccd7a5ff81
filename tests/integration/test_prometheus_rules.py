"""The alerting rules in deploy/prometheus/, checked and unit-tested by the real `promtool`
(Debian's `prometheus` package), their conventions (monitoring mixins), their runbook sections,
and `promtool check metrics` on what a daemon serves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import build_history, require_tool, rule
from prometheus_client import generate_latest

from qrsync.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "qrsync-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "qrsync-alerts-test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL = Path("/usr/bin/promtool")


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    require_tool(PROMTOOL, "prometheus")
    return subprocess.run(
        [str(PROMTOOL), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in checked.stdout


def test_promtool_unit_tests_every_alert_firing_clearing_and_below_its_threshold() -> None:
    tested = _promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    for alert in _alerts():
        name = alert["alert"]
        evaluations = [
            check for case in cases for check in case["alert_rule_test"]
            if check["alertname"] == name
        ]  # fmt: skip
        fired = [e for e in evaluations if e["exp_alerts"]]
        quiet = [e for e in evaluations if not e["exp_alerts"]]
        assert fired, f"{name}: no case where it fires"
        assert len(quiet) >= 2, f"{name}: needs a clearing case and a below-threshold case"


def test_the_rules_follow_the_mixin_conventions_and_have_a_runbook_section() -> None:
    headings = {
        line.removeprefix("## ").strip().lower()
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    alerts = _alerts()
    assert len(alerts) >= 7
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"Qrsync[A-Z][A-Za-z]+", name), name
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}"
        assert name.lower() in headings, f"docs/runbook.md has no section '## {name}'"
        if "account" in alert["expr"]:  # per-account alerts name the account
            assert "$labels.account" in annotations["summary"], name


def test_promtool_accepts_what_a_daemon_serves(
    simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch, engine: Any
) -> None:
    rules = [rule(f"https://a.example.com/{i}") for i in range(4)]
    build_history(simulator, qrsync, monkeypatch, rules)
    metrics = Metrics(engine)
    metrics.runs.labels("mp", "succeeded").inc()
    metrics.run_duration.labels("mp").observe(0.7)
    metrics.api_call("qrcodejumpget", 0)
    metrics.api_call("qrcodejumpget", 44990)
    metrics.slots_skipped.labels("done").inc()
    metrics.takeovers.inc()
    served = generate_latest(metrics.registry).decode()
    for family in ("qrsync_quota_left", "qrsync_rules", "qrsync_last_success_timestamp_seconds"):
        assert family in served, family  # the database gauges were read
    checked = _promtool("check", "metrics", stdin=served)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
