"""What runs inside a worker, whatever the backend: one ShardWriter, many tasks in turn.

:class:`TaskRunner` is created inside the worker process (never pickled with an open logger),
runs one task at a time and reports :class:`TaskOutcome` objects. A model that raises is caught
here and reported as a failed attempt; only a dying process escapes, and the coordinator sees
that through the backend (a closed pipe, a dead actor).

With group commits (``commit_group > 1``) a committed task is first reported with
``durable=False`` (it ran and is staged) and counts as committed only after the worker's next
:meth:`TaskRunner.sync`, which returns the ids that became durable. The worker syncs when the
group is full, when it has nothing else to run, and when the oldest staged commit is
``commit_delay`` seconds old (``execution.commit_group`` and ``execution.commit_delay``).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass

from .config import DEFAULT_COMMIT_DELAY, ExperimentConfig
from .planning import Task
from .records import OutcomeStatus
from .shard import ShardWriter
from .storage import output_location

__all__ = ["TaskOutcome", "TaskRunner", "ShardActor"]


@dataclass
class TaskOutcome:
    """The result of one attempt of one task, as the coordinator learns it.

    :attr:`status` says what the flags below mean together (backends set the flags).
    """

    task_id: str
    attempt: int
    ok: bool
    shard_id: str | None = None
    seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    worker_died: bool = False
    interrupted: bool = False
    durable: bool = True
    """False for a commit that is staged in its worker's group and not yet durable."""
    requeue: bool = False
    """The attempt never counted (its worker died before running it, or before its commit was
    durable): run the task again without using up a retry."""

    @property
    def status(self) -> OutcomeStatus:
        """How the attempt ended (see :class:`~.records.OutcomeStatus`)."""
        if self.ok:
            return OutcomeStatus.COMMITTED if self.durable else OutcomeStatus.STAGED
        if self.interrupted:
            return OutcomeStatus.INTERRUPTED
        if self.requeue:
            return OutcomeStatus.REQUEUED
        return OutcomeStatus.FAILED


class TaskRunner:
    """Runs tasks of one experiment into one shard; lives as long as its worker process."""

    def __init__(self, cfg: ExperimentConfig, output_dir: str | os.PathLike[str], shard_id: str,
                 fingerprint: str | None = None, *, commit_group: int = 1,
                 commit_delay: float = DEFAULT_COMMIT_DELAY) -> None:
        from .config import resolve_entry_point

        self.cfg = cfg
        self.entry = resolve_entry_point(cfg.entry_point)
        self.commit_delay = commit_delay
        self.shard = ShardWriter(output_location(output_dir), shard_id,
                                 logger_kwargs=cfg.logger.logger_kwargs(),
                                 fingerprint=fingerprint, commit_group=commit_group,
                                 storage=cfg.storage)
        self._staged: dict[str, TaskOutcome] = {}

    @property
    def shard_id(self) -> str:
        return self.shard.shard_id

    @property
    def staged(self) -> int:
        return len(self._staged)

    def sync_due(self, idle: bool) -> bool:
        """Whether the staged commits should be made durable now (``idle``: nothing queued)."""
        if not self._staged:
            return False
        return idle or self.shard.staged >= self.shard.commit_group \
            or self.shard.staged_age >= self.commit_delay

    def time_to_sync(self) -> float | None:
        """Seconds until the oldest staged commit is due (None when nothing is staged)."""
        if not self._staged:
            return None
        return max(0.0, self.commit_delay - self.shard.staged_age)

    def run(self, task: Task, attempt: int) -> tuple[TaskOutcome, list[TaskOutcome]]:
        """Run one attempt of ``task``; commit it if the model returned, abort it otherwise.

        Returns the outcome and the earlier staged commits that became durable with it (the
        shard syncs by itself when its group is full). A commit the shard has not made
        durable yet comes back with ``durable=False``; a later :meth:`sync` names it.
        KeyboardInterrupt aborts the replication and propagates: the worker is being stopped.
        """
        from .context import open_context

        t0 = time.perf_counter()
        rep = self.shard.begin(
            task.task_id,
            replication=task.replication,
            point_id=task.point_id,
            point_index=task.point_index,
            params=task.point_params,
            attempt=attempt,
        )
        try:
            ctx = open_context(self.cfg, task, rep.logger)
            self.entry(ctx)
            ctx.close()
            summary = rep.commit()
        except KeyboardInterrupt:
            if not rep.done:
                rep.abort("interrupted")
            raise
        except Exception as exc:
            if not rep.done:
                rep.abort(exc)
            text = str(exc).strip().splitlines()
            return TaskOutcome(
                task_id=task.task_id,
                attempt=attempt,
                ok=False,
                shard_id=self.shard_id,
                seconds=time.perf_counter() - t0,
                error=f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__,
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            ), []
        outcome = TaskOutcome(task_id=task.task_id, attempt=attempt, ok=True,
                              shard_id=self.shard_id, seconds=time.perf_counter() - t0,
                              durable=bool(summary["durable"]))
        if not outcome.durable:
            self._staged[task.task_id] = outcome
            return outcome, []
        # The sync that made this commit durable made every staged one durable too.
        return outcome, self._release(list(self._staged))

    def _release(self, task_ids: list[str]) -> list[TaskOutcome]:
        out = []
        for tid in task_ids:
            outcome = self._staged.pop(tid, None)
            if outcome is not None:
                outcome.durable = True
                out.append(outcome)
        return out

    def sync(self) -> list[TaskOutcome]:
        """Make the staged commits durable; their outcomes (in commit order).

        If the logger cannot flush (a writer failure), the staged commits are dropped (see
        :meth:`drop_staged`) and the error propagates.
        """
        if not self._staged:
            return []
        return self._release(self.shard.sync())

    def drop_staged(self, error: str) -> list[TaskOutcome]:
        """Staged commits that will never be durable, as failed attempts."""
        out = [TaskOutcome(task_id=o.task_id, attempt=o.attempt, ok=False,
                           shard_id=self.shard_id, seconds=o.seconds, error=error)
               for o in self._staged.values()]
        self._staged.clear()
        return out

    def close(self) -> list[TaskOutcome]:
        """Close the shard; the outcomes its final sync made durable, then those it could not
        (a writer failure) as failed attempts."""
        try:
            durable = self._release(self.shard.close())
        except Exception as exc:  # noqa: BLE001 - reported as the failure of what was staged
            text = str(exc).strip().splitlines()
            return self.drop_staged(f"{type(exc).__name__}: {text[0] if text else ''}")
        return durable + self.drop_staged("the shard closed before the commit was durable")


class ShardActor:
    """A Ray actor body (wrapped with ``ray.remote`` by the Ray backend) owning one shard."""

    def __init__(self, cfg: ExperimentConfig, output_dir: str, shard_id: str,
                 fingerprint: str | None) -> None:
        self.runner = TaskRunner(cfg, output_dir, shard_id, fingerprint)

    def ready(self) -> str:
        return self.runner.shard_id

    def run(self, task: Task, attempt: int) -> TaskOutcome:
        # Ray actors commit one replication at a time: the result of a call is final.
        outcome, _earlier = self.runner.run(task, attempt)
        return outcome

    def close(self) -> str:
        self.runner.close()
        return self.runner.shard_id
