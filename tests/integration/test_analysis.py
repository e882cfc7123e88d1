"""From records to answers on real runs: the M/M/1 queue's known answer, common random numbers,
metrics that follow resumed runs, the precision rule on real data, and the commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import run
from scipy import stats

from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.config import StopSpec
from disco_data_logger.sharding.stopping import PrecisionRule

WARM_UP, DURATION = 500.0, 10_000.0


def mm1_config(tmp: Path, output: Path, **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "experiment": {"organisation": "acme", "model": "mm1", "name": "itest"},
        "output": str(output),
        "replications": 24,
        "seed": 20250101,
        "entry_point": "disco_data_logger.models.mm1:run",
        "duration": DURATION,
        "seeding": "common",
        "parameters": {"service_rate": 1.0},
        "sweep": {"grid": {"arrival_rate": [0.5, 0.8]}},
        "execution": {"backend": "multiprocessing", "workers": 2, "retries": 0},
        "streams": [{"name": "in_system", "value_scale": 1.0},
                    {"name": "sojourn", "value_scale": None}],
        "metrics": {
            "L": {"stream": "in_system", "reduce": "time_mean", "window": [WARM_UP, None]},
            "W": {"stream": "sojourn", "reduce": "mean", "window": [WARM_UP, None]},
            "departures": {"stream": "sojourn", "reduce": "count", "window": [WARM_UP, None]},
            "throughput": {"expr": f"departures / {DURATION - WARM_UP}"},
        },
    }
    doc.update(changes)
    path = tmp / f"mm1-{output.name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def mm1(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    tmp = tmp_path_factory.mktemp("mm1")
    result = run(mm1_config(tmp, tmp / "out"))
    assert result.state == "complete" and result.committed == 48
    return Experiment.open(tmp / "out")


def time_average_from_records(exp: Experiment) -> dict[str, float]:
    """L of every replication, computed here with numpy from the raw records."""
    table = exp.select("stream=in_system", format="list")
    out = {}
    tids = np.asarray(table["task_id"].to_pylist(), dtype=object)
    epochs = table["epoch"].to_numpy()
    counts = np.array([sum(v) for v in table["values"].to_pylist()])  # empty record: 0
    for tid in np.unique(tids):
        rows = tids == tid
        t, n = epochs[rows], counts[rows]
        order = np.argsort(t, kind="stable")
        t, n = t[order], n[order]
        ends = np.append(t[1:], DURATION)
        held = np.clip(np.minimum(ends, DURATION) - np.maximum(t, WARM_UP), 0, None)
        out[str(tid)] = float(np.sum(n * held) / (DURATION - WARM_UP))
    return out


@pytest.mark.parametrize(("point", "rho"), [("p0000", 0.5), ("p0001", 0.8)])
def test_mm1_known_answers_lie_inside_the_intervals(mm1: Experiment, point: str,
                                                    rho: float) -> None:
    summary = {(r["metric"], r["point_id"]): r for r in mm1.summary(0.95).to_pylist()}
    L = summary[("L", point)]
    assert L["n"] == 24 and L["arrival_rate"] == rho
    assert L["ci_low"] < rho / (1 - rho) < L["ci_high"], L
    W = summary[("W", point)]
    assert W["ci_low"] < 1 / (1 - rho) < W["ci_high"], W
    thr = summary[("throughput", point)]
    assert thr["ci_low"] < rho < thr["ci_high"], thr  # departures per unit time = arrival rate


def test_mm1_statistics_match_an_independent_computation(mm1: Experiment) -> None:
    metrics = mm1.metrics()
    assert metrics.column_names == ["task_id", "point_id", "replication", "arrival_rate", "L",
                                    "W", "departures", "throughput"]
    mine = time_average_from_records(mm1)
    got = dict(zip(metrics["task_id"].to_pylist(), metrics["L"].to_pylist(), strict=True))
    assert got.keys() == mine.keys()
    for tid, value in mine.items():
        assert got[tid] == pytest.approx(value, rel=1e-9)
    summary = mm1.summary(0.9).to_pylist()
    for row in (r for r in summary if r["metric"] == "L"):
        values = [mine[t] for t, p in zip(metrics["task_id"].to_pylist(),
                                          metrics["point_id"].to_pylist(), strict=True)
                  if p == row["point_id"]]
        lo, hi = stats.t.interval(0.9, len(values) - 1, loc=np.mean(values),
                                  scale=stats.sem(values))
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo, rel=1e-9),
                                                   pytest.approx(hi, rel=1e-9))


def test_metrics_asked_for_by_name_or_expr(mm1: Experiment) -> None:
    everything = mm1.metrics()
    # throughput needs departures: computed, not returned
    only = mm1.metrics(["throughput"])
    assert only.column_names == ["task_id", "point_id", "replication", "arrival_rate",
                                 "throughput"]
    assert only["throughput"].to_pylist() == everything["throughput"].to_pylist()
    # a new expr may use the config's metrics by name
    half = mm1.metrics({"half_L": {"expr": "L / 2"}})
    assert half.column_names[-1] == "half_L"
    assert half["half_L"].to_pylist() == pytest.approx(
        [v / 2 for v in everything["L"].to_pylist()])


def test_mm1_common_random_numbers_pair_the_loads(mm1: Experiment) -> None:
    paired = {r["metric"]: r for r in mm1.compare("arrival_rate=0.5").to_pylist()}
    welch = {r["metric"]: r for r in mm1.compare("p0000", paired=False).to_pylist()}
    for name in ("L", "W"):
        assert paired[name]["method"] == "paired" and paired[name]["n"] == 24
        assert welch[name]["method"] == "welch"
        assert paired[name]["difference"] == pytest.approx(welch[name]["difference"])
        # the same arrivals and services, scaled: strongly correlated, so pairing narrows
        assert paired[name]["half_width"] < welch[name]["half_width"]
    truth = 0.8 / 0.2 - 0.5 / 0.5
    assert paired["L"]["ci_low"] < truth < paired["L"]["ci_high"]


def test_precision_rule_on_real_results(mm1: Experiment) -> None:
    spec = StopSpec(metric="L", half_width=0.03, relative=True, min_replications=6, batch=6,
                    look_ahead=0)
    decision = PrecisionRule(spec, max_replications=24).assess_experiment(mm1)
    table = mm1.metrics(["L"])
    low, high = decision.points
    for status in (low, high):
        values = np.array([v for v, p in zip(table["L"].to_pylist(),
                                             table["point_id"].to_pylist(), strict=True)
                           if p == status.point_id])
        c = status.stopped_at or status.n
        hw = stats.sem(values[:c]) * stats.t.ppf(0.975, c - 1)
        assert status.half_width["L"] == pytest.approx(hw, rel=1e-8)
    # rho = 0.5 settles fast; rho = 0.8 (variance ~ 1/(1 - rho)^4) needs more than 24
    assert (low.state, low.stopped_at) == ("met", 18)  # relative half-widths 5.9, 3.8, 2.6 %
    assert high.state == "max" and decision.warnings and decision.warnings[0].startswith("p0001")


@pytest.mark.parametrize("seeding", ["common", "independent"])
def test_common_seeding_gives_every_point_the_same_streams(tmp_path: Path,
                                                           seeding: str) -> None:
    doc = {
        "experiment": {"organisation": "acme", "model": "probe", "name": seeding},
        "output": str(tmp_path / "out"), "replications": 3, "seed": 11,
        "entry_point": "analysis_models:draws", "duration": 3, "seeding": seeding,
        "sweep": {"grid": {"k": [1, 2]}},
        "execution": {"backend": "serial", "workers": 1, "retries": 0},
        "streams": [{"name": "draws", "value_scale": None}],
    }
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert run(path).state == "complete"
    table = Experiment.open(tmp_path / "out").select("stream=draws", format="list")
    seen: dict[tuple[int, float], dict[str, list[float]]] = {}
    for row in table.to_pylist():
        seen.setdefault((row["replication"], row["epoch"]), {})[row["point_id"]] = row["values"]
    for (rep, epoch), by_point in seen.items():
        same = by_point["p0000"] == by_point["p0001"]
        assert same is (seeding == "common"), (rep, epoch)
    # distinct replications, and distinct purposes, never share numbers
    firsts = {tuple(seen[(r, 0.0)]["p0000"]) for r in range(3)}
    assert len(firsts) == 3
    assert seen[(0, 1.0)]["p0000"] != seen[(0, 2.0)]["p0000"]


def test_metrics_follow_a_resumed_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = mm1_config(tmp_path, out, replications=3, duration=2000.0,
                        execution={"backend": "serial", "workers": 1, "retries": 0})
    # the metrics need the duration of the config: [500, 2000)
    run(config)
    first = Experiment.open(out).metrics()
    assert first.num_rows == 6
    cached = sorted((out / "index" / "metrics").glob("*.parquet"))
    assert len(cached) == 3  # L, W, departures (an expr is computed, not cached)
    run(config, "replications=5")  # resume: 4 more tasks
    again = Experiment.open(out).metrics()
    assert again.num_rows == 10
    fresh = Experiment.open(out).metrics(cache=False)
    assert again.to_pylist() == fresh.to_pylist()
    old = {r["task_id"]: r for r in first.to_pylist()}
    for row in again.to_pylist():
        if row["task_id"] in old:
            assert row == old[row["task_id"]]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "disco_data_logger", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_summarize_command(mm1: Experiment) -> None:
    done = cli("summarize", str(mm1.path), "--compare", "p0000")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["metric", "point", "arrival_rate", "n", "mean", "±95%",
                                "ci_low", "ci_high", "sd"]
    assert lines[1].split()[:4] == ["L", "p0000", "0.5", "24"]
    assert "differences against p0000, paired by replication (common random numbers):" in lines
    assert any(line.split()[:2] == ["L", "p0001"] and line.endswith("higher") for line in lines)

    done = cli("summarize", str(mm1.path), "--json", "--metric", "L",
               "--metric", "Q={stream: in_system, reduce: max}", "--confidence", "0.9",
               "--compare", "arrival_rate=0.8")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["confidence"] == 0.9
    assert [(r["metric"], r["point_id"]) for r in doc["summary"]] == [
        ("L", "p0000"), ("L", "p0001"), ("Q", "p0000"), ("Q", "p0001")]
    summary = {(r["metric"], r["point_id"]): r for r in mm1.summary(0.9).to_pylist()}
    assert doc["summary"][0]["mean"] == summary[("L", "p0000")]["mean"]
    assert doc["compare"]["method"] == "paired" and doc["compare"]["note"] is None
    assert {r["reference"] for r in doc["compare"]["rows"]} == {"p0001"}


@pytest.mark.parametrize(("args", "status", "message"), [
    (["--metric", "nope"], 2, "unknown metric 'nope' (the config's metrics: L, W, departures"),
    (["--metric", "X={stream: queue, reduce: sum}"], 2,
     "metrics.X.stream: unknown stream 'queue'"),
    (["--metric", "X={stream: in_system"], 2, "--metric X: not valid YAML"),
    (["--compare", "p0042"], 2, "no sweep point 'p0042'; points: p0000 (arrival_rate=0.5)"),
    (["--confidence", "1.5"], 2, "confidence must be between 0 and 1"),
])
def test_summarize_errors_are_one_line(mm1: Experiment, args: list[str], status: int,
                                       message: str) -> None:
    done = cli("summarize", str(mm1.path), *args)
    assert done.returncode == status and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("disco-data-logger: error: ") and message in line, line


def test_report_command(mm1: Experiment, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "r.html"
    done = cli("report", str(mm1.path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for heading in ("Provenance", "Summary", "Differences against p0000",
                    "Metrics across sweep points", "Convergence", "Streams over simulated time"):
        assert f"<h2>{heading}" in text
    assert text.count("<figure class=\"chart\"") == 4 + 4 + 2  # metrics, convergence, streams
    # nothing to fetch: no script, no link, no external reference of any kind
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", text)
    assert not re.search(r"""url\(\s*["']?\s*(https?:|//|file:)""", text)
    assert "<metadata>" not in text
