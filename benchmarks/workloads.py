"""Seeded workloads shaped like simulation output, saved as .npz files every contender reads.

A workload is a sequence of records in CSR form: record ``k`` belongs to stream
``stream_ids[k]`` at ``epochs[k]`` and holds ``indices[offsets[k]:offsets[k+1]]`` with the
matching ``values``. Epochs increase over the whole workload (simulated time runs forward; the
streams interleave as a simulation's events do).

Sparse workloads: each stream owns ``nnz`` entities (e.g. SKU-locations) and logs all of them on
every record, with values doing a random walk of small integer steps on the ``value_scale`` grid
(most values keep their value from one record to the next), and now and then an entity is
replaced by a new one. Values and epochs lie exactly on their quantisation grids, so the
quantising contenders and the float64 pyarrow anchor store the same information.

Churning workloads (``step_sigma``): every value takes a random-walk step every record, of
normal size ``step_sigma`` grid steps (state that changes all the time). New-entity workloads
(``p_entity_replaced``): on top of that, each entity of a record is replaced by a new one (a new
index with a fresh value) with this probability, so index lists change too.

Periodic workloads: ``state`` streams (a random-walk state of a few entities, updated several
times per period) and ``accumulator`` streams (small demand-like increments on a few entities
drawn from a larger set), in separate workloads or alternating by stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

EPOCH_SCALE = 1e-3
VALUE_SCALE = 1e-2


@dataclass(frozen=True)
class SparseSpec:
    name: str
    nnz: int
    n_records: int
    n_streams: int = 128
    p_new_entity: float = 0.01
    """Per record: chance that one of the stream's entities is replaced by a new one."""
    p_step: float = 0.3
    """Per value and record: chance that the value moves one grid step or two."""
    seed: int = 20240611
    step_sigma: float = 0.0
    """Churning: when > 0, every value moves every record, by a normal step of this many grid
    steps (rounded); ``p_step`` and ``p_new_entity`` are then not used."""
    p_entity_replaced: float = 0.0
    """Churning only: per entity and record, chance that it is replaced by a new entity."""


@dataclass(frozen=True)
class PeriodicSpec:
    name: str
    n_updates: int
    n_streams: int = 128
    nnz: int = 8
    universe: int = 64
    """Entities a periodic stream may touch (its vectors' size)."""
    updates_per_period: float = 8.0
    """Mean number of updates each stream receives per period."""
    periodicity: float = 1.0
    kinds: str = "mixed"
    """``state``, ``accumulator`` or ``mixed`` (alternating by stream)."""
    seed: int = 20240612


