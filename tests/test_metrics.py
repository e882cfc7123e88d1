"""Experiment.metrics: the sparse semantics of every reduction, windows, expr, cache, errors.

The experiments are real shards (ShardWriter, several shards); expected values are worked out
by hand in the comments, and again by the naive oracle of tests/experiments.py on records read
back by the pure-Python reader.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from disco_data_logger.errors import CorruptDataWarning, MetricError, MetricsCacheWarning
from disco_data_logger.sharding import Experiment, ShardWriter, merge
from tests.experiments import Rep, StreamData, naive_metric, read_back, write_experiment

REDUCTIONS = ("time_mean", "mean", "sum", "min", "max", "last", "count")
ENTITIES = ("sum", "mean", "max", "index:3", "index:7")

# One plain stream, worked out by hand. Entities ever recorded: {0, 1, 3}.
#   t=1 {0: 2, 3: 4}   sum 6   mean 2     max 4 (entity 1 absent: 0 < 4)  index:3 4
#   t=3 {}             sum 0   mean 0     max 0                           index:3 0
#   t=4 {3: -1}        sum -1  mean -1/3  max 0 (entities 0, 1 absent)   index:3 -1
#   t=6 {0: 5, 1: 1}   sum 6   mean 2     max 5                           index:3 0
PLAIN = [(1.0, {0: 2.0, 3: 4.0}), (3.0, {}), (4.0, {3: -1.0}), (6.0, {0: 5.0, 1: 1.0})]
DURATION = 10.0


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    root = tmp_path_factory.mktemp("hand")
    reps = [
        Rep("t0", "p0000", 0, 0, {"x": StreamData(PLAIN)}),
        # a replication whose stream recorded nothing, and one without the stream at all
        Rep("t1", "p0000", 0, 1, {"x": StreamData([])}),
        Rep("t2", "p0000", 0, 2, {"y": StreamData([(0.5, {0: 1.0})])}),
    ]
    write_experiment(root, reps)
    return Experiment.open(root)


def one(exp: Experiment, task: str = "t0", **spec: object) -> float | None:
    table = exp.metrics({"m": {"stream": "x", **spec}}, duration=DURATION, cache=False)
    row = table["task_id"].to_pylist().index(task)
    value = table["m"][row].as_py()
    return value


@pytest.mark.parametrize(("spec", "expected"), [
    # time-weighted: 0 on [0,1), 6 on [1,3), 0 on [3,4), -1 on [4,6), 6 on [6,10)
    ({"reduce": "time_mean"}, (12 + 0 - 2 + 24) / 10),
    ({"reduce": "time_mean", "window": [2, 5]}, (6 - 1) / 3),
    ({"reduce": "time_mean", "window": [7, 8]}, 6.0),
    ({"reduce": "time_mean", "window": [None, 2]}, 6 / 2),
    ({"reduce": "time_mean", "window": [5, 20]}, (-1 + 24) / 5),  # ends at the duration
    ({"reduce": "time_mean", "entities": "index:3"}, (8 + 0 - 2) / 10),
    ({"reduce": "time_mean", "entities": "max"}, (8 + 0 + 0 + 20) / 10),
    ({"reduce": "time_mean", "entities": "mean"}, (4 + 0 - 2 / 3 + 8) / 10),
    ({"reduce": "mean"}, (6 + 0 - 1 + 6) / 4),
    ({"reduce": "mean", "window": [2, 5]}, -0.5),
    ({"reduce": "mean", "entities": "mean"}, (2 + 0 - 1 / 3 + 2) / 4),
    ({"reduce": "sum"}, 11.0),
    ({"reduce": "sum", "entities": "max"}, 9.0),
    ({"reduce": "sum", "entities": "index:1"}, 1.0),
    ({"reduce": "min"}, -1.0),
    ({"reduce": "min", "entities": "max"}, 0.0),
    ({"reduce": "max"}, 6.0),
    ({"reduce": "max", "window": [2, 5]}, 0.0),
    ({"reduce": "last"}, 6.0),
    ({"reduce": "last", "window": [None, 5]}, -1.0),
    ({"reduce": "last", "entities": "index:3"}, 0.0),
    ({"reduce": "count"}, 4.0),
    ({"reduce": "count", "window": [3, 4]}, 1.0),
    ({"reduce": "count", "window": [7, 8]}, 0.0),
    ({"reduce": "sum", "window": [7, 8]}, 0.0),
])
def test_reductions_by_hand(hand: Experiment, spec: dict[str, object], expected: float) -> None:
    assert one(hand, **spec) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("reduce", ["mean", "min", "max", "last"])
def test_empty_window_is_undefined(hand: Experiment, reduce: str) -> None:
    assert one(hand, reduce=reduce, window=[7, 8]) is None


@pytest.mark.parametrize(("reduce", "expected"), [
    ("count", 0.0), ("sum", 0.0), ("time_mean", 0.0), ("mean", None), ("min", None),
    ("max", None), ("last", None)])
@pytest.mark.parametrize("task", ["t1", "t2"])
def test_no_records_means_zeros(hand: Experiment, task: str, reduce: str,
                                expected: float | None) -> None:
    # t1 recorded no record of x, t2 has no stream x: both are an all-zero signal
    assert one(hand, task, reduce=reduce) == expected


def test_columns_and_rows(hand: Experiment) -> None:
    table = hand.metrics({"a": {"stream": "x", "reduce": "sum"},
                          "b": {"expr": "a * 2"}}, duration=DURATION, cache=False)
    assert table.column_names == ["task_id", "point_id", "replication", "a", "b"]
    assert table["task_id"].to_pylist() == ["t0", "t1", "t2"]
    assert table["b"].to_pylist() == [22.0, 0.0, 0.0]


def test_expressions_on_metrics(hand: Experiment) -> None:
    table = hand.metrics({
        "total": {"stream": "x", "reduce": "sum"},
        "n": {"stream": "x", "reduce": "count"},
        "per_record": {"expr": "total / n"},
        "scaled": {"expr": "-(per_record - 1) ** 2 + 0.5 * n"},
    }, duration=DURATION, cache=False)
    assert table["per_record"].to_pylist() == [pytest.approx(11 / 4), None, None]  # 0 / 0
    assert table["scaled"].to_pylist()[0] == pytest.approx(-(11 / 4 - 1) ** 2 + 2)


def test_periodic_state_time_mean_is_the_mean_over_boundaries(tmp_path: Path) -> None:
    # state with periodicity 2: updates at 0.5 (5), 2.5 (1, at index 4) and 5.5 (3 and 2)
    # boundaries 2, 4, 6, 8 hold the last state: 5, 1, 5, 5 (indices summed); the first boundary
    # is at 2 (no boundary before the first update)
    records = [(0.5, {0: 5.0}), (2.5, {4: 1.0}), (5.5, {0: 3.0, 4: 2.0})]
    reps = [Rep("t0", "p0000", 0, 0, {"s": StreamData(records, periodicity=2.0,
                                                          close_at=8.0)})]
    write_experiment(tmp_path, reps, shards=1)
    exp = Experiment.open(tmp_path)
    got = exp.metrics({"all": {"stream": "s", "reduce": "time_mean"},
                       "late": {"stream": "s", "reduce": "time_mean", "window": [4, None]},
                       "n": {"stream": "s", "reduce": "count"}},
                      duration=8.0, cache=False).to_pylist()[0]
    assert got["n"] == 4
    assert got["all"] == pytest.approx((5 + 1 + 5 + 5) / 4)
    assert got["late"] == pytest.approx((1 + 5 + 5) / 3)


def test_accumulator_sums(tmp_path: Path) -> None:
    records = [(0.5, {0: 1.0}), (0.7, {1: 2.0}), (3.2, {0: 4.0})]
    reps = [Rep("t0", "p0000", 0, 0, {"a": StreamData(records, periodicity=1.0,
                                                          kind="accumulator", close_at=5.0)})]
    write_experiment(tmp_path, reps, shards=1)
    exp = Experiment.open(tmp_path)
    got = exp.metrics({"total": {"stream": "a", "reduce": "sum"},
                       "periods": {"stream": "a", "reduce": "count"},
                       "per_period": {"stream": "a", "reduce": "time_mean"},
                       "busiest": {"stream": "a", "reduce": "max"}},
                      duration=5.0, cache=False).to_pylist()[0]
    assert got["total"] == 7.0
    assert got["periods"] == 5  # periods starting 0..4, empty ones included
    assert got["per_period"] == pytest.approx(7.0 / 5)
    assert got["busiest"] == 4.0


def _random_stream(rng: np.random.Generator, n: int) -> list[tuple[float, dict[int, float]]]:
    out = []
    for _ in range(n):
        epoch = float(rng.integers(0, 200)) / 10  # ties and out-of-order epochs included
        k = int(rng.integers(0, 4))
        idx = rng.choice(9, size=k, replace=False)
        out.append((epoch, {int(i): float(rng.normal()) for i in idx}))
    return out


def test_against_the_naive_oracle(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reps = [Rep(f"t{i}", f"p{i % 2:04d}", i % 2, i // 2,
                {"x": StreamData(_random_stream(rng, int(rng.integers(0, 30))))})
            for i in range(12)]
    where = write_experiment(tmp_path, reps, shards=3)
    records = read_back(tmp_path, where)
    exp = Experiment.open(tmp_path)
    windows = [(None, None), (3.0, 12.5), (None, 4.0), (15.0, None), (30.0, 40.0)]
    specs = {}
    for r in REDUCTIONS:
        for e in ENTITIES:
            for w, window in enumerate(windows):
                specs[f"{r}_{e.replace(':', '')}_{w}"] = (r, e, window)
    table = exp.metrics({name: {"stream": "x", "reduce": r, "entities": e,
                                "window": list(window)}
                         for name, (r, e, window) in specs.items()}, duration=18.0, cache=False)
    rows = {row["task_id"]: row for row in table.to_pylist()}
    for rep in reps:
        for name, (r, e, window) in specs.items():
            want = naive_metric(records[(rep.task_id, "x")], reduce=r, entities=e,
                                window=window, duration=18.0)
            got = rows[rep.task_id][name]
            if math.isnan(want):
                assert got is None, (rep.task_id, name)
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (rep.task_id, name)


def test_duration_defaults_to_the_last_epoch_without_a_config(hand: Experiment) -> None:
    # t0's streams end at epoch 6, so [0, 6) is the run: 0, 6, 6, 0, -1, -1 per unit of time
    table = hand.metrics({"m": {"stream": "x", "reduce": "time_mean"}}, cache=False)
    assert table["m"][0].as_py() == pytest.approx((12 + 0 - 2) / 6)


# -- the cache ---------------------------------------------------------------------------------


def _tamper(path: Path, task: str, value: float) -> None:
    table = pq.read_table(path).to_pydict()
    table["value"][table["task_id"].index(task)] = value
    import pyarrow as pa

    pq.write_table(pa.table(table, schema=pq.read_schema(path)), path)


def test_cache_is_used_and_follows_the_commits(tmp_path: Path) -> None:
    reps = [Rep(f"t{i}", "p0000", 0, i, {"x": StreamData([(1.0, {0: float(i)})])})
            for i in range(3)]
    write_experiment(tmp_path, reps, shards=1)
    spec = {"v": {"stream": "x", "reduce": "sum"}}
    first = Experiment.open(tmp_path).metrics(spec)
    assert first["v"].to_pylist() == [0.0, 1.0, 2.0]
    files = list((tmp_path / "index" / "metrics").glob("v-*.parquet"))
    assert len(files) == 1
    # what the cache holds is what is returned: proof that nothing was recomputed
    _tamper(files[0], "t1", 99.0)
    assert Experiment.open(tmp_path).metrics(spec)["v"].to_pylist() == [0.0, 99.0, 2.0]
    # a new commit is computed and added; the cached ones stay
    with ShardWriter(tmp_path, "later") as shard, shard.replication(
            "t3", replication=3, point_id="p0000", point_index=0) as rep:
        sid = rep.logger.register_stream({"stream": "x"}, value_scale=None)
        rep.logger.record(sid, 1.0, [0], [3.0])
    merge(tmp_path)
    again = Experiment.open(tmp_path).metrics(spec)
    assert again["v"].to_pylist() == [0.0, 99.0, 2.0, 3.0]
    # another definition has its own cache; cache=False neither reads nor writes
    fresh = Experiment.open(tmp_path).metrics(spec, cache=False)
    assert fresh["v"].to_pylist() == [0.0, 1.0, 2.0, 3.0]
    assert len(list((tmp_path / "index" / "metrics").glob("*.parquet"))) == 1


def test_a_task_committed_again_is_recomputed(tmp_path: Path) -> None:
    reps = [Rep("t0", "p0000", 0, 0, {"x": StreamData([(1.0, {0: 1.0})])})]
    write_experiment(tmp_path, reps, shards=1)
    spec = {"v": {"stream": "x", "reduce": "sum"}}
    Experiment.open(tmp_path).metrics(spec)
    (cache,) = (tmp_path / "index" / "metrics").glob("v-*.parquet")
    _tamper(cache, "t0", 42.0)
    # the first shard is lost; the task is committed again elsewhere, with other records
    import shutil

    shutil.rmtree(tmp_path / "shards" / "shard0")
    with ShardWriter(tmp_path, "redo") as shard, shard.replication(
            "t0", replication=0, point_id="p0000", point_index=0) as rep:
        sid = rep.logger.register_stream({"stream": "x"}, value_scale=None)
        rep.logger.record(sid, 1.0, [0], [5.0])
    with pytest.warns(CorruptDataWarning, match="shard listed in the index is gone"):
        merge(tmp_path)
    assert Experiment.open(tmp_path).metrics(spec)["v"].to_pylist() == [5.0]


def test_damaged_cache_costs_a_warning(tmp_path: Path) -> None:
    reps = [Rep("t0", "p0000", 0, 0, {"x": StreamData([(1.0, {0: 1.0})])})]
    write_experiment(tmp_path, reps, shards=1)
    spec = {"v": {"stream": "x", "reduce": "sum"}}
    Experiment.open(tmp_path).metrics(spec)
    (cache,) = (tmp_path / "index" / "metrics").glob("v-*.parquet")
    cache.write_bytes(b"not parquet")
    with pytest.warns(MetricsCacheWarning, match=str(cache.name)):
        table = Experiment.open(tmp_path).metrics(spec)
    assert table["v"].to_pylist() == [1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Experiment.open(tmp_path).metrics(spec)["v"].to_pylist() == [1.0]  # rewritten


def test_cache_never_writes_through_a_link(tmp_path: Path) -> None:
    reps = [Rep("t0", "p0000", 0, 0, {"x": StreamData([(1.0, {0: 1.0})])})]
    write_experiment(tmp_path / "exp", reps, shards=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "exp" / "index" / "metrics")
    table = Experiment.open(tmp_path / "exp").metrics({"v": {"stream": "x", "reduce": "sum"}})
    assert table["v"].to_pylist() == [1.0]
    assert list(outside.iterdir()) == []


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ({"m": {"stream": "nope", "reduce": "sum"}}, r"metrics\.m\.stream: unknown stream 'nope'"),
    ({"m": {"stream": "xx", "reduce": "sum"}}, r"did you mean 'x'"),
    ({"m": {"stream": "x", "reduce": "average"}}, r"metrics\.m\.reduce: must be 'time_mean'"),
    ({"m": {"stream": "x"}}, r"metrics\.m\.reduce: required with stream"),
    ({"m": {"stream": "x", "reduce": "sum", "entities": "median"}},
     r"metrics\.m\.entities: must be sum, mean, max or index:<i>"),
    ({"m": {"stream": "x", "reduce": "sum", "window": [5, 1]}},
     r"metrics\.m\.window: from must be below to"),
    ({"m": {"stream": "x", "reduce": "sum", "window": [1]}}, r"metrics\.m\.window: must be a"),
    ({"m": {"expr": "a + 1"}}, r"metrics\.m\.expr: unknown metric 'a'"),
    ({"m": {"expr": "m + 1"}}, r"metrics\.m\.expr: metric 'm' uses itself"),
    ({"a": {"expr": "b"}, "b": {"expr": "a"}}, r"cycle: a -> b -> a"),
    ({"m": {"expr": "open('x')"}}, r"metrics\.m\.expr: contains a function call"),
    ({"m": {"expr": "x.real"}}, r"contains an attribute"),
    ({"m": {"stream": "x", "reduce": "sum", "expr": "1"}}, r"takes only expr"),
    ({"2x": {"stream": "x", "reduce": "sum"}}, r"metric name '2x' must be an identifier"),
    ({"task_id": {"stream": "x", "reduce": "sum"}}, r"is a column of every metric table"),
    ({"m": "sum of x"}, r"metrics\.m: must be a mapping"),
])
def test_bad_definitions(hand: Experiment, spec: dict[str, object], message: str) -> None:
    with pytest.raises(MetricError, match=message):
        hand.metrics(spec, cache=False)


def test_no_metrics_declared(hand: Experiment) -> None:
    with pytest.raises(MetricError, match="declares no metrics"):
        hand.metrics()


def test_two_streams_of_one_name_in_a_replication(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s") as shard, shard.replication("t0", replication=0) as rep:
        for _ in range(2):
            sid = rep.logger.register_stream({"stream": "x"}, value_scale=None)
            rep.logger.record(sid, 0.0, [0], [1.0])
    merge(tmp_path)
    with pytest.raises(MetricError, match="'t0' has 2 streams labelled stream='x'"):
        Experiment.open(tmp_path).metrics({"m": {"stream": "x", "reduce": "sum"}})


def test_bad_duration(hand: Experiment) -> None:
    with pytest.raises(MetricError, match="duration must be a positive number"):
        hand.metrics({"m": {"stream": "x", "reduce": "sum"}}, duration=-1.0)
