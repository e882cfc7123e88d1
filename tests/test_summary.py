"""Experiment.summary / compare and the table functions behind them, against SciPy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from disco_data_logger.errors import MetricError
from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.summary import compare_table, resolve_point, summary_table
from tests.experiments import Rep, StreamData, write_experiment


def metrics_table(seed: int = 0) -> pa.Table:
    """What Experiment.metrics returns: 3 points x 8 replications, a parameter, two metrics."""
    rng = np.random.default_rng(seed)
    rows = []
    common = rng.normal(0, 3, 8)
    for p, s in enumerate([2.0, 4.0, 6.0]):
        for r in range(8):
            rows.append({"task_id": f"p{p:04d}-r{r:06d}", "point_id": f"p{p:04d}",
                         "replication": r, "s": s,
                         "cost": 10 + s + common[r] + rng.normal(0, 0.3),
                         "fill": None if (p, r) == (2, 3) else 0.9 + 0.01 * s})
    table = pa.Table.from_pylist(rows)
    meta = {b"disco.metrics": json.dumps({"cost": {}, "fill": {}}).encode()}
    return table.replace_schema_metadata(meta)


def test_summary_matches_scipy() -> None:
    table = metrics_table()
    summary = summary_table(table, 0.9)
    assert summary.column_names == ["metric", "point_id", "s", "n", "mean", "sd", "se",
                                    "half_width", "ci_low", "ci_high", "missing"]
    assert summary["metric"].to_pylist() == ["cost"] * 3 + ["fill"] * 3
    rows = summary.to_pylist()
    for row in rows:
        values = np.array([v for v, pid in zip(table[row["metric"]].to_pylist(),
                                               table["point_id"].to_pylist(), strict=True)
                           if pid == row["point_id"] and v is not None])
        assert row["n"] == values.size
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
        if values.std() > 0:
            lo, hi = stats.t.interval(0.9, values.size - 1, loc=values.mean(),
                                      scale=stats.sem(values))
            assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo, rel=1e-9),
                                                       pytest.approx(hi, rel=1e-9))
    assert [r["missing"] for r in rows] == [0, 0, 0, 0, 0, 1]
    assert [r["s"] for r in rows[:3]] == [2.0, 4.0, 6.0]


def test_compare_paired_and_welch_match_scipy() -> None:
    table = metrics_table(1)
    cost = {pid: np.array([v for v, p in zip(table["cost"].to_pylist(),
                                             table["point_id"].to_pylist(), strict=True)
                           if p == pid]) for pid in ("p0000", "p0001", "p0002")}
    paired = compare_table(table, "p0000", paired=True).to_pylist()
    welch = compare_table(table, "p0000", paired=False)
    assert (welch.schema.metadata or {})[b"disco.method"] == b"welch"
    assert b"seeding: common" in (welch.schema.metadata or {})[b"disco.note"]
    for row, wrow in zip(paired, welch.to_pylist(), strict=True):
        if row["metric"] != "cost":
            continue
        ref = stats.ttest_rel(cost[row["point_id"]], cost["p0000"]).confidence_interval(0.95)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ref.low, rel=1e-9),
                                                   pytest.approx(ref.high, rel=1e-9))
        wref = stats.ttest_ind(cost[row["point_id"]], cost["p0000"], equal_var=False)
        ci = wref.confidence_interval(0.95)
        assert (wrow["ci_low"], wrow["ci_high"]) == (pytest.approx(ci.low, rel=1e-9),
                                                     pytest.approx(ci.high, rel=1e-9))
        # the shared noise cancels in pairs only
        assert row["half_width"] < wrow["half_width"] / 3
        assert (row["method"], row["n"], row["reference"]) == ("paired", 8, "p0000")


def test_pairs_are_matched_by_replication_number() -> None:
    table = metrics_table(2)
    # the missing fill value of p0002-r3 drops that pair only
    rows = {(r["metric"], r["point_id"]): r
            for r in compare_table(table, "p0000", paired=True).to_pylist()}
    assert rows[("fill", "p0002")]["n"] == 7
    assert rows[("fill", "p0002")]["difference"] == pytest.approx(0.04)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    again = {(r["metric"], r["point_id"]): r
             for r in compare_table(shuffled, "p0000", paired=True).to_pylist()}
    assert again[("cost", "p0002")]["difference"] == pytest.approx(
        rows[("cost", "p0002")]["difference"], rel=1e-12)


@pytest.mark.parametrize(("reference", "expected"), [
    ("p0001", "p0001"), (2, "p0002"), ("s=4", "p0001"), ("s=4.0", "p0001"),
    ({"s": 6.0}, "p0002")])
def test_resolve_point(reference: object, expected: str) -> None:
    assert resolve_point(reference, metrics_table()) == expected


@pytest.mark.parametrize(("reference", "message"), [
    ("p0009", r"no sweep point 'p0009'; points: p0000 \(s=2.0\)"),
    ("s=5", "no sweep point"),
    ("t=1", "no sweep point"),
    ("=3", "expected k=v"),
    (True, "point id or parameters")])
def test_resolve_point_errors(reference: object, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        resolve_point(reference, metrics_table())


def test_experiment_summary_and_compare_without_a_config(tmp_path: Path) -> None:
    reps = [Rep(f"p{p:04d}-r{r:06d}", f"p{p:04d}", p, r,
                {"x": StreamData([(1.0, {0: float(10 * p + r)})])})
            for p in range(2) for r in range(4)]
    write_experiment(tmp_path, reps)
    exp = Experiment.open(tmp_path)
    spec = {"v": {"stream": "x", "reduce": "sum"}}
    summary = exp.summary(0.95, metrics=spec).to_pylist()
    assert [(r["point_id"], r["n"], r["mean"]) for r in summary] == [("p0000", 4, 1.5),
                                                                      ("p0001", 4, 11.5)]
    diff = exp.compare("p0000", metrics=spec)
    assert diff["method"].to_pylist() == ["welch"]  # no config: no common random numbers
    assert diff["difference"].to_pylist() == [10.0]
    paired = exp.compare("p0000", metrics=spec, paired=True)
    assert paired["method"].to_pylist() == ["paired"]
    assert paired["half_width"].to_pylist() == [0.0]  # every pair differs by exactly 10
