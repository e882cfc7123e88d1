"""The contract of :class:`~disco_data_logger.sharding.backends.Backend` (its docstrings), checked
the same way against every local backend: serial, multiprocessing (real spawned workers) and Ray
(a real local Ray instance).

The backends are driven directly, as the coordinator drives them, and what an outcome claims is
checked against the shard journals, read back with the project's journal reader
(:class:`~disco_data_logger.sharding.manifest.ShardManifest`), never taken on trust.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from disco_data_logger.sharding.backends import Backend, make_backend
from disco_data_logger.sharding.config import ExperimentConfig, load_config
from disco_data_logger.sharding.layout import SHARDS_DIR
from disco_data_logger.sharding.manifest import ShardManifest
from disco_data_logger.sharding.planning import Task, TaskPlan
from disco_data_logger.sharding.records import OutcomeStatus
from disco_data_logger.sharding.worker import TaskOutcome

BACKENDS = ["serial", "multiprocessing", "ray"]
WORKERS = 2
"""Workers of the multiprocessing and Ray backends (the serial backend has one)."""


def tasks_of(cfg: ExperimentConfig) -> list[Task]:
    plan = TaskPlan(cfg)
    points, reps = plan.shape
    return [plan.task(p, r) for p in range(points) for r in range(reps)]


def journals(output: Path) -> dict[str, ShardManifest]:
    """Every shard's journal, read back by the project's reader."""
    out = {}
    for shard in sorted((output / SHARDS_DIR).iterdir()):
        manifest = ShardManifest.load(shard)
        assert manifest is not None, shard
        out[shard.name] = manifest
    return out


def committed_in_journals(output: Path) -> Counter[str]:
    return Counter(rep["task_id"] for m in journals(output).values() for rep in m.replications)


class Driver:
    """Drives a backend as the coordinator does, checking the accounting at every step."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.submitted: list[tuple[Task, int]] = []
        self.outcomes: list[TaskOutcome] = []
        self.withdrawn: list[tuple[Task, int]] = []

    def check_accounting(self) -> None:
        b = self.backend
        assert b.free_slots() >= 0
        assert b.in_flight() == len(self.submitted) - len(self.outcomes) - len(self.withdrawn)

    def fill(self, queue: list[Task]) -> int:
        """Submit while the backend has free slots; how many were submitted."""
        n = 0
        while queue and self.backend.free_slots() > 0:
            free = self.backend.free_slots()
            task = queue.pop(0)
            self.backend.submit(task, 1)
            self.submitted.append((task, 1))
            n += 1
            assert self.backend.free_slots() == free - 1
            self.check_accounting()
        return n

    def collect(self, outcomes: list[TaskOutcome]) -> None:
        ids = {t.task_id for t, _a in self.submitted}
        for o in outcomes:
            assert o.task_id in ids, f"an outcome of an attempt never submitted: {o}"
            assert o.status is not OutcomeStatus.STAGED, f"a commit reported before durable: {o}"
        self.outcomes.extend(outcomes)
        self.check_accounting()

    def run_all(self, tasks: list[Task], deadline: float = 240.0) -> None:
        queue = list(tasks)
        end = time.monotonic() + deadline
        while queue or self.backend.in_flight():
            assert time.monotonic() < end, "the backend stopped reporting outcomes"
            self.fill(queue)
            self.collect(self.backend.wait(timeout=0.25))

    def accounted_once(self) -> None:
        """Every submitted attempt: exactly one outcome, or withdrawn (never both)."""
        counts = Counter(o.task_id for o in self.outcomes)
        counts.update(t.task_id for t, _a in self.withdrawn)
        assert counts == Counter(t.task_id for t, _a in self.submitted)
        assert self.backend.in_flight() == 0


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return str(request.param)


@pytest.fixture
def make_backend_for(backend_name: str, make_config: Any,
                     tmp_path: Path) -> Iterator[Any]:
    made: list[Backend] = []

    def make(**changes: Any) -> tuple[Backend, ExperimentConfig, list[Task]]:
        changes.setdefault("execution", {})
        changes["execution"] = {"backend": backend_name, "workers": WORKERS, "retries": 0,
                                **changes["execution"]}
        cfg = load_config(make_config(**changes))
        output = Path(cfg.output)
        (output / SHARDS_DIR).mkdir(parents=True)
        workers = 1 if backend_name == "serial" else WORKERS
        backend = make_backend(backend_name, cfg, output, cfg.fingerprint(), workers)
        made.append(backend)
        backend.start()
        return backend, cfg, tasks_of(cfg)

    yield make
    for backend in made:  # a failed test must not leave workers behind
        backend.interrupt()


