"""What /metrics exposes, read back with Prometheus' own parser (no database: the gauges read
from it are left out)."""

from __future__ import annotations

import platform

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qrsync import __version__
from qrsync.metrics import Metrics


def _families(metrics: Metrics) -> dict[str, list[tuple[str, dict[str, str]]]]:
    text = generate_latest(metrics.registry).decode()
    return {
        family.name: [(sample.name, sample.labels) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_build_info_run_durations_by_account_and_no_created_series() -> None:
    metrics = Metrics()
    metrics.runs.labels("brand-mp", "succeeded").inc()
    metrics.run_duration.labels("brand-mp").observe(1.5)
    metrics.api_call("qrcodejumpget", 0)
    families = _families(metrics)
    assert families["qrsync_build_info"] == [
        ("qrsync_build_info", {"version": __version__, "python": platform.python_version()})
    ]
    durations = families["qrsync_run_duration_seconds"]
    assert durations and all(labels["account"] == "brand-mp" for _, labels in durations)
    every_sample = [name for samples in families.values() for name, _ in samples]
    assert not [name for name in every_sample if name.endswith("_created")], every_sample


def test_notifications_by_channel_and_status() -> None:
    metrics = Metrics()
    metrics.notification("ops-dingtalk", "sent", 12)
    metrics.notification("ops-dingtalk", "failed", 3)
    text = generate_latest(metrics.registry).decode()
    assert 'qrsync_notifications_total{channel="ops-dingtalk",status="sent"} 12.0' in text
    assert 'qrsync_notifications_total{channel="ops-dingtalk",status="failed"} 3.0' in text
