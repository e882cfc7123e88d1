"""Models for the analysis integration tests (importable by spawned workers by name)."""

from __future__ import annotations

from typing import Any

import numpy as np


def draws(ctx: Any) -> None:
    """Record what the task's generators give: ctx.rng at epoch 0, ctx.rng_for('a') at 1."""
    ctx.record("draws", 0.0, np.arange(4), ctx.rng.random(4))
    ctx.record("draws", 1.0, np.arange(4), ctx.rng_for("a").random(4))
    ctx.record("draws", 2.0, np.arange(4), ctx.rng_for("b").random(4))
