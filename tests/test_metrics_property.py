"""Property: every metric of random sparse streams equals the naive oracle's.

Random plain streams (unsorted and tied epochs, empty vectors, negative values), random windows,
durations, entity rules and reductions; the records are written to real shards, read back by the
pure-Python reader for the oracle, and computed by Experiment.metrics.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from disco_data_logger.sharding import Experiment
from tests.experiments import Rep, StreamData, naive_metric, read_back, write_experiment

epochs = st.integers(0, 400).map(lambda t: t / 20)
vectors = st.dictionaries(st.integers(0, 6), st.floats(-1e3, 1e3, allow_nan=False,
                                                        allow_infinity=False), max_size=4)
streams = st.lists(st.tuples(epochs, vectors), max_size=15)
ends = st.one_of(st.none(), epochs)


@st.composite
def windows(draw: st.DrawFn) -> tuple[float | None, float | None]:
    lo, hi = draw(ends), draw(ends)
    if lo is not None and hi is not None and lo >= hi:
        lo, hi = (None, hi) if draw(st.booleans()) else (lo, None)
    return lo, hi


@given(data=st.lists(streams, min_size=1, max_size=4), window=windows(),
       reduce=st.sampled_from(["time_mean", "mean", "sum", "min", "max", "last", "count"]),
       entities=st.sampled_from(["sum", "mean", "max", "index:0", "index:5"]),
       duration=st.integers(1, 25).map(float))
def test_metrics_match_the_oracle(data: list[list[tuple[float, dict[int, float]]]],
                                  window: tuple[float | None, float | None], reduce: str,
                                  entities: str, duration: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="ddl-metrics-"))
    try:
        reps = [Rep(f"t{i}", "p0000", 0, i, {"x": StreamData(records)})
                for i, records in enumerate(data)]
        where = write_experiment(root, reps, shards=2)
        back = read_back(root, where)
        table = Experiment.open(root).metrics(
            {"m": {"stream": "x", "reduce": reduce, "entities": entities,
                   "window": list(window)}}, duration=duration, cache=False)
        got = dict(zip(table["task_id"].to_pylist(), table["m"].to_pylist(), strict=True))
        for rep in reps:
            want = naive_metric(back[(rep.task_id, "x")], reduce=reduce, entities=entities,
                                window=window, duration=duration)
            if math.isnan(want):
                assert got[rep.task_id] is None
            else:
                assert got[rep.task_id] == pytest.approx(want, rel=1e-9, abs=1e-9)
    finally:
        shutil.rmtree(root, ignore_errors=True)
