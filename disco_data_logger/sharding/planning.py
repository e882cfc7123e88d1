"""Planning: the tasks of an experiment, one per (sweep point, replication).

A task's seed depends only on ``(seed, point_index, replication)`` (``seeding: independent``, the
default) or on ``(seed, replication)`` (``seeding: common``: replication r of every sweep point
draws the same random numbers, so points are compared on common random numbers), so its results
never depend on the worker that ran it, the worker count or the order of execution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ExperimentConfig

__all__ = ["Task", "make_task", "plan_tasks", "point_id", "task_id"]


@dataclass(frozen=True)
class Task:
    """One (sweep point, replication) pair: the unit that is run, retried and committed."""

    task_id: str
    point_id: str
    point_index: int
    point_params: dict[str, Any]
    replication: int
    seed_seq: tuple[int, ...]
    """``(entropy, *spawn_key)``: enough to rebuild the task's SeedSequence anywhere."""

    def seed_sequence(self) -> np.random.SeedSequence:
        """The task's own SeedSequence (a child of the master seed)."""
        return np.random.SeedSequence(self.seed_seq[0], spawn_key=self.seed_seq[1:])


def point_id(point_index: int) -> str:
    return f"p{point_index:04d}"


def task_id(point_index: int, replication: int) -> str:
    return f"{point_id(point_index)}-r{replication:06d}"


def make_task(
    cfg: ExperimentConfig,
    point_index: int,
    replication: int,
    points: Sequence[Mapping[str, Any]] | None = None,
) -> Task:
    """The task of one (point, replication), identical whether planned alone or with others.

    ``points`` is ``cfg.points()``, passed in by callers that build many tasks.
    """
    if points is None:
        points = cfg.points()
    if not 0 <= point_index < len(points):
        raise IndexError(f"point {point_index} out of range (the config has {len(points)})")
    # The spawn key (point, replication) is what SeedSequence(seed).spawn() would give the
    # replication-th child of the point-th child: derived from these three numbers only. Under
    # common random numbers the key leaves the point out; its length (1, not 2) keeps those
    # streams apart from every independent one.
    if cfg.seeding == "common":
        seed_seq: tuple[int, ...] = (cfg.seed, replication)
    else:
        seed_seq = (cfg.seed, point_index, replication)
    return Task(
        task_id=task_id(point_index, replication),
        point_id=point_id(point_index),
        point_index=point_index,
        point_params=dict(points[point_index]),
        replication=replication,
        seed_seq=seed_seq,
    )


def plan_tasks(cfg: ExperimentConfig) -> list[Task]:
    """Every task of the experiment: points in order, replications 0..n-1 within each point."""
    points = cfg.points()
    return [
        make_task(cfg, p, r, points) for p in range(len(points)) for r in range(cfg.replications)
    ]
