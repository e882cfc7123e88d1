"""Models for the hostile-service tests and the damage fuzzer: importable by spawned workers
(``tests.reliability.hostile_models:<name>``; the repository root is on ``sys.path``, which
``spawn`` hands to its children, and the tests put it on ``PYTHONPATH`` for subprocesses)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

RECORDS_PER_DAY = 3


def walk(ctx: Any) -> None:
    """``duration`` records of 3 values on the stream ``level``; optional ``sleep`` per day.

    Deterministic given the task: the values are the day and the replication, so a test knows
    every committed record without reading it (``expected_values``).
    """
    pause = float(ctx.params.get("sleep", 0.0))
    for day in range(int(ctx.duration)):
        ctx.record("level", day + 0.5, np.arange(RECORDS_PER_DAY),
                   np.full(RECORDS_PER_DAY, float(day * 1000 + ctx.replication)))
        if pause:
            time.sleep(pause)


def expected_values(replication: int, duration: int) -> list[float]:
    """The values ``walk`` records for one replication, in order (one per index)."""
    return [float(day * 1000 + replication) for day in range(duration)
            for _ in range(RECORDS_PER_DAY)]


def fails_while_flagged(ctx: Any) -> None:
    """Raises (always at the same line) while the file ``ctx.params["flag"]`` exists; then
    records like :func:`walk`. The flag stands for a bug the user fixes between two runs."""
    if Path(ctx.params["flag"]).exists():
        raise ValueError(f"model bug hit by {ctx.task_id}")
    walk(ctx)


def fails_some(ctx: Any) -> None:
    """Replications listed in ``fail_replications`` raise every time; the others record."""
    if ctx.replication in ctx.params.get("fail_replications", []):
        raise RuntimeError(f"replication {ctx.replication} cannot be simulated")
    walk(ctx)


def killed_once(ctx: Any) -> None:
    """Like :func:`walk`, but the first attempt of each replication in ``kill_replications``
    records half its days, flushes them to disk and SIGKILLs its own worker process (a marker
    file per task in ``marker_dir`` remembers it across processes, so the retry succeeds)."""
    import os
    import signal

    marker = Path(ctx.params["marker_dir"]) / f"{ctx.task_id}.killed"
    if ctx.replication in ctx.params.get("kill_replications", []) and not marker.exists():
        for day in range(int(ctx.duration) // 2):
            ctx.record("level", day + 0.5, np.arange(RECORDS_PER_DAY),
                       np.full(RECORDS_PER_DAY, float(day * 1000 + ctx.replication)))
        ctx.logger.flush()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    walk(ctx)
