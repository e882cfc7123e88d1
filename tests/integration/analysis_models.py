"""Models for the analysis integration tests (importable by spawned workers by name)."""

from __future__ import annotations

from typing import Any

import numpy as np


def draws(ctx: Any) -> None:
    """Record what the task's generators give: ctx.rng at epoch 0, ctx.rng_for('a') at 1."""
    ctx.record("draws", 0.0, np.arange(4), ctx.rng.random(4))
    ctx.record("draws", 1.0, np.arange(4), ctx.rng_for("a").random(4))
    ctx.record("draws", 2.0, np.arange(4), ctx.rng_for("b").random(4))


def mm1_failing(ctx: Any) -> None:
    """The M/M/1 model, raising for the replications listed in ``fail_replications`` at the
    point whose ``arrival_rate`` is ``fail_rate`` (a failure that repeats on every attempt)."""
    from disco_data_logger.models import mm1

    fail = ctx.params.pop("fail_replications", [])
    rate = ctx.params.pop("fail_rate", None)
    if ctx.replication in fail and ctx.params.get("arrival_rate") == rate:
        raise RuntimeError(f"replication {ctx.replication} always fails")
    mm1.run(ctx)
