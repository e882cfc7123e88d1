"""A progress bar over replications on stderr: done/total, rate, ETA, failures and retries.

On a terminal the line is redrawn in place a few times a second; into a file or pipe (CI logs,
tests) a plain line is printed every few seconds instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "format_duration"]


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """Counts replications finished in this run; ``skipped`` ones were done by an earlier run."""

    def __init__(self, total: int, *, skipped: int = 0, stream: TextIO | None = None,
                 enabled: bool = True, width: int = 24) -> None:
        self.total = total
        self.skipped = skipped
        self.done = 0
        self.failed = 0
        self.retried = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._t0 = time.monotonic()
        self._last_draw = 0.0
        self._interval = 0.1 if self._tty else 5.0
        self._drawn = False

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed

    def line(self) -> str:
        finished = self.skipped + self.done + self.failed
        fraction = finished / self.total if self.total else 1.0
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self._t0
        rate = (self.done + self.failed) / elapsed if elapsed > 0 else 0.0
        eta = self.remaining / rate if rate > 0 else float("nan")
        text = (f"[{bar}] {finished}/{self.total} replications  {rate:.2f}/s  "
                f"elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}")
        extras = []
        if self.skipped:
            extras.append(f"{self.skipped} resumed")
        if self.retried:
            extras.append(f"{self.retried} retried")
        if self.failed:
            extras.append(f"{self.failed} failed")
        if extras:
            text += "  (" + ", ".join(extras) + ")"
        return text

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        if self._tty:
            self.stream.write("\r\x1b[2K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if not self.enabled:
            return
        self.update(force=True)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
