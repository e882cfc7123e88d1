"""Precision-driven replication counts: how many more replications each sweep point needs.

:class:`PrecisionRule` is the decision of a ``stop:`` section as a pure function of the metric
values committed so far. It is evaluated at fixed *checkpoints* only: ``min_replications``, then
every ``batch`` more, and ``max_replications``. A point stops at the first checkpoint ``c`` where
the half-width of every listed metric is at most its target, computed from the first ``c``
replications, and where that also held for the ``k`` prefixes before it (``c - k .. c``;
``k = look_ahead`` up to 100 replications and ``look_ahead`` per cent of ``c`` beyond: the
look-ahead of Hoad, Robinson and Davies (2010) that keeps a lucky early interval from stopping a
point).

Because the decision at a checkpoint depends only on the values of the first ``c`` replications
(in replication order), it is the same whenever it is made: a run killed halfway through a batch
and resumed completes that batch and decides exactly as an uninterrupted run would, and a
replication is never counted twice (the values come from the committed replications of the
index, one per task id).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow.compute as pc

from .config import StopSpec
from .statistics import running_intervals

if TYPE_CHECKING:
    from .experiment import Experiment

__all__ = ["PrecisionRule", "PointStatus", "StopDecision", "describe_stop", "max_warning"]

State = Literal["running", "met", "max"]


@dataclass(frozen=True)
class PointStatus:
    """Where one sweep point stands against the precision target."""

    point_id: str
    n: int
    """Committed replications of the point."""
    state: State
    """``running`` (needs more), ``met`` (target reached) or ``max`` (stopped at the maximum)."""
    more: int
    """Replications to add now to reach the next checkpoint (0 when the point is done)."""
    stopped_at: int | None
    """The checkpoint at which the point stopped (None while running)."""
    half_width: dict[str, float] = field(default_factory=dict)
    """Per metric: the current half-width (at ``stopped_at`` when done, else at ``n``)."""
    target: dict[str, float] = field(default_factory=dict)
    """Per metric: the absolute half-width target at the same n (relative targets resolved)."""
    mean: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state != "running"

    def to_json(self) -> dict[str, object]:
        """The status as plain JSON data (NaN as null), as ``experiment.json`` holds it."""
        def clean(values: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if v is None or math.isnan(v) else v) for k, v in values.items()}

        return {"point_id": self.point_id, "n": self.n, "state": self.state, "more": self.more,
                "stopped_at": self.stopped_at, "half_width": clean(self.half_width),
                "target": clean(self.target), "mean": clean(self.mean)}

    def describe(self) -> str:
        """``p0001 n=40 L ±0.061/0.050`` (+ ``met`` or ``max`` when done)."""
        parts = [f"{self.point_id} n={self.n}"]
        for name, hw in self.half_width.items():
            target = self.target.get(name, math.nan)
            parts.append(f"{name} ±{_num(hw)}/{_num(target)}")
        if self.state != "running":
            parts.append(self.state)
        return " ".join(parts)


def _num(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3g}"


def max_warning(status: PointStatus, max_replications: int) -> str:
    """The warning of a point that stopped at ``max_replications`` short of its target."""
    short = [f"{name} ±{_num(hw)} (target ±{_num(status.target[name])})"
             for name, hw in status.half_width.items()
             if not hw <= status.target.get(name, math.nan)]
    return (f"{status.point_id}: stopped at max_replications={max_replications} without "
            f"reaching the precision target: {', '.join(short)}; raise stop.max_replications "
            "or relax stop.half_width")


@dataclass(frozen=True)
class StopDecision:
    """The rule's verdict for every sweep point."""

    points: list[PointStatus]
    max_replications: int

    @property
    def done(self) -> bool:
        """True when no point needs more replications."""
        return all(p.done for p in self.points)

    @property
    def more(self) -> dict[str, int]:
        """Point id -> replications to add now (points that are done are left out)."""
        return {p.point_id: p.more for p in self.points if p.more > 0}

    @property
    def warnings(self) -> list[str]:
        """One line per point that stopped at ``max_replications`` short of its target."""
        return [max_warning(p, self.max_replications) for p in self.points if p.state == "max"]

    def progress_text(self, width: int = 100) -> str:
        """A compact line for the progress display: points done and the widest miss."""
        done = sum(p.done for p in self.points)
        text = f"precision: {done}/{len(self.points)} points done"
        running = [p for p in self.points if not p.done]
        if running:
            text += "; " + "; ".join(p.describe() for p in running[:3])
            if len(running) > 3:
                text += f"; +{len(running) - 3} more"
        return text if len(text) <= width else text[: width - 1] + "…"


