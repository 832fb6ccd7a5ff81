"""Every SQL query of the *qrsync rules* dashboard runs against a database qrsync synced (Grafana's
macros and template variables substituted as Grafana would) and returns rows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import build_history, rule

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "qrsync-rules.json"


def grafana_sql(sql: str, accounts: list[str]) -> str:
    """``sql`` as Grafana's PostgreSQL datasource sends it: ``$__timeFilter(col)`` over the
    dashboard's range (the last 30 days) and a multi-value ``$account`` as a quoted list."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"\1 BETWEEN now() - interval '30 days' AND now() + interval '1 minute'",
        sql,
    )
    return sql.replace("$account", ", ".join("'" + a.replace("'", "''") + "'" for a in accounts))


@pytest.fixture
def history(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    rules = [rule(f"https://a.example.com/{i}") for i in range(4)]
    return build_history(simulator, qrsync, monkeypatch, rules)


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return panels


@pytest.mark.parametrize("title", [p["title"] for p in _panels()])
def test_every_panel_query_returns_rows(history: Any, db: Any, title: str) -> None:
    (panel,) = [p for p in _panels() if p["title"] == title]
    for target in panel["targets"]:
        rows = db.execute(grafana_sql(target["rawSql"], ["mp", "broken"])).fetchall()
        assert rows, f"{title}: no rows"


def test_the_account_variable_lists_the_accounts(history: Any, db: Any) -> None:
    variables = json.loads(DASHBOARD.read_text(encoding="utf-8"))["templating"]["list"]
    (account,) = [v for v in variables if v["name"] == "account"]
    assert [r[0] for r in db.execute(account["query"]).fetchall()] == ["broken", "mp"]


def test_an_account_filter_narrows_every_panel(history: Any, db: Any) -> None:
    attention = next(p for p in _panels() if p["title"] == "Accounts that need attention")
    sql = attention["targets"][0]["rawSql"]
    assert [r[0] for r in db.execute(grafana_sql(sql, ["mp", "broken"])).fetchall()] == ["broken"]
    assert db.execute(grafana_sql(sql, ["mp"])).fetchall() == []
