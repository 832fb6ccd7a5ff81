"""The progress display of `qrsync sync` on a terminal: a bar of the accounts, and a line per
account being synced with its pages and rules so far (a 12,000-rule account takes seconds, and
an account bar alone would sit still meanwhile). Off a terminal the CLI prints one line per
account as it finishes instead."""

from __future__ import annotations

import threading
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from qrsync.sync import RunResult, SyncRequest
from qrsync.wechat.listing import ListingTally


def page_detail(tally: ListingTally) -> str:
    """``page 3, 600 of 12,000 rules``: where an account's listing is."""
    total = tally.last.total_count if tally.last is not None else None
    pages = f"page {tally.pages}" if tally.pages != 1 else "1 page"
    if total:
        return f"{pages}, {tally.rules:,} of {total:,} rules"
    return f"{pages}, {tally.rules:,} rules"


class SyncProgress:
    """Rich's live display, fed by the syncer's hooks (called from its worker threads)."""

    def __init__(self, accounts: int, console: Console, line: Callable[[RunResult], str]):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._line = line
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._overall = self.progress.add_task(
            "accounts", total=accounts, detail=f"0 of {accounts:,}"
        )
        self._done = 0
        self._accounts = accounts

    def __enter__(self) -> SyncProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def started(self, request: SyncRequest) -> None:
        task = self.progress.add_task(f"  {request.account.name}", total=None, detail="starting")
        with self._lock:
            self._tasks[request.account.name] = task

    def page(self, request: SyncRequest, tally: ListingTally) -> None:
        with self._lock:
            task = self._tasks.get(request.account.name)
        if task is None:
            return
        total = tally.last.total_count if tally.last is not None else None
        self.progress.update(
            task,
            completed=tally.rules,
            total=max(total, tally.rules) if total else None,
            detail=page_detail(tally),
        )

    def finished(self, result: RunResult) -> None:
        self.progress.console.print(self._line(result), markup=False, highlight=False)
        with self._lock:
            task = self._tasks.pop(result.account, None)
            self._done += 1
            done = self._done
        if task is not None:
            self.progress.remove_task(task)
        self.progress.update(
            self._overall, completed=done, detail=f"{done:,} of {self._accounts:,}"
        )
