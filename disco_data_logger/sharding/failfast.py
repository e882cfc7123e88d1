"""When a run stops early: the coordinator's failure policy (``execution.max_failures``).

Retrying is right for a replication that failed by bad luck (a worker killed, a rare numerical
corner); it is wasted work for a model that always fails. Two rules stop a run early, both off
when ``max_failures`` is None:

* ``max_failures`` tasks have failed every attempt in this run;
* the first :data:`EARLY_ATTEMPTS` attempts of the run all failed with the same error (the same
  exception type raised at the same line) before anything succeeded: the model fails whatever
  the task, so retrying every task is pointless.

A stopped run starts no new task and no retry; the tasks already running finish. The tasks that
failed are recorded as failed, the others stay pending, and running the same command again
resumes as usual (after the model is fixed). The first traceback is kept for the report.
"""

from __future__ import annotations

import re

from .worker import TaskOutcome

__all__ = ["EARLY_ATTEMPTS", "FailurePolicy", "error_signature"]

EARLY_ATTEMPTS = 3
"""Failed first attempts, all with the same error and no success before them, that stop a run."""

_FRAME_RE = re.compile(r'^\s*File "(.*)", line ([0-9]+)', re.M)


def error_signature(outcome: TaskOutcome) -> str:
    """The kind of a failure: exception type and the innermost frame, ``ValueError at m.py:12``.

    Messages often carry the task's own numbers, so they are not compared; a failure without a
    traceback (a worker that died) is compared by its message.
    """
    error = outcome.error or "failed"
    frames = _FRAME_RE.findall(outcome.traceback or "")
    if not frames:
        return error
    file, line = frames[-1]
    return f"{error.split(':', 1)[0]} at {file}:{line}"


class FailurePolicy:
    """Decides, from the outcomes the coordinator sees, whether the run should stop early."""

    def __init__(self, max_failures: int | None, early_attempts: int = EARLY_ATTEMPTS) -> None:
        self.max_failures = max_failures
        self.early_attempts = early_attempts
        self.failed_tasks = 0
        self.first_traceback: str | None = None
        self.first_error: tuple[str, str] | None = None
        """(task id, error) of the first failed attempt of the run."""
        self.stop_reason: str | None = None
        self._succeeded = False
        self._early: list[str] = []

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def succeeded(self) -> None:
        self._succeeded = True

    def attempt_failed(self, outcome: TaskOutcome) -> None:
        """Every failed attempt (not an interrupted one), in the order the coordinator sees them."""
        if self.first_error is None:
            self.first_error = (outcome.task_id, outcome.error or "failed")
        if self.first_traceback is None and outcome.traceback:
            self.first_traceback = outcome.traceback
        if self.max_failures is None or self._succeeded or self.stopping:
            return
        if len(self._early) < self.early_attempts:
            self._early.append(error_signature(outcome))
            if len(self._early) == self.early_attempts and len(set(self._early)) == 1:
                self.stop_reason = (f"the first {self.early_attempts} attempts all failed with "
                                    f"the same error ({self._early[0]})")

    def task_failed(self) -> None:
        """A task failed its last attempt (or was not retried because the run is stopping)."""
        self.failed_tasks += 1
        if (self.max_failures is not None and not self.stopping
                and self.failed_tasks >= self.max_failures):
            self.stop_reason = (f"{self.failed_tasks} task(s) failed every attempt "
                                f"(execution.max_failures={self.max_failures})")
