"""Fan charts: how a stream evolves over simulated time across replications, per sweep point.

Every replication's stream becomes one number per record (its entities combined, by default
summed, absent indices being zeros) and is read as a step function: each record holds until the
next, zero before the first. It is sampled on one grid of epochs shared by all replications (the
period boundaries of a periodic stream, evenly spaced epochs over the run for a plain one), and
for every epoch and sweep point the median and the 50 % and 90 % bands (quantiles 0.25-0.75 and
0.05-0.95) across replications are reported. :func:`plot_fan` draws them with matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MetricError, MissingDependencyError
from .metrics import (
    _INITIAL_RECORD_BUDGET,
    _VALUE_BUDGET,
    ExperimentView,
    Replications,
    _Batch,
    _batches,
    _read_batch,
    experiment_config,
    point_parameters,
    stream_names,
)

__all__ = ["fan_table", "plot_fan", "require_matplotlib", "BANDS", "QUANTILES"]


def require_matplotlib() -> None:
    """Raise a clear error when the ``report`` extra is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            'charts need matplotlib, which is not installed: pip install '
            '"disco-data-logger[report]"') from None

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
BANDS = ("low90", "low50", "median", "high50", "high90")
"""The band columns, one per quantile of :data:`QUANTILES`."""

_ENTITY_RULES = ("sum", "mean", "max")


def _check_entities(entities: str) -> str:
    if entities in _ENTITY_RULES:
        return entities
    if isinstance(entities, str) and entities.startswith("index:"):
        tail = entities[len("index:"):]
        if tail.isdigit() and int(tail) < 1 << 32:
            return entities
    raise MetricError(f"entities must be sum, mean, max or index:<i> (got {entities!r})")


def _grid(rows: pa.Table, end: float, max_epochs: int) -> tuple[np.ndarray, float, bool]:
    """(epochs, tolerance, periodic) for the stream's index rows."""
    periodicity = [p for p in rows["periodicity"].to_pylist()]
    known = {p for p in periodicity if p is not None}
    periodic = len(known) == 1 and None not in periodicity and len(rows) > 0
    if periodic:
        per = known.pop()
        lo = pc.min(rows["min_epoch"]).as_py()
        hi = pc.max(rows["max_epoch"]).as_py()
        scale = pc.max(rows["epoch_scale"]).as_py() or 0.0
        tol = max(scale / 2.0, 1e-9 * per)
        if lo is None or hi is None:
            return np.zeros(0), tol, True
        first = math.ceil((lo - tol) / per)
        last = math.floor((hi + tol) / per)
        ks = np.arange(first, last + 1, dtype=np.float64)
        if ks.size > max_epochs:
            ks = ks[np.unique(np.linspace(0, ks.size - 1, max_epochs).round().astype(np.int64))]
        return ks * per, tol, True
    if not end > 0:
        return np.zeros(0), 0.0, False
    return np.linspace(0.0, end, max_epochs), 0.0, False


