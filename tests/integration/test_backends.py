"""A sweep on every backend with real worker processes; determinism; crashes and retries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from helpers import decoded, run, statuses

from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.layout import JOURNAL_NAME

N_TASKS = 6  # BASE_CONFIG: 2 sweep points x 3 replications


def _check_complete(output: Path) -> None:
    exp = Experiment.open(output)
    assert set(statuses(output).values()) == {"committed"}
    assert exp.info["totals"]["committed"] == N_TASKS
    streams = exp.streams()
    assert streams.num_rows == 2 * N_TASKS  # level + arrivals per task
    assert sorted(set(streams["offset"].to_pylist())) == [0.0, 0.5]  # sweep params are labels
    table = exp.select()
    assert table.num_rows > 0
    assert not pc.any(pc.equal(table["value"], 666.0)).as_py()  # no record of a failed attempt


def test_serial_sweep(make_config: Any, tmp_path: Path) -> None:
    result = run(make_config())
    assert result.state == "complete" and result.committed == N_TASKS
    _check_complete(tmp_path / "out")


def test_multiprocessing_sweep_is_identical_to_one_worker(make_config: Any,
                                                          tmp_path: Path) -> None:
    one = make_config(tmp_path / "one", execution={"backend": "multiprocessing", "workers": 1})
    two = make_config(tmp_path / "two", execution={"backend": "multiprocessing", "workers": 2})
    assert run(one).state == "complete"
    result = run(two)
    assert result.state == "complete"
    assert len({s for s in Experiment.open(tmp_path / "two").streams()["shard_id"].to_pylist()}) \
        == 2  # both workers did some of the work
    _check_complete(tmp_path / "two")
    assert decoded(tmp_path / "one").equals(decoded(tmp_path / "two"))


@pytest.mark.parametrize("model", ["exit_once", "kill_once", "raise_once"])
def test_multiprocessing_crash_is_retried_without_duplicates(make_config: Any, tmp_path: Path,
                                                             model: str) -> None:
    reference = make_config(tmp_path / "ref")
    crashing = make_config(entry_point=f"ddl_testmodels:{model}",
                           parameters={"crash_replications": [1]},
                           execution={"backend": "multiprocessing", "workers": 2, "retries": 1})
    result = run(crashing)
    assert result.state == "complete", result.failed
    assert result.retried == 2  # replication 1 of both sweep points
    out = tmp_path / "out"
    _check_complete(out)
    reps = Experiment.open(out).replications.to_pylist()
    assert {r["task_id"]: r["attempts"] for r in reps if r["replication"] == 1} == {
        "p0000-r000001": 2, "p0001-r000001": 2}
    run(reference)
    assert decoded(out).equals(decoded(tmp_path / "ref"))


def test_serial_retry_after_exception(make_config: Any, tmp_path: Path) -> None:
    result = run(make_config(entry_point="ddl_testmodels:raise_once",
                             parameters={"crash_replications": [0, 2]}))
    assert result.state == "complete" and result.retried == 4
    _check_complete(tmp_path / "out")


def test_replication_failing_every_attempt_is_reported(make_config: Any, tmp_path: Path) -> None:
    result = run(make_config(entry_point="ddl_testmodels:always_fails",
                             parameters={"fail_replications": [2]},
                             execution={"retries": 1}))
    assert result.state == "failed"
    assert sorted(result.failed) == ["p0000-r000002", "p0001-r000002"]
    assert "always fails" in result.failed["p0000-r000002"]
    out = tmp_path / "out"
    st = statuses(out)
    assert st["p0000-r000002"] == "failed" and st["p0000-r000001"] == "committed"
    exp = Experiment.open(out)
    assert exp.streams("replication=2").num_rows == 0
    failed = [r for r in exp.replications.to_pylist() if r["status"] == "failed"]
    assert len(failed) == 2
    assert all(r["attempts"] == 2 and "always fails" in r["traceback"] for r in failed)


def test_ray_sweep_with_a_killed_actor(ray_instance: Any, make_config: Any,
                                       tmp_path: Path) -> None:
    reference = make_config(tmp_path / "ref")
    result = run(make_config(entry_point="ddl_testmodels:kill_once",
                             parameters={"crash_replications": [1]},
                             execution={"backend": "ray", "workers": 2, "retries": 2}))
    assert result.state == "complete", result.failed
    assert result.retried == 2
    _check_complete(tmp_path / "out")
    assert ray_instance.is_initialized()  # a Ray instance we did not start stays up
    run(reference)
    assert decoded(tmp_path / "out").equals(decoded(tmp_path / "ref"))


def test_ray_missing_message(monkeypatch: pytest.MonkeyPatch, make_config: Any) -> None:
    import sys

    from disco_data_logger.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
    with pytest.raises(ConfigError, match=r'pip install "disco-data-logger\[ray\]"'):
        run(make_config(execution={"backend": "ray", "workers": 1}))


@pytest.mark.parametrize("backend", ["multiprocessing", "ray"])
def test_timeout_kills_the_worker(make_config: Any, tmp_path: Path, backend: str,
                                  request: pytest.FixtureRequest) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_instance")
    result = run(make_config(replications=1, parameters={"sleep": 60.0},
                             execution={"backend": backend, "workers": 2,
                                        "retries": 0, "timeout": 1.0}))
    assert result.state == "failed"
    assert all("timed out after 1 s" in e for e in result.failed.values()), result.failed
    assert len(result.failed) == 2



@pytest.mark.parametrize("backend", ["multiprocessing", "ray"])
def test_the_timeout_counts_from_when_the_worker_is_ready(
        make_config: Any, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """A model whose import takes 2.5 s and whose replications take milliseconds, with a 1 s
    timeout: the replications are not failed while their workers start (the timeout counted
    from the moment a task was sent, so a slow start, or a loaded machine, failed them)."""
    from ddl_slowimport import IMPORT_SECONDS

    assert IMPORT_SECONDS > 2.0
    if backend == "ray":
        request.getfixturevalue("ray_instance")
    result = run(make_config(replications=2, entry_point="ddl_slowimport:run",
                             execution={"backend": backend, "workers": 2,
                                        "retries": 0, "timeout": 1.0}))
    assert result.state == "complete" and result.committed == 4, result.failed



def test_a_worker_that_does_not_start_in_time_gives_up_the_run(
        make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a timeout, a worker still not ready WORKER_START_SECONDS after it was given a task
    (here shortened to 1 s; the model's import takes 2.5 s) is killed; its task is not failed
    (it never ran), and after three such workers the run stops with one clear error."""
    from disco_data_logger.sharding import backends

    monkeypatch.setattr(backends, "WORKER_START_SECONDS", 1.0)
    config = make_config(replications=1, entry_point="ddl_slowimport:run",
                         execution={"backend": "multiprocessing", "workers": 1,
                                    "retries": 0, "timeout": 30.0})
    with pytest.raises(backends.WorkerStartupError,
                       match=r"3 worker processes died before finishing a task "
                             r"\(last: not started within 1 s, killed\)"):
        run(config)
    reps = Experiment.open(tmp_path / "out").replications.to_pylist()
    assert {r["status"] for r in reps} == {"pending"}, reps  # nothing failed: nothing ran



