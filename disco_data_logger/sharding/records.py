"""The statuses and records the experiment service writes and reads, defined once.

Every status is a ``str`` enum: a member compares equal to its value and serialises to it
(``json.dumps``, f-strings, Arrow columns via ``.value``), so the strings on disk
(``index/replications.parquet``'s ``status`` column, ``experiment.json``'s ``state`` and
``runs``) are exactly the ones older versions wrote and read.

- :class:`ReplicationStatus`: a planned replication in the index is ``committed``, ``failed``
  (every attempt failed) or ``pending`` (not run yet, or its commit was lost).
- :class:`OutcomeStatus`: how one attempt of one task ended, as a backend reports it to the
  coordinator (:class:`~.worker.TaskOutcome`).
- :class:`RunState` and :class:`RunRecord`: one ``disco-data-logger run`` as recorded in
  ``experiment.json``'s ``runs`` list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReplicationStatus", "OutcomeStatus", "RunState", "ExperimentState", "RunRecord"]


class _StrEnum(str, enum.Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are its value on every Python >= 3.10
    (``enum.StrEnum`` is 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class ReplicationStatus(_StrEnum):
    """The status of one planned replication in the index (``replications.parquet``)."""

    COMMITTED = "committed"
    """Its commit is in a shard journal and every segment byte it depends on is there."""
    FAILED = "failed"
    """Every attempt failed (the error and traceback of the last one are kept)."""
    PENDING = "pending"
    """Not run yet, stopped before it finished, or its commit was lost: the next run runs it."""


class OutcomeStatus(_StrEnum):
    """How one attempt of one task ended, as the coordinator learns it from a backend."""

    COMMITTED = "committed"
    """The model returned and its commit is durable in the worker's shard journal."""
    STAGED = "staged"
    """The model returned and its commit waits in the worker's commit group (not yet durable);
    a backend reports it to the coordinator only once it is durable (then ``COMMITTED``)."""
    FAILED = "failed"
    """The attempt failed: the model raised (``traceback`` holds the text), the attempt timed
    out, or the worker running it died (``worker_died``). It counts as an attempt."""
    REQUEUED = "requeued"
    """The attempt never counted (its worker died before running it, or before its commit was
    durable, or its Ray actor could not be placed): run it again without using up a retry."""
    INTERRUPTED = "interrupted"
    """The run was stopped (Ctrl-C, SIGTERM) before the attempt finished: the task stays
    pending for the next run."""


class RunState(_StrEnum):
    """The state of one run (``experiment.json``: ``runs[].state``, and the run's result)."""

    RUNNING = "running"
    """The run is in progress (or was killed without a chance to record its end)."""
    COMPLETE = "complete"
    """Every task was tried and none failed every attempt."""
    FAILED = "failed"
    """Some tasks failed every attempt, or the failure policy stopped the run early."""
    INTERRUPTED = "interrupted"
    """Ctrl-C or SIGTERM stopped it; what finished is committed, the rest is pending."""
    ERROR = "error"
    """The run itself failed (an exception outside the model): what finished is committed."""


class ExperimentState(_StrEnum):
    """The state of a whole experiment (``experiment.json``: ``state``): the state of its last
    run, or ``incomplete`` when some replications are still failed or pending."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    INCOMPLETE = "incomplete"


_RECORD_KEYS = ("run_id", "started", "backend", "parts", "part_backend", "workers", "retries",
                "max_failures", "pid", "state", "jobs", "part", "host", "batch_job", "finished",
                "wall_seconds", "committed", "failed", "resumed", "stopped_early", "notes")
"""The keys of a run record, in the order they are written."""

_OPTIONAL_KEYS = frozenset({"parts", "part_backend", "jobs", "part", "host", "batch_job",
                            "finished", "wall_seconds", "committed", "failed", "resumed",
                            "stopped_early", "notes"})
"""Keys written only when they have a value (a run that ran in parts, a finished run, ...)."""


@dataclass
class RunRecord:
    """One run as ``experiment.json`` records it (its ``runs`` list), written at the start
    (``state: running``) and again at the end of the run, with the same ``run_id``.

    :meth:`to_json` gives the keys every version wrote (optional ones only when set);
    :meth:`from_json` reads records of every version, keeping keys it does not know in
    ``extra`` (and writing them back).
    """

    run_id: str
    started: str
    """ISO 8601 UTC, seconds."""
    backend: str
    workers: int
    retries: int
    pid: int
    state: RunState = RunState.RUNNING
    max_failures: int | None = None
    parts: int | None = None
    """``slurm`` backend: how many parts the experiment is split into (one array task each)."""
    part_backend: str | None = None
    """``slurm`` backend: the backend each part runs its tasks with."""
    jobs: dict[str, str] | None = None
    """``slurm`` backend: the job id of each part (``"I/N"``)."""
    part: str | None = None
    """``"I/N"`` when this run ran one part (``--part``, or one array task)."""
    host: str | None = None
    batch_job: str | None = None
    """The batch scheduler's job id of a part run (``SLURM_JOB_ID``, ...)."""
    finished: str | None = None
    wall_seconds: float | None = None
    committed: int | None = None
    failed: int | None = None
    resumed: int | None = None
    stopped_early: str | None = None
    """Why the run stopped before every task was tried (``execution.max_failures``)."""
    notes: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a record this version does not know (kept as they were)."""

    def finish(self, state: RunState, *, finished: str, wall_seconds: float, committed: int,
               failed: int, resumed: int) -> None:
        """Record how the run ended."""
        self.state = RunState(state)
        self.finished = finished
        self.wall_seconds = round(wall_seconds, 3)
        self.committed = committed
        self.failed = failed
        self.resumed = resumed

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``experiment.json``."""
        out: dict[str, Any] = {}
        for key in _RECORD_KEYS:
            value = getattr(self, key)
            if key in _OPTIONAL_KEYS and value is None:
                continue
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, (dict, list)):
                value = type(value)(value)
            out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RunRecord:
        """A record read from ``experiment.json`` (any version; missing keys are None)."""
        known: dict[str, Any] = {k: doc[k] for k in _RECORD_KEYS if k in doc}
        extra = {k: v for k, v in doc.items() if k not in _RECORD_KEYS}
        state = known.pop("state", RunState.RUNNING)
        try:
            state = RunState(state)
        except ValueError:
            extra["state"] = state  # a state this version does not know: kept as it was
            state = RunState.RUNNING
        record = cls(run_id=str(known.pop("run_id", "")), started=str(known.pop("started", "")),
                     backend=str(known.pop("backend", "")), workers=known.pop("workers", 0),
                     retries=known.pop("retries", 0), pid=known.pop("pid", 0), state=state,
                     extra=extra, **known)
        return record
