"""Where a run's fresh tasks come from: the fixed plan, or batches decided by a ``stop:`` rule.

The coordinator's run loop pulls fresh tasks from a :class:`TaskSource` when a worker is free
and tells it how each task ended (committed, or failed for good); retries and re-queued
attempts stay the coordinator's. The loop goes on while tasks are in flight, queued, or
:meth:`TaskSource.waiting` (a source that may have more once what runs now has finished).

* :class:`PlannedTasks` (no ``stop:``): every task of the plan that is not committed yet, in plan
  order, built one at a time.
* :class:`PrecisionTasks` (a ``stop:`` section): replications are run per sweep point in batches
  up to the rule's next checkpoint (:class:`~.stopping.PrecisionRule`). At start the rule is
  applied to what is committed; each point gets its ``more`` replications, the lowest
  replication numbers not committed, handed out, or failed for good in this run. Once a point's
  batch has drained (every task committed or failed for good), the rule is applied again (the
  index is merged first, and the metrics cache means only new replications are read) and the
  point gets its next batch, until the rule says it is done (target met, or
  ``max_replications``). A replication that failed for good is replaced through the rule: the
  point is short of its checkpoint, so the rule asks for one more number. Assessments are
  shared: one merge and one rule application serve every point that drained since the last,
  and they are spaced so that they cost a bounded share of the run (:data:`ASSESS_SHARE`)
  unless the workers would otherwise be idle.

Resume needs nothing of its own: the rule applied to the committed set at start decides as an
uninterrupted run would at the same checkpoint, because a checkpoint's verdict depends only on
its first ``c`` replications, and the lowest free numbers refill an interrupted batch first.
Replications that failed in an earlier run (rows of the index that are not committed) are run
again first, as a fixed run retries them, whatever their point's verdict.

Memory: two flags per (point, replication number) and a few counters per point, whatever the
number of replications run; the tasks are built when handed out.
"""

from __future__ import annotations

import math
import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PrecisionWarning
from .config import ExperimentConfig
from .planning import Task, TaskPlan, point_id
from .stopping import PointStatus, PrecisionRule, StopDecision, max_warning

if TYPE_CHECKING:
    import pyarrow as pa

    from .experiment import Experiment

__all__ = ["ASSESS_SHARE", "PlannedTasks", "PrecisionTasks", "TaskSource", "initial_plan",
           "precision_rule", "row_bounds", "stop_plan", "stop_summary"]

ASSESS_SHARE = 0.1
"""Most of the coordinator's time the precision assessments take while the workers are busy."""

MIN_ASSESS_INTERVAL = 1.0
"""Seconds between two assessments while the workers have other work."""


class TaskSource(ABC):
    """The fresh tasks of one run (see the module docstring)."""

    @abstractmethod
    def next_task(self) -> Task | None:
        """The next task to run now, or None when there is none right now."""

    def committed(self, task_id: str) -> None:
        """A task this source handed out is committed (its group commit is durable)."""
        return None

    def failed(self, task_id: str) -> None:
        """A task this source handed out failed every attempt."""
        return None

    def waiting(self) -> bool:
        """Whether more tasks may come once what runs now has finished."""
        return False

    def poll(self, idle: bool) -> None:
        """Let the source decide what comes next (``idle``: nothing runs or waits to run)."""
        return None

    @property
    @abstractmethod
    def total(self) -> int:
        """Tasks planned so far, committed by earlier runs included (the progress total)."""

    @abstractmethod
    def upper_bound(self) -> int:
        """The most tasks this run may still hand out (caps the worker count)."""

    def status(self) -> str:
        """One line for the progress display (empty: nothing to say)."""
        return ""

    @abstractmethod
    def plan_summary(self) -> dict[str, Any]:
        """The ``plan`` of ``experiment.json`` (:func:`~.planning.planned_counts` reads it)."""


class PlannedTasks(TaskSource):
    """Every task of the plan that is not done, in plan order."""

    def __init__(self, plan: TaskPlan, done: np.ndarray, resumed: int) -> None:
        self.plan = plan
        self._tasks: Iterator[Task] = plan.iter_tasks(done)
        self._left = len(plan) - resumed

    def next_task(self) -> Task | None:
        return next(self._tasks, None)

    @property
    def total(self) -> int:
        return len(self.plan)

    def upper_bound(self) -> int:
        return self._left

    def plan_summary(self) -> dict[str, Any]:
        return self.plan.summary()


