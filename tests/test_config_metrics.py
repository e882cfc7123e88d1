"""The metrics:, stop: and seeding: sections of a config: validation, fingerprint, seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from disco_data_logger.sharding.config import config_snapshot, load_config, validate_config
from disco_data_logger.sharding.planning import make_task, plan_tasks
from tests.test_config import CONFIGS, base, load_error, write

METRICS: dict[str, Any] = {
    "level": {"stream": "stock", "reduce": "time_mean", "window": [5, None]},
    "demand": {"stream": "demand", "reduce": "sum"},
    "orders": {"stream": "orders", "reduce": "count", "entities": "index:3"},
    "ratio": {"expr": "orders / demand"},
}


def with_metrics(**extra: Any) -> dict[str, Any]:
    data = base()
    data["metrics"] = json.loads(json.dumps(METRICS))
    data.update(extra)
    return data


def test_valid_sections(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, with_metrics(
        seeding="common", stop={"metric": ["level", "ratio"], "half_width": 0.02,
                                "relative": True})))
    assert list(cfg.metrics) == ["level", "demand", "orders", "ratio"]
    assert cfg.metrics["level"].bounds == (5.0, float("inf"))
    assert cfg.metrics["orders"].entity_rule == ("index", 3)
    assert cfg.metrics["ratio"].derived
    assert cfg.stop is not None and cfg.stop.metrics == ["level", "ratio"]
    assert (cfg.stop.min_replications, cfg.stop.batch, cfg.stop.confidence) == (10, 10, 0.95)
    assert cfg.stop_max_replications == 3  # replications, when stop leaves it out
    from disco_data_logger.sharding.stopping import PrecisionRule

    rule = PrecisionRule(cfg.stop, cfg.stop_max_replications)
    assert rule.min_replications == 3  # the default minimum of 10 adapts to a maximum of 3


def test_shipped_configs_declare_metrics() -> None:
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo.seeding == "common" and "fill_rate" in demo.metrics
    mm1 = load_config(CONFIGS / "mm1.yaml")
    assert mm1.seeding == "common" and mm1.metrics["L"].reduce == "time_mean"


@pytest.mark.parametrize(("change", "expected"), [
    ({"metrics": {"m": {"stream": "stok", "reduce": "sum"}}},
     "metrics.m.stream: unknown stream 'stok' (did you mean 'stock'?) (streams: stock, demand,"
     " orders)"),
    ({"metrics": {"m": {"stream": "stock", "reduce": "median"}}},
     "metrics.m.reduce: must be 'time_mean', 'mean', 'sum', 'min', 'max', 'last' or 'count'"
     " (got 'median')"),
    ({"metrics": {"m": {"stream": "stock", "reduce": "sum", "entities": "index:-1"}}},
     "metrics.m.entities: must be sum, mean, max or index:<i>"),
    ({"metrics": {"m": {"stream": "stock", "reduce": "sum", "window": [3, 3]}}},
     "metrics.m.window: from must be below to (got [3.0, 3.0])"),
    ({"metrics": {"m": {"stream": "stock", "reduce": "sum", "window": [0, ".inf"]}}},
     "metrics.m.window: ends must be finite numbers or null"),
    ({"metrics": {"m": {"expr": "dmd * 2"}, "demand": {"stream": "demand", "reduce": "sum"}}},
     "metrics.m.expr: unknown metric 'dmd' (did you mean 'demand'?)"),
    ({"metrics": {"m": {"expr": "exec('x')"}}}, "metrics.m.expr: contains a function call"),
    ({"metrics": {"m": {"stream": "stock", "reduce": "sum", "colour": "red"}}},
     "metrics.m.colour: unknown key; allowed: stream, reduce, entities, window, expr"),
    ({"metrics": {"s": {"stream": "stock", "reduce": "sum"}}, "sweep": {"grid": {"s": [1]}}},
     "metrics.s: metric name 's' is also a sweep parameter"),
    ({"metrics": {"point_id": {"stream": "stock", "reduce": "sum"}}},
     "metrics.point_id: metric name 'point_id' is a column of every metric table"),
    ({"stop": {"metric": "level", "half_width": 0.1}},
     "stop.metric: unknown metric 'level' (metrics: none; declare them under metrics:)"),
    ({"metrics": METRICS, "stop": {"metric": ["level", "lvl"], "half_width": 0.1}},
     "stop.metric[1]: unknown metric 'lvl' (did you mean 'level'?)"),
    ({"metrics": METRICS, "stop": {"metric": "level", "half_width": 0}},
     "stop.half_width: must be > 0 (got 0)"),
    ({"metrics": METRICS, "stop": {"metric": "level", "half_width": 1, "confidence": 1}},
     "stop.confidence: must be < 1 (got 1)"),
    ({"metrics": METRICS, "stop": {"metric": "level", "half_width": 1, "min_replications": 1}},
     "stop.min_replications: must be >= 2 (got 1)"),
    ({"metrics": METRICS, "stop": {"metric": "level", "half_width": 1,
                                   "min_replications": 50, "max_replications": 20}},
     "stop.min_replications: must not exceed max_replications (20) (got 50)"),
    ({"seeding": "shared"}, "seeding: must be 'independent' or 'common' (got 'shared')"),
    # a stop: run may use every replication number up to its maximum: that is what is planned
    ({"metrics": METRICS, "stop": {"metric": "level", "half_width": 1,
                                   "max_replications": 2_000_000}},
     "stop.max_replications: too large to plan: 2000000 replications x 1 sweep point(s)"),
])
def test_errors_name_the_file_and_field(tmp_path: Path, change: dict[str, Any],
                                        expected: str) -> None:
    data = base()
    data.update(change)
    message = load_error(write(tmp_path, data))
    assert message.split(": ", 1)[1].startswith(expected), message


def test_fingerprint_and_seeds_of_independent_configs_are_unchanged(tmp_path: Path) -> None:
    plain = load_config(write(tmp_path, base(), "plain.yaml"))
    analysed = load_config(write(tmp_path, with_metrics(
        seeding="independent", stop={"metric": "level", "half_width": 0.1}), "more.yaml"))
    assert analysed.fingerprint() == plain.fingerprint()
    # the fingerprint every config had before these sections existed: the same dump, unchanged
    import hashlib

    from disco_data_logger.sharding.config import _canonical_json

    old = plain.model_dump(mode="json", exclude={"execution", "logger", "output", "replications",
                                                 "metrics", "stop", "seeding", "storage"})
    assert plain.fingerprint() == hashlib.sha256(_canonical_json(old).encode()).hexdigest()
    assert [t.seed_seq for t in plan_tasks(analysed)] == [(42, 0, r) for r in range(3)]
    common = load_config(write(tmp_path, with_metrics(seeding="common"), "common.yaml"))
    assert common.fingerprint() != plain.fingerprint()


def test_common_seeding_shares_streams_across_points(tmp_path: Path) -> None:
    data = base()
    data["sweep"] = {"grid": {"s": [1.0, 2.0, 3.0]}}
    data["seeding"] = "common"
    cfg = validate_config(data)
    draws = {(t.point_index, t.replication): np.random.default_rng(t.seed_sequence()).random(3)
             for t in plan_tasks(cfg)}
    for r in range(3):
        assert np.array_equal(draws[(0, r)], draws[(2, r)])
        assert not np.array_equal(draws[(0, r)], draws[(0, (r + 1) % 3)])
    independent = validate_config({**data, "seeding": "independent"})
    task = make_task(independent, 0, 1)
    assert not np.array_equal(np.random.default_rng(task.seed_sequence()).random(3),
                              draws[(0, 1)])


def test_snapshot_with_sections_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, with_metrics(
        seeding="common", stop={"metric": "level", "half_width": 0.1, "max_replications": 50})))
    again = validate_config(json.loads(json.dumps(config_snapshot(cfg))), "<snapshot>")
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert again.stop_max_replications == 50


def test_overrides_reach_the_sections(tmp_path: Path) -> None:
    path = write(tmp_path, with_metrics(stop={"metric": "level", "half_width": 0.1}))
    cfg = load_config(path, ["metrics.level.window=[10, 20]", "stop.half_width=0.5",
                             "seeding=common"])
    assert cfg.metrics["level"].window == [10, 20]
    assert cfg.stop is not None and cfg.stop.half_width == 0.5 and cfg.seeding == "common"
