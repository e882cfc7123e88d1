"""Small experiments with known records for the analysis tests, and a naive metric oracle.

:func:`write_experiment` writes real shards with :class:`ShardWriter` (several shards, so the
batching across shards is exercised) and merges them. :func:`naive_metric` computes a metric the
slow, obvious way from records read back by the pure-Python reader: dense per-record vectors,
a Python loop over time. It shares no code with ``disco_data_logger.sharding.metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disco_data_logger.sharding import ShardWriter, merge
from tests.common import decode_python


@dataclass
class StreamData:
    """One stream of one replication: plain, or periodic (``periodicity``, ``kind``)."""

    records: list[tuple[float, dict[int, float]]]
    periodicity: float | None = None
    kind: str = "state"
    close_at: float | None = None


@dataclass
class Rep:
    task_id: str
    point_id: str
    point_index: int
    replication: int
    streams: dict[str, StreamData] = field(default_factory=dict)


def write_experiment(root: Path, reps: Sequence[Rep], shards: int = 2,
                     epoch_scale: float = 1e-3) -> dict[tuple[str, str], tuple[str, int]]:
    """Write ``reps`` round-robin into ``shards`` shards and merge; returns
    ``(task_id, stream) -> (shard_id, stream_id)``."""
    where: dict[tuple[str, str], tuple[str, int]] = {}
    writers = [ShardWriter(root, f"shard{k}") for k in range(shards)]
    try:
        for i, rep in enumerate(reps):
            shard = writers[i % shards]
            with shard.replication(rep.task_id, replication=rep.replication,
                                   point_id=rep.point_id, point_index=rep.point_index) as handle:
                for name, data in rep.streams.items():
                    labels = {"stream": name, "replication": rep.replication,
                              "point_id": rep.point_id}
                    if data.periodicity is None:
                        sid = handle.logger.register_stream(labels, epoch_scale=epoch_scale,
                                                            value_scale=None)
                        for epoch, vec in data.records:
                            idx = np.array(sorted(vec), dtype=np.int64)
                            handle.logger.record(sid, epoch, idx,
                                                 np.array([vec[j] for j in idx.tolist()]))
                    else:
                        stream = handle.logger.register_periodic_stream(
                            labels, epoch_scale=epoch_scale, value_scale=None,
                            periodicity=data.periodicity, kind=data.kind)
                        sid = stream.stream_id
                        for epoch, vec in data.records:
                            idx = np.array(sorted(vec), dtype=np.int64)
                            stream.record(epoch, idx, np.array([vec[j] for j in idx.tolist()]))
                        stream.close(data.close_at if data.close_at is not None else
                                     max((e for e, _ in data.records), default=0.0))
                    where[(rep.task_id, name)] = (shard.shard_id, int(sid))
    finally:
        for shard in writers:
            shard.close()
    merge(root)
    return where


def read_back(root: Path, where: Mapping[tuple[str, str], tuple[str, int]]
              ) -> dict[tuple[str, str], list[tuple[float, dict[int, float]]]]:
    """Every stream's records as the pure-Python reader decodes them, in recording order."""
    out: dict[tuple[str, str], list[tuple[float, dict[int, float]]]] = {}
    decoded = {}
    for key, (shard_id, sid) in where.items():
        if shard_id not in decoded:
            decoded[shard_id] = decode_python(root / "shards" / shard_id)
        d = decoded[shard_id]
        rows = []
        for stream_id, epoch, idx, val in d.records():
            if stream_id == sid:
                rows.append((epoch, {int(i): float(v) for i, v in zip(idx, val, strict=True)}))
        out[key] = rows
    return out


def naive_metric(records: Sequence[tuple[float, dict[int, float]]], *, reduce: str,
                 entities: str = "sum", window: tuple[float | None, float | None] = (None, None),
                 periodic: bool = False, duration: float) -> float:
    """The metric by its definition in docs/statistics.md, written out plainly."""
    population = sorted({i for _, vec in records for i in vec})

    def dense(vec: dict[int, float]) -> list[float]:
        return [vec.get(i, 0.0) for i in population]

    def combine(vec: dict[int, float]) -> float:
        if entities == "sum":
            return sum(vec.values())
        if entities == "mean":
            return sum(dense(vec)) / len(population) if population else 0.0
        if entities == "max":
            return max(dense(vec)) if population else 0.0
        assert entities.startswith("index:")
        return vec.get(int(entities.split(":")[1]), 0.0)

    lo = -math.inf if window[0] is None else window[0]
    hi = math.inf if window[1] is None else window[1]
    # stable by epoch: equal epochs keep recording order
    timeline = sorted(((t, k, combine(vec)) for k, (t, vec) in enumerate(records)),
                      key=lambda r: (r[0], r[1]))
    inside = [x for t, _, x in timeline if lo <= t < hi]
    nan = float("nan")
    if reduce == "count":
        return float(len(inside))
    if reduce == "sum":
        return float(sum(inside))
    if reduce == "mean" or (reduce == "time_mean" and periodic):
        return sum(inside) / len(inside) if inside else nan
    if reduce == "min":
        return min(inside) if inside else nan
    if reduce == "max":
        return max(inside) if inside else nan
    if reduce == "last":
        return inside[-1] if inside else nan
    assert reduce == "time_mean"
    start = 0.0 if window[0] is None else window[0]
    stop = min(hi, duration)
    if stop <= start:
        return nan
    area = 0.0
    for k, (t, _, x) in enumerate(timeline):
        until = timeline[k + 1][0] if k + 1 < len(timeline) else duration
        a, b = max(t, start), min(until, stop)
        if b > a:
            area += x * (b - a)
    return area / (stop - start)


def reps_grid(points: int, replications: int,
              make: Any) -> list[Rep]:
    """``make(point, replication) -> dict[str, StreamData]`` for every task of a grid."""
    out = []
    for p in range(points):
        for r in range(replications):
            out.append(Rep(f"p{p:04d}-r{r:06d}", f"p{p:04d}", p, r, make(p, r)))
    return out