def _churning_arrays(spec: SparseSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    n, nnz = spec.n_records, spec.nnz
    stream_ids = rng.integers(0, spec.n_streams, size=n)
    ticks = np.cumsum(rng.integers(1, 8, size=n))
    idx = np.empty((n, nnz), dtype=np.int64)
    q = np.empty((n, nnz), dtype=np.int64)
    universe = 16 * nnz + 64
    lane = np.arange(nnz)
    for s in range(spec.n_streams):
        rows = np.flatnonzero(stream_ids == s)
        m = rows.size
        if m == 0:
            continue
        slots = np.sort(rng.choice(universe, size=nnz, replace=False))
        steps = np.rint(rng.normal(0.0, spec.step_sigma, size=(m, nnz))).astype(np.int64)
        steps[0] = rng.integers(0, 100_000, size=nnz)
        walk = np.cumsum(steps, axis=0)
        if spec.p_entity_replaced > 0:
            # A replaced entity gets an index never used before and a fresh value; its walk
            # starts again from there.
            new = rng.random((m, nnz)) < spec.p_entity_replaced
            new[0] = False
            last = np.maximum.accumulate(np.where(new, np.arange(m)[:, None], 0), axis=0)
            count = np.cumsum(new, axis=0)
            fresh = rng.integers(0, 100_000, size=(m, nnz))
            at_last = np.take_along_axis(walk, last, axis=0)
            restart = np.take_along_axis(fresh, last, axis=0)
            walk = np.where(count > 0, restart + walk - at_last, walk)
            sidx = np.where(count > 0, universe + (count - 1) * nnz + lane, slots)
            order = np.argsort(sidx, axis=1, kind="stable")
            idx[rows] = np.take_along_axis(sidx, order, axis=1)
            q[rows] = np.take_along_axis(walk, order, axis=1)
        else:
            idx[rows] = slots
            q[rows] = walk
    return {
        "stream_ids": stream_ids.astype(np.int64),
        "epochs": (ticks * EPOCH_SCALE).astype(np.float64),
        "offsets": np.arange(n + 1, dtype=np.int64) * nnz,
        "indices": idx.reshape(-1),
        "values": q.reshape(-1).astype(np.float64) * VALUE_SCALE,
    }


def _sparse_arrays(spec: SparseSpec) -> dict[str, np.ndarray]:
    if spec.step_sigma > 0:
        return _churning_arrays(spec)
    rng = np.random.default_rng(spec.seed)
    n, nnz = spec.n_records, spec.nnz
    stream_ids = rng.integers(0, spec.n_streams, size=n)
    ticks = np.cumsum(rng.integers(1, 8, size=n))
    epochs = ticks * EPOCH_SCALE

    idx = np.empty((n, nnz), dtype=np.int64)
    q = np.empty((n, nnz), dtype=np.int64)
    universe = 16 * nnz + 64
    for s in range(spec.n_streams):
        rows = np.flatnonzero(stream_ids == s)
        m = rows.size
        if m == 0:
            continue
        slots = np.sort(rng.choice(universe, size=nnz, replace=False))
        q0 = rng.integers(0, 100_000, size=nnz)
        moves = rng.integers(-2, 3, size=(m, nnz)) * (rng.random((m, nnz)) < spec.p_step)
        moves[0] = 0
        sq = q0 + np.cumsum(moves, axis=0)
        sidx = np.broadcast_to(slots, (m, nnz)).copy()
        # New entities: a slot takes a fresh index from record t on, with a fresh value.
        next_new = universe
        for t in np.flatnonzero(rng.random(m) < spec.p_new_entity):
            j = rng.integers(0, nnz)
            sidx[t:, j] = next_new
            next_new += 1 + int(rng.integers(0, 4))
            sq[t:, j] += int(rng.integers(0, 1000)) - sq[t, j]
        order = np.argsort(sidx, axis=1, kind="stable")
        idx[rows] = np.take_along_axis(sidx, order, axis=1)
        q[rows] = np.take_along_axis(sq, order, axis=1)

    offsets = np.arange(n + 1, dtype=np.int64) * nnz
    return {
        "stream_ids": stream_ids.astype(np.int64),
        "epochs": epochs.astype(np.float64),
        "offsets": offsets,
        "indices": idx.reshape(-1),
        "values": q.reshape(-1).astype(np.float64) * VALUE_SCALE,
    }


def _periodic_arrays(spec: PeriodicSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    n, nnz = spec.n_updates, spec.nnz
    stream_ids = rng.integers(0, spec.n_streams, size=n)
    # Mean gap so that each stream sees `updates_per_period` updates per period.
    mean_gap = spec.periodicity / (spec.updates_per_period * spec.n_streams)
    gap_ticks = max(1, round(mean_gap / EPOCH_SCALE))
    ticks = np.cumsum(rng.integers(0, 2 * gap_ticks + 1, size=n))
    epochs = ticks * EPOCH_SCALE
    if spec.kinds == "mixed":
        kinds = np.array(["state", "accumulator"] * (spec.n_streams // 2), dtype="U11")
    else:
        kinds = np.full(spec.n_streams, spec.kinds, dtype="U11")

    idx = np.empty((n, nnz), dtype=np.int64)
    vals = np.empty((n, nnz), dtype=np.float64)
    for s in range(spec.n_streams):
        rows = np.flatnonzero(stream_ids == s)
        m = rows.size
        if m == 0:
            continue
        if kinds[s] == "state":
            slots = np.sort(rng.choice(spec.universe, size=nnz, replace=False))
            q0 = rng.integers(0, 10_000, size=nnz)
            moves = rng.integers(-2, 3, size=(m, nnz)) * (rng.random((m, nnz)) < 0.3)
            idx[rows] = slots
            vals[rows] = (q0 + np.cumsum(moves, axis=0)) * VALUE_SCALE
        else:
            pick = np.argsort(rng.random((m, spec.universe)), axis=1)[:, :nnz]
            idx[rows] = np.sort(pick, axis=1)
            vals[rows] = rng.integers(1, 6, size=(m, nnz)) * VALUE_SCALE

    return {
        "stream_ids": stream_ids.astype(np.int64),
        "epochs": epochs.astype(np.float64),
        "offsets": np.arange(n + 1, dtype=np.int64) * nnz,
        "indices": idx.reshape(-1),
        "values": vals.reshape(-1),
        "kinds": kinds,
    }


def build(spec: SparseSpec | PeriodicSpec, directory: Path) -> Path:
    """Generate the workload (cached by its spec) and return the .npz path."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": type(spec).__name__, **asdict(spec),
            "epoch_scale": EPOCH_SCALE, "value_scale": VALUE_SCALE}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    path = directory / f"{spec.name}-{key}.npz"
    if path.exists():
        return path
    if isinstance(spec, SparseSpec):
        arrays = _sparse_arrays(spec)
    else:
        arrays = _periodic_arrays(spec)
        meta["final_epoch"] = float(np.floor(arrays["epochs"][-1] / spec.periodicity) + 1)
        meta["final_epoch"] *= spec.periodicity
    tmp = path.with_suffix(".tmp.npz")
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types allow_pickle too
    tmp.replace(path)
    return path
