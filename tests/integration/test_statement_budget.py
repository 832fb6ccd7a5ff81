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
