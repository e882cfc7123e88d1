"""Text for people: tables and live displays drawn with rich, as useful in a log as on a screen.

Every console this package writes through comes from :func:`console_for`, which decides once how
text lands on a stream:

* **a terminal**: rich lays tables out to the terminal's width and may use bold and colour;
* **anything else** (a file, a pipe, CI logs, ``capture_output``): plain text only. No colour, no
  cursor movement, no control character, lines as long as their content (never wrapped at 80
  columns) and without trailing blanks, so a log can be read and grepped.

In both, text is only text: rich's markup (``[bold]``), emoji codes (``:smile:``) and highlighting
are off, so a name that looks like markup prints as it is, and every cell passes through
:func:`~.names.for_terminal` (names read from disk may hold control characters).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .names import for_terminal

__all__ = ["console_for", "is_terminal", "print_fields", "print_table", "write"]

LOG_WIDTH = 1 << 16
"""The width a console lays text out to when it does not write to a terminal: wide enough that
no line of a table is ever wrapped."""


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a live display may redraw it)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):
        return False


def console_for(stream: TextIO, *, terminal: bool | None = None) -> Console:
    """A rich console writing to ``stream`` with the package's settings (module docstring)."""
    tty = is_terminal(stream) if terminal is None else terminal
    options: dict[str, Any] = dict(file=stream, markup=False, emoji=False, highlight=False,
                                   force_terminal=tty, force_jupyter=False)
    if not tty:
        options.update(width=LOG_WIDTH, color_system=None, no_color=True,
                       legacy_windows=False)
    else:
        # rich asks the process's standard streams for the width; ask the terminal written to.
        try:
            options["width"] = os.get_terminal_size(stream.fileno()).columns or None
        except (AttributeError, OSError, ValueError):
            pass
    return Console(**options)


def write(renderable: RenderableType, stream: TextIO | None = None) -> None:
    """Print ``renderable`` on ``stream`` (stdout by default): laid out for the terminal, or as
    plain lines without trailing blanks."""
    out = stream if stream is not None else sys.stdout
    if is_terminal(out):
        console_for(out).print(renderable)
        return
    buffer = io.StringIO()
    console_for(buffer, terminal=False).print(renderable)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    out.write("".join(line + "\n" for line in lines))
    out.flush()


def _cell(text: Any) -> Text:
    return Text(for_terminal("-" if text is None else str(text)))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool],
                stream: TextIO | None = None) -> None:
    """A table with one header line and one line per row (``right``: right-aligned columns)."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  padding=(0, 1, 0, 1))
    for header, aligned in zip(headers, right, strict=True):
        table.add_column(_cell(header), justify="right" if aligned else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*(_cell(c) for c in row))
    write(table, stream)


def print_fields(rows: Sequence[tuple[str, Any]], stream: TextIO | None = None) -> None:
    """``key  value`` lines, the keys in one column (``inspect``)."""
    table = Table(box=None, pad_edge=False, show_edge=False, show_header=False,
                  padding=(0, 1, 0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(_cell(key), _cell(value))
    write(table, stream)
