"""docs/analysts.md stays true: every ```sql block runs against a synced database, and a few
answer what the tables say.

Blocks fenced as ```sql-example are not runnable as they stand (role DDL, Grafana macros); the
last tests run them too, after the substitutions a reader would make.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import (
    DOCUMENT_EXAMPLE_RULES,
    MP,
    MP_SECRET,
    WeChatUser,
    mp_account,
    mp_world,
    rows,
    rule,
    toml_config,
)
from psycopg.rows import dict_row

from qrsync.store.grants import SECRET_TABLES, readable_objects

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{2,3} (.+)$", re.MULTILINE)

# The doc's examples name things of the demo; the test database has its own.
DEMO_ACCOUNT = "'brand-mp'"
DEMO_PREFIX = "https://qr-0000d1.example.com/coupon/0e7c0yzz"
DEMO_MOMENT = "'2026-11-23 12:00+08'"

PUBLISHED = "https://a.example.com/1"
DELETED = "https://a.example.com/2"
EDITED = "https://a.example.com/3"
EDITED_PATH = "pages/edited/index"


@dataclass(frozen=True)
class Block:
    lang: str
    heading: str
    line: int
    code: str

    @property
    def where(self) -> str:
        return f"docs/analysts.md:{self.line} ({self.heading})"


def _blocks() -> list[Block]:
    text = DOC_PATH.read_text(encoding="utf-8")
    headings = [(m.start(), m.group(1)) for m in HEADING.finditer(text)]
    blocks = []
    for m in FENCE.finditer(text):
        heading = next((h for pos, h in reversed(headings) if pos < m.start()), "(top)")
        line = text.count("\n", 0, m.start()) + 1
        blocks.append(Block(m.group(1), heading, line, m.group(2)))
    return blocks


BLOCKS = _blocks()
SQL_BLOCKS = [b for b in BLOCKS if b.lang == "sql"]


def _under(heading: str, lang: str = "sql") -> list[str]:
    """The code of the blocks of ``lang`` under the heading that contains ``heading``."""
    found = [b.code for b in BLOCKS if b.lang == lang and heading in b.heading]
    assert found, f"docs/analysts.md has no ```{lang} block under a heading with {heading!r}"
    return found


def _run(db: psycopg.Connection[Any], sql: str) -> list[dict[str, Any]]:
    """Run one block in a transaction that is rolled back; the last statement's rows."""
    with db.transaction(force_rollback=True), db.cursor(row_factory=dict_row) as cur:
        cur.execute(sql)
        while cur.nextset():
            pass
        return cur.fetchall() if cur.description else []


def test_the_doc_has_runnable_questions() -> None:
    questions = {b.heading for b in SQL_BLOCKS if b.heading[:1].isdigit()}
    assert 8 <= len(questions) <= 10, sorted(questions)
    assert len(SQL_BLOCKS) >= 10
    langs = {b.lang for b in BLOCKS}
    assert langs <= {"sql", "sql-example", "sh", "text"}, langs


@dataclass(frozen=True)
class History:
    between_syncs: datetime


@pytest.fixture
def history(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> History:
    """Two syncs of a mini program whose listing has the document's quirks and a total_count one
    too high. Between them one rule is published, one deleted and one edited (four calls in a
    row: the simulator's rate limit is off). A second account's secret is wrong, so each of its
    runs fails."""
    simulator = fast_simulator
    simulator.admin.add_account(mp_world(pub_quota=20, total_count_offset=1))
    simulator.admin.add_account(mp_world(appid="wx1000000000000077", secret="right"))
    plain = [rule(f"https://a.example.com/{i}") for i in range(4)]
    simulator.admin.put_rules(MP, DOCUMENT_EXAMPLE_RULES + plain)
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    monkeypatch.setenv("BAD_SECRET", "wrong-secret-value")
    accounts = mp_account() + mp_account("broken", "wx1000000000000077", "BAD_SECRET")
    qrsync.write_config(toml_config(simulator.url, accounts))
    assert qrsync("sync").exit_code == 1
    between = datetime.now(UTC)
    user = WeChatUser(simulator.url, MP, MP_SECRET)
    user.publish(PUBLISHED)
    user.delete(DELETED)
    user.edit(EDITED, EDITED_PATH)
    assert qrsync("sync").exit_code == 1
    return History(between_syncs=between)


def _for_test_data(sql: str, history: History) -> str:
    return (
        sql.replace(DEMO_ACCOUNT, "'mp'")
        .replace(DEMO_PREFIX, EDITED)
        .replace(DEMO_MOMENT, f"'{history.between_syncs.isoformat()}'")
    )


def test_every_sql_block_runs_and_answers_what_the_tables_say(
    history: History, db: psycopg.Connection[Any]
) -> None:
    failures = []
    for block in SQL_BLOCKS:
        try:
            _run(db, _for_test_data(block.code, history))
        except psycopg.Error as exc:
            failures.append(f"{block.where}: {exc}")
    assert not failures, "\n".join(failures)

    def answer(heading: str, index: int = 0) -> list[dict[str, Any]]:
        return _run(db, _for_test_data(_under(heading)[index], history))

    # 1. Live rules per account, and the rule a scanned URL goes to.
    live = {r["account"]: r for r in answer("Which rules are live")}
    assert set(live) == {"mp"}
    assert live["mp"]["live"] == 5 and live["mp"]["published"] == 1
    assert live["mp"]["live"] == len(rows(db, "SELECT 1 FROM rules WHERE deleted_at IS NULL"))
    assert [r["prefix"] for r in answer("Which rules are live", 1)] == [EDITED]

    # 2. Publishes left: what the latest snapshot says.
    quota = answer("How many publishes are left")
    assert [(r["account"], r["quota_left"]) for r in quota] == [("mp", 19)]

    # 3. Publications this week: the one rule published between the syncs.
    summary = answer("What was published this week")
    assert [(r["account"], r["publications"]) for r in summary] == [("mp", 1)]
    detail = answer("What was published this week", 1)
    assert [r["prefix"] for r in detail] == [PUBLISHED]
    assert detail[0]["still_unpublished_at"] <= detail[0]["published_by"]

    # 4. The publish queue is what unpublished_rules holds.
    queue = {r["prefix"] for r in answer("What is waiting to be published", 1)}
    held = {r[0] for r in rows(db, "SELECT prefix FROM unpublished_rules")}
    assert queue == held and PUBLISHED not in queue and DELETED not in queue and len(queue) == 4
    per_account = answer("What is waiting to be published")
    assert [(r["account"], r["waiting_rules"]) for r in per_account] == [("mp", 4)]

    # 5. The failing account, and why.
    failing = answer("stopped syncing")
    assert [(r["account"], r["last_errcode"]) for r in failing] == [("broken", 40125)]
    assert failing[0]["failure_streak"] == 2
    runs = answer("stopped syncing", 1)
    assert [(r["account"], r["status"], r["runs"]) for r in runs] == [("broken", "failed", 2)]

    # 6. One rule's history, and its content between the syncs.
    versions = answer("What happened to this rule")
    assert [(r["path"], r["what_changed"]) for r in versions] == [
        ("pages/index/index", "first seen"),
        (EDITED_PATH, "path"),
    ]
    assert [r["path"] for r in answer("What happened to this rule", 1)] == ["pages/index/index"]

    # 7. Deletions this week.
    deletions = answer("What was deleted this week")
    assert [(r["prefix"], r["was"], r["still_deleted"]) for r in deletions] == [
        (DELETED, "unpublished", True)
    ]

    # 8. The document's quirks, verbatim.
    spaced = [r["url"] for r in answer("stray-space quirk")]
    expected = sorted({u for r in DOCUMENT_EXAMPLE_RULES for u in r["debug_url"] if " " in u})
    assert sorted(spaced) == expected
    quirks = answer("stray-space quirk", 1)
    assert [
        (r["paths_with_spaces"], r["debug_urls_with_spaces"], r["repeated_debug_urls"])
        for r in quirks
    ] == [(1, 2, 2)]

    # 9. Publications per day: one, on the day it was seen.
    per_day = answer("publications a day")
    assert [(r["account"], r["publications"]) for r in per_day] == [("mp", 1)]

    # 10. total_count one more than the rules listed, as the simulator was told.
    counts = answer("total_count")
    assert [(r["account"], r["difference"], r["live_rules"]) for r in counts] == [("mp", 1, 5)]


def _can_create_roles(db: psycopg.Connection[Any]) -> bool:
    sql = "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
    return bool(rows(db, sql)[0][0])


def test_the_grant_snippet_matches_grant_readonly_and_keeps_tokens_closed(
    db: psycopg.Connection[Any], engine: Any
) -> None:
    create_role, grants = _under("A read-only role", "sql-example")
    granted = set(re.findall(r"\bqrsync\.(\w+)", grants))
    assert granted == set(readable_objects(engine, "qrsync"))
    assert not granted & set(SECRET_TABLES)
    if not _can_create_roles(db):
        pytest.skip("the test database's user may not create roles")
    role = f"qrsync_doc_{uuid.uuid4().hex[:8]}"
    with db.transaction(force_rollback=True):
        for sql in (create_role, grants):
            db.execute(re.sub(r"\bmetabase\b", role, sql))
        db.execute(f"SET LOCAL ROLE {role}")
        for name in sorted(granted):
            db.execute(f"SELECT * FROM qrsync.{name} LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute("SELECT * FROM qrsync.tokens")


def test_the_grafana_panel_runs_with_its_macros_expanded(db: psycopg.Connection[Any]) -> None:
    (panel,) = [sql for sql in _under("Grafana", "sql-example") if "$__" in sql]
    expanded = re.sub(
        r"\$__timeGroupAlias\((\w+), '1d'\)",
        lambda m: f'floor(extract(epoch FROM {m[1]}) / 86400) * 86400 AS "time"',
        panel,
    )
    expanded = re.sub(
        r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN now() - interval '7 days' AND now()", expanded
    )
    assert "$__" not in expanded
    _run(db, expanded)