class PrecisionRule:
    """The decision logic of a ``stop:`` section (see the module docstring)."""

    def __init__(self, spec: StopSpec, max_replications: int | None = None) -> None:
        self.spec = spec
        most = spec.max_replications if spec.max_replications is not None else max_replications
        if most is None:
            raise ValueError("max_replications is needed (the config's replications, by default)")
        if spec.min_replications > most:
            if "min_replications" in spec.model_fields_set:
                raise ValueError(f"min_replications ({spec.min_replications}) exceeds "
                                 f"max_replications ({most})")
        self.max_replications = int(most)
        self.min_replications = min(spec.min_replications, self.max_replications)

    def look_ahead(self, n: int) -> int:
        """How many earlier prefixes must also meet the target when stopping at ``n``."""
        k = self.spec.look_ahead
        return k if n <= 100 else (k * n) // 100

    def checkpoints_upto(self, n: int) -> list[int]:
        """The checkpoints at or below ``n``."""
        lo, step, most = self.min_replications, self.spec.batch, self.max_replications
        points = list(range(lo, min(n, most) + 1, step))
        if n >= most and (not points or points[-1] != most):
            points.append(most)
        return points

    def next_checkpoint(self, n: int) -> int:
        """The smallest checkpoint above ``n`` (``max_replications`` at most)."""
        lo, step, most = self.min_replications, self.spec.batch, self.max_replications
        if n < lo:
            return lo
        return min(lo + ((n - lo) // step + 1) * step, most)

    def _targets(self, means: np.ndarray) -> np.ndarray:
        if self.spec.relative:
            return self.spec.half_width * np.abs(means)
        return np.full(means.shape, self.spec.half_width)

    def assess_point(self, point_id: str, values: Mapping[str, Sequence[float] | np.ndarray]
                     ) -> PointStatus:
        """The status of one point from its metric values in replication order."""
        names = self.spec.metrics
        missing = [m for m in names if m not in values]
        if missing:
            raise KeyError(f"point {point_id}: no values for metric(s) {missing}")
        arrays = {m: np.asarray(values[m], dtype=np.float64) for m in names}
        n = len(arrays[names[0]])
        if any(len(a) != n for a in arrays.values()):
            raise ValueError(f"point {point_id}: metrics have different numbers of values")
        # met[j - 1]: the target holds for every metric with the first j replications
        met = np.ones(n, dtype=bool)
        hw_at: dict[str, np.ndarray] = {}
        target_at: dict[str, np.ndarray] = {}
        mean_at: dict[str, np.ndarray] = {}
        for m, a in arrays.items():
            hw, mean = _prefix_intervals(a, self.spec.confidence)
            target = self._targets(mean)
            with np.errstate(invalid="ignore"):
                met &= hw <= target  # NaN (fewer than two values) never meets a target
            hw_at[m], target_at[m], mean_at[m] = hw, target, mean

        def snapshot(j: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
            if j < 1:
                nan = {m: math.nan for m in names}
                return nan, {m: self._targets(np.array([math.nan]))[0] for m in names}, dict(nan)
            return ({m: float(hw_at[m][j - 1]) for m in names},
                    {m: float(target_at[m][j - 1]) for m in names},
                    {m: float(mean_at[m][j - 1]) for m in names})

        for c in self.checkpoints_upto(n):
            first = c - self.look_ahead(c)
            if first >= 2 and bool(met[first - 1:c].all()):
                return PointStatus(point_id, n, "met", 0, c, *snapshot(c))
        if n >= self.max_replications:
            return PointStatus(point_id, n, "max", 0, self.max_replications,
                               *snapshot(self.max_replications))
        return PointStatus(point_id, n, "running", self.next_checkpoint(n) - n, None,
                           *snapshot(n))

    def assess(self, values: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
               points: Sequence[str] | None = None) -> StopDecision:
        """The decision for every point: ``values[point_id][metric]`` in replication order.

        ``points`` lists every sweep point (those without any committed replication get
        ``min_replications``); by default the keys of ``values``.
        """
        order = list(points) if points is not None else list(values)
        empty: dict[str, list[float]] = {m: [] for m in self.spec.metrics}
        statuses = [self.assess_point(pid, values.get(pid, empty)) for pid in order]
        return StopDecision(statuses, self.max_replications)

    def assess_experiment(self, exp: Experiment, points: Sequence[str] | None = None
                          ) -> StopDecision:
        """:meth:`assess` on the committed replications of ``exp`` (its metrics, cached)."""
        table = exp.metrics(self.spec.metrics)
        # One sort by (point, replication), then every point is a slice: no pass per point.
        table = table.take(pc.sort_indices(table, sort_keys=[("point_id", "ascending"),
                                                             ("replication", "ascending")]))
        pids = np.asarray(table["point_id"].to_numpy(zero_copy_only=False), dtype=object)
        columns = {m: np.asarray(table[m].to_numpy(zero_copy_only=False), dtype=np.float64)
                   for m in self.spec.metrics}
        firsts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]]) if len(pids) else \
            np.zeros(0, dtype=np.int64)
        ends = np.r_[firsts[1:], len(pids)]
        values = {str(pids[a]): {m: col[a:b] for m, col in columns.items()}
                  for a, b in zip(firsts, ends, strict=True)}
        return self.assess(values, points)


