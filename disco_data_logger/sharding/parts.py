"""Parts of one experiment: ``--part I/N`` runs a fixed 1/N of the tasks.

Task ``(point_index, replication)`` belongs to part ``1 + (point_index + replication) mod N``.
The rule depends on the two numbers that name a task and on nothing else, so

* the split is the same in every process, on every machine and in every run (resume, retries);
* raising ``replications`` later only adds tasks, each to the part the rule gives it; the
  tasks a part already had stay its own;
* every part gets about ``replications / N`` replications of every sweep point (and with fewer
  replications than parts, the offset by point index still spreads the points over the parts).

Parts share one output directory. Each part runs under its own lock
(``run.part-I-of-N.lock``, :mod:`.lock`) with its own workers and so its own shards; the parts
never run the same task because no task is in two parts, and a replication is committed
exactly once because the index keeps the first commit of a task whatever wrote it.

``--part auto`` takes the part from the batch scheduler's job array (:func:`part_from_environment`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .records import ReplicationStatus

__all__ = ["Part", "MAX_PARTS", "batch_job_id", "parse_part", "part_from_environment", "part_of",
           "part_progress", "refuse_stop_rule"]

MAX_PARTS = 100_000
"""Most parts one experiment may be split into (a job array of that many tasks)."""

_PART_RE = re.compile(r"^\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*$")
_AUTO_RE = re.compile(r"^\s*auto\s*(?:/\s*([0-9]{1,9})\s*)?$")


@dataclass(frozen=True)
class Part:
    """Part ``index`` of ``count`` (1-based: ``1 <= index <= count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTS:
            raise ConfigError(f"--part {self.index}/{self.count}: the number of parts must be "
                              f"between 1 and {MAX_PARTS}")
        if not 1 <= self.index <= self.count:
            raise ConfigError(f"--part {self.index}/{self.count}: the part must be between 1 "
                              f"and {self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, point_index: int, replication: int) -> bool:
        return (point_index + replication) % self.count == self.index - 1

    def first_replication(self, point_index: int) -> int:
        """The smallest replication of ``point_index`` in this part (then every ``count``-th)."""
        return (self.index - 1 - point_index) % self.count

    def mask(self, points: int, replications: int) -> np.ndarray:
        """``mask[point_index, replication]``: True for this part's tasks."""
        p = np.arange(points, dtype=np.int64)[:, None]
        r = np.arange(replications, dtype=np.int64)[None, :]
        out: np.ndarray = (p + r) % self.count == self.index - 1
        return out

    def size(self, points: int, replications: int) -> int:
        """How many of the ``points x replications`` tasks are in this part."""
        return sum(len(range(self.first_replication(p), replications, self.count))
                   for p in range(points))


def part_of(point_indices: Any, replications: Any, count: int) -> np.ndarray:
    """The part (1-based) of every task given by columns; 0 where a column is null/negative."""
    p = np.asarray(point_indices, dtype=np.int64)
    r = np.asarray(replications, dtype=np.int64)
    out = (p + r) % count + 1
    out[(p < 0) | (r < 0)] = 0
    result: np.ndarray = out
    return result


def parse_part(text: str | Part | None,
               environ: Mapping[str, str] | None = None) -> Part | None:
    """``"I/N"``, ``"auto"`` or ``"auto/N"`` as a :class:`Part` (None stays None)."""
    if text is None or isinstance(text, Part):
        return text
    match = _PART_RE.match(text)
    if match is not None:
        return Part(int(match.group(1)), int(match.group(2)))
    auto = _AUTO_RE.match(text)
    if auto is not None:
        count = int(auto.group(1)) if auto.group(1) is not None else None
        return part_from_environment(os.environ if environ is None else environ, count)
    raise ConfigError(f"--part {text!r}: give I/N (part I of N, e.g. 3/8), 'auto' (from the job "
                      "array: SLURM_ARRAY_TASK_ID, PBS_ARRAY_INDEX) or 'auto/N'")


def _int_var(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"--part auto: {name}={raw!r} is not a number") from None


def part_from_environment(environ: Mapping[str, str], count: int | None = None) -> Part:
    """The part of this job array task.

    With ``count`` (``--part auto/N``) the array index is the 0-based part number
    (``--array=0-N-1``): part ``index + 1`` of ``count``, so a task resubmitted alone
    (``sbatch --array=2 job.sh``) is still part 3 of N. Without it the array's own range says
    both: SLURM's ``SLURM_ARRAY_TASK_ID`` within ``SLURM_ARRAY_TASK_MIN..MAX`` (step
    ``SLURM_ARRAY_TASK_STEP``, count ``SLURM_ARRAY_TASK_COUNT``). PBS (``PBS_ARRAY_INDEX``,
    Torque's ``PBS_ARRAYID``) tells no count: use ``auto/N`` there.
    """
    slurm_id = _int_var(environ, "SLURM_ARRAY_TASK_ID")
    pbs_id = _int_var(environ, "PBS_ARRAY_INDEX")
    if pbs_id is None:
        pbs_id = _int_var(environ, "PBS_ARRAYID")
    if slurm_id is None and pbs_id is None:
        raise ConfigError("--part auto: this is not a task of a job array (none of "
                          "SLURM_ARRAY_TASK_ID, PBS_ARRAY_INDEX or PBS_ARRAYID is set); submit "
                          "it as an array (sbatch --array=0-N-1) or give the part as --part I/N")
    if count is not None:
        index = slurm_id if slurm_id is not None else pbs_id
        assert index is not None
        var = "SLURM_ARRAY_TASK_ID" if slurm_id is not None else "PBS_ARRAY_INDEX"
        if not 0 <= index < count:
            raise ConfigError(f"--part auto/{count}: {var}={index} is outside 0..{count - 1}; "
                              f"submit the array as --array=0-{count - 1}")
        return Part(index + 1, count)
    if slurm_id is None:
        raise ConfigError("--part auto: PBS does not tell the size of the job array; give it "
                          "as --part auto/N (array indices 0..N-1)")
    low = _int_var(environ, "SLURM_ARRAY_TASK_MIN")
    high = _int_var(environ, "SLURM_ARRAY_TASK_MAX")
    step = _int_var(environ, "SLURM_ARRAY_TASK_STEP") or 1
    total = _int_var(environ, "SLURM_ARRAY_TASK_COUNT")
    if low is None or high is None:
        if total is None:
            raise ConfigError("--part auto: SLURM_ARRAY_TASK_ID is set but neither "
                              "SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX; give the "
                              "number of parts as --part auto/N")
        low, high, step = 0, total - 1, 1
    if step < 1 or (high - low) % step or (slurm_id - low) % step or not low <= slurm_id <= high:
        raise ConfigError(f"--part auto: SLURM_ARRAY_TASK_ID={slurm_id} does not fit the array "
                          f"{low}-{high}:{step}; give the part as --part auto/N")
    n = (high - low) // step + 1
    if total is not None and total != n:
        raise ConfigError(f"--part auto: the job array {low}-{high}:{step} has {total} tasks, "
                          "not a range of indices; submit it as --array=0-N-1 with --part "
                          "auto/N")
    if n == 1 and slurm_id != 0:
        raise ConfigError(f"--part auto: this job array has the one task {slurm_id} (a task "
                          "resubmitted alone?); give the number of parts as --part auto/N so "
                          f"that it runs part {slurm_id + 1} of N")
    return Part((slurm_id - low) // step + 1, n)


def refuse_stop_rule(cfg: Any, where: str) -> None:
    """Stop with one line when ``cfg`` has a ``stop:`` rule and is to run in parts (``where``
    says how: ``--part 2/4``, the slurm backend, an sbatch script). The rule decides each
    point's replication count from all of that point's replications as they finish, which one
    part does not see, so parts would each run to the maximum or stop on a partial view."""
    if getattr(cfg, "stop", None) is None:
        return
    raise ConfigError(
        f"a stop: rule cannot run with {where}: it decides each point's replication count from "
        "all of that point's replications as they finish, which one part does not see; run it "
        "as one run (serial, multiprocessing or ray backend), or give 'replications:' instead "
        "of 'stop:' to split the experiment into parts")


def batch_job_id(environ: Mapping[str, str]) -> str | None:
    """The batch scheduler's name of this job (``123_4`` for a SLURM array task), if any."""
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID") or environ.get("PBS_JOBID") or None


def part_progress(replications: Any, count: int,
                  live: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """Per part of ``count``: planned, committed, failed and pending replications.

    ``replications`` is :attr:`ExperimentIndex.replications` (planned tasks included);
    ``live`` maps a part index to who runs it now (from the part locks).
    """
    import pyarrow.compute as pc

    p = pc.fill_null(replications["point_index"], -1).to_numpy(zero_copy_only=False)
    r = pc.fill_null(replications["replication"], -1).to_numpy(zero_copy_only=False)
    status = np.asarray(replications["status"].to_pylist(), dtype=object)
    parts = part_of(p, r, count)
    rows = []
    for i in range(1, count + 1):
        mine = parts == i
        row = {"part": f"{i}/{count}", "planned": int(mine.sum())}
        for name in ReplicationStatus:
            row[name.value] = int((mine & (status == name.value)).sum())
        row["running"] = (live or {}).get(i)
        rows.append(row)
    return rows
