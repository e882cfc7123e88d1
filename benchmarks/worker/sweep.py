"""Sweep throughput: many short replications spread over 1 or 2 worker processes.

Each replication is a small "simulation": its own seeded random walk over ``streams`` streams of
``nnz`` entities, recorded with ``record()`` and flushed at the end (a replication is committed
only once its records were flushed). Uses the sharded service when
``disco_data_logger.sharding`` offers the bring-your-own-parallelism API; otherwise plain worker
processes that each own one DataLogger for their lifetime (the same shape: one writer per worker).
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

MASTER_SEED = 8675309


def simulate(logger: Any, replication: int, spec: dict[str, Any]) -> int:
    """Run one replication against ``logger`` (anything with register_stream/record/flush)."""
    seq = np.random.SeedSequence(MASTER_SEED).spawn(replication + 1)[replication]
    rng = np.random.default_rng(seq)
    n, nnz, n_streams = spec["records"], spec["nnz"], spec["streams"]
    sids = [logger.register_stream({"replication": replication, "entity": f"e{s}",
                                    "measure": "stock"}, epoch_scale=1e-3, value_scale=1e-2)
            for s in range(n_streams)]
    which = rng.integers(0, n_streams, size=n).tolist()
    epochs = (np.cumsum(rng.integers(1, 8, size=n)) * 1e-3).tolist()
    idx = np.sort(rng.choice(16 * nnz, size=nnz, replace=False)).astype(np.int64)
    walk = rng.integers(0, 100_000, size=nnz) + np.cumsum(
        rng.integers(-2, 3, size=(n, nnz)) * (rng.random((n, nnz)) < 0.3), axis=0)
    values = walk * 1e-2
    record = logger.record
    for k in range(n):
        record(sids[which[k]], epochs[k], idx, values[k])
    logger.flush()
    return n


def _byo_worker(path: str, spec: dict[str, Any], queue: Any, done: Any) -> None:
    from disco_data_logger import DataLogger

    records = 0
    with DataLogger(path) as dl:
        while True:
            replication = queue.get()
            if replication is None:
                break
            records += simulate(dl, replication, spec)
    done.put(records)


def run_sweep(spec: dict[str, Any]) -> dict[str, Any]:
    workers = int(spec["workers"])
    root = Path(spec["workdir"]) / f"sweep-w{workers}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    ctx = mp.get_context("fork")
    queue, done = ctx.Queue(), ctx.Queue()
    for r in range(spec["replications"]):
        queue.put(r)
    for _ in range(workers):
        queue.put(None)
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_byo_worker, args=(str(root / f"shard-{w}"), spec, queue, done))
             for w in range(workers)]
    for p in procs:
        p.start()
    records = sum(done.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a sweep worker failed: exit codes {[p.exitcode for p in procs]}")
    size = sum(f.stat().st_size for f in root.rglob("*.seg.zst"))
    shutil.rmtree(root, ignore_errors=True)
    return {"method": "worker processes, one DataLogger each", "workers": workers,
            "replications": spec["replications"], "records": records, "seconds": elapsed,
            "records_per_s": records / elapsed,
            "replications_per_s": spec["replications"] / elapsed, "data_bytes": size}
