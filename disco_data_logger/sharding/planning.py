"""Planning: the tasks of an experiment, one per (sweep point, replication).

A task's seed depends only on ``(seed, point_index, replication)`` (``seeding: independent``, the
default) or on ``(seed, replication)`` (``seeding: common``: replication r of every sweep point
draws the same random numbers, so points are compared on common random numbers), so its results
never depend on the worker that ran it, the worker count or the order of execution.

:class:`TaskPlan` is the plan without the tasks: a task is built when it is about to run, and
which tasks are done is one bit per task (:meth:`TaskPlan.empty_mask`), so planning a million
tasks builds no million objects. :func:`plan_tasks` builds the whole list (small experiments,
tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ExperimentConfig

if TYPE_CHECKING:
    import pyarrow as pa

    from .parts import Part

__all__ = ["Task", "TaskPlan", "in_plan", "make_task", "plan_tasks", "planned_counts",
           "planned_table", "point_id", "stored_per_point", "task_id", "first_per_point"]


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


class TaskPlan:
    """Every task of an experiment, built one at a time when needed.

    Tasks run points in order and replications ``0..n-1`` within each point (the order of
    :func:`plan_tasks`). ``n`` is the config's ``replications``, or, with a ``stop:`` section,
    its ``max_replications``: the replication numbers a precision-driven run may use (which of
    them it runs is decided by :mod:`.sources`). With ``part`` (:class:`~.parts.Part`) the plan
    holds that part's tasks only: its length, :meth:`mark` and :meth:`iter_tasks` count and yield
    those; the shape of a done-mask stays the whole experiment's.
    """

    def __init__(self, cfg: ExperimentConfig, part: Part | None = None) -> None:
        self.cfg = cfg
        self.points = cfg.points()
        self.replications = int(cfg.stop_max_replications if cfg.stop is not None
                                else cfg.replications)
        self.part = part

    def __len__(self) -> int:
        if self.part is not None:
            return self.part.size(len(self.points), self.replications)
        return len(self.points) * self.replications

    @property
    def shape(self) -> tuple[int, int]:
        """``(points, replications)``: the shape of a done-mask."""
        return len(self.points), self.replications

    def summary(self) -> dict[str, int]:
        """What the index needs to list the planned tasks (see :func:`planned_table`)."""
        return {"points": len(self.points), "replications": self.replications}

    def task(self, point_index: int, replication: int) -> Task:
        return make_task(self.cfg, point_index, replication, self.points)

    def empty_mask(self) -> np.ndarray:
        """One flag per task, ``mask[point_index, replication]`` (one byte each)."""
        return np.zeros(self.shape, dtype=bool)

    def mark(self, mask: np.ndarray, task_ids: Sequence[str] | np.ndarray,
             point_indices: np.ndarray, replications: np.ndarray) -> int:
        """Set ``mask`` for the tasks given by columns (e.g. the committed rows of the index)
        that belong to this plan; returns how many were set."""
        p = np.asarray(point_indices, dtype=np.int64)
        r = np.asarray(replications, dtype=np.int64)
        inside = in_plan(task_ids, p, r, *mask.shape)
        if self.part is not None:
            inside &= (p + r) % self.part.count == self.part.index - 1
        mask[p[inside], r[inside]] = True
        return int(inside.sum())

    def iter_tasks(self, done: np.ndarray | None = None) -> Iterator[Task]:
        """The tasks not flagged in ``done``, in plan order, built lazily."""
        step = 1 if self.part is None else self.part.count
        for p in range(len(self.points)):
            row = None if done is None else done[p]
            first = 0 if self.part is None else self.part.first_replication(p)
            for r in range(first, self.replications, step):
                if row is None or not row[r]:
                    yield self.task(p, r)


def in_plan(task_ids: Any, point_indices: Any, replications: Any, points: int,
            n_replications: int) -> np.ndarray:
    """Which rows (columns of task ids, point indices, replications) are tasks of a plan of
    ``points`` x ``n_replications`` (the id must be the one the plan gives them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    p = np.asarray(pc.fill_null(pa.array(point_indices, type=pa.int64()), -1).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    r = np.asarray(pc.fill_null(pa.array(replications, type=pa.int64()), -1).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    inside = (p >= 0) & (p < points) & (r >= 0) & (r < n_replications)
    if len(p):
        # The id names the task; a user's own shard may reuse point and replication numbers.
        expected = _format_ids(pa.array(p), pa.array(r))[1]
        ids = task_ids.combine_chunks() if isinstance(task_ids, pa.ChunkedArray) else \
            pa.array(task_ids, type=pa.string())
        same = pc.equal(expected, ids)
        inside &= np.asarray(same.fill_null(False).to_numpy(zero_copy_only=False), bool)
    out: np.ndarray = inside
    return out


def planned_counts(plan: Mapping[str, Any] | None) -> np.ndarray | None:
    """Per sweep point, how many replication numbers a ``stop:`` run has asked for so far
    (``plan["stop"]["points"][i]["planned"]``); None for a fixed plan, where every replication
    below ``plan["replications"]`` is planned. A ``stop`` block without points (written before
    the rule's first decision) plans nothing beyond what has a row."""
    if not isinstance(plan, Mapping):
        return None
    stop = plan.get("stop")
    if not isinstance(stop, Mapping):
        return None
    points = int(plan.get("points", 0))
    counts = np.zeros(points, dtype=np.int64)
    for i, entry in enumerate(stop.get("points") or ()):
        if i < points and isinstance(entry, Mapping):
            value = entry.get("planned")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                counts[i] = value
    return counts


def stored_per_point(task_ids: Any, point_indices: Any, replications: Any, points: int,
                     n_replications: int) -> np.ndarray:
    """Per point of a plan of ``points`` x ``n_replications``: the rows (columns of task ids,
    point indices, replications) that are tasks of the plan."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(task_ids):
        return np.zeros(points, dtype=np.int64)
    inside = in_plan(task_ids, point_indices, replications, points, n_replications)
    p = np.asarray(pc.fill_null(pa.array(point_indices, type=pa.int64()), -1).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    counts: np.ndarray = np.bincount(p[inside], minlength=points).astype(np.int64)
    return counts


def first_per_point(table: pa.Table, counts: np.ndarray) -> pa.Table:
    """The first ``counts[p]`` rows of every point of ``table`` (rows in plan order, as
    :func:`planned_table` gives them)."""
    import pyarrow as pa

    p = np.asarray(table["point_index"].to_numpy(zero_copy_only=False), dtype=np.int64)
    if not len(p):
        return table
    rank = np.arange(len(p)) - np.searchsorted(p, p, side="left")
    keep = rank < np.maximum(counts, 0)[p]
    return table.filter(pa.array(keep))


def planned_table(points: int, replications: int) -> pa.Table:
    """``task_id, point_id, point_index, replication`` of every planned task, built in Arrow
    (the same ids as :func:`task_id`)."""
    import pyarrow as pa

    p = np.repeat(np.arange(points, dtype=np.int64), replications)
    r = np.tile(np.arange(replications, dtype=np.int64), points)
    p_arr, r_arr = pa.array(p), pa.array(r)
    pids, tids = _format_ids(p_arr, r_arr)
    return pa.table({"task_id": tids, "point_id": pids, "point_index": p_arr,
                     "replication": r_arr})


def _format_ids(p: pa.Array, r: pa.Array) -> tuple[pa.Array, pa.Array]:
    """:func:`point_id` and :func:`task_id` of whole columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pids = pc.binary_join_element_wise("p", pc.utf8_lpad(pc.cast(p, pa.string()), 4, "0"), "")
    tids = pc.binary_join_element_wise(
        pids, "-r", pc.utf8_lpad(pc.cast(r, pa.string()), 6, "0"), "")
    return pids, tids
