"""Small models for the integration tests: importable by spawned workers and Ray actors.

The tests put this directory on ``PYTHONPATH`` (see ``conftest.py``), so a config can name
``ddl_testmodels:steady`` as its entry point. Crashing models crash only on a task's first
attempt, keyed on a marker file per task in ``ctx.params["marker_dir"]``, so a retry succeeds.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np


def steady(ctx: Any) -> None:
    """A random walk over a few entities plus Poisson arrivals; deterministic given ctx.rng."""
    n = int(ctx.params.get("entities", 8))
    days = int(ctx.duration)
    level = np.zeros(n)
    offset = float(ctx.params.get("offset", 0.0))
    for day in range(days):
        level += ctx.rng.normal(0.0, 1.0, size=n) + offset
        touched = np.flatnonzero(ctx.rng.random(n) < 0.6)
        ctx.record("level", day + 0.5, touched, np.round(level[touched], 2))
        arrivals = ctx.rng.poisson(2.0, size=n).astype(float)
        hit = np.flatnonzero(arrivals)
        ctx.record("arrivals", day + 0.25, hit, arrivals[hit])
    delay = float(ctx.params.get("sleep", 0.0))
    if delay:
        time.sleep(delay)


def _first_attempt(ctx: Any) -> bool:
    """True (and remembered) the first time this task runs: the marker survives the crash."""
    crash = ctx.params.get("crash_replications", [])
    if ctx.replication not in crash:
        return False
    marker = Path(ctx.params["marker_dir"]) / f"{ctx.task_id}.crashed"
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    return True


def _half_then(ctx: Any, action: Any) -> None:
    """Record the first half of a replication, flush it to disk, then misbehave."""
    n = 4
    for day in range(int(ctx.duration) // 2):
        ctx.record("level", day + 0.5, np.arange(n), np.full(n, 666.0))
    ctx.logger.flush()
    if _first_attempt(ctx):
        action()
    steady(ctx)


def exit_once(ctx: Any) -> None:
    """os._exit(1) in the middle of the replication on its first attempt."""
    if _first_attempt_peek(ctx):
        _half_then(ctx, lambda: os._exit(1))
    else:
        steady(ctx)


def kill_once(ctx: Any) -> None:
    """SIGKILL itself in the middle of the replication on its first attempt."""
    if _first_attempt_peek(ctx):
        _half_then(ctx, lambda: os.kill(os.getpid(), signal.SIGKILL))
    else:
        steady(ctx)


def raise_once(ctx: Any) -> None:
    """Raise in the middle of the replication on its first attempt."""

    def fail() -> None:
        raise RuntimeError(f"planned failure of {ctx.task_id}")

    if _first_attempt_peek(ctx):
        _half_then(ctx, fail)
    else:
        steady(ctx)


def always_fails(ctx: Any) -> None:
    """Replications listed in ``fail_replications`` raise every time."""
    if ctx.replication in ctx.params.get("fail_replications", []):
        raise ValueError(f"replication {ctx.replication} always fails")
    steady(ctx)


def _first_attempt_peek(ctx: Any) -> bool:
    if ctx.replication not in ctx.params.get("crash_replications", []):
        return False
    return not (Path(ctx.params["marker_dir"]) / f"{ctx.task_id}.crashed").exists()
