"""What is safe where: names and labels in paths, partition names, terminals and shell lines.

A config's names travel far: the experiment, organisation, model and stream names become labels
and partition values, label keys and sweep parameter names become columns and Hive partition
directories (``key=value``), and all of them are printed to terminals and into the shell lines
the command line suggests. This module is the one place that decides what is acceptable in each
of those places, so the config validation, ``export`` and the command line apply the same rules:

* :func:`name_problem`: experiment, organisation, model and stream names. They may become a path
  component, so no path separators, no ``.``/``..``, nothing a terminal interprets (control and
  bidirectional-override characters), no surrounding whitespace, at most 200 characters.
* :func:`key_problem`: label keys and sweep parameter names, which become column names and Hive
  partition directories: a name, and also no ``=`` and no leading ``.``/``_`` (Parquet readers
  skip directories that start with them, so their data would silently vanish from queries).
* :func:`value_problem`: string label values, which are escaped wherever they land in a path but
  shown in terminals: nothing a terminal interprets.

Where text that was not checked (a path, a label from someone's own shard, an error message) is
shown, it is escaped: :func:`for_terminal` for terminals, :func:`shell_word` for shell lines,
:func:`python_str` and :func:`sql_str` for string literals inside them.
"""

from __future__ import annotations

import json
import re
import shlex

__all__ = [
    "MAX_NAME_CHARS",
    "for_terminal",
    "key_problem",
    "name_problem",
    "python_str",
    "shell_word",
    "sql_str",
    "value_problem",
]

MAX_NAME_CHARS = 200
"""Longest experiment, stream, label or parameter name."""

# C0 and C1 controls (newline, tab, escape, DEL...), line and paragraph separators, the
# bidirectional marks and overrides that reorder what a terminal shows (a "Trojan source" name
# can look like another), and lone surrogates (not encodable, so not storable as UTF-8 JSON).
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _describe_char(ch: str) -> str:
    return f"U+{ord(ch):04X}" if ord(ch) > 0x7F else repr(ch)


def value_problem(text: str) -> str | None:
    """Why ``text`` cannot be a label value, or None when it can."""
    bad = _TERMINAL_UNSAFE.search(text)
    if bad is not None:
        return (f"contains the control character {_describe_char(bad.group())} at position "
                f"{bad.start()}, which terminals interpret")
    return None


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot be an experiment, organisation, model or stream name, or None."""
    if not text:
        return "must not be empty"
    if len(text) > MAX_NAME_CHARS:
        return f"is {len(text)} characters long; at most {MAX_NAME_CHARS} are allowed"
    problem = value_problem(text)
    if problem is not None:
        return problem
    if "/" in text or "\\" in text:
        return "contains a path separator ('/' or '\\'); names may become path components"
    if text in (".", ".."):
        return f"{text!r} is not a usable name (it means a directory in a path)"
    if text != text.strip():
        return "starts or ends with whitespace, which no terminal shows"
    return None


def key_problem(text: str) -> str | None:
    """Why ``text`` cannot be a label key or sweep parameter name, or None when it can."""
    problem = name_problem(text)
    if problem is not None:
        return problem
    if "=" in text:
        return "contains '=', which separates name and value in a Hive partition directory"
    if text[0] in "._":
        return (f"starts with {text[0]!r}: Parquet readers skip partition directories that do, "
                "so their rows would vanish from queries")
    return None


def for_terminal(text: str) -> str:
    """``text`` with every character a terminal would interpret shown as an escape (``\\x1b``).

    Newlines and tabs are escaped too: what is printed as one line stays one line.
    """
    return _TERMINAL_UNSAFE.sub(lambda m: m.group().encode("unicode_escape",
                                                           "backslashreplace").decode("ascii"),
                                text)


def shell_word(text: str) -> str:
    """``text`` as one word of a POSIX shell line, whatever it contains."""
    return shlex.quote(text)


def python_str(text: str) -> str:
    """A Python string literal for ``text`` (double-quoted, ASCII only: safe in any shell word)."""
    return json.dumps(text, ensure_ascii=True)


def sql_str(text: str) -> str:
    """An SQL string literal for ``text`` (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"
