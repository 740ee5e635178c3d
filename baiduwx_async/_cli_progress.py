"""The progress bar of `baiduwx batch`/`embed` (and of `baiduwx demo`), on stderr."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar"]


class ProgressBar:
    """A live bar on stderr: done of total, failed, items/s, tokens/min (when the items
    carry their usage), elapsed and ETA."""

    def __init__(
        self,
        total: int | None,
        console: Console,
        *,
        enabled: bool,
        description: str = "batch",
        show_tokens: bool = True,
    ) -> None:
        self.show_tokens = show_tokens
        self.done = 0
        self.failed = 0
        self.tokens = 0
        self._started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]:.1f} items/s"),
            *([TextColumn("{task.fields[tpm]:,.0f} tokens/min")] if show_tokens else []),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task(description, total=total, failed=0, rate=0.0, tpm=0.0)

    @property
    def console(self) -> Console:
        return self._progress.console

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def tokens_per_minute(self) -> float:
        elapsed = self.elapsed
        return self.tokens * 60.0 / elapsed if elapsed > 0 else 0.0

    def advance(self, ok: bool, tokens: int = 0) -> None:
        self.done += 1
        self.failed += not ok
        self.tokens += tokens
        self._progress.update(
            self._task,
            completed=self.done,
            failed=self.failed,
            rate=self.rate,
            tpm=self.tokens_per_minute,
        )

    def __enter__(self) -> ProgressBar:
        self._started = time.monotonic()
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
