"""Bring your own parallelism: ShardWriter in a user's multiprocessing.Pool or Ray tasks."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np

from disco_data_logger.sharding import Experiment, ShardWriter, merge


def simulate_chunk(args: tuple[str, list[int]]) -> int:
    """What a user's worker does: one ShardWriter for its chunk of replications."""
    output, replications = args
    with ShardWriter(output) as shard:
        for r in replications:
            rng = np.random.default_rng(r)
            with shard.replication(f"rep-{r:04d}", replication=r) as rep:
                sid = rep.logger.register_stream({"measure": "queue", "replication": r},
                                                 value_scale=None)
                for t in range(20):
                    idx = np.flatnonzero(rng.random(6) < 0.5)
                    rep.logger.record(sid, float(t), idx, rng.normal(size=len(idx)))
            if r == 3:  # a replication that fails: never merged
                try:
                    with shard.replication("rep-bad", replication=99) as rep:
                        sid = rep.logger.register_stream({"measure": "queue"}, value_scale=None)
                        rep.logger.record(sid, 0.0, [0], [666.0])
                        raise RuntimeError("user model failed")
                except RuntimeError:
                    pass
    return len(replications)


def test_pool_with_shard_writers_then_merge(tmp_path: Path) -> None:
    chunks = [(str(tmp_path), list(range(i, 12, 3))) for i in range(3)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sum(pool.map(simulate_chunk, chunks)) == 12
    index = merge(tmp_path)
    assert index.totals["shards"] == 3 and index.totals["committed"] == 12
    exp = Experiment.open(tmp_path)
    assert exp.streams("measure=queue").num_rows == 12
    table = exp.select("measure=queue")
    assert 666.0 not in table["value"].to_pylist()
    assert sorted(set(table["replication"].to_pylist())) == list(range(12))
    statuses = dict(zip(exp.replications["task_id"].to_pylist(),
                        exp.replications["status"].to_pylist(), strict=True))
    assert statuses["rep-bad"] == "failed"


def test_ray_tasks_with_shard_writers_then_merge(ray_instance: Any, tmp_path: Path) -> None:
    remote = ray_instance.remote(num_cpus=1)(simulate_chunk)
    chunks = [(str(tmp_path), [0, 1, 2]), (str(tmp_path), [3, 4])]
    assert sum(ray_instance.get([remote.remote(c) for c in chunks])) == 5
    index = merge(tmp_path)
    assert index.totals["committed"] == 5
    assert Experiment.open(tmp_path).select().num_rows > 0
