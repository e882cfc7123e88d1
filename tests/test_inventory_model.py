"""disco_data_logger.models.inventory: parameters, determinism and the sanity of what it logs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from disco_data_logger import DataLogger, read
from disco_data_logger.errors import ConfigError
from disco_data_logger.models import ENTRY_POINTS, inventory
from disco_data_logger.models.inventory import InventoryParams
from disco_data_logger.sharding.config import ExperimentConfig, validate_config
from disco_data_logger.sharding.context import open_context
from disco_data_logger.sharding.planning import Task, plan_tasks

N_SKUS, N_STORES = 12, 3
N_LOC = N_STORES + 1

CONFIG: dict[str, Any] = {
    "experiment": {"organisation": "acme", "model": "inventory", "name": "test"},
    "output": "/tmp/unused",
    "replications": 3,
    "seed": 2024,
    "entry_point": ENTRY_POINTS["inventory"],
    "duration": 56,  # whole weeks: accumulator periods ending after the duration are not emitted
    "parameters": {"n_skus": N_SKUS, "n_stores": N_STORES, "mean_demand": 0.8},
    "sweep": {"grid": {"backorders": [False, True]}},
    "streams": [
        {"name": "stock", "epoch_scale": 0.001, "value_scale": 1.0, "periodicity": 1.0},
        {
            "name": "demand",
            "epoch_scale": 0.001,
            "value_scale": 1.0,
            "periodicity": 7.0,
            "kind": "accumulator",
        },
        {
            "name": "shortage",
            "epoch_scale": 0.001,
            "value_scale": 1.0,
            "periodicity": 1.0,
            "kind": "accumulator",
        },
        {
            "name": "lost",
            "epoch_scale": 0.001,
            "value_scale": 1.0,
            "periodicity": 7.0,
            "kind": "accumulator",
        },
        {"name": "orders", "epoch_scale": 0.001, "value_scale": 1.0},
    ],
}


def config(**parameters: Any) -> ExperimentConfig:
    data = copy.deepcopy(CONFIG)
    data["parameters"].update(parameters)
    return validate_config(data, "<test>")


# --- parameters (no logger needed) -----------------------------------------------------------


def test_defaults_are_valid() -> None:
    params = InventoryParams.from_mapping({})
    assert params == InventoryParams()
    assert params.S > params.s and params.warehouse_S > params.warehouse_s


def test_parameters_are_converted() -> None:
    params = InventoryParams.from_mapping({"n_skus": 5.0, "s": 2, "backorders": True})
    assert params.n_skus == 5 and isinstance(params.n_skus, int)
    assert params.s == 2.0 and isinstance(params.s, float)
    assert params.backorders is True


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"n_sku": 3}, "parameters.n_sku: not a parameter of the inventory model"),
        ({"n_skus": 0}, "parameters.n_skus: must be >= 1 (got 0)"),
        ({"n_skus": 2.5}, "parameters.n_skus: must be a int"),
        ({"n_stores": "four"}, "parameters.n_stores: must be a int"),
        ({"backorders": "yes"}, "parameters.backorders: must be a bool"),
        ({"mean_demand": -1}, "parameters.mean_demand: must be >= 0"),
        ({"mean_demand": float("nan")}, "parameters.mean_demand: must be a float"),
        ({"s": 5.0, "S": 5.0}, "parameters.S: must be > s (5.0)"),
        ({"warehouse_S": 1.0}, "parameters.warehouse_S: must be > warehouse_s"),
        ({"store_lead_time": 0.5}, "parameters.store_lead_time: must be >= 1 day"),
        ({"weekly_amplitude": 1.0}, "parameters.weekly_amplitude: must be < 1"),
    ],
)
def test_bad_parameters(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        InventoryParams.from_mapping(params)


# --- running it on a real logger -------------------------------------------------------------


def run_tasks(
    cfg: ExperimentConfig, tasks: list[Task], path: Path
) -> tuple[dict[tuple[str, str], list[tuple[Any, ...]]], list[dict[str, float]]]:
    """Run ``tasks`` in turn in one logger (as a shard does); records by (task id, stream)."""
    kpis = []
    with DataLogger(path) as logger:
        for task in tasks:
            ctx = open_context(cfg, task, logger)
            kpis.append(inventory.run(ctx))
            ctx.close()
        names = {
            sid: (f"{meta['point_id']}-r{meta['replication']:06d}", meta["stream"])
            for sid, meta in logger.streams.items()
        }
    table = read(path)
    records: dict[tuple[str, str], list[tuple[Any, ...]]] = {key: [] for key in names.values()}
    for sid, epoch, idx, val in zip(
        table.column("stream_id").to_pylist(),
        table.column("epoch").to_pylist(),
        table.column("indices").to_pylist(),
        table.column("values").to_pylist(),
        strict=True,
    ):
        records[names[sid]].append((epoch, tuple(idx), tuple(val)))
    for rows in records.values():
        rows.sort()
    return records, kpis


def test_same_task_same_data(tmp_path: Path) -> None:
    cfg = config()
    task = plan_tasks(cfg)[1]
    first, kpi_first = run_tasks(cfg, [task], tmp_path / "a")
    second, kpi_second = run_tasks(cfg, [task], tmp_path / "b")
    assert first == second
    assert kpi_first == kpi_second
    assert all(first[(task.task_id, name)] for name in inventory.STREAMS)


def test_results_do_not_depend_on_what_ran_before(tmp_path: Path) -> None:
    # a worker that ran other tasks first must log exactly what a fresh worker logs
    cfg = config()
    tasks = plan_tasks(cfg)
    alone, _ = run_tasks(cfg, [tasks[4]], tmp_path / "alone")
    after, _ = run_tasks(cfg, [tasks[5], tasks[0], tasks[4]], tmp_path / "after")
    for name in inventory.STREAMS:
        key = (tasks[4].task_id, name)
        assert after[key] == alone[key]


def test_replications_differ(tmp_path: Path) -> None:
    cfg = config()
    tasks = plan_tasks(cfg)
    records, _ = run_tasks(cfg, tasks[:2], tmp_path / "seg")
    assert records[(tasks[0].task_id, "demand")] != records[(tasks[1].task_id, "demand")]


def test_logged_data_makes_sense(tmp_path: Path) -> None:
    cfg = config()
    tasks = plan_tasks(cfg)  # p0000: lost sales, p0001: backorders
    records, kpis = run_tasks(cfg, [tasks[0], tasks[3]], tmp_path / "seg")
    n_entities = N_SKUS * N_LOC
    for task, kpi in zip([tasks[0], tasks[3]], kpis, strict=True):
        backorders = task.point_params["backorders"]
        stock = records[(task.task_id, "stock")]
        demand = records[(task.task_id, "demand")]
        shortage = records[(task.task_id, "shortage")]
        orders = records[(task.task_id, "orders")]

        # one daily state per day boundary through the duration, weekly demand sums
        assert len(stock) >= cfg.duration
        assert len(demand) == cfg.duration // 7
        for _, idx, val in stock + demand + shortage + orders:
            assert all(0 <= i < n_entities for i in idx)
            assert all(float(v).is_integer() for v in val)
        for _, idx, val in demand:
            assert all(i % N_LOC != 0 for i in idx)  # demand happens at stores only
            assert all(v > 0 for v in val)
        for _, _, val in orders:
            assert all(v > 0 for v in val)
        warehouse_stock = [
            v for _, idx, val in stock for i, v in zip(idx, val, strict=True) if i % N_LOC == 0
        ]
        assert min(warehouse_stock) >= 0
        store_stock = [
            v for _, idx, val in stock for i, v in zip(idx, val, strict=True) if i % N_LOC != 0
        ]
        assert (min(store_stock) < 0) if backorders else (min(store_stock) >= 0)

        total_demand = sum(sum(val) for _, _, val in demand)
        store_short = sum(
            v for _, idx, val in shortage for i, v in zip(idx, val, strict=True) if i % N_LOC
        )
        assert 0 < store_short < total_demand
        lost = records[(task.task_id, "lost")]
        assert all(i % N_LOC != 0 for _, idx, _ in lost for i in idx)  # stores only
        assert sum(sum(val) for _, _, val in lost) == store_short
        assert kpi["fill_rate"] == pytest.approx(1 - store_short / total_demand)
        assert kpi["days"] == cfg.duration
        assert kpi["store_orders"] == sum(1 for _, idx, _ in orders for i in idx if i % N_LOC != 0)


def test_common_random_numbers_give_every_policy_the_same_demand(tmp_path: Path) -> None:
    data = copy.deepcopy(CONFIG)
    data["seeding"] = "common"
    data["sweep"] = {"grid": {"s": [1.0, 5.0]}}
    cfg = validate_config(data, "<test>")
    tasks = plan_tasks(cfg)  # p0000-r0..2, p0001-r0..2
    records, _ = run_tasks(cfg, [tasks[0], tasks[3], tasks[1]], tmp_path / "seg")
    low, high, other = (records[(t.task_id, "demand")] for t in (tasks[0], tasks[3], tasks[1]))
    # the policies order differently (so they draw different lead times), yet see one demand
    assert records[(tasks[0].task_id, "orders")] != records[(tasks[3].task_id, "orders")]
    assert low == high
    assert low != other  # another replication is another demand


def test_only_declared_streams_are_logged(tmp_path: Path) -> None:
    data = copy.deepcopy(CONFIG)
    data["streams"] = [data["streams"][0]]
    cfg = validate_config(data, "<test>")
    task = plan_tasks(cfg)[0]
    records, _ = run_tasks(cfg, [task], tmp_path / "seg")
    assert list(records) == [(task.task_id, "stock")]


def test_parameters_come_from_the_sweep_point(tmp_path: Path) -> None:
    cfg = config(n_skus=4, n_stores=1)
    records, _ = run_tasks(cfg, plan_tasks(cfg)[:1], tmp_path / "seg")
    stock = records[(plan_tasks(cfg)[0].task_id, "stock")]
    assert max(i for _, idx, _ in stock for i in idx) < 4 * 2


def test_many_skus_stay_fast_enough_to_be_vectorised(tmp_path: Path) -> None:
    # 5,000 SKUs x 6 locations for 30 days: a Python loop per SKU would take minutes; this is
    # about correctness at scale (numbers of entities), not a timing assertion.
    cfg = config(n_skus=5000, n_stores=5, mean_demand=0.05)
    data = cfg.model_copy(update={"duration": 30.0})
    records, kpis = run_tasks(data, plan_tasks(data)[:1], tmp_path / "seg")
    task_id = plan_tasks(data)[0].task_id
    assert max(max(idx, default=0) for _, idx, _ in records[(task_id, "stock")]) < 5000 * 6
    assert 0 < kpis[0]["fill_rate"] <= 1
    assert np.isfinite(kpis[0]["mean_store_stock"])