def test_a_task_sent_to_a_worker_that_just_died_runs_again_uncounted(make_config: Any) -> None:
    """The coordinator can hand a task to a worker that died since its last look (CI saw a
    BrokenPipeError stop a whole run): the attempt never reached the worker, so it comes back
    to run again without counting, and the replacement worker runs it."""
    import multiprocessing
    import os
    import signal
    import time

    from disco_data_logger.sharding.backends import make_backend
    from disco_data_logger.sharding.config import load_config
    from disco_data_logger.sharding.layout import SHARDS_DIR
    from disco_data_logger.sharding.planning import TaskPlan
    from disco_data_logger.sharding.records import OutcomeStatus

    cfg = load_config(make_config(execution={"backend": "multiprocessing", "workers": 1,
                                             "retries": 0}))
    output = Path(cfg.output)
    (output / SHARDS_DIR).mkdir(parents=True)
    backend = make_backend("multiprocessing", cfg, output, cfg.fingerprint(), 1)
    backend.start()
    try:
        (worker,) = multiprocessing.active_children()
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        task = TaskPlan(cfg).task(0, 0)
        backend.submit(task, 1)  # into the pipe of the dead worker: no error here
        outcomes = []
        end = time.monotonic() + 60
        while not outcomes:
            assert time.monotonic() < end
            outcomes += backend.wait(timeout=0.25)
        (outcome,) = outcomes
        assert outcome.status is OutcomeStatus.REQUEUED and outcome.attempt == 1, outcome
        assert outcome.error == "its worker died before it was handed over"
        backend.submit(task, 1)  # the replacement worker runs it
        while not (outcomes := backend.wait(timeout=0.25)):
            assert time.monotonic() < end
        assert [o.status for o in outcomes] == [OutcomeStatus.COMMITTED]
        backend.shutdown()
    finally:
        backend.interrupt()


def _commit_frames(output: Path) -> list[int]:
    """How many commits each journal frame of every shard holds (``zstd -dc`` reads them)."""
    sizes = []
    for shard in sorted((output / "shards").iterdir()):
        text = subprocess.run(["zstd", "-dc", str(shard / JOURNAL_NAME)], capture_output=True,
                              check=True).stdout
        sizes += [line["n"] for line in map(json.loads, text.splitlines())
                  if line["type"] == "commits"]
    return sizes


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
@pytest.mark.parametrize(("group", "delay", "grouped"), [
    (1, 30.0, False),  # a group of one: every commit on its own
    (256, 0.0, False),  # no delay: every commit is made durable at once
    (4, 30.0, True),
])
def test_commit_group_and_delay_are_honoured(make_config: Any, tmp_path: Path, backend: str,
                                             group: int, delay: float, grouped: bool) -> None:
    config = make_config(replications=8, execution={
        "backend": backend, "workers": 1, "commit_group": group, "commit_delay": delay})
    result = run(config)
    assert result.state == "complete" and result.committed == 16
    frames = _commit_frames(tmp_path / "out")
    assert sum(frames) == 16
    assert max(frames) <= group
    assert (max(frames) > 1) is grouped, frames
