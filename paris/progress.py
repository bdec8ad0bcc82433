"""The one channel through which long work tells people how it goes: messages and progress bars.

Library code never prints. It calls `say(...)` and `bar(...)`, and whoever listens decides how they look:
the `paris` command installs a console listener (paris.report.console: a rich bar on a terminal, a line per
update in a log file); from Python, with no listener, messages go to the `paris` logger and bars stay silent.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Protocol

log = logging.getLogger("paris")


class Bar(Protocol):
    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        """Move the bar to `completed` (or by `advance`); `fields` are figures shown beside it (loss=0.21)."""


class Listener(Protocol):
    def say(self, message: str, warning: bool) -> None: ...

    def bar(self, name: str, total: int | None, completed: int, unit: str) -> contextlib.AbstractContextManager[Bar]:
        ...


class _SilentBar:
    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        pass


_listener: Listener | None = None


def listen(listener: Listener | None) -> None:
    """Route every message and bar of this process to `listener` (None: back to the logger and silence)."""
    global _listener
    _listener = listener


def say(message: str, warning: bool = False) -> None:
    """One line for the person running the job: what is happening, or (warning) what went wrong but not fatally."""
    if _listener is not None:
        _listener.say(message, warning)
    else:
        log.log(logging.WARNING if warning else logging.INFO, message)


@contextlib.contextmanager
def bar(name: str, total: int | None, completed: int = 0, unit: str = "steps", show: bool = True) -> Iterator[Bar]:
    """A progress bar over `total` units (None: unknown) that starts at `completed`; `show=False` (a worker
    process that is not rank 0) gives a bar that shows nothing."""
    if _listener is None or not show:
        yield _SilentBar()
        return
    with _listener.bar(name, total, completed, unit) as live:
        yield live
