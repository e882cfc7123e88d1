"""The progress display and the tables of the command line (rich): redrawn in place on a real
terminal (a pseudo-terminal), plain periodic lines without control characters in a file, and
names escaped in both."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from disco_data_logger.sharding.console import print_fields, print_table
from disco_data_logger.sharding.progress import ProgressBar

CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # anything but the newline
HOSTILE = "p0001 \x1b[31mred\x1b[0m [bold]x[/bold] :smile: \u202eevil"


@pytest.fixture
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A real pseudo-terminal: (the stream a program writes to, the fd its screen reads)."""
    screen, program = os.openpty()
    # 200 columns: what a wide terminal window reports (a new pty reports none)
    fcntl.ioctl(program, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    stream = os.fdopen(program, "w", encoding="utf-8")
    yield stream, screen
    stream.close()
    os.close(screen)


def screen_text(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        data = os.read(fd, 1 << 16)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8")


def test_a_log_gets_plain_lines(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with log.open("w", encoding="utf-8") as stream:
        bar = ProgressBar(120, skipped=10, stream=stream)
        bar.update(force=True)
        bar.done, bar.retried, bar.failed = 30, 2, 1
        bar.status = "precision: 0/2 points done; " + HOSTILE
        bar.update(force=True)
        bar.finish()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert not any(CONTROL.search(line) for line in lines), lines
    assert lines[0].startswith("10/120 replications  --/s  elapsed 0:00:00  ETA ")
    assert lines[1].startswith("41/120 replications ")
    assert "(10 resumed, 2 retried, 1 failed)" in lines[1]
    # the status follows the counts, escaped: no markup or emoji is interpreted
    assert lines[1].endswith(r" | precision: 0/2 points done; p0001 \x1b[31mred\x1b[0m "
                             r"[bold]x[/bold] :smile: \u202eevil")
    assert lines[2] == lines[1].replace(lines[1].split("  ")[2], lines[2].split("  ")[2])


def test_a_log_gets_a_line_per_interval_not_per_update() -> None:
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, interval=3600)
    for _ in range(10):
        bar.done += 1
        bar.update()
    assert stream.getvalue().count("\n") == 1  # the first draw only
    bar.finish()
    assert stream.getvalue().splitlines()[-1].startswith("10/10 replications")


def test_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, enabled=False)
    bar.update(force=True)
    bar.finish()
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_redrawn_in_place(terminal: tuple[TextIO, int]) -> None:
    stream, screen = terminal
    bar = ProgressBar(20, skipped=2, stream=stream)
    for k in range(3):
        bar.done += 3
        bar.status = f"precision: 0/1 points done; p0000 n={k} L ±0.2/0.05 " + HOSTILE
        bar.update(force=True)
    bar.finish()
    stream.flush()
    shown = screen_text(screen)
    assert "\x1b[?25l" in shown and shown.rstrip().endswith("\x1b[?25h")  # cursor hidden, back
    assert "\x1b[1A" in shown  # redrawn in place: the cursor goes up over the previous frame
    assert "━" in shown and "11/20 replications" in shown
    # the status is under the bar, escaped: the only escape sequences are rich's own
    assert r"p0000 n=2 L ±0.2/0.05 p0001 \x1b[31mred\x1b[0m [bold]x[/bold] :smile:" in shown
    assert "\u202e" not in shown


def test_finish_gives_the_terminal_back_once(terminal: tuple[TextIO, int]) -> None:
    stream, screen = terminal
    bar = ProgressBar(1, stream=stream)
    bar.update(force=True)
    bar.done = 1
    bar.finish()
    bar.finish()
    bar.update(force=True)
    stream.flush()
    assert screen_text(screen).count("\x1b[?25h") == 1


def test_tables_in_a_log_are_plain_and_escaped() -> None:
    out = io.StringIO()
    print_table(["metric", "point", "n"], [["L", HOSTILE, "20"], ["W", "p0000", "200"]],
                [False, False, True], out)
    lines = out.getvalue().splitlines()
    assert not any(CONTROL.search(line) for line in lines)
    assert [line.split()[:2] for line in lines] == [["metric", "point"], ["L", "p0001"],
                                                    ["W", "p0000"]]
    assert lines[0].endswith("  n") and lines[2].endswith("200")  # right-aligned
    assert all(line == line.rstrip() for line in lines)
    assert r"\x1b[31mred\x1b[0m [bold]x[/bold] :smile: \u202eevil" in lines[1]


def test_long_fields_are_never_wrapped_in_a_log() -> None:
    out = io.StringIO()
    long = "x" * 500
    print_fields([("output", long), ("replications", "4 total")], out)
    assert out.getvalue().splitlines() == ["output        " + long,
                                           "replications  4 total"]


def test_tables_on_a_terminal_are_escaped_too(terminal: tuple[TextIO, int]) -> None:
    stream, screen = terminal
    print_fields([("experiment", HOSTILE)], stream)
    stream.flush()
    shown = screen_text(screen)
    assert r"\x1b[31mred\x1b[0m [bold]x[/bold] :smile: \u202eevil" in shown
    assert "\x1b[31m" not in shown.replace(r"\x1b[31m", "")


def test_the_eta_of_a_log_comes_from_the_updates_between_lines() -> None:
    stream = io.StringIO()
    bar = ProgressBar(100, stream=stream, interval=3600)
    bar.update()
    for _ in range(5):
        bar.done += 10
        bar.update()  # no line, but a speed sample
        time.sleep(0.01)
    bar.update(force=True)
    assert "ETA -:--:--" not in stream.getvalue().splitlines()[-1]


def test_a_growing_total_is_not_finished() -> None:
    """A stop: run's total grows after a batch completed: rich starts the task over."""
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, interval=3600)
    bar.done = 10
    bar.update(force=True)
    assert stream.getvalue().splitlines()[-1].startswith("10/10 replications")
    bar.total = 30
    bar.update(force=True)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("10/30 replications")
    assert "ETA 0:00:00" not in line  # a finished task would say it is done