def row_bounds(stored: pa.Table, points: int, replications: int) -> np.ndarray:
    """Per point, one more than the highest replication number with a row in the index's
    ``stored`` replications table (committed, failed or pending), within the plan's shape."""
    import pyarrow.compute as pc

    bounds = np.zeros(points, dtype=np.int64)
    if stored.num_rows == 0:
        return bounds
    p = np.asarray(pc.fill_null(stored["point_index"], -1).to_numpy(zero_copy_only=False),
                   dtype=np.int64)
    r = np.asarray(pc.fill_null(stored["replication"], -1).to_numpy(zero_copy_only=False),
                   dtype=np.int64)
    inside = (p >= 0) & (p < points) & (r >= 0) & (r < replications)
    np.maximum.at(bounds, p[inside], r[inside] + 1)
    return bounds


class PrecisionTasks(TaskSource):
    """Batches per sweep point until the precision rule is satisfied (module docstring).

    ``refresh(plan)`` brings the index up to date (a merge that records ``plan`` as the plan)
    and returns the experiment the rule reads; it is called at start and for every assessment.
    """

    def __init__(self, plan: TaskPlan, done: np.ndarray, rows: np.ndarray,
                 rule: PrecisionRule, refresh: Callable[[dict[str, Any]], Experiment]) -> None:
        n_points, most = plan.shape
        self.plan = plan
        self.rule = rule
        self.refresh = refresh
        self.point_ids = [point_id(i) for i in range(n_points)]
        self.done = done
        """``done[p, r]``: replication r of point p is committed."""
        self.taken = np.zeros_like(done)
        """``taken[p, r]``: handed out in this run (running, queued, committed or failed)."""
        self.committed_count = done.sum(axis=1).astype(np.int64)
        self.failed_count = 0
        """Tasks of this run that failed every attempt."""
        self.want = np.zeros(n_points, dtype=np.int64)
        """Tasks of the point's current batch still to hand out."""
        self.outstanding = np.zeros(n_points, dtype=np.int64)
        """Tasks handed out and neither committed nor failed for good yet."""
        self.final = np.zeros(n_points, dtype=bool)
        self.exhausted = np.zeros(n_points, dtype=bool)
        """Points that ran out of replication numbers before the rule was satisfied."""
        self._cursor = np.zeros(n_points, dtype=np.int64)
        self._queue: deque[int] = deque()
        self._drained: set[int] = set()
        self._ids: dict[str, tuple[int, int]] = {}
        self._statuses: list[PointStatus] = []
        self._assessed_at = -math.inf
        self._assess_seconds = 0.0
        self.warned: list[str] = []

        decision = self._assess()
        holes = np.array([int(np.count_nonzero(~done[p, :rows[p]])) for p in range(n_points)],
                         dtype=np.int64)
        for p, status in enumerate(decision.points):
            more = max(status.more, int(holes[p]))
            if more > 0:
                self._ask(p, more)
            else:
                self._settle(p, status)

    # -- handing out ---------------------------------------------------------------------------

    def _ask(self, p: int, more: int) -> None:
        self.want[p] = more
        self._queue.append(p)

    def _free_number(self, p: int) -> int | None:
        row_done, row_taken = self.done[p], self.taken[p]
        r = int(self._cursor[p])
        most = row_done.shape[0]
        while r < most and (row_done[r] or row_taken[r]):
            r += 1
        self._cursor[p] = r
        return r if r < most else None

    def next_task(self) -> Task | None:
        while self._queue:
            p = self._queue[0]
            r = self._free_number(p) if self.want[p] > 0 else None
            if r is None:
                self._queue.popleft()
                if self.want[p] > 0:  # every number is used: no more replications possible
                    self.want[p] = 0
                    self.exhausted[p] = True
                    self._check_drained(p)
                continue
            self.want[p] -= 1
            if self.want[p] == 0:
                self._queue.popleft()
            self.taken[p, r] = True
            self.outstanding[p] += 1
            task = self.plan.task(p, r)
            self._ids[task.task_id] = (p, r)
            return task
        return None

    def committed(self, task_id: str) -> None:
        where = self._ids.pop(task_id, None)
        if where is None:
            return
        p, r = where
        self.done[p, r] = True
        self.committed_count[p] += 1
        self.outstanding[p] -= 1
        self._check_drained(p)

    def failed(self, task_id: str) -> None:
        where = self._ids.pop(task_id, None)
        if where is None:
            return
        self.outstanding[where[0]] -= 1
        self.failed_count += 1
        self._check_drained(where[0])

    def _check_drained(self, p: int) -> None:
        if self.outstanding[p] == 0 and self.want[p] == 0 and not self.final[p]:
            self._drained.add(p)

    # -- deciding ------------------------------------------------------------------------------

    def waiting(self) -> bool:
        return not bool(self.final.all())

    def poll(self, idle: bool) -> None:
        if not self._drained:
            return
        since = time.monotonic() - self._assessed_at
        starving = not self._queue  # a worker that frees up now gets nothing new
        due = max(MIN_ASSESS_INTERVAL, self._assess_seconds / ASSESS_SHARE)
        if idle or since >= due or (starving and since >= 2 * self._assess_seconds):
            decision = self._assess()
            drained, self._drained = sorted(self._drained), set()
            for p in drained:
                status = decision.points[p]
                if status.done or self.exhausted[p]:
                    self._settle(p, status)
                else:
                    self._ask(p, status.more)

    def _assess(self) -> StopDecision:
        t0 = time.monotonic()
        experiment = self.refresh(self.plan_summary())
        if experiment.info.get("totals", {}).get("committed"):
            decision = self.rule.assess_experiment(experiment, self.point_ids)
        else:  # nothing committed yet, so no stream to compute metrics from
            decision = self.rule.assess({}, self.point_ids)
        self._statuses = decision.points
        self._assessed_at = time.monotonic()
        self._assess_seconds = self._assessed_at - t0
        return decision

    def _settle(self, p: int, status: PointStatus) -> None:
        """The point needs nothing more: say so once if it fell short of its target."""
        self.final[p] = True
        self._drained.discard(p)
        if status.state == "max":
            self._warn(max_warning(status, self.rule.max_replications))
        elif self.exhausted[p]:
            failed = int(np.count_nonzero(self.taken[p] & ~self.done[p]))
            self._warn(f"{status.point_id}: every replication number below max_replications="
                       f"{self.rule.max_replications} was used ({failed} failed) before the "
                       f"precision target was reached ({status.describe()}); fix the failures "
                       "and run again, or raise stop.max_replications")

    def _warn(self, text: str) -> None:
        self.warned.append(text)
        warnings.warn(text, PrecisionWarning, stacklevel=2)

    # -- reporting -----------------------------------------------------------------------------

    def planned(self) -> np.ndarray:
        """Per point: replication numbers asked for so far (committed in any run, handed out in
        this one, or still to hand out in the current batch)."""
        used = (self.done | self.taken).sum(axis=1).astype(np.int64)
        return used + self.want

    @property
    def total(self) -> int:
        return int(self.committed_count.sum() + self.outstanding.sum() + self.want.sum()) \
            + self.failed_count

    def upper_bound(self) -> int:
        free = ~(self.done | self.taken)
        return int(free[~self.final].sum())

    def status(self) -> str:
        if not self._statuses:
            return ""
        return StopDecision(self._statuses, self.rule.max_replications).progress_text()

    def decision(self) -> StopDecision:
        """The latest verdict for every point."""
        return StopDecision(self._statuses, self.rule.max_replications)

    def plan_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.plan.summary()
        if not self._statuses:  # before the first assessment: nothing known per point yet
            summary["stop"] = stop_summary(self.rule, None)
            return summary
        planned = self.planned()
        points = []
        for p, status in enumerate(self._statuses):
            entry: dict[str, Any] = status.to_json()
            entry["planned"] = int(planned[p])
            if self.exhausted[p] and self.final[p]:
                entry["state"] = "exhausted"
            elif not self.final[p]:
                entry["state"] = "running"
            points.append(entry)
        summary["stop"] = stop_summary(self.rule, points)
        return summary


