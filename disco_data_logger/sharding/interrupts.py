"""Ctrl-C that waits until a commit is whole.

Python raises ``KeyboardInterrupt`` at whatever bytecode runs when SIGINT arrives. Inside a
shard's commit that can be after a journal frame's bytes are written and before the writer
notes that it wrote them; the close that follows would then write the same group a second time
(the index drops the copy, but counts it as a duplicate), or, between two ``write()`` calls of
one frame, leave half a frame in the middle of the journal. :func:`whole` runs a commit, a sync
or a close with SIGINT caught and remembered, then hands the remembered SIGINT to the handler
that was installed before (the default one raises ``KeyboardInterrupt``), once the step is done.
A worker stopped by Ctrl-C therefore never loses nor repeats a commit; it stops right after one.

Only the main thread receives signals, so elsewhere :func:`whole` changes nothing.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["sigint_deferred", "whole"]

F = TypeVar("F", bound=Callable[..., Any])

_depth = 0
_caught = False


def _remember(signum: int, frame: Any) -> None:
    global _caught
    _caught = True


def _deliver(previous: Any) -> None:
    """Give a remembered SIGINT to the handler it would have reached."""
    if callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt here
    elif previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)  # the process's default action, as it would have
    # SIG_IGN: the signal was to be ignored anyway


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Run the block with SIGINT held back; deliver it (once) when the block ends. Nests."""
    global _depth, _caught
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; only it touches the counter
        return
    if _depth:  # nested: the outermost block delivers
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    if signal.getsignal(signal.SIGINT) is None:
        yield  # a handler installed outside Python: it could not be put back
        return
    try:
        previous = signal.signal(signal.SIGINT, _remember)
    except ValueError:  # not the main interpreter: signals are not ours to handle
        yield
        return
    _depth, _caught = 1, False
    try:
        yield
    finally:
        _depth = 0
        signal.signal(signal.SIGINT, previous)
        if _caught:
            _caught = False
            _deliver(previous)


def whole(method: F) -> F:
    """Decorate a method that must not be cut by Ctrl-C (see the module's docstring)."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with sigint_deferred():
            return method(*args, **kwargs)

    return run  # type: ignore[return-value]
