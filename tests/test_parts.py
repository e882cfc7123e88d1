"""Parts of one experiment: ``--part I/N`` and ``--part auto`` (sharding/parts.py),
the plan of one part, and the part locks of different splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from disco_data_logger.errors import ConfigError, ExperimentLockedError
from disco_data_logger.sharding.config import validate_config
from disco_data_logger.sharding.lock import ExperimentLock
from disco_data_logger.sharding.parts import (
    Part,
    batch_job_id,
    parse_part,
    part_from_environment,
    part_of,
)
from disco_data_logger.sharding.planning import TaskPlan, plan_tasks


def _cfg(replications: int = 10, points: int = 3, seeding: str = "independent") -> object:
    return validate_config({
        "experiment": {"organisation": "o", "model": "m", "name": "n"},
        "output": "out", "replications": replications, "seed": 5, "seeding": seeding,
        "entry_point": "pkg.mod:run", "duration": 1.0,
        "sweep": {"grid": {"x": list(range(points))}},
    })


def test_parse_part_forms() -> None:
    assert parse_part("3/8") == Part(3, 8)
    assert parse_part(" 1 / 1 ") == Part(1, 1)
    assert parse_part(None) is None
    assert str(Part(2, 5)) == "2/5"
    for bad, match in (("0/4", "between 1 and 4"), ("5/4", "between 1 and 4"),
                       ("1/0", "number of parts"), ("half", "give I/N"), ("1/2/3", "give I/N"),
                       ("-1/4", "give I/N")):
        with pytest.raises(ConfigError, match=match):
            parse_part(bad)


def test_auto_reads_the_slurm_array() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3",
           "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "1"}
    assert parse_part("auto", env) == Part(3, 4)
    # an array numbered from 1, and one with a step
    assert parse_part("auto", {**env, "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                               "SLURM_ARRAY_TASK_MAX": "8", "SLURM_ARRAY_TASK_COUNT": "8"}) \
        == Part(5, 8)
    assert parse_part("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0",
                               "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}) \
        == Part(3, 4)
    # only the count
    assert parse_part("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}) \
        == Part(1, 3)
    # auto/N: the index is the 0-based part, whatever range the (re)submitted array has
    resubmitted = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "2",
                   "SLURM_ARRAY_TASK_MAX": "2", "SLURM_ARRAY_TASK_COUNT": "1"}
    assert parse_part("auto/4", resubmitted) == Part(3, 4)
    with pytest.raises(ConfigError, match="resubmitted alone.*--part auto/N"):
        parse_part("auto", resubmitted)
    with pytest.raises(ConfigError, match="outside 0..3.*--array=0-3"):
        parse_part("auto/4", {"SLURM_ARRAY_TASK_ID": "4"})


def test_auto_reads_pbs_and_refuses_outside_an_array() -> None:
    assert parse_part("auto/3", {"PBS_ARRAY_INDEX": "1"}) == Part(2, 3)
    assert parse_part("auto/3", {"PBS_ARRAYID": "0"}) == Part(1, 3)
    with pytest.raises(ConfigError, match="PBS does not tell the size"):
        parse_part("auto", {"PBS_ARRAY_INDEX": "1"})
    with pytest.raises(ConfigError, match="not a task of a job array.*SLURM_ARRAY_TASK_ID"):
        parse_part("auto", {"HOME": "/root"})
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_ID='x' is not a number"):
        part_from_environment({"SLURM_ARRAY_TASK_ID": "x"})
    with pytest.raises(ConfigError, match="not a range of indices"):
        parse_part("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1",
                            "SLURM_ARRAY_TASK_MAX": "7", "SLURM_ARRAY_TASK_COUNT": "3"})


def test_batch_job_id() -> None:
    assert batch_job_id({"SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "3",
                         "SLURM_JOB_ID": "15"}) == "12_3"
    assert batch_job_id({"SLURM_JOB_ID": "15"}) == "15"
    assert batch_job_id({"PBS_JOBID": "7[2].pbs"}) == "7[2].pbs"
    assert batch_job_id({}) is None


def test_a_part_plan_holds_its_own_tasks_only() -> None:
    cfg = _cfg(replications=10, points=3)
    whole = [(t.point_index, t.replication) for t in plan_tasks(cfg)]
    seen: list[tuple[int, int]] = []
    for i in range(1, 5):
        part = Part(i, 4)
        plan = TaskPlan(cfg, part)
        tasks = list(plan.iter_tasks())
        assert len(tasks) == len(plan)
        assert all(part.contains(t.point_index, t.replication) for t in tasks)
        # the same tasks (and seeds) as the whole plan builds
        by_id = {t.task_id: t for t in plan_tasks(cfg)}
        assert all(by_id[t.task_id] == t for t in tasks)
        seen += [(t.point_index, t.replication) for t in tasks]
    assert sorted(seen) == sorted(whole)


def test_mark_counts_the_parts_tasks_and_skips_done_ones() -> None:
    cfg = _cfg(replications=6, points=2)
    plan = TaskPlan(cfg, Part(2, 3))
    done = plan.empty_mask()
    p = np.array([0, 0, 1, 1])
    r = np.array([1, 2, 0, 5])
    ids = [f"p{a:04d}-r{b:06d}" for a, b in zip(p, r, strict=True)]
    # (0,1) and (1,0) are part 2 of 3; (0,2) and (1,5) are not
    assert plan.mark(done, ids, p, r) == 2
    left = [(t.point_index, t.replication) for t in plan.iter_tasks(done)]
    assert (0, 1) not in left and (1, 0) not in left
    assert len(left) == len(plan) - 2


def test_part_of_columns() -> None:
    parts = part_of([0, 0, 1, 2, -1], [0, 1, 0, 5, 3], 3)
    assert parts.tolist() == [1, 2, 2, 2, 0]


def test_parts_of_another_split_exclude_each_other(tmp_path: Path) -> None:
    with ExperimentLock(tmp_path, "1/4"):
        with pytest.raises(ExperimentLockedError, match="parts of another split.*same N, here 3"):
            ExperimentLock(tmp_path, "2/3").acquire()
        with ExperimentLock(tmp_path, "2/4") as other:
            assert other.held
        # a lock of its own (the slurm launcher's) excludes only itself
        with ExperimentLock(tmp_path, name="run.slurm.lock") as launcher:
            assert launcher.held
            with pytest.raises(ExperimentLockedError):
                ExperimentLock(tmp_path, name="run.slurm.lock").acquire()
    assert os.listdir(tmp_path) == []


def test_merges_take_turns_and_leave_no_lock_file(tmp_path: Path) -> None:
    import threading
    import time

    from disco_data_logger.sharding.lock import merge_turn

    order: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with merge_turn(tmp_path):
            first_in.set()
            order.append("first in")
            time.sleep(0.3)
            order.append("first out")

    def second() -> None:
        first_in.wait()
        with merge_turn(tmp_path):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert order == ["first in", "first out", "second in"]
    assert os.listdir(tmp_path / "index") == []
    (tmp_path / "index" / "merge.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="symbolic link"), merge_turn(tmp_path):
        pass
    assert not (tmp_path / "elsewhere").exists()
