"""Progress of long work: a rich bar on a terminal, a plain line at most once a minute in a log.

A stage reports units of work done (tiles, rows, blocks) through `tracker`; how that shows is set
once by the command line (`show`): a bar with the rate and the time left when stderr is a
terminal, one plain line per minute when it goes to a file or a scheduler's log (which a bar would
fill with control characters), nothing with --quiet. Library calls show nothing unless asked.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Literal

Mode = Literal["off", "bar", "lines"]
LINE_EVERY_S = 60.0

_mode: Mode = "off"


def show(quiet: bool) -> None:
    """Choose how progress shows for this process: off with `quiet`, else by where stderr goes."""
    global _mode
    _mode = "off" if quiet else ("bar" if sys.stderr.isatty() else "lines")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _Lines:
    """`what: 1,234 of 8,192 tiles (15%), 2.1 tiles/s, about 0:01:02 left`, at most every `every` s,
    and a last line at 100 % for work that took longer than that (so a log says it finished)."""

    def __init__(self, what: str, total: int, unit: str, every: float) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.done >= self.total
        if (now - self.start if finished else now - self.last) >= self.every:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            tail = f"in {_clock(now - self.start)}" if finished else \
                f"about {_clock((self.total - self.done) / rate)} left" if rate > 0 else "time left unknown"
            print(f"{self.what}: {self.done:,} of {self.total:,} {self.unit} ({self.done / self.total:.0%}), "
                  f"{rate:.1f} {self.unit}/s, {tail}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def tracker(what: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """An `advance(n)` for `total` units of work, shown as the command line chose."""
    if _mode == "off" or total <= 0:
        yield lambda n: None
    elif _mode == "lines":
        yield _Lines(what, total, unit, LINE_EVERY_S).advance
    else:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
        start = time.monotonic()
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=total, rate="")

            def advance(n: int) -> None:
                bar.advance(task, n)
                done = bar.tasks[0].completed
                bar.update(task, rate=f"{done / max(time.monotonic() - start, 1e-9):.1f} {unit}/s")

            yield advance
