"""disco_data_logger.sharding.config and .planning: validation, errors, overrides, sizes,
fingerprint, planning."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from disco_data_logger import _defaults
from disco_data_logger.errors import ConfigError, DataLoggerError
from disco_data_logger.models import inventory
from disco_data_logger.sharding.config import (
    ExperimentConfig,
    config_snapshot,
    load_config,
    parse_size,
    resolve_entry_point,
    validate_config,
)
from disco_data_logger.sharding.planning import Task, make_task, plan_tasks

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

BASE: dict[str, Any] = {
    "experiment": {"organisation": "acme", "model": "inventory", "name": "unit"},
    "output": "out",
    "replications": 3,
    "seed": 42,
    "entry_point": "disco_data_logger.models.inventory:run",
    "duration": 30,
    "parameters": {"n_skus": 10, "n_stores": 2},
    "streams": [
        {"name": "stock", "value_scale": 1.0, "periodicity": 1.0, "kind": "state"},
        {"name": "demand", "value_scale": 1.0, "periodicity": 1.0, "kind": "accumulator"},
        {"name": "orders", "value_scale": None, "labels": {"unit": "units", "weight": 1.5}},
    ],
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def write(tmp_path: Path, data: Any, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def load_error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message


# --- the shipped configs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo", "serial", "multiprocessing", "ray"])
def test_shipped_configs_load_and_plan(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.execution.backend == {"demo": "multiprocessing"}.get(name, name)
    assert cfg.output.is_absolute()
    assert resolve_entry_point(cfg.entry_point) is inventory.run
    assert {s.name for s in cfg.streams} == set(inventory.STREAMS)
    inventory.InventoryParams.from_mapping({**cfg.parameters, **cfg.points()[-1]})
    assert len(plan_tasks(cfg)) == len(cfg.points()) * cfg.replications


def test_demo_is_small_and_runs_on_two_workers() -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.execution.workers == 2
    assert cfg.points() == [{"s": 2.0}, {"s": 4.0}]
    assert 20 <= len(plan_tasks(cfg)) <= 40


# --- defaults --------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    data = base()
    data["streams"] = [{"name": "x", "value_scale": 0.01, "periodicity": 2.0}]
    cfg = load_config(write(tmp_path, data))
    assert cfg.logger.logger_kwargs() == {
        "ring_bytes": _defaults.RING_BYTES,
        "rotate_bytes": _defaults.ROTATE_BYTES,
        "block_bytes": _defaults.BLOCK_BYTES,
        "zstd_level": _defaults.ZSTD_LEVEL,
        "flush_interval": _defaults.FLUSH_INTERVAL,
    }
    assert cfg.execution.backend == "multiprocessing"
    assert cfg.execution.workers == (os.cpu_count() or 1)
    assert cfg.execution.retries == 2
    assert cfg.execution.ray_address is None and cfg.execution.timeout is None
    assert cfg.sweep is None
    stream = cfg.streams[0]
    assert stream.epoch_scale == _defaults.EPOCH_SCALE
    assert stream.kind == "state" and stream.periodic
    assert stream.labels == {}


def test_plain_stream_and_exact_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, base()))
    orders = cfg.streams[2]
    assert not orders.periodic and orders.kind is None and orders.value_scale is None
    assert orders.labels == {"unit": "units", "weight": 1.5}


# --- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("64MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("1GB", 10**9),
        ("2 kB", 2000),
        ("512k", 512 << 10),
        ("16M", 16 << 20),
        ("1G", 1 << 30),
        ("1.5MiB", 3 << 19),
        ("100B", 100),
        (2048.0, 2048),
    ],
)
def test_size_strings(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["64 parsecs", "MiB", "1.5B", "-1k", True, 1.5, [1], "1e6"])
def test_bad_size_strings(text: Any) -> None:
    with pytest.raises(ValueError, match="bytes"):
        parse_size(text)


def test_size_strings_in_config(tmp_path: Path) -> None:
    data = base()
    data["logger"] = {"ring_bytes": "32MiB", "block_bytes": "512k", "rotate_bytes": "1GB"}
    cfg = load_config(write(tmp_path, data))
    assert cfg.logger.ring_bytes == 32 << 20
    assert cfg.logger.block_bytes == 512 << 10
    assert cfg.logger.rotate_bytes == 10**9
    assert cfg.logger.logger_kwargs()["ring_bytes"] == 32 << 20


# --- every kind of error names the file and the field -----------------------------------------


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment:\n  organisation: acme\n  model: [unclosed\nseed: 1\n")
    message = load_error(path)
    assert "invalid YAML" in message and "line 4" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty"), ("- a\n- b\n", "mapping"), ("just text\n", "mapping")],
)
def test_not_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert "cannot read" in load_error(path)


def mutate(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


DELETE = object()


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        # the example of the brief, verbatim
        ("streams.1.value_scale", -1, "streams[1].value_scale: must be > 0 (got -1)"),
        ("streams.0.epoch_scale", 0, "streams[0].epoch_scale: must be > 0 (got 0)"),
        ("streams.0.periodicity", -2.5, "streams[0].periodicity: must be > 0 (got -2.5)"),
        ("streams.0.value_scale", ".nan", "streams[0].value_scale: must be"),
        ("streams.0.kind", "gauge", "streams[0].kind: must be 'state' or 'accumulator'"),
        ("streams.1.periodicity", DELETE, "streams[1].kind: kind 'accumulator' needs a period"),
        ("streams.2.value_scale", DELETE, "streams[2].value_scale: required key missing"),
        ("streams.2.name", "", "streams[2].name: "),
        ("streams.2.labels", {"tags": [1, 2]}, "streams[2].labels.tags: must be a string"),
        ("streams.2.labels", {"replication": 3}, "streams[2].labels.replication: reserved"),
        ("streams.2.colour", "red", "streams[2].colour: unknown key"),
        ("streams.2.valuescale", 1, "did you mean 'value_scale'?"),
        ("replicatons", 5, "replicatons: unknown key (did you mean 'replications'?)"),
        ("replications", 0, "replications: must be >= 1 (got 0)"),
        ("replications", "many", "replications: must be a valid integer"),
        ("replications", 2.5, "replications: must be a valid integer"),
        ("seed", -1, "seed: must be >= 0 (got -1)"),
        ("duration", 0, "duration: must be > 0 (got 0)"),
        ("duration", ".inf", "duration: must be a finite number"),
        ("experiment.name", DELETE, "experiment.name: required key missing"),
        ("experiment.team", "x", "experiment.team: unknown key"),
        ("experiment", DELETE, "experiment: required key missing"),
        ("output", DELETE, "output: required key missing"),
        ("entry_point", "no colon", "entry_point: must look like 'package.module:function'"),
        ("execution.backend", "dask", "execution.backend: must be 'serial', 'multiprocessing'"),
        ("execution.workers", 0, "execution.workers: must be >= 1 (got 0)"),
        ("execution.retries", -1, "execution.retries: must be >= 0 (got -1)"),
        ("execution.timeout", -5, "execution.timeout: must be > 0 (got -5)"),
        ("execution.nodes", 3, "execution.nodes: unknown key"),
        ("logger.zstd_level", 99, "logger.zstd_level: must be <= 22 (got 99)"),
        ("logger.ring_bytes", "lots", "logger.ring_bytes: must be a size in bytes"),
        ("logger.ring_bytes", 0, "logger.ring_bytes: must be > 0 (got 0)"),
        ("logger.block_bytes", "128MiB",
         "logger.block_bytes: must be at most a quarter of ring_bytes (67108864)"),
        ("logger.block_bytes", "17MiB", "logger.block_bytes: must be at most a quarter"),
        ("logger.zstd_level", -50, "logger.zstd_level: must be >= -7 (got -50)"),
        ("logger.flush_interval", 0, "logger.flush_interval: must be > 0 (got 0)"),
        ("parameters", [1, 2], "parameters: must be a valid dictionary"),
        ("streams", {"name": "x"}, "streams: must be a valid list"),
        ("sweep", {}, "sweep: declares no points"),
        ("sweep", {"grid": {"s": []}}, "sweep.grid.s: needs at least one value"),
        ("sweep", {"grid": {"s": 3}}, "sweep.grid.s: must be a valid list"),
        ("sweep", {"grid": {"s": [1, [2]]}}, "sweep.grid.s[1]: must be a string, number"),
        ("sweep", {"points": [{"s": 1}, {"s": {"a": 1}}]}, "sweep.points[1].s: must be a str"),
        ("sweep", {"grid": {"point_id": [1]}}, "sweep.grid.point_id: reserved name"),
        ("sweep", {"points": [{"s": 1}, {"s": 1}]}, "sweep.points[1]: point {'s': 1} appears"),
        ("sweep", {"grid": {"s": [1, 2]}, "points": [{"s": 2}]}, "sweep.points[0]: point"),
        ("sweep", {"grid": {"unit": [1, 2]}}, "streams[2].labels.unit: clashes with the sweep"),
        ("sweep", {"grid": {"s": [1]}, "extra": 1}, "sweep.extra: unknown key"),
    ],
)
def test_invalid_field(tmp_path: Path, dotted: str, value: Any, expected: str) -> None:
    data = base()
    mutate(data, dotted, value)
    text = yaml.safe_dump(data, sort_keys=False)
    text = text.replace("'.nan'", ".nan").replace("'.inf'", ".inf")
    message = load_error(write(tmp_path, text))
    assert expected in message, message


def test_stream_declared_twice(tmp_path: Path) -> None:
    data = base()
    data["streams"].append({"name": "demand", "value_scale": 2.0})
    message = load_error(write(tmp_path, data))
    assert message.endswith(
        "streams[3].name: stream 'demand' declared twice (streams[1] and streams[3])"
    )


def test_several_errors_are_summarised_in_one_line(tmp_path: Path) -> None:
    data = base()
    data["replications"] = 0
    data["seed"] = -3
    data["streams"][0]["value_scale"] = -1
    message = load_error(write(tmp_path, data))
    assert "replications: must be >= 1 (got 0)" in message
    assert "(and 2 more error(s): seed, streams[0].value_scale)" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_such_package_xyz.model:run", "no module named 'no_such_package_xyz'"),
        ("disco_data_logger.models.nope:run", "no module named 'disco_data_logger.models.nope'"),
        ("disco_data_logger.models.inventory:walk", "has no attribute 'walk'"),
        ("disco_data_logger.models.inventory:STREAMS", "is a tuple, not a callable"),
    ],
)
def test_entry_point_must_exist(tmp_path: Path, spec: str, expected: str) -> None:
    data = base()
    data["entry_point"] = spec
    message = load_error(write(tmp_path, data))
    assert ": entry_point: " in message and expected in message, message
    with pytest.raises(ConfigError, match=expected):
        resolve_entry_point(spec)


def test_entry_point_whose_import_fails_is_reported(tmp_path: Path) -> None:
    module = tmp_path / "broken_model_for_test.py"
    module.write_text("raise RuntimeError('model module exploded')\n")
    data = base()
    data["entry_point"] = "broken_model_for_test:run"
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        message = load_error(write(tmp_path, data))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_model_for_test", None)
    assert "entry_point: importing 'broken_model_for_test' failed: RuntimeError" in message


def test_config_error_is_a_project_error_and_a_value_error(tmp_path: Path) -> None:
    data = base()
    data["seed"] = -1
    with pytest.raises(DataLoggerError):
        load_config(write(tmp_path, data))
    with pytest.raises(ValueError):
        load_config(write(tmp_path, data))


def test_validate_config_names_its_source() -> None:
    data = base()
    data["duration"] = -1
    with pytest.raises(ConfigError, match=r"^<snapshot>: duration: must be > 0 \(got -1\)$"):
        validate_config(data, "<snapshot>")


# --- overrides -------------------------------------------------------------------------------


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    cfg = load_config(
        path,
        [
            "replications=50",
            "logger.zstd_level=7",
            "execution.backend=ray",
            "execution.ray_address=auto",
            "streams[1].value_scale=0.5",
            "streams.orders.value_scale=0.25",
            "parameters.n_skus=30",
            "parameters.label=hello world",
            "sweep.grid.s=[1, 2, 3]",
            "logger.ring_bytes=8MiB",
            "execution.timeout=",
        ],
    )
    assert cfg.replications == 50
    assert cfg.logger.zstd_level == 7
    assert cfg.execution.backend == "ray" and cfg.execution.ray_address == "auto"
    assert cfg.streams[1].value_scale == 0.5
    assert cfg.streams[2].value_scale == 0.25
    assert cfg.parameters == {"n_skus": 30, "n_stores": 2, "label": "hello world"}
    assert cfg.points() == [{"s": 1}, {"s": 2}, {"s": 3}]
    assert cfg.logger.ring_bytes == 8 << 20
    assert cfg.logger.block_bytes == 2 << 20  # the logger's default for that ring: a quarter
    assert cfg.execution.timeout is None
    # the file itself is untouched
    assert load_config(path).replications == 3


def test_override_values_are_validated_like_the_file(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, base()), ("logger.zstd_level=high",))
    assert "logger.zstd_level: must be a valid integer" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("replications", "expected key.sub=value"),
        ("=5", "expected key.sub=value"),
        ("a..b=1", "bad key 'a..b'"),
        ("streams[9].value_scale=1", "streams[9]: index out of range (the list has 3 items)"),
        ("streams.volume.value_scale=1", "streams.volume: no item named 'volume'"),
        ("seed.low=1", "seed is not a mapping or list"),
        ("parameters.n_skus=[1, 2", "is not valid YAML"),
    ],
)
def test_bad_override(tmp_path: Path, override: str, expected: str) -> None:
    message = load_error(write(tmp_path, base()), (override,))
    assert f"override {override!r}: " in message
    assert expected in message, message


def test_unknown_key_from_override(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, base()), ("execution.backnd=ray",))
    assert "execution.backnd: unknown key (did you mean 'backend'?)" in message


# --- output path -----------------------------------------------------------------------------


def test_relative_output_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    path = write(configs, base())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert load_config(path).output == work / "out"
    assert load_config(path, ["output=/data/runs/x"]).output == Path("/data/runs/x")


# --- fingerprint and snapshot ----------------------------------------------------------------


def test_fingerprint_follows_what_changes_results(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    reference = load_config(path).fingerprint()
    assert len(reference) == 64 and int(reference, 16) >= 0
    assert load_config(path).fingerprint() == reference
    same = [
        "execution.backend=serial",
        "execution.workers=7",
        "execution.retries=0",
        "logger.zstd_level=9",
        "logger.ring_bytes=8MiB",
        "output=elsewhere",
        "replications=100",
    ]
    for override in same:
        assert load_config(path, [override]).fingerprint() == reference, override
    different = [
        "seed=43",
        "duration=31",
        "parameters.n_skus=11",
        "streams[0].value_scale=0.5",
        "streams[2].labels.unit=kg",
        "sweep.grid.s=[1]",
        "experiment.name=other",
        "entry_point=disco_data_logger.models.inventory:InventoryParams",
    ]
    prints = {load_config(path, [override]).fingerprint() for override in different}
    assert reference not in prints and len(prints) == len(different)


def test_fingerprint_ignores_key_order(tmp_path: Path) -> None:
    data = base()
    data["parameters"] = {"n_stores": 2, "n_skus": 10}
    reordered = dict(reversed(list(data.items())))
    assert (
        load_config(write(tmp_path, data, "a.yaml")).fingerprint()
        == load_config(write(tmp_path, reordered, "b.yaml")).fingerprint()
    )


def test_snapshot_is_json_and_round_trips(tmp_path: Path) -> None:
    data = base()
    data["sweep"] = {"grid": {"s": [1.0, 2.0]}, "points": [{"s": 5.0, "backorders": True}]}
    data["logger"] = {"ring_bytes": "32MiB"}
    cfg = load_config(write(tmp_path, data))
    snapshot = config_snapshot(cfg)
    text = json.dumps(snapshot)
    again = validate_config(json.loads(text), "<snapshot>")
    assert again == cfg
    assert again.fingerprint() == cfg.fingerprint()
    assert snapshot["output"] == str(cfg.output)
    assert snapshot["logger"]["ring_bytes"] == 32 << 20


def test_config_pickles(tmp_path: Path) -> None:
    # configs travel to worker processes and Ray actors
    cfg = load_config(write(tmp_path, base()))
    assert pickle.loads(pickle.dumps(cfg)) == cfg


# --- sweep planning --------------------------------------------------------------------------


def sweep_config(tmp_path: Path, replications: int = 2) -> ExperimentConfig:
    data = base()
    data["replications"] = replications
    data["sweep"] = {
        "grid": {"s": [2.0, 4.0], "S": [8.0, 12.0, 16.0]},
        "points": [{"s": 1.0, "backorders": True}, {"mean_demand": 0.1}],
    }
    return load_config(write(tmp_path, data))


def test_points_grid_in_sorted_key_order_then_explicit_points(tmp_path: Path) -> None:
    cfg = sweep_config(tmp_path)
    # sorted keys: "S" < "s"; the last key varies fastest
    assert cfg.points() == [
        {"S": 8.0, "s": 2.0},
        {"S": 8.0, "s": 4.0},
        {"S": 12.0, "s": 2.0},
        {"S": 12.0, "s": 4.0},
        {"S": 16.0, "s": 2.0},
        {"S": 16.0, "s": 4.0},
        {"s": 1.0, "backorders": True},
        {"mean_demand": 0.1},
    ]


def test_plan_tasks(tmp_path: Path) -> None:
    cfg = sweep_config(tmp_path)
    tasks = plan_tasks(cfg)
    assert len(tasks) == 8 * 2
    assert [t.task_id for t in tasks[:3]] == ["p0000-r000000", "p0000-r000001", "p0001-r000000"]
    assert tasks[-1].task_id == "p0007-r000001"
    assert len({t.task_id for t in tasks}) == len(tasks)
    last = tasks[-1]
    assert (last.point_id, last.point_index, last.replication) == ("p0007", 7, 1)
    assert last.point_params == {"mean_demand": 0.1}
    assert last.seed_seq == (42, 7, 1)
    assert len({t.seed_seq for t in tasks}) == len(tasks)


def test_no_sweep_is_one_point(tmp_path: Path) -> None:
    tasks = plan_tasks(load_config(write(tmp_path, base())))
    assert [(t.task_id, t.point_id, t.point_params) for t in tasks] == [
        ("p0000-r000000", "p0000", {}),
        ("p0000-r000001", "p0000", {}),
        ("p0000-r000002", "p0000", {}),
    ]


def test_points_only_sweep(tmp_path: Path) -> None:
    data = base()
    data["sweep"] = {"points": [{"s": 3.0}, {"s": 6.0, "S": 20.0}]}
    cfg = load_config(write(tmp_path, data))
    assert [t.point_params for t in plan_tasks(cfg)][::3] == [{"s": 3.0}, {"s": 6.0, "S": 20.0}]


def draws(task: Task) -> np.ndarray:
    return np.random.default_rng(task.seed_sequence()).random(4)


def test_task_seed_does_not_depend_on_planning(tmp_path: Path) -> None:
    small = sweep_config(tmp_path, replications=2)
    large = sweep_config(tmp_path, replications=9)
    planned = {t.task_id: t for t in plan_tasks(large)}
    for task in plan_tasks(small):
        alone = make_task(large, task.point_index, task.replication)
        assert alone == task == planned[task.task_id]
        np.testing.assert_array_equal(draws(alone), draws(planned[task.task_id]))
    # the planning order (or a shuffle of it, as a pool would run it) does not matter
    shuffled = list(planned.values())
    np.random.default_rng(0).shuffle(shuffled)
    assert {t.task_id: draws(t).tolist() for t in shuffled} == {
        k: draws(t).tolist() for k, t in planned.items()
    }


def test_task_seeds_are_the_children_of_the_master_seed(tmp_path: Path) -> None:
    cfg = sweep_config(tmp_path, replications=3)
    for task in plan_tasks(cfg):
        root = np.random.SeedSequence(cfg.seed)  # spawn() counts: start afresh for every task
        child = root.spawn(task.point_index + 1)[task.point_index]
        grandchild = child.spawn(task.replication + 1)[task.replication]
        np.testing.assert_array_equal(
            task.seed_sequence().generate_state(8), grandchild.generate_state(8)
        )


def test_different_tasks_draw_differently(tmp_path: Path) -> None:
    tasks = plan_tasks(sweep_config(tmp_path))
    streams = {tuple(draws(t)) for t in tasks}
    assert len(streams) == len(tasks)


def test_task_pickles(tmp_path: Path) -> None:
    task = plan_tasks(sweep_config(tmp_path))[5]
    assert pickle.loads(pickle.dumps(task)) == task


def test_make_task_rejects_unknown_point(tmp_path: Path) -> None:
    with pytest.raises(IndexError, match="point 8 out of range"):
        make_task(sweep_config(tmp_path), 8, 0)


def test_old_import_paths_still_work() -> None:
    """0.2.0 code imported the config and context from the package root; they are aliases now."""
    import disco_data_logger.config as old_config
    import disco_data_logger.context as old_context
    from disco_data_logger.sharding import context, planning

    assert old_config.ExperimentConfig is ExperimentConfig
    assert old_config.plan_tasks is planning.plan_tasks
    assert old_config.Task is planning.Task
    assert old_context.open_context is context.open_context
