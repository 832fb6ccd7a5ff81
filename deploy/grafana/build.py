"""Writes the two Grafana dashboards of deploy/grafana/ from code: `python deploy/grafana/build.py`.

The JSON files are committed (Grafana imports them as they are); a test checks that running this
again changes nothing, so edit here, not in the JSON. Plain dictionaries rather than a dashboard
SDK: the dashboards use a handful of panel kinds, and the model stays readable next to Grafana's
own JSON documentation without another dependency.

Conventions (kubernetes-mixin, postgres_exporter's mixin, Grafana's dashboard linter): the
datasources are template variables (``prometheus_datasource``, ``postgres_datasource``), never a
name; an ``account`` variable; stable ``uid``s; ``$__rate_interval`` in every rate; a unit and a
description on every panel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA = "qrsync"
PROMETHEUS = {"type": "prometheus", "uid": "${prometheus_datasource}"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "${postgres_datasource}"}
ACCOUNT_FILTER = "account IN ($account)"

Json = dict[str, Any]


def _panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    grid: tuple[int, int, int, int],
    datasource: Json,
    **extra: Any,
) -> Json:
    x, y, w, h = grid
    panel: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": targets,
    }
    panel.update(extra)
    return panel


def _sql(query: str, fmt: str = "table") -> Json:
    return {"refId": "A", "datasource": POSTGRES, "format": fmt, "rawQuery": True,
            "editorMode": "code", "rawSql": " ".join(query.split())}  # fmt: skip


def _promql(expr: str, legend: str) -> Json:
    return {"refId": "A", "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend,
            "range": True}  # fmt: skip


def _dashboard(uid: str, title: str, description: str, variables: list[Json],
               panels: list[Json]) -> Json:  # fmt: skip
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["qrsync"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-30d", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
        "annotations": {"list": []},
        "links": [],
    }


def _datasource_variable(name: str, kind: str, label: str) -> Json:
    return {"name": name, "label": label, "type": "datasource", "query": kind, "current": {},
            "hide": 0, "refresh": 1, "regex": "", "options": []}  # fmt: skip


# --- qrsync rules (PostgreSQL) ------------------------------------------------------------------


def rules_dashboard() -> Json:
    account = {
        "name": "account", "label": "account", "type": "query", "datasource": POSTGRES,
        "query": f"SELECT name FROM {SCHEMA}.accounts WHERE enabled ORDER BY name",
        "definition": f"SELECT name FROM {SCHEMA}.accounts WHERE enabled ORDER BY name",
        "multi": True, "includeAll": True, "current": {}, "refresh": 1, "hide": 0,
        "sort": 1, "options": [],
    }  # fmt: skip
    s = SCHEMA
    panels = [
        _panel(
            "barchart",
            "Live rules by state",
            "Rules WeChat lists now, per account: unpublished (state 1) and published (state 2).",
            "short",
            [
                _sql(f"""SELECT account,
                  count(*) FILTER (WHERE state = 1) AS unpublished,
                  count(*) FILTER (WHERE state = 2) AS published
                  FROM {s}.current_rules WHERE {ACCOUNT_FILTER}
                  GROUP BY account ORDER BY account""")
            ],
            (0, 0, 12, 8),
            POSTGRES,
            options={"stacking": "normal", "orientation": "horizontal", "xField": "account"},
        ),
        _panel(
            "table",
            "Accounts that need attention",
            "Accounts whose last run failed, whose last success is more than an hour old, or "
            "with fewer than 10 publishes left this month; empty when all is well.",
            "none",
            [
                _sql(f"""SELECT h.account, h.last_status, h.failure_streak, h.last_success_at,
                  q.qrcodejump_pub_quota AS publishes_left, h.last_error
                  FROM {s}.sync_health h
                  LEFT JOIN {s}.account_latest_snapshot q ON q.account = h.account
                  WHERE h.enabled AND h.{ACCOUNT_FILTER}
                    AND (h.failure_streak > 0 OR h.last_success_at IS NULL
                         OR h.success_age > interval '1 hour'
                         OR q.qrcodejump_pub_quota < 10)
                  ORDER BY h.failure_streak DESC, h.account""")
            ],
            (12, 0, 12, 8),
            POSTGRES,
        ),
        _panel(
            "timeseries",
            "Publications per day",
            "Rules seen turning published (state 1 to 2, or added already published) per day; "
            "the accounts' first listings (their baseline) are left out.",
            "short",
            [
                _sql(
                    f"""SELECT date_trunc('day', published_observed_at) AS time, account,
                  count(*) AS publications
                  FROM {s}.publications
                  WHERE NOT in_baseline AND $__timeFilter(published_observed_at)
                    AND {ACCOUNT_FILTER}
                  GROUP BY 1, 2 ORDER BY 1""",
                    "time_series",
                )
            ],
            (0, 8, 12, 8),
            POSTGRES,
        ),
        _panel(
            "timeseries",
            "Deletions per day",
            "Rules seen gone from a complete listing, per day.",
            "short",
            [
                _sql(
                    f"""SELECT date_trunc('day', deleted_observed_at) AS time, account,
                  count(*) AS deletions
                  FROM {s}.deletions
                  WHERE $__timeFilter(deleted_observed_at) AND {ACCOUNT_FILTER}
                  GROUP BY 1, 2 ORDER BY 1""",
                    "time_series",
                )
            ],
            (12, 8, 12, 8),
            POSTGRES,
        ),
        _panel(
            "timeseries",
            "Publish quota left",
            "qrcodejump_pub_quota of each account's last listing of the day: publishes left "
            "this month (WeChat gives 100 a month).",
            "short",
            [
                _sql(
                    f"""SELECT day AS time, account, qrcodejump_pub_quota AS publishes_left
                  FROM {s}.quota_daily
                  WHERE $__timeFilter(day) AND {ACCOUNT_FILTER}
                  ORDER BY 1""",
                    "time_series",
                )
            ],
            (0, 16, 12, 8),
            POSTGRES,
        ),
        _panel(
            "table",
            "Publish queue",
            "Unpublished rules per account and how long the oldest has waited since it was "
            "first seen (or last edited).",
            "none",
            [
                _sql(f"""SELECT account, count(*) AS waiting_rules,
                  max(waiting_hours) AS longest_wait_hours
                  FROM {s}.unpublished_rules
                  WHERE account_enabled AND {ACCOUNT_FILTER}
                  GROUP BY account ORDER BY longest_wait_hours DESC""")
            ],
            (12, 16, 12, 8),
            POSTGRES,
        ),
        _panel(
            "table",
            "Latest publications",
            "The 50 latest publications in the time range, with how long each rule waited "
            "(blank: added already published, its wait is unknown).",
            "none",
            [
                _sql(f"""SELECT published_observed_at, account, prefix, path,
                  CASE WHEN from_state IS NULL THEN NULL ELSE wait_hours END AS wait_hours
                  FROM {s}.publications
                  WHERE NOT in_baseline AND $__timeFilter(published_observed_at)
                    AND {ACCOUNT_FILTER}
                  ORDER BY published_observed_at DESC LIMIT 50""")
            ],
            (0, 24, 12, 10),
            POSTGRES,
        ),
        _panel(
            "table",
            "Latest deletions",
            "The 50 latest deletions in the time range; still_deleted is false for a rule "
            "that came back since.",
            "none",
            [
                _sql(f"""SELECT deleted_observed_at, account, prefix, path, still_deleted
                  FROM {s}.deletions
                  WHERE $__timeFilter(deleted_observed_at) AND {ACCOUNT_FILTER}
                  ORDER BY deleted_observed_at DESC LIMIT 50""")
            ],
            (12, 24, 12, 10),
            POSTGRES,
        ),
    ]
    return _dashboard(
        "qrsync-rules", "qrsync rules",
        "The QR-code jump rules qrsync mirrors: states, publications, deletions, quota, "
        "accounts needing attention (PostgreSQL views of the schema qrsync).",
        [_datasource_variable("postgres_datasource", "grafana-postgresql-datasource",
                              "PostgreSQL"), account],
        panels,
    )  # fmt: skip


# --- qrsync operations (Prometheus) -------------------------------------------------------------


def operations_dashboard() -> Json:
    account = {
        "name": "account", "label": "account", "type": "query", "datasource": PROMETHEUS,
        "query": {"query": "label_values(qrsync_schedule_period_seconds, account)",
                  "refId": "accounts"},
        "definition": "label_values(qrsync_schedule_period_seconds, account)",
        "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2,
        "hide": 0, "sort": 1, "options": [],
    }  # fmt: skip
    a = 'account=~"$account"'
    panels = [
        _panel("stat", "Replicas up", "qrsync daemon replicas Prometheus scrapes now.", "short",
               [_promql("count(qrsync_build_info)", "replicas")], (0, 0, 6, 6), PROMETHEUS),
        _panel("timeseries", "Runs by status",
               "Finished runs per status, all replicas summed.", "short",
               [_promql(f"sum by (status) (increase(qrsync_runs_total{{{a}}}[$__rate_interval]))",
                        "{{status}}")], (6, 0, 18, 6), PROMETHEUS),
        _panel("timeseries", "Run duration (95th percentile)",
               "How long 95 % of the runs of each account took.", "s",
               [_promql("histogram_quantile(0.95, sum by (le, account) "
                        f"(rate(qrsync_run_duration_seconds_bucket{{{a}}}[$__rate_interval])))",
                        "{{account}}")], (0, 6, 12, 8), PROMETHEUS),
        _panel("timeseries", "WeChat calls by errcode",
               "Requests to WeChat per second by errcode (0 success; 44990 rate limit: more "
               "than 5 requests a second per AppID; none: no answer).", "reqps",
               [_promql("sum by (errcode) (rate(qrsync_api_calls_total[$__rate_interval]))",
                        "{{errcode}}")], (12, 6, 12, 8), PROMETHEUS),
        _panel("timeseries", "Age of the last success",
               "Time since each account's last successful sync finished; compare with its "
               "schedule (alert QrsyncAccountStale).", "s",
               [_promql(f"time() - max by (account) "
                        f"(qrsync_last_success_timestamp_seconds{{{a}}})", "{{account}}")],
               (0, 14, 12, 8), PROMETHEUS),
        _panel("timeseries", "Publishes left this month",
               "qrcodejump_pub_quota of each account's latest listing.", "short",
               [_promql(f"max by (account) (qrsync_quota_left{{{a}}})", "{{account}}")],
               (12, 14, 12, 8), PROMETHEUS),
        _panel("timeseries", "Lease takeovers",
               "Runs of a replica that stopped renewing its lease, closed by another replica "
               "(a replica died mid-run).", "short",
               [_promql("sum(increase(qrsync_lease_takeovers_total[$__rate_interval]))",
                        "takeovers")], (0, 22, 12, 8), PROMETHEUS),
        _panel("timeseries", "Slots skipped",
               "Schedule slots a replica did not run: done (another replica ran it, normal) or "
               "busy (the account's previous run was still going).", "short",
               [_promql("sum by (reason) (increase(qrsync_slots_skipped_total[$__rate_interval]))",
                        "{{reason}}")], (12, 22, 12, 8), PROMETHEUS),
    ]  # fmt: skip
    return _dashboard(
        "qrsync-operations",
        "qrsync operations",
        "What the qrsync daemons do: runs, durations, WeChat calls and errcodes, staleness, "
        "quota, takeovers and skipped slots (Prometheus, from /metrics).",
        [_datasource_variable("prometheus_datasource", "prometheus", "Prometheus"), account],
        panels,
    )


DASHBOARDS = {"qrsync-rules.json": rules_dashboard, "qrsync-operations.json": operations_dashboard}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> None:
    for name, build in DASHBOARDS.items():
        (HERE / "dashboards" / name).write_text(render(build), encoding="utf-8")


if __name__ == "__main__":
    main()
