"""Precision-driven runs (``stop:``) on the M/M/1 queue with real workers: they stop below
``max_replications`` with the target met, a point that cannot meet it stops at the maximum with a
PrecisionWarning, a failing replication is replaced by the next number, and a run whose
coordinator is killed (SIGKILL) and resumed ends with the summary of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import run, statuses
from scipy import stats

from disco_data_logger.cli import inspect_summary
from disco_data_logger.errors import CorruptDataWarning, PrecisionWarning
from disco_data_logger.sharding import Experiment, ShardManifest

WARM_UP = 500.0


def stop_config(tmp: Path, output: Path, stop: dict[str, Any], **changes: Any) -> Path:
    duration = changes.pop("duration", 4000.0)
    doc: dict[str, Any] = {
        "experiment": {"organisation": "acme", "model": "mm1", "name": "stop"},
        "output": str(output),
        "replications": 100,
        "seed": 20250101,
        "entry_point": "disco_data_logger.models.mm1:run",
        "duration": duration,
        "seeding": "common",
        "parameters": {"service_rate": 1.0},
        "sweep": {"grid": {"arrival_rate": [0.5, 0.8]}},
        "execution": {"backend": "serial", "workers": 1, "retries": 0},
        "streams": [{"name": "in_system", "value_scale": 1.0}],
        "metrics": {"L": {"stream": "in_system", "reduce": "time_mean",
                          "window": [WARM_UP, None]}},
        "stop": stop,
    }
    doc.update(changes)
    path = tmp / f"stop-{output.name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def half_width(values: np.ndarray, confidence: float = 0.95) -> float:
    """The Student-t half-width, computed here with SciPy."""
    return float(stats.sem(values) * stats.t.ppf(0.5 + confidence / 2, len(values) - 1))


def per_point(exp: Experiment) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per point: the committed replication numbers and their L, in replication order."""
    table = exp.metrics(["L"]).to_pydict()
    out: dict[str, tuple[list[int], list[float]]] = {}
    for pid, rep, value in zip(table["point_id"], table["replication"], table["L"], strict=True):
        reps, values = out.setdefault(pid, ([], []))
        reps.append(rep)
        values.append(value)
    result = {}
    for pid, (reps, values) in out.items():
        order = np.argsort(reps)
        result[pid] = (np.asarray(reps)[order], np.asarray(values)[order])
    return result


def test_a_stop_run_ends_below_the_maximum_with_the_target_met(tmp_path: Path) -> None:
    stop = {"metric": "L", "half_width": 0.03, "relative": True, "min_replications": 10,
            "batch": 10, "max_replications": 200, "look_ahead": 5}
    out = tmp_path / "out"
    result = run(stop_config(tmp_path, out, stop))
    assert result.state == "complete" and not result.failed
    exp = Experiment.open(out)
    plan = exp.info["plan"]
    assert plan["replications"] == 200 and plan["stop"]["rule"]["half_width"] == 0.03
    points = {p["point_id"]: p for p in plan["stop"]["points"]}
    assert set(points) == {"p0000", "p0001"}
    data = per_point(exp)
    for pid, status in points.items():
        reps, values = data[pid]
        n = len(values)
        # it stopped below the maximum, at a checkpoint, with nothing run beyond it
        assert status["state"] == "met" and status["stopped_at"] == n == status["planned"]
        assert 10 <= n < 200 and (n - 10) % 10 == 0
        assert reps.tolist() == list(range(n))  # the lowest numbers, each once
        # the target holds at n and at the 5 prefixes before (look-ahead), by SciPy
        for k in range(n - 5, n + 1):
            assert half_width(values[:k]) <= 0.03 * abs(values[:k].mean())
        assert status["half_width"]["L"] == pytest.approx(half_width(values), rel=1e-9)
        # ... and did not hold at the checkpoint before (else it would have stopped there)
        if n > 10:
            c = n - 10
            assert any(half_width(values[:k]) > 0.03 * abs(values[:k].mean())
                       for k in range(c - 5, c + 1))
    # the busier queue needs more replications for the same relative precision
    assert len(data["p0001"][1]) > len(data["p0000"][1])
    assert result.planned == result.committed == sum(len(v) for _, v in data.values())
    assert set(statuses(out).values()) == {"committed"}
    summary = inspect_summary(out)
    assert summary["replications"]["pending"] == 0
    assert summary["precision"]["states"] == {"met": 2}

    # running it again runs nothing
    again = run(stop_config(tmp_path, out, stop))
    assert (again.committed, again.resumed, again.state) == (0, result.committed, "complete")


def test_a_point_that_reaches_max_replications_warns(tmp_path: Path) -> None:
    stop = {"metric": "L", "half_width": 0.03, "relative": True, "min_replications": 10,
            "batch": 10, "max_replications": 60}
    out = tmp_path / "out"
    with pytest.warns(PrecisionWarning) as caught:
        result = run(stop_config(tmp_path, out, stop))
    assert result.state == "complete"
    points = {p["point_id"]: p for p in result.precision["points"]}
    data = per_point(Experiment.open(out))
    at_max = {pid for pid, p in points.items() if p["state"] == "max"}
    assert at_max == {"p0001"}  # rho = 0.8 needs about 130 for 3 %, rho = 0.5 about 40
    (warning,) = [str(w.message) for w in caught]
    assert warning.startswith("p0001: stopped at max_replications=60 without reaching the "
                              "precision target: L ±")
    values = data["p0001"][1]
    assert len(values) == 60 and half_width(values) > 0.03 * abs(values.mean())
    assert points["p0000"]["state"] == "met"

    # the command says it on stderr, once, as a warning line
    proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run",
                           str(stop_config(tmp_path, out, stop)), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("disco-data-logger: warning: p0001: stopped at "
                             "max_replications=60") == 1
    assert "p0001: n=60, stopped at max_replications=60 short of the target" in proc.stdout


