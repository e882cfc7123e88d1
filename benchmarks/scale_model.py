"""The model of the scale benchmark: the shape of issue 8 (many tiny replications).

Each replication records ``records`` vectors of ``nnz`` non-zeros on each of the streams its
config declares (10 in the benchmark): a slow random walk on the ``value_scale`` grid over a fixed
set of entities per stream, at increasing epochs. :func:`records_of` generates the same records
from ``(seed, point, replication)`` alone, so the baseline (one DataLogger holding every record
with the streams registered once) writes exactly the records the experiment holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

VALUE_SCALE = 0.01
EPOCH_SCALE = 1e-3


def records_of(rng: np.random.Generator, streams: int, records: int,
               nnz: int) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
    """``(stream number, epoch, indices, values)`` of one replication, in recording order."""
    idx = np.sort(np.argsort(rng.random((streams, 8 * nnz)), axis=1)[:, :nnz], axis=1)
    base = rng.integers(0, 100_000, size=(streams, 1, nnz))
    steps = rng.integers(-2, 3, size=(streams, records, nnz)) * (
        rng.random((streams, records, nnz)) < 0.3)
    values = (base + np.cumsum(steps, axis=1)) * VALUE_SCALE
    epochs = (np.cumsum(rng.integers(1, 8, size=records)) * EPOCH_SCALE).tolist()
    indices = idx.astype(np.int64)
    for s in range(streams):
        row = indices[s]
        vals = values[s]
        for k in range(records):
            yield s, epochs[k], row, vals[k]


def run(ctx: Any) -> None:
    """Entry point for the experiment service (``benchmarks.scale_model:run``)."""
    sids = [ctx.streams[name] for name in sorted(ctx.streams)]
    record = ctx.logger.record
    for s, epoch, idx, vals in records_of(ctx.rng, len(sids), int(ctx.params["records"]),
                                          int(ctx.params["nnz"])):
        record(sids[s], epoch, idx, vals)
