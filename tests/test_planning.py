"""TaskPlan: the tasks of an experiment without building them, and a million planned tasks that
cost a megabyte to plan and nothing to index."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa

from disco_data_logger.sharding import merge
from disco_data_logger.sharding.config import validate_config
from disco_data_logger.sharding.planning import TaskPlan, in_plan, plan_tasks, planned_table


def config(replications: int, grid: list[float] | None = None) -> dict:
    doc = {
        "experiment": {"organisation": "o", "model": "m", "name": "plan"},
        "output": "/nonexistent",
        "replications": replications,
        "seed": 1,
        "entry_point": "mod:run",
        "duration": 1.0,
        "streams": [{"name": "x", "value_scale": None}],
    }
    if grid:
        doc["sweep"] = {"grid": {"s": grid}}
    return doc


def test_lazy_plan_equals_the_full_plan() -> None:
    cfg = validate_config(config(4, [1.0, 2.0, 3.0]))
    plan = TaskPlan(cfg)
    assert len(plan) == 12 and plan.shape == (3, 4)
    assert list(plan.iter_tasks()) == plan_tasks(cfg)
    done = plan.empty_mask()
    marked = plan.mark(done, pa.array(["p0001-r000002", "p0002-r000000", "other", "p0009-r000000"]),
                       np.array([1, 2, 0, 9]), np.array([2, 0, 0, 0]))
    assert marked == 2
    assert [t.task_id for t in plan.iter_tasks(done)] == [
        t.task_id for t in plan_tasks(cfg) if t.task_id not in {"p0001-r000002", "p0002-r000000"}]
    table = planned_table(3, 4)
    assert table["task_id"].to_pylist() == [t.task_id for t in plan_tasks(cfg)]
    assert in_plan(table["task_id"], table["point_index"], table["replication"], 3, 4).all()


def test_a_million_tasks_plan_in_a_megabyte(tmp_path: Path) -> None:
    cfg = validate_config(config(1_000_000))
    tracemalloc.start()
    plan = TaskPlan(cfg)
    done = plan.empty_mask()
    first = [t.task_id for _, t in zip(range(3), plan.iter_tasks(done), strict=False)]
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(plan) == 1_000_000 and done.nbytes == 1_000_000
    assert first == ["p0000-r000000", "p0000-r000001", "p0000-r000002"]
    assert peak < 4 << 20, f"planning took {peak:,} bytes"
    # The index stores no row for a planned task that never ran; the table adds them on read.
    (tmp_path / "shards").mkdir()
    index = merge(tmp_path, run={"plan": plan.summary(), "run": {"run_id": "r"}})
    assert index.totals["pending"] == 1_000_000 and index.totals["replications"] == 1_000_000
    assert index.stored_replications.num_rows == 0
    assert (tmp_path / "index" / "replications.parquet").stat().st_size < 10_000