def stop_summary(rule: PrecisionRule, points: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The ``plan.stop`` block of ``experiment.json``: the rule and, once known, every point's
    status (``planned``: replication numbers asked for so far)."""
    spec = rule.spec.model_dump(mode="json")
    spec["max_replications"] = rule.max_replications
    spec["min_replications"] = rule.min_replications
    out: dict[str, Any] = {"rule": spec, "metrics": list(rule.spec.metrics)}
    if points is not None:
        counts: dict[str, int] = {}
        for entry in points:
            counts[entry["state"]] = counts.get(entry["state"], 0) + 1
        out["states"] = counts
        out["points"] = points
    return out


def initial_plan(cfg: ExperimentConfig, plan: TaskPlan) -> dict[str, Any]:
    """The ``plan`` a run records before its source has decided anything."""
    summary: dict[str, Any] = plan.summary()
    if cfg.stop is not None:
        summary["stop"] = stop_summary(precision_rule(cfg), None)
    return summary


def precision_rule(cfg: ExperimentConfig) -> PrecisionRule:
    """The rule of a config's ``stop:`` section (``replications`` is its default maximum)."""
    if cfg.stop is None:
        raise ValueError("precision_rule(): the config has no stop: section")
    return PrecisionRule(cfg.stop, cfg.stop_max_replications)


def stop_plan(summary: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``stop`` block of a ``plan`` (None for a fixed plan)."""
    if not isinstance(summary, Mapping):
        return None
    block = summary.get("stop")
    return block if isinstance(block, Mapping) else None
