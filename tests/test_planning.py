"""TaskPlan: the tasks of an experiment without building them, and a million planned tasks that
cost a megabyte to plan and nothing to index."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)

from disco_data_logger.sharding import merge
from disco_data_logger.sharding.config import validate_config
from disco_data_logger.sharding.index import _conform, with_pending
from disco_data_logger.sharding.planning import (
    TaskPlan,
    first_per_point,
    in_plan,
    plan_tasks,
    planned_counts,
    planned_table,
    stored_per_point,
    task_id,
)


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


def test_a_stop_plan_uses_max_replications() -> None:
    doc = config(20, [1.0, 2.0])
    doc["metrics"] = {"X": {"stream": "x", "reduce": "sum"}}
    doc["stop"] = {"metric": "X", "half_width": 0.1, "max_replications": 500}
    plan = TaskPlan(validate_config(doc))
    assert plan.shape == (2, 500)
    del doc["stop"]["max_replications"]  # replications is the default maximum
    assert TaskPlan(validate_config(doc)).shape == (2, 20)


def test_a_stop_plan_lists_as_pending_what_its_rule_asked_for() -> None:
    """Per point, the lowest numbers without a row, as many as were asked for beyond the rows."""
    plan = {"points": 3, "replications": 10,
            "stop": {"points": [{"planned": 4}, {"planned": 0}, {"planned": 6}]}}
    assert planned_counts(plan).tolist() == [4, 0, 6]
    assert planned_counts({"points": 3, "replications": 10}) is None
    assert planned_counts({"points": 2, "replications": 10, "stop": {}}).tolist() == [0, 0]
    # rows: p0 has 0 (committed) and 2 (failed); p2 has 0..2 and 5 committed
    rows = [(0, 0, "committed"), (0, 2, "failed"), (2, 0, "committed"), (2, 1, "committed"),
            (2, 2, "committed"), (2, 5, "committed")]
    stored = _conform(pa.table({
        "task_id": [task_id(p, r) for p, r, _ in rows],
        "point_id": [f"p{p:04d}" for p, _, _ in rows],
        "point_index": pa.array([p for p, _, _ in rows], pa.int64()),
        "replication": pa.array([r for _, r, _ in rows], pa.int64()),
        "status": [s for _, _, s in rows],
        "attempts": pa.array([1] * len(rows), pa.int64())}))
    assert stored_per_point(stored["task_id"], stored["point_index"], stored["replication"],
                            3, 10).tolist() == [2, 0, 4]
    table = with_pending(stored, plan)
    pending = table.filter(pa.compute.equal(table["status"], "pending"))
    assert sorted(pending["task_id"].to_pylist()) == [
        "p0000-r000001", "p0000-r000003", "p0002-r000003", "p0002-r000004"]
    assert first_per_point(planned_table(2, 3), np.array([1, 2]))["task_id"].to_pylist() == [
        "p0000-r000000", "p0001-r000000", "p0001-r000001"]