def _prefix_intervals(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Half-width and mean of the first j values for every j (NaN where undefined).

    A missing value (NaN) makes every prefix that contains it undefined, so a point whose metric
    is missing for some replication never meets its target by accident.
    """
    n = values.size
    hw = np.full(n, np.nan)
    mean = np.full(n, np.nan)
    finite = np.isfinite(values)
    good = n if finite.all() else int(np.argmin(finite))
    if good:
        run = running_intervals(values[:good], confidence)
        hw[:good] = run["half_width"]
        mean[:good] = run["mean"]
    return hw, mean


def _pct(x: float) -> str:
    return f"{x:.0%}" if round(x * 100, 6).is_integer() else f"{x * 100:g}%"


def describe_stop(block: Mapping[str, object], limit: int | None = 20) -> list[str]:
    """What a ``stop:`` run decided, for people: the ``plan.stop`` block of ``experiment.json``
    (:func:`~.sources.stop_summary`) as a line about the rule and the points, then one line per
    point (the first ``limit`` of them, None: all): how many replications it has and why it
    stopped, its half-widths against their targets."""
    rule = block.get("rule")
    rule = rule if isinstance(rule, Mapping) else {}
    metrics = block.get("metrics") or rule.get("metric") or []
    names = [metrics] if isinstance(metrics, str) else [str(m) for m in metrics]  # type: ignore[union-attr]
    hw, relative = rule.get("half_width"), bool(rule.get("relative"))
    target = (f"{_pct(float(hw))} of |mean|" if relative else f"{hw:g}") \
        if isinstance(hw, (int, float)) else "?"
    confidence = rule.get("confidence")
    level = _pct(float(confidence)) if isinstance(confidence, (int, float)) else "?"
    lines = [f"{', '.join(names) or '?'}: half-width at most {target} at {level} confidence; "
             f"{rule.get('min_replications', '?')} to {rule.get('max_replications', '?')} "
             f"replications per point, checked every {rule.get('batch', '?')}"]
    points = block.get("points")
    if not isinstance(points, list):
        lines.append("no decision recorded yet (run the config to apply the rule)")
        return lines
    states: dict[str, int] = {}
    for entry in points:
        if isinstance(entry, Mapping):
            key = str(entry.get("state"))
            states[key] = states.get(key, 0) + 1
    done = sum(v for k, v in states.items() if k != "running")
    words = {"met": "met the target", "max": "at max_replications",
             "exhausted": "out of replication numbers", "running": "running"}
    parts = [f"{v} {words.get(k, k)}" for k, v in states.items()]
    lines.append(f"{done}/{len(points)} points done ({', '.join(parts)})")
    shown = points if limit is None else points[:limit]
    for entry in shown:
        if isinstance(entry, Mapping):
            lines.append(_describe_point(entry, rule.get("max_replications")))
    if len(shown) < len(points):
        lines.append(f"... and {len(points) - len(shown)} more points (all in --json)")
    return lines


def _describe_point(entry: Mapping[str, object], most: object) -> str:
    state, n, at = entry.get("state"), entry.get("n"), entry.get("stopped_at")
    if state == "met":
        why = f"target met at {at}"
    elif state == "max":
        why = f"stopped at max_replications={most} short of the target"
    elif state == "exhausted":
        why = "every replication number used (some failed) short of the target"
    else:
        more = entry.get("more")
        why = f"running (next check at {n + more})" if isinstance(n, int) and \
            isinstance(more, int) and more else "running"
    half, target = entry.get("half_width"), entry.get("target")
    half = half if isinstance(half, Mapping) else {}
    target = target if isinstance(target, Mapping) else {}
    widths = ", ".join(f"{m} ±{_num(_float(v))} (target ±{_num(_float(target.get(m)))})"
                       for m, v in half.items())
    return f"{entry.get('point_id')}: n={n}, {why}" + (f": {widths}" if widths else "")


def _float(x: object) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan
