"""README, "Connection budget": the runs of a sync whose listings did not change are recorded
together, three statements for up to 64 of them, so more unchanged accounts make no more
statements. Counted at psycopg's door: every statement qrsync sends goes through a cursor's
execute() or copy()."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from helpers import mp_account, oa_account, oa_world, toml_config

SECRET = "budget-secret-value"
MPS = [f"wx5{i:015d}" for i in range(6)]
OAS = [f"wx6{i:015d}" for i in range(2)]


@contextmanager
def counted() -> Iterator[list[str]]:
    """The statements sent while the block runs (the calls of every thread)."""
    sent: list[str] = []
    execute, copy = psycopg.Cursor.execute, psycopg.Cursor.copy

    def counting_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    def counting_copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(statement))
        return copy(self, statement, *args, **kwargs)

    psycopg.Cursor.execute = counting_execute  # type: ignore[method-assign]
    psycopg.Cursor.copy = counting_copy  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.copy = copy  # type: ignore[method-assign]


def test_more_unchanged_accounts_make_no_more_statements(
    qrsync: Any, fast_simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = fast_simulator
    for appid in MPS:
        sim.admin.add_account({"appid": appid, "kind": "miniprogram", "secret": SECRET})
        sim.admin.generate_rules(appid, 20)
    for n, appid in enumerate(OAS):
        linked = f"wx7{n:015d}"
        sim.admin.add_account(oa_world(appid=appid, secret=SECRET, linked=linked))
        sim.admin.generate_rules(appid, 30, miniprogram_appid=linked)
    monkeypatch.setenv("BUDGET_SECRET", SECRET)
    blocks = [mp_account(f"mp{i}", appid, "BUDGET_SECRET") for i, appid in enumerate(MPS)]
    blocks += [
        oa_account(f"oa{n}", appid, f"wx7{n:015d}", "BUDGET_SECRET") for n, appid in enumerate(OAS)
    ]
    half = toml_config(sim.url, "".join(blocks[::2]))  # mp0, mp2, mp4, oa0
    whole = toml_config(sim.url, "".join(blocks))
    qrsync.write_config(whole)
    first = qrsync("sync")
    assert first.exit_code == 0 and "8 succeeded" in first.output, first.output

    qrsync.write_config(half)
    with counted() as few:
        assert qrsync("sync").exit_code == 0
    qrsync.write_config(whole)
    with counted() as many:
        result = qrsync("sync")
    assert result.exit_code == 0 and "8 succeeded" in result.output, result.output
    # The same command with four more unchanged accounts: four more runs, no more statements.
    assert len(many) == len(few), (few, many)
    opened = [s for s in many if s.startswith("-- Open a run for each listing of a batch")]
    assert len(opened) == 1, many  # all eight in one batch
    assert not any(s.lstrip().upper().startswith("COPY") for s in many)  # nothing staged


def test_a_run_of_its_own_makes_four_statements(
    qrsync: Any, fast_simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README, "Connection budget": a run that opens before it lists (a daemon's run, or the
    one account of `qrsync sync --account`) makes 4 statements when its listing did not change:
    the one that locks it, the search_path and the row of the short transaction that opens it,
    and the one that closes it; and 2 more (a short transaction) to read its cached token when
    it has not read it in the last minute."""
    sim = fast_simulator
    sim.admin.add_account({"appid": MPS[0], "kind": "miniprogram", "secret": SECRET})
    sim.admin.generate_rules(MPS[0], 20)
    monkeypatch.setenv("BUDGET_SECRET", SECRET)
    qrsync.write_config(toml_config(sim.url, mp_account("mp0", MPS[0], "BUDGET_SECRET")))
    assert qrsync("sync").exit_code == 0
    with counted() as sent:
        result = qrsync("sync", "--account", "mp0")
    assert result.exit_code == 0 and "1 succeeded" in result.output, result.output
    first = next(i for i, s in enumerate(sent) if s.startswith("-- The first statement of a run"))
    last = next(i for i, s in enumerate(sent) if s.startswith("-- Record the listing's snapshot"))
    run = [s.splitlines()[0][:60] for s in sent[first : last + 1]]
    token = [s for s in run if s.startswith("-- A cached token that may still be reused")]
    assert len(token) == 1, run  # (this process has not read it before)
    assert len(run) == 4 + 2, run  # the token's own transaction: its search_path and its read
    assert any(s.startswith("-- Open the sync_runs row of a reserved run") for s in run), run
