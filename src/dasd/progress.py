"""Progress bars with rate and ETA for long stages (rich, on stderr)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress, task_id, initial: int) -> None:
        self._progress, self._task = progress, task_id
        self._tokens, self._start = 0, time.perf_counter()

    def add_tokens(self, n: int) -> None:
        self._tokens += n
        rate = self._tokens / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(self._task, rate=f"{rate:,.1f} tok/s")

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(description: str, total: int, initial: int = 0) -> Iterator[_Bar]:
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total + initial, completed=initial,
                                    rate="")
        yield _Bar(progress, task_id, initial)
