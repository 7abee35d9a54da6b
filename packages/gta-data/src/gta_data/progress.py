"""Progress of the long commands (making data, training, augmenting), on a terminal and off it.

On a terminal this is a rich bar with the rate (steps/s), the time left and a free text (``info``: the loss,
the latest score). Off a terminal (a log file, ``nohup``, CI) a live bar shows nothing until the work ends,
so plain lines are printed instead, one every ``GTA_PROGRESS_SECONDS`` seconds (default 30) and one at the
end, e.g.::

    train: 1200/3000 (40%), 25.3 steps/s, 47s elapsed, 1m11s left, loss 0.1234

The rate is that since the previous line (on the last line: the whole command's). Lines go to stdout and are flushed at once, so that a redirected log is current.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV_SECONDS = "GTA_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0


def _seconds_between_lines() -> float:
    value = os.environ.get(ENV_SECONDS)
    try:
        return max(0.0, float(value)) if value else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressBar:
    """What a command updates: the count done (absolute or by increments), the total and a free text."""

    def __init__(self, description: str, total: int | None, completed: int, unit: str) -> None:
        self.description, self.total, self.completed, self.unit = description, total, completed, unit
        self.info = ""

    def update(self, completed: int | None = None, *, advance: int = 0, total: int | None = None,
               info: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        self.completed += advance
        if total is not None:
            self.total = total
        if info is not None:
            self.info = info
        if completed is not None or advance or total is not None:
            self._show()
        else:
            self._refresh_info()

    def _refresh_info(self) -> None:
        """A new text alone: a bar shows it at once; a line waits for the next count."""

    def advance(self, n: int = 1) -> None:
        self.update(advance=n)

    def begin(self, completed: int) -> None:
        """Where the work starts (a resumed run's step): rates count from here."""
        self.completed = completed
        self._restart()

    def _restart(self) -> None:
        pass

    def _show(self) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar(ProgressBar):
    def __init__(self, description: str, total: int | None, completed: int, unit: str, transient: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{task.speed:.1f} {unit}/s" if task.speed else "", style="progress.data.speed")

        super().__init__(description, total, completed, unit)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                            transient=transient)
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, completed=completed, info="")

    def _show(self) -> None:
        self.bar.update(self.task, completed=self.completed, total=self.total, info=self.info)

    def _refresh_info(self) -> None:
        self._show()

    def _restart(self) -> None:
        self.bar.reset(self.task, completed=self.completed, total=self.total, info=self.info)

    def close(self) -> None:
        self.bar.stop()


class _LineBar(ProgressBar):
    def __init__(self, description: str, total: int | None, completed: int, unit: str, every: float) -> None:
        super().__init__(description, total, completed, unit)
        self.every = every
        self.t0 = self.t_line = time.monotonic()
        self.start = self.shown = completed

    def _restart(self) -> None:
        self.t0 = self.t_line = time.monotonic()
        self.start = self.shown = self.completed

    def _show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.t_line < self.every:
            return
        if final and self.completed == self.shown:
            return
        elapsed = now - self.t0
        # the rate since the previous line (the whole run's on the last line)
        done, span = ((self.completed - self.start, elapsed) if final
                      else (self.completed - self.shown, now - self.t_line))
        rate = done / span if span > 0 else 0.0
        parts = [f"{self.completed}/{self.total} ({100 * self.completed / self.total:.0f}%)" if self.total
                 else f"{self.completed}", f"{rate:.1f} {self.unit}/s", f"{format_duration(elapsed)} elapsed"]
        if self.total and rate > 0 and not final:
            parts.append(f"{format_duration((self.total - self.completed) / rate)} left")
        line = f"{self.description}: {', '.join(parts)}"
        print(f"{line}, {self.info}" if self.info else line, file=sys.stdout, flush=True)
        self.t_line, self.shown = now, self.completed

    def close(self) -> None:
        self._show(final=True)


def on_terminal() -> bool:
    """Whether stdout is a terminal (rich's own test: FORCE_TERMINAL and Jupyter count)."""
    from rich.console import Console

    return Console().is_terminal


@contextmanager
def progress(description: str, total: int | None = None, *, completed: int = 0, unit: str = "steps",
             enabled: bool = True, transient: bool = False, terminal: bool | None = None) -> Iterator[ProgressBar]:
    """A progress display for a ``with`` block: a rich bar on a terminal, periodic plain lines otherwise
    (module docstring), nothing where ``enabled`` is False (e.g. ranks other than 0). ``terminal`` None:
    :func:`on_terminal`."""
    if not enabled:
        bar = ProgressBar(description, total, completed, unit)
    elif on_terminal() if terminal is None else terminal:
        bar = _RichBar(description, total, completed, unit, transient)
    else:
        bar = _LineBar(description, total, completed, unit, _seconds_between_lines())
    try:
        yield bar
    finally:
        bar.close()


__all__ = ["ENV_SECONDS", "ProgressBar", "format_duration", "on_terminal", "progress"]
