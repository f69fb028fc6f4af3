"""One progress display for every long loop: what is done, how fast, how long is left.

Shown on a terminal only: where the console writes to a file or a pipe (a SLURM log, CI,
``2>log``), a live bar would end as one squeezed final line, so the bar is off and the
loops print lines of their own (``training/epoch_log.py``: one per epoch)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``41.3 it/s``, or seconds per item when slower than one a
    second, e.g. ``23.0 s/epoch``."""

    def __init__(self, unit: str = "it") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("--", style="cyan")
        rate = f"{speed:.1f} {self.unit}/s" if speed >= 1 else f"{1 / speed:.1f} s/{self.unit}"
        return Text(rate, style="cyan")


def progress_bar(console: Console, unit: str = "it", transient: bool = False) -> Progress:
    """A rich progress bar: description, bar, done/total, %, rate, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )
