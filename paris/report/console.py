"""What the `paris` command shows while work runs: the listener of paris.progress, drawn with rich.

On a terminal a bar is a live rich progress bar; in a log file (a SLURM job, `paris launch` logs) each
update is one plain line instead, so the log says how far a job got and how fast.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from paris import progress

console = Console(stderr=True)


class ConsoleListener:
    def say(self, message: str, warning: bool) -> None:
        console.print(f"[yellow]{message}[/]" if warning else message, markup=warning, highlight=False)

    @contextlib.contextmanager
    def bar(self, name: str, total: int | None, completed: int, unit: str):
        if not console.is_terminal:
            yield _LineBar(name, total, completed, unit)
            return
        columns = [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn() if total else
                   TextColumn(f"{{task.completed}} {unit}"), TextColumn("{task.fields[figures]}"), TimeRemainingColumn()]
        with Progress(*columns, console=console) as live:
            task = live.add_task(name, total=total, completed=completed, figures="")
            yield _RichBar(live, task)


class _RichBar:
    def __init__(self, live: Progress, task):
        self.live, self.task = live, task

    def update(self, completed: int | None = None, advance: int = 0, **figures) -> None:
        self.live.update(self.task, completed=completed, advance=advance or None, figures=_figures(figures))


class _LineBar:
    """A bar in a log: a line when it moved, at most one per LINE_EVERY_S seconds, and always the last one."""

    LINE_EVERY_S = 10.0

    def __init__(self, name: str, total: int | None, completed: int, unit: str):
        self.name, self.total, self.completed, self.unit = name, total, completed, unit
        self.shown, self.shown_at = completed, float("-inf")

    def update(self, completed: int | None = None, advance: int = 0, **figures) -> None:
        self.completed = (self.completed if completed is None else completed) + advance
        finished = self.total is not None and self.completed >= self.total
        if self.completed == self.shown or (time.monotonic() - self.shown_at < self.LINE_EVERY_S and not finished):
            return
        self.shown, self.shown_at = self.completed, time.monotonic()
        of = f"/{self.total}" if self.total else ""
        console.print(f"{self.name}: {self.completed}{of} {self.unit} {_figures(figures)}".rstrip(), highlight=False)


def _figures(figures: dict) -> str:
    return " ".join(f"{name} {value}" for name, value in figures.items())


def show_progress() -> None:
    """Send this process's progress messages and bars to the console (stderr)."""
    progress.listen(ConsoleListener())