def test_every_attempt_has_one_outcome_and_commits_are_in_the_journals(
        make_backend_for: Any, backend_name: str) -> None:
    backend, cfg, tasks = make_backend_for(
        entry_point="ddl_testmodels:always_fails",
        parameters={"entities": 4, "fail_replications": [1]})
    assert len(tasks) == 6
    driver = Driver(backend)
    assert backend.in_flight() == 0 and backend.free_slots() >= 1
    driver.run_all(tasks)
    driver.accounted_once()
    assert backend.free_slots() >= 1

    by_task = {o.task_id: o for o in driver.outcomes}
    failing = {t.task_id for t in tasks if t.replication == 1}
    assert {tid for tid, o in by_task.items() if o.status is OutcomeStatus.FAILED} == failing
    assert {tid for tid, o in by_task.items()
            if o.status is OutcomeStatus.COMMITTED} == {t.task_id for t in tasks} - failing
    for tid in failing:
        o = by_task[tid]
        assert not o.ok and not o.worker_died and o.attempt == 1
        assert o.error == "ValueError: replication 1 always fails"
        assert o.traceback is not None
        assert o.traceback.startswith("Traceback (most recent call last):")
        assert "in always_fails" in o.traceback
        assert o.traceback.rstrip().endswith("ValueError: replication 1 always fails")

    backend.shutdown()
    found = journals(Path(cfg.output))
    assert set(found) == set(backend.shard_ids)
    assert all(m.closed for m in found.values())
    # Each committed outcome's replication is in the journal of the shard the outcome names,
    # once; no failed attempt is committed anywhere.
    committed = committed_in_journals(Path(cfg.output))
    assert committed == Counter({t.task_id for t in tasks} - failing)
    for tid, o in by_task.items():
        if o.status is OutcomeStatus.COMMITTED:
            assert o.shard_id in found
            assert tid in {r["task_id"] for r in found[o.shard_id].replications}
            rep = next(r for r in found[o.shard_id].replications if r["task_id"] == tid)
            assert rep["attempt"] == o.attempt and rep["streams"]


def test_shutdown_is_idempotent(make_backend_for: Any) -> None:
    backend, cfg, tasks = make_backend_for()
    driver = Driver(backend)
    driver.run_all(tasks[:2])
    backend.shutdown()
    backend.shutdown()
    assert backend.in_flight() == 0
    assert backend.interrupt() == []  # nothing left to stop
    found = journals(Path(cfg.output))
    assert found and all(m.closed for m in found.values())
    assert committed_in_journals(Path(cfg.output)) == Counter(t.task_id for t in tasks[:2])


def test_withdraw_takes_back_only_attempts_that_never_start(
        make_backend_for: Any, backend_name: str) -> None:
    backend, cfg, tasks = make_backend_for()
    driver = Driver(backend)
    queue = list(tasks)
    submitted = driver.fill(queue)
    assert submitted >= 1
    driver.withdrawn = backend.withdraw()
    driver.check_accounting()
    if backend_name == "serial":
        # The serial backend runs nothing before wait(): everything submitted comes back.
        assert driver.withdrawn == driver.submitted
    else:
        # Ray and multiprocessing hand every attempt to a worker at once: none comes back.
        assert driver.withdrawn == []
    assert backend.withdraw() == []  # taken back once
    end = time.monotonic() + 240
    while backend.in_flight():
        assert time.monotonic() < end
        driver.collect(backend.wait(timeout=0.25))
    driver.accounted_once()
    backend.shutdown()
    withdrawn = {t.task_id for t, _a in driver.withdrawn}
    committed = committed_in_journals(Path(cfg.output))
    assert not withdrawn & set(committed), "a withdrawn attempt ran"
    assert set(committed) == {o.task_id for o in driver.outcomes
                              if o.status is OutcomeStatus.COMMITTED}


def test_interrupt_reports_every_attempt_in_flight(make_backend_for: Any,
                                                    backend_name: str) -> None:
    # Replications of a few seconds each, so that some are still running when we stop.
    backend, cfg, tasks = make_backend_for(parameters={"entities": 4, "sleep": 3.0})
    driver = Driver(backend)
    driver.fill(list(tasks))
    if backend_name != "serial":
        driver.collect(backend.wait(timeout=1.0))  # let the workers start their tasks
    in_flight = backend.in_flight()
    assert in_flight >= 1
    stopped = backend.interrupt()
    assert len(stopped) == in_flight
    driver.collect(stopped)
    driver.accounted_once()
    assert backend.interrupt() == [] and backend.wait(timeout=0.1) == []
    backend.shutdown()  # after interrupt: nothing to do

    committed = committed_in_journals(Path(cfg.output))
    assert all(n == 1 for n in committed.values())
    for o in driver.outcomes:
        # What an outcome says is what the journal holds.
        assert (o.status is OutcomeStatus.COMMITTED) == (o.task_id in committed), o
        assert o.status in (OutcomeStatus.COMMITTED, OutcomeStatus.INTERRUPTED,
                            OutcomeStatus.FAILED), o
    assert all(m.state != "open" for m in journals(Path(cfg.output)).values())
