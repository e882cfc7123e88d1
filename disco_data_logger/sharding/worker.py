"""What runs inside a worker, whatever the backend: one ShardWriter, many tasks in turn.

:class:`TaskRunner` is created inside the worker process (never pickled with an open logger), runs
one task at a time and reports a :class:`TaskOutcome`. A model that raises is caught here and
reported as a failed attempt; only a dying process escapes, and the coordinator sees that through
the backend (a closed pipe, a dead actor).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .shard import ShardWriter

__all__ = ["TaskOutcome", "TaskRunner", "ShardActor"]


@dataclass
class TaskOutcome:
    """The result of one attempt of one task, as the coordinator learns it."""

    task_id: str
    attempt: int
    ok: bool
    shard_id: str | None = None
    seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    worker_died: bool = False
    interrupted: bool = False


class TaskRunner:
    """Runs tasks of one experiment into one shard; lives as long as its worker process."""

    def __init__(self, cfg: Any, output_dir: str | os.PathLike[str], shard_id: str,
                 fingerprint: str | None = None) -> None:
        from .config import resolve_entry_point

        self.cfg = cfg
        self.entry = resolve_entry_point(cfg.entry_point)
        self.shard = ShardWriter(Path(output_dir), shard_id,
                                 logger_kwargs=cfg.logger.logger_kwargs(),
                                 fingerprint=fingerprint)

    @property
    def shard_id(self) -> str:
        return self.shard.shard_id

    def run(self, task: Any, attempt: int) -> TaskOutcome:
        """Run one attempt of ``task``; commit it if the model returned, abort it otherwise.

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
            rep.commit()
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
            )
        return TaskOutcome(task_id=task.task_id, attempt=attempt, ok=True,
                           shard_id=self.shard_id, seconds=time.perf_counter() - t0)

    def close(self) -> None:
        self.shard.close()


class ShardActor:
    """A Ray actor body (wrapped with ``ray.remote`` by the Ray backend) owning one shard."""

    def __init__(self, cfg: Any, output_dir: str, shard_id: str, fingerprint: str | None) -> None:
        self.runner = TaskRunner(cfg, output_dir, shard_id, fingerprint)

    def ready(self) -> str:
        return self.runner.shard_id

    def run(self, task: Any, attempt: int) -> TaskOutcome:
        return self.runner.run(task, attempt)

    def close(self) -> str:
        self.runner.close()
        return self.runner.shard_id
