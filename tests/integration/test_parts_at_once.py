"""Parts of one experiment run at the same time into one output, as separate processes (the
real CLI), with one of them killed and restarted; and merges running at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from helpers import assert_committed_once, assert_same_as_one_run, run

from disco_data_logger.sharding import Experiment, ShardWriter, merge
from disco_data_logger.sharding.lock import ExperimentLock
from disco_data_logger.sharding.manifest import ShardManifest


def _part(config: Path, part: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "disco_data_logger", "run", str(config),
                             "--part", part, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _commits_of(output: Path, pid: int) -> int:
    total = 0
    for shard in (output / "shards").glob(f"*-{pid}-*"):
        m = ShardManifest.load(shard, warn=False)
        total += m.commits if m is not None else 0
    return total


def test_four_parts_at_once_one_killed_and_restarted_give_one_run(make_config: Any,
                                                                  tmp_path: Path) -> None:
    params = {"entities": 8, "sleep": 0.5}
    reference = tmp_path / "one-run"
    run(make_config(output=reference, replications=8, parameters=params))
    out = tmp_path / "parts"
    config = make_config(output=out, replications=8, parameters=params)
    procs = {i: _part(config, f"{i}/4") for i in range(1, 5)}
    victim = procs[2]
    try:
        deadline = time.monotonic() + 120
        while _commits_of(out, victim.pid) < 1:
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "part 2 committed nothing"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)  # mid-run: 4 tasks of 0.5 s each, one committed
        victim.communicate()
        outputs = {i: p.communicate(timeout=300) for i, p in procs.items() if i != 2}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.communicate()
    for i, (stdout, stderr) in outputs.items():
        assert procs[i].returncode == 0, stderr
        assert f"complete of part {i}/4: 4/4 replications committed" in stdout, stdout
        assert "warning" not in stderr and "error" not in stderr, stderr
    before = Experiment.open(out).replications
    assert "pending" in before["status"].to_pylist()  # part 2 did not finish
    again = _part(config, "2/4")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "complete of part 2/4: 4/4 replications committed" in stdout, stdout
    assert "0 resumed" not in stdout  # what part 2 committed before the kill was kept
    assert f"took over the lock of a run that is no longer running (pid {victim.pid}" \
        in stderr
    assert_same_as_one_run(out, reference)
    info = json.loads((out / "experiment.json").read_text())
    assert info["state"] == "complete" and info["totals"]["duplicates_dropped"] == 0
    assert sorted(r["part"] for r in info["runs"]) == ["1/4", "2/4", "2/4", "3/4", "4/4"]


def test_a_part_and_a_whole_run_exclude_each_other(make_config: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = make_config(output=out, replications=4)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(config),
                               *args, "--no-progress"], capture_output=True, text=True,
                              timeout=120)

    with ExperimentLock(out, "1/2"):  # part 1 of 2 running (held by this process)
        whole = cli()
        assert whole.returncode == 2 and "holds part 1/2 of it" in whole.stderr
        other_split = cli("--part", "1/3")
        assert other_split.returncode == 2 and "parts of another split" in other_split.stderr
        same_part = cli("--part", "1/2")
        assert same_part.returncode == 2 and "holds part 1/2 of it" in same_part.stderr
        beside = cli("--part", "2/2")  # another part of the same split runs beside it
        assert beside.returncode == 0, beside.stderr
        assert "complete of part 2/2: 4/4 replications committed" in beside.stdout
    with ExperimentLock(out):  # a whole run
        part = cli("--part", "1/2")
        assert part.returncode == 2 and "holds it since" in part.stderr
    forced = cli("--part", "1/2", "--force")
    assert forced.returncode == 2 and "--force cannot be combined with --part" in forced.stderr
    rest = cli("--part", "1/2")
    assert rest.returncode == 0 and "(4 this run, 0 resumed)" in rest.stdout


# -- merges at the same time --------------------------------------------------------------------


def _writer(output: str, worker: int, tasks: int) -> None:
    import numpy as np

    with ShardWriter(output, f"w{worker}", commit_group=4) as shard:
        for r in range(tasks):
            with shard.replication(f"w{worker}-r{r:04d}", replication=r) as rep:
                sid = rep.logger.register_stream({"stream": "x", "replication": r,
                                                  "worker": worker}, value_scale=None)
                rep.logger.record(sid, 0.0, np.arange(3), np.full(3, float(r)))
            time.sleep(0.002)


def _merger(output: str, rounds: int, errors: Any) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(rounds):
                merge(output)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(exc).__name__}: {exc}")


def test_merges_running_at_once_while_shards_grow_stay_consistent(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    (out / "shards").mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(out), w, 300)) for w in range(2)]
    mergers = [ctx.Process(target=_merger, args=(str(out), 25, errors)) for _ in range(3)]
    for p in writers + mergers:
        p.start()
    for p in writers + mergers:
        p.join(timeout=300)
        assert p.exitcode == 0
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "interrupted merge", no rebuild, no lost part
        index = merge(out)
    assert index.totals["committed"] == 600 and index.totals["duplicates_dropped"] == 0
    assert_committed_once(out, 600)


def test_inspect_shows_every_part(make_config: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = make_config(output=out, replications=5)
    for i in (1, 2, 3):
        proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(config),
                               "--part", f"{i}/3", "--no-progress"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    from disco_data_logger.cli import inspect_summary

    rows = inspect_summary(out)["parts"]
    assert [r["part"] for r in rows] == ["1/3", "2/3", "3/3"]
    # 2 points x 5 replications; task (p, r) is in part 1 + (p + r) mod 3
    assert [r["planned"] for r in rows] == [3, 4, 3]
    assert all(r["committed"] == r["planned"] and not r["running"] for r in rows)