def test_a_replication_that_fails_for_good_is_replaced(tmp_path: Path) -> None:
    stop = {"metric": "L", "half_width": 0.03, "relative": True, "min_replications": 10,
            "batch": 10, "max_replications": 200}
    out = tmp_path / "out"
    config = stop_config(tmp_path, out, stop, entry_point="analysis_models:mm1_failing",
                         parameters={"service_rate": 1.0, "fail_replications": [3, 12],
                                     "fail_rate": 0.5},
                         execution={"backend": "serial", "workers": 1, "retries": 1,
                                    "max_failures": None})
    result = run(config)
    assert result.state == "failed" and sorted(result.failed) == ["p0000-r000003",
                                                                  "p0000-r000012"]
    exp = Experiment.open(out)
    status = {p["point_id"]: p for p in exp.info["plan"]["stop"]["points"]}["p0000"]
    reps, values = per_point(exp)["p0000"]
    n = len(values)
    assert status["stopped_at"] == n and status["state"] in ("met", "max")
    # the checkpoint's replications are the lowest numbers that did not fail
    expected = [r for r in range(n + 2) if r not in (3, 12)][:n]
    assert reps.tolist() == expected
    assert status["planned"] == n + (2 if max(expected) > 12 else 1)
    assert statuses(out)["p0000-r000003"] == "failed"


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _commits(output: Path) -> int:
    shards = output / "shards"
    if not shards.is_dir():
        return 0
    total = 0
    for d in shards.iterdir():
        m = ShardManifest.load(d, warn=False)
        total += m.commits if m is not None else 0
    return total


def test_a_killed_and_resumed_stop_run_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    stop = {"metric": "L", "half_width": 0.025, "relative": True, "min_replications": 10,
            "batch": 10, "max_replications": 300}
    execution = {"backend": "multiprocessing", "workers": 2, "retries": 0}
    whole = tmp_path / "whole"
    reference = run(stop_config(tmp_path, whole, stop, execution=execution))
    assert reference.state == "complete"
    total = reference.committed
    assert total >= 60  # several batches: the kill lands in the middle of the run

    out = tmp_path / "killed"
    config = stop_config(tmp_path, out, stop, execution=execution)
    proc = subprocess.Popen([sys.executable, "-m", "disco_data_logger", "run", str(config),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while _commits(out) < total // 2 and time.monotonic() < deadline and proc.poll() is None:
            workers = _children(proc.pid) or workers
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        workers = _children(proc.pid) or workers
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the orphaned workers notice their coordinator is gone and close their shards
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
    done_before = _commits(out)
    assert 0 < done_before < total

    # The coordinator merges after every batch, so the kill may land inside a merge: the next
    # reader then rebuilds the index from the journals, saying so (and nothing else).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CorruptDataWarning)
        # what the index says of the killed run: asked for, committed, pending
        summary = inspect_summary(out)
        reps = summary["replications"]
        assert reps["replications"] == reps["committed"] + reps["failed"] + reps["pending"]
        # the batches asked for up to the last merge are planned; batches asked for since and
        # committed before the kill have their rows too
        planned = [p["planned"] for p in summary["precision"]["points"]]
        assert reps["replications"] >= sum(planned) and reps["committed"] == done_before
        resumed = run(config)
    assert all("an interrupted merge" in str(w.message) for w in caught), \
        [str(w.message) for w in caught]
    assert resumed.state == "complete"
    assert resumed.resumed + resumed.committed == total
    assert resumed.resumed == done_before  # every durable commit, and only those
    a, b = Experiment.open(whole), Experiment.open(out)
    assert b.info["totals"]["duplicates_dropped"] == 0
    assert a.summary().equals(b.summary())
    assert a.metrics(["L"]).select(["task_id", "L"]).equals(b.metrics(["L"]).select(
        ["task_id", "L"]))
    verdict = [{k: p[k] for k in ("point_id", "n", "state", "stopped_at", "half_width")}
               for p in a.info["plan"]["stop"]["points"]]
    assert verdict == [{k: p[k] for k in ("point_id", "n", "state", "stopped_at", "half_width")}
                       for p in b.info["plan"]["stop"]["points"]]
    assert json.loads((out / "experiment.json").read_text())["state"] == "complete"


@pytest.mark.parametrize("how", [["run", "--part", "1/2"], ["run", "--backend", "slurm"],
                                 ["sbatch", "--parts", "4"]])
def test_a_stop_rule_is_refused_in_parts(tmp_path: Path, how: list[str]) -> None:
    """Each part sees only its share of a point's replications, so a stop: rule cannot decide
    there: the command stops at once, before anything is written, and says what to do."""
    out = tmp_path / "out"
    stop = {"metric": "L", "half_width": 0.03, "relative": True, "min_replications": 10,
            "max_replications": 40}
    config = stop_config(tmp_path, out, stop)
    command, *flags = how
    args = [sys.executable, "-m", "disco_data_logger", command, str(config), *flags]
    proc = subprocess.run(args + (["--no-progress"] if command == "run" else []),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "a stop: rule cannot run with" in proc.stderr
    assert "give 'replications:' instead of 'stop:'" in proc.stderr
    assert proc.stdout == "" and not out.exists()
