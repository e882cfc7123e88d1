"""Sweep throughput: many short replications spread over 1 or 2 worker processes.

Each replication is a small, logging-heavy "simulation": its own seeded random walk over
``streams`` streams of ``nnz`` entities, recorded with ``record()``. It runs through the sharded
service (``disco_data_logger.sharding.run_experiment`` on a generated config, multiprocessing
backend, entry point ``bench_sweep:run_replication``) when that is installed; otherwise through
plain worker processes that each own one DataLogger for their lifetime and flush after every
replication (the same shape: one writer per worker).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

MASTER_SEED = 8675309


def _walk(record: Any, sids: list[int], rng: np.random.Generator, n: int, nnz: int) -> int:
    n_streams = len(sids)
    which = rng.integers(0, n_streams, size=n).tolist()
    epochs = (np.cumsum(rng.integers(1, 8, size=n)) * 1e-3).tolist()
    idx = np.sort(rng.choice(16 * nnz, size=nnz, replace=False)).astype(np.int64)
    walk = rng.integers(0, 100_000, size=nnz) + np.cumsum(
        rng.integers(-2, 3, size=(n, nnz)) * (rng.random((n, nnz)) < 0.3), axis=0)
    values = walk * 1e-2
    for k in range(n):
        record(sids[which[k]], epochs[k], idx, values[k])
    return n


def simulate(logger: Any, replication: int, spec: dict[str, Any]) -> int:
    """One replication against a worker's own DataLogger (the fallback without the service)."""
    seq = np.random.SeedSequence(MASTER_SEED).spawn(replication + 1)[replication]
    sids = [logger.register_stream({"replication": replication, "entity": f"e{s}",
                                    "measure": "stock"}, epoch_scale=1e-3, value_scale=1e-2)
            for s in range(spec["streams"])]
    n = _walk(logger.record, sids, np.random.default_rng(seq), spec["records"], spec["nnz"])
    logger.flush()
    return n


def run_replication(ctx: Any) -> None:
    """Entry point for the service: the same walk on the streams the config declares."""
    sids = [ctx.streams[name] for name in sorted(ctx.streams)]
    _walk(ctx.logger.record, sids, ctx.rng, int(ctx.params["records"]), int(ctx.params["nnz"]))


def _service_sweep(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    from disco_data_logger.sharding import run_experiment

    workers = int(spec["workers"])
    config = {
        "experiment": {"organisation": "bench", "model": "walk", "name": f"sweep-w{workers}"},
        "output": str(root / "out"),
        "replications": int(spec["replications"]),
        "seed": MASTER_SEED,
        "entry_point": "bench_sweep:run_replication",
        "duration": 1.0,
        "parameters": {"records": int(spec["records"]), "nnz": int(spec["nnz"])},
        "execution": {"backend": "multiprocessing", "workers": workers},
        "streams": [{"name": f"s{s:03d}", "epoch_scale": 1e-3, "value_scale": 1e-2}
                    for s in range(int(spec["streams"]))],
    }
    path = root / "sweep.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    t0 = time.perf_counter()
    result = run_experiment(path, overwrite=True, progress=False)
    elapsed = time.perf_counter() - t0
    if result.state != "complete":
        first = next(iter(result.failed.items()), ("", ""))
        raise RuntimeError(f"sweep ended {result.state}: {len(result.failed)} replications "
                           f"failed, e.g. {first[0]}: {first[1][:200]}")
    records = result.committed * int(spec["records"])
    size = sum(f.stat().st_size for f in root.rglob("*.seg.zst"))
    return {"method": "sharding.run_experiment, multiprocessing backend", "workers": workers,
            "replications": result.committed, "records": records, "seconds": elapsed,
            "service_wall_seconds": result.wall_seconds, "records_per_s": records / elapsed,
            "replications_per_s": result.committed / elapsed, "data_bytes": size}


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


def _cpu_seconds(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def run_sweep(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the sweep; ``cpu_per_wall`` says how many cores it kept busy on average.

    CPU time is this process (the coordinator) plus its reaped children (the workers).
    """
    own0 = _cpu_seconds(resource.RUSAGE_SELF)
    kids0 = _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = _run_sweep(spec)
    wall = time.perf_counter() - t0
    result["coordinator_cpu_seconds"] = _cpu_seconds(resource.RUSAGE_SELF) - own0
    result["workers_cpu_seconds"] = _cpu_seconds(resource.RUSAGE_CHILDREN) - kids0
    result["cpu_seconds"] = result["coordinator_cpu_seconds"] + result["workers_cpu_seconds"]
    result["cpu_per_wall"] = result["cpu_seconds"] / wall
    return result


def _run_sweep(spec: dict[str, Any]) -> dict[str, Any]:
    workers = int(spec["workers"])
    root = Path(spec["workdir"]) / f"sweep-w{workers}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        import disco_data_logger.sharding  # noqa: F401
    except ImportError:
        pass
    else:
        try:
            return _service_sweep(spec, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
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