def fan_table(exp: ExperimentView, stream: str, *, entities: str = "sum",
              points: Sequence[str] | None = None, max_epochs: int = 400) -> pa.Table:
    """The band data of :meth:`Experiment.fan`: one row per sweep point and epoch.

    Columns ``point_id, <parameters>, epoch, n, mean, low90, low50, median, high50, high90``.
    """
    entities = _check_entities(entities)
    if not isinstance(max_epochs, int) or max_epochs < 2:
        raise MetricError(f"max_epochs must be an integer >= 2 (got {max_epochs!r})")
    names = stream_names(exp)
    if stream not in names:
        raise MetricError(f"unknown stream {stream!r} (streams: {', '.join(names) or 'none'})")
    cfg = experiment_config(exp)
    reps = Replications.of(exp)
    keep = [i for i, p in enumerate(reps.point_id) if points is None or p in set(points)]
    # one grid for the whole experiment, so the fans of different points line up
    rows = exp.streams({"stream": stream})
    committed = pa.array(reps.task_id, pa.string())
    rows = rows.filter(pc.is_in(rows["task_id"], value_set=committed))
    if cfg is not None:
        end = float(cfg.duration)
    else:
        end = float(pc.max(rows["max_epoch"]).as_py() or 0.0) if len(rows) else 0.0
    grid, tol, _ = _grid(rows, end, max_epochs)
    task_ids = [reps.task_id[i] for i in keep]
    rows = rows.filter(pc.is_in(rows["task_id"], value_set=pa.array(task_ids, pa.string())))
    codes_of = {t: k for k, t in enumerate(task_ids)}
    matrix = np.zeros((len(task_ids), grid.size))
    ordered = rows.select(["task_id", "shard_id", "records"]).sort_by(
        [("shard_id", "ascending"), ("task_id", "ascending")])
    budget = [_INITIAL_RECORD_BUDGET]
    for batch_tids in _batches(ordered, lambda: budget[0]):
        table = _read_batch(exp, stream, batch_tids)
        if table.num_rows == 0:
            continue
        batch = _Batch(table, codes_of)
        budget[0] = max(int(_VALUE_BUDGET / max(batch.values.size / batch.records, 1.0)), 1)
        x = batch.record_values(entities)
        starts = np.searchsorted(batch.codes, np.arange(batch.groups), side="left")
        stops = np.searchsorted(batch.codes, np.arange(batch.groups), side="right")
        for local, task in enumerate(batch.tasks):
            t = batch.epoch[starts[local]:stops[local]]
            pos = np.searchsorted(t, grid + tol, side="right") - 1
            values = x[starts[local]:stops[local]]
            matrix[task] = np.where(pos >= 0, values[np.maximum(pos, 0)], 0.0)

    point_order: list[str | None] = []
    members: dict[str | None, list[int]] = {}
    for k, i in enumerate(keep):
        pid = reps.point_id[i]
        if pid not in members:
            point_order.append(pid)
            members[pid] = []
        members[pid].append(k)
    out_pid: list[str | None] = []
    out_pidx: list[int] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("epoch", "n", "mean", *BANDS)}
    for pid in point_order:
        block = matrix[members[pid]]
        if grid.size == 0:
            continue
        qs = np.quantile(block, QUANTILES, axis=0)
        out_pid.extend([pid] * grid.size)
        out_pidx.extend([int(reps.point_index[keep[members[pid][0]]])] * grid.size)
        cols["epoch"].append(grid)
        cols["n"].append(np.full(grid.size, block.shape[0], dtype=np.int64))
        cols["mean"].append(block.mean(axis=0))
        for band, q in zip(BANDS, qs, strict=True):
            cols[band].append(q)
    result: dict[str, pa.Array] = {"point_id": pa.array(out_pid, pa.string())}
    result.update(point_parameters(cfg, out_pidx))
    for key, parts in cols.items():
        typ = pa.int64() if key == "n" else pa.float64()
        data = np.concatenate(parts) if parts else np.zeros(0)
        result[key] = pa.array(data, typ)
    meta = {b"disco.stream": stream.encode(), b"disco.entities": entities.encode()}
    return pa.table(result).replace_schema_metadata(meta)


def _pyplot() -> Any:
    require_matplotlib()
    import matplotlib.pyplot as plt

    return plt


def plot_fan(table: pa.Table, *, point: str | None = None, ax: Any = None,
             title: str | None = None, color: str | None = None) -> Any:
    """Draw a fan table (:meth:`Experiment.fan`) with matplotlib; returns the Axes.

    Every sweep point in the table (or only ``point``) gets its median line and its 50 % and 90 %
    bands in one colour. Needs matplotlib (``pip install "disco-data-logger[report]"``).
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    pids = table["point_id"].to_pylist()
    order = list(dict.fromkeys(pids))
    if point is not None:
        if point not in order:
            raise MetricError(f"no point {point!r} in the fan table (points: {order})")
        order = [point]
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    epoch = np.asarray(table["epoch"].to_numpy(zero_copy_only=False))
    bands = {b: np.asarray(table[b].to_numpy(zero_copy_only=False)) for b in BANDS}
    pid_arr = np.asarray(pids, dtype=object)
    for k, pid in enumerate(order):
        rows = pid_arr == pid
        c = color or cycle[k % len(cycle)]
        e = epoch[rows]
        ax.fill_between(e, bands["low90"][rows], bands["high90"][rows], color=c, alpha=0.15,
                        linewidth=0, label=f"{pid} 90 %")
        ax.fill_between(e, bands["low50"][rows], bands["high50"][rows], color=c, alpha=0.3,
                        linewidth=0, label=f"{pid} 50 %")
        ax.plot(e, bands["median"][rows], color=c, linewidth=1.2, label=f"{pid} median")
    meta = table.schema.metadata or {}
    stream = meta.get(b"disco.stream", b"").decode()
    ax.set_xlabel("epoch (simulated time)")
    ax.set_ylabel(f"{stream} ({meta.get(b'disco.entities', b'sum').decode()} over entities)")
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small", ncol=max(1, len(order)))
    return ax
