"""disco_data_logger.sharding.context: stream registration, labels, routing and closing, on a
real logger."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from disco_data_logger import DataLogger, PeriodicStream, read
from disco_data_logger.errors import LoggerClosedError, UnknownStreamError
from disco_data_logger.sharding.config import ExperimentConfig, validate_config
from disco_data_logger.sharding.context import open_context
from disco_data_logger.sharding.planning import plan_tasks

CONFIG: dict[str, Any] = {
    "experiment": {"organisation": "acme", "model": "toy", "name": "ctx"},
    "output": "/tmp/unused",
    "replications": 2,
    "seed": 5,
    "entry_point": "disco_data_logger.models.inventory:run",
    "duration": 10.0,
    "parameters": {"alpha": 1.0, "s": 3.0},
    "sweep": {"grid": {"s": [4.0, 6.0]}, "points": [{"s": 8.0, "mode": "fast"}]},
    "streams": [
        {
            "name": "level",
            "labels": {"unit": "units", "site": 3},
            "epoch_scale": 0.001,
            "value_scale": 0.5,
            "periodicity": 1.0,
        },
        {
            "name": "flow",
            "epoch_scale": 0.001,
            "value_scale": 1.0,
            "periodicity": 2.0,
            "kind": "accumulator",
        },
        {"name": "events", "value_scale": None, "labels": {"exact": True}},
    ],
}


def config(**changes: Any) -> ExperimentConfig:
    data = copy.deepcopy(CONFIG)
    data.update(changes)
    return validate_config(data, "<test>")


def rows(path: Path) -> list[tuple[int, float, list[int], list[float]]]:
    table = read(path)
    return sorted(
        zip(
            table.column("stream_id").to_pylist(),
            table.column("epoch").to_pylist(),
            table.column("indices").to_pylist(),
            table.column("values").to_pylist(),
            strict=True,
        )
    )


def test_registers_every_declared_stream_with_merged_labels(tmp_path: Path) -> None:
    cfg = config()
    task = plan_tasks(cfg)[5]  # third point (explicit), second replication
    with DataLogger(tmp_path / "seg") as logger:
        ctx = open_context(cfg, task, logger)
        assert set(ctx.streams) == {"level", "flow", "events"}
        assert isinstance(ctx.stream("level"), PeriodicStream)
        assert isinstance(ctx.stream("flow"), PeriodicStream)
        assert isinstance(ctx.stream("events"), int)
        by_stream = {meta["stream"]: meta for meta in logger.streams.values()}
        assert set(by_stream) == {"level", "flow", "events"}
        common = {
            "organisation": "acme",
            "model": "toy",
            "experiment": "ctx",
            "replication": 1,
            "point_id": "p0002",
            "s": 8.0,
            "mode": "fast",
        }
        for name, meta in by_stream.items():
            for key, value in common.items():
                assert meta[key] == value, (name, key)
        assert by_stream["level"]["unit"] == "units" and by_stream["level"]["site"] == 3
        assert by_stream["events"]["exact"] is True
        level = by_stream["level"]
        assert (level["epoch_scale"], level["value_scale"]) == (0.001, 0.5)
        assert (level["periodicity"], level["kind"]) == (1.0, "state")
        assert (by_stream["flow"]["periodicity"], by_stream["flow"]["kind"]) == (
            2.0,
            "accumulator",
        )
        assert by_stream["events"]["value_scale"] is None
        assert ctx.stream("events") == by_stream["events"]["stream_id"]
        ctx.close()


def test_context_fields(tmp_path: Path) -> None:
    cfg = config()
    task = plan_tasks(cfg)[2]  # p0001-r000000: s = 6.0 from the grid
    with DataLogger(tmp_path / "seg") as logger:
        ctx = open_context(cfg, task, logger)
        assert (ctx.task_id, ctx.point_id, ctx.replication) == ("p0001-r000000", "p0001", 0)
        assert ctx.params == {"alpha": 1.0, "s": 6.0}  # the point overrides the parameters
        assert cfg.parameters == {"alpha": 1.0, "s": 3.0}  # ... without touching the config
        assert ctx.duration == 10.0
        assert ctx.logger is logger
        assert ctx.labels == {
            "organisation": "acme",
            "model": "toy",
            "experiment": "ctx",
            "replication": 0,
            "point_id": "p0001",
            "s": 6.0,
        }
        expected = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(1, 0))).random(3)
        np.testing.assert_array_equal(ctx.rng.random(3), expected)
        ctx.close()


def test_rng_is_the_tasks_own(tmp_path: Path) -> None:
    cfg = config()
    tasks = plan_tasks(cfg)
    with DataLogger(tmp_path / "seg") as logger:
        first = open_context(cfg, tasks[3], logger).rng.random(5)
        again = open_context(cfg, tasks[3], logger).rng.random(5)
        other = open_context(cfg, tasks[4], logger).rng.random(5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_rng_for_gives_one_generator_per_purpose(tmp_path: Path) -> None:
    cfg = config()
    tasks = plan_tasks(cfg)
    with DataLogger(tmp_path / "seg") as logger:
        ctx = open_context(cfg, tasks[3], logger)
        arrivals = ctx.rng_for("arrivals")
        assert ctx.rng_for("arrivals") is arrivals  # continues where it stopped
        first = arrivals.random(4)
        # independent of the other generators and of how much they were used
        fresh = open_context(cfg, tasks[3], logger)
        fresh.rng.random(1000)
        fresh.rng_for("service").random(1000)
        assert np.array_equal(fresh.rng_for("arrivals").random(4), first)
        assert not np.array_equal(ctx.rng_for("service").random(4), first)
        assert not np.array_equal(open_context(cfg, tasks[4], logger).rng_for("arrivals")
                                  .random(4), first)
        with pytest.raises(ValueError, match="purpose must be a non-empty string"):
            ctx.rng_for("")


def test_record_routes_to_plain_and_periodic_streams(tmp_path: Path) -> None:
    cfg = config()
    task = plan_tasks(cfg)[0]
    path = tmp_path / "seg"
    with DataLogger(path) as logger:
        ctx = open_context(cfg, task, logger)
        ctx.record("events", 0.25, [3, 1], [0.1, 0.2])  # unsorted: sorted for us
        ctx.record("flow", 0.5, np.array([2]), np.array([1.0]))
        ctx.record("flow", 1.5, np.array([2, 4]), np.array([2.0, 5.0]))
        ctx.record("level", 0.5, np.array([0]), np.array([7.0]))
        ctx.close()
        events_id = ctx.stream("events")
        flow_id = ctx.stream("flow").stream_id  # type: ignore[union-attr]
        level_id = ctx.stream("level").stream_id  # type: ignore[union-attr]
    records = rows(path)
    events = [r for r in records if r[0] == events_id]
    assert events == [(events_id, 0.25, [1, 3], [0.2, 0.1])]
    flow = [r for r in records if r[0] == flow_id]
    # one accumulator period [0, 2) holds both records; duration 10 closes the others empty
    assert flow[0][2:] == ([2, 4], [3.0, 5.0])
    assert all(r[2] == [] for r in flow[1:])
    level = [r for r in records if r[0] == level_id]
    # the state is repeated at every period boundary through the duration
    assert len(level) >= 10
    assert all(r[2:] == ([0], [7.0]) for r in level)


def test_unknown_stream_name(tmp_path: Path) -> None:
    cfg = config()
    with DataLogger(tmp_path / "seg") as logger:
        ctx = open_context(cfg, plan_tasks(cfg)[0], logger)
        with pytest.raises(UnknownStreamError, match="'stok' is not declared") as info:
            ctx.record("stok", 1.0, [1], [1.0])
        assert isinstance(info.value, KeyError)
        assert "level, flow, events" in str(info.value)
        ctx.close()


def test_close_is_idempotent_and_leaves_the_logger_open(tmp_path: Path) -> None:
    cfg = config()
    with DataLogger(tmp_path / "seg") as logger:
        ctx = open_context(cfg, plan_tasks(cfg)[0], logger)
        ctx.close(4.0)
        ctx.close()
        assert ctx.closed and not logger.closed
        with pytest.raises(LoggerClosedError):
            ctx.record("level", 5.0, [1], [1.0])
        ctx.record("events", 5.0, [1], [1.0])  # plain streams live as long as the logger


def test_a_shard_runs_several_replications_in_one_logger(tmp_path: Path) -> None:
    cfg = config()
    tasks = plan_tasks(cfg)
    with DataLogger(tmp_path / "seg") as logger:
        contexts = [open_context(cfg, task, logger) for task in tasks[:3]]
        for ctx in contexts:
            ctx.close()
        ids = [ctx.stream("events") for ctx in contexts]
        assert len(set(ids)) == 3
        assert len(logger.streams) == 3 * len(cfg.streams)
        replications = sorted(
            (meta["point_id"], meta["replication"])
            for meta in logger.streams.values()
            if meta["stream"] == "events"
        )
        assert replications == [("p0000", 0), ("p0000", 1), ("p0001", 0)]


def test_context_manager_closes_on_success(tmp_path: Path) -> None:
    cfg = config(streams=[CONFIG["streams"][1]])
    path = tmp_path / "seg"
    with DataLogger(path) as logger:
        with open_context(cfg, plan_tasks(cfg)[0], logger) as ctx:
            ctx.record("flow", 0.5, [1], [1.0])
        assert ctx.closed
    assert len(rows(path)) == 5  # periods [0,2) ... [8,10)
