"""The progress display of a run on stderr: done/total, rate, elapsed time, ETA, retries and
failures, and a status line (the precision of a ``stop:`` run, per sweep point).

Drawn with rich (:mod:`.console`). On a terminal a live bar is redrawn in place a few times a
second, with the status below it, and what the run prints meanwhile (notes, warnings) scrolls
above it. Into a file or pipe (CI logs, tests) a plain line is written every
:data:`LOG_INTERVAL` seconds and at the end instead: no control character, the same columns as
the bar without the bar itself, so a log stays readable::

    40/120 replications  3.21/s  elapsed 0:00:12  ETA 0:00:25  (10 resumed) | precision: ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from .console import console_for, is_terminal
from .names import for_terminal

__all__ = ["LOG_INTERVAL", "ProgressBar", "format_duration"]

LOG_INTERVAL = 5.0
"""Seconds between two lines of progress written to a stream that is not a terminal."""

TERMINAL_INTERVAL = 0.1
"""Seconds between two redraws of the bar on a terminal."""


def format_duration(seconds: float) -> str:
    """``mm:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _one_line() -> Column:
    return Column(no_wrap=True, overflow="ellipsis")


class _Labelled(ProgressColumn):
    """Another column's text with a word in front of it (``elapsed 0:00:12``)."""

    def __init__(self, word: str, column: ProgressColumn) -> None:
        super().__init__(table_column=_one_line())
        self.word = word
        self.column = column

    def render(self, task: Task) -> Text:
        inner = self.column.render(task)
        text = Text(f"{self.word} ")
        text.append_text(inner if isinstance(inner, Text) else Text(str(inner)))
        return text


class _RunProgress(Progress):
    """rich's Progress with one more line under the bar: the run's status."""

    status = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.status:
            yield Text(self.status, no_wrap=True, overflow="ellipsis")


class ProgressBar:
    """Counts replications finished in this run; ``skipped`` ones were done by an earlier run.

    The coordinator sets ``done``, ``failed``, ``retried``, ``total`` (a ``stop:`` run's total
    grows with every batch) and ``status`` and calls :meth:`update` often; it draws only every
    ``interval`` seconds (by default :data:`TERMINAL_INTERVAL` on a terminal,
    :data:`LOG_INTERVAL` elsewhere) unless forced.
    """

    def __init__(self, total: int, *, skipped: int = 0, stream: TextIO | None = None,
                 enabled: bool = True, width: int = 24, interval: float | None = None) -> None:
        self.total = total
        self.skipped = skipped
        self.done = 0
        self.failed = 0
        self.retried = 0
        self.status = ""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self._tty = is_terminal(self.stream)
        self._interval = interval if interval is not None else \
            TERMINAL_INTERVAL if self._tty else LOG_INTERVAL
        self._last_draw = -float("inf")
        self._text_columns: list[ProgressColumn] = [
            TextColumn("{task.completed:.0f}/{task.total:.0f} replications", markup=False,
                       table_column=_one_line()),
            TextColumn("{task.fields[rate]}", markup=False, table_column=_one_line()),
            _Labelled("elapsed", TimeElapsedColumn()),
            _Labelled("ETA", TimeRemainingColumn()),
            TextColumn("{task.fields[extras]}", markup=False, table_column=_one_line()),
        ]
        # What the run prints meanwhile goes above the bar, but only where it would have gone
        # anyway: stderr when the bar is on stderr, stdout when it is the same kind of screen.
        on_stderr = self.stream is sys.stderr
        stdout_on_screen = self._tty and is_terminal(sys.stdout)
        # The task lives in a Progress that draws only on a terminal; elsewhere it only keeps
        # the counts and the speed samples that the ETA comes from.
        self._progress = _RunProgress(
            BarColumn(bar_width=width), *self._text_columns,
            console=console_for(self.stream, terminal=self._tty), auto_refresh=False,
            transient=False, disable=not (self._tty and enabled),
            redirect_stdout=stdout_on_screen, redirect_stderr=on_stderr,
        )
        self._task: TaskID = self._progress.add_task(
            "run", total=max(total, 0), completed=skipped, rate="", extras="")
        self._started = False
        self._finished = False

    def _sync(self) -> Task:
        finished = self.skipped + self.done + self.failed
        elapsed = self._progress.tasks[0].elapsed or 0.0
        # A rate over less than a second of work says nothing yet.
        rate = f"{(self.done + self.failed) / elapsed:.2f}/s" if elapsed >= 1.0 else "--/s"
        extras = []
        if self.skipped:
            extras.append(f"{self.skipped} resumed")
        if self.retried:
            extras.append(f"{self.retried} retried")
        if self.failed:
            extras.append(f"{self.failed} failed")
        self._progress.update(self._task, total=max(self.total, finished), completed=finished,
                              rate=rate,
                              extras="(" + ", ".join(extras) + ")" if extras else "")
        self._progress.status = for_terminal(self.status)
        return self._progress.tasks[0]

    def line(self) -> str:
        """The progress as one plain line (what a log gets)."""
        task = self._sync()
        parts = []
        for column in self._text_columns:
            rendered: Any = column.render(task)
            text = rendered.plain if isinstance(rendered, Text) else str(rendered)
            if text:
                parts.append(text)
        line = "  ".join(parts)
        if self._progress.status:
            line += " | " + self._progress.status
        return line

    def update(self, force: bool = False) -> None:
        if not self.enabled or self._finished:
            return
        self._sync()  # every call: the speed samples the ETA comes from
        now = time.monotonic()
        if not force and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        if self._tty:
            if not self._started:
                self._progress.start()
                self._started = True
            self._progress.refresh()
        else:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """Draw the final state and give the terminal back (idempotent)."""
        if not self.enabled or self._finished:
            return
        self.update(force=True)
        self._finished = True
        if self._started:
            self._progress.stop()
