"""A progress bar with ETA for sweeps (rich), or silence when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Any


class SweepProgress:
    """Counts finished runs (ok and failed) against the total; shows done / total, failures and ETA."""

    def __init__(self, total: int, already_done: int, enabled: bool | None = None, label: str = "sweep") -> None:
        self.total = total
        self.done = already_done
        self.failed = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._task: Any = None
        self.label = label

    def __enter__(self) -> "SweepProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, completed=self.done, failed=0)
        return self

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, failed=self.failed)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
