"""The coordinator: plan the tasks of a config, run them on a backend, merge the shards.

It owns the retry and failure policy (:mod:`.failfast`) and the status of every task; backends
only run attempts. Progress is a bar on stderr, notes (a stale lock taken over, workers capped)
are lines on stderr. Resume is free: the merge at start reads what the shard journals committed
(and checks that the segment bytes each commit depends on are still there), and those tasks are
skipped. Tasks are built one at a time as they are dispatched, and which ones are done is one
byte per task, so the coordinator's memory does not grow with the number of replications.
Ctrl-C (or SIGTERM) stops the workers, which abort their running replication and close their
writers, and the index is merged with what finished; re-running the same command continues from
there.

A run holds the experiment lock (:mod:`.lock`) from before it looks at the output until after the
last merge, so a second run of the same output, with or without ``--force``, stops at once.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError, UnsafePathError
from .backends import Backend, import_ray, machine_worker_limit, make_backend
from .config import ExperimentConfig
from .experiment import Experiment
from .failfast import FailurePolicy
from .index import (
    ExperimentIndex,
    check_run_output,
    merge,
    read_experiment_json,
    scan_shards,
)
from .layout import EXPERIMENT_JSON, INDEX_DIR, SHARDS_DIR
from .lock import ExperimentLock
from .manifest import ShardManifest
from .names import for_terminal
from .parts import Part, batch_job_id, parse_part, refuse_stop_rule
from .planning import Task, TaskPlan
from .progress import ProgressBar
from .records import OutcomeStatus, RunRecord, RunState
from .sources import (
    PlannedTasks,
    PrecisionTasks,
    TaskSource,
    initial_plan,
    precision_rule,
    row_bounds,
    stop_plan,
)
from .storage import StorageOptions, output_location
from .worker import TaskOutcome

__all__ = ["Coordinator", "RunResult", "run_experiment"]


@dataclass
class RunResult:
    """What one ``run`` did, and the merged index it left behind."""

    output: Path | str
    """The output directory, or its URI (object storage)."""
    state: RunState
    """``complete``, ``failed`` (some replications failed every attempt), ``interrupted`` or
    ``error`` (:class:`~.records.RunState`; equal to those strings)."""
    planned: int
    resumed: int
    committed: int
    failed: dict[str, str] = field(default_factory=dict)
    retried: int = 0
    wall_seconds: float = 0.0
    index: ExperimentIndex | None = None
    stopped_early: str | None = None
    """Why the run stopped before every task was tried (``execution.max_failures``), or None."""
    first_traceback: str | None = None
    """The traceback of the first failed attempt of this run, if any attempt failed."""
    notes: list[str] = field(default_factory=list)
    """What the run said on the way: a stale lock taken over, workers capped, links removed."""
    precision: Mapping[str, Any] | None = None
    """A ``stop:`` run's verdict (``plan.stop`` of ``experiment.json``: the rule, and per sweep
    point ``n``, ``state``, ``stopped_at``, half-widths against targets); None without one."""
    part: str | None = None
    """``"I/N"`` when the run ran one part of the experiment (``planned`` counts that part)."""

    @property
    def pending(self) -> int:
        return self.planned - self.resumed - self.committed - len(self.failed)

    @property
    def rate(self) -> float:
        """Replications committed per second of wall time in this run."""
        return self.committed / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the git checkout the run starts from (the model's code), if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
        if dirty.returncode == 0 and dirty.stdout.strip():
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return commit


class Coordinator:
    """Runs one experiment config to completion (or until interrupted)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        overrides: Sequence[str] = (),
        config_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        progress: bool = True,
        progress_stream: TextIO | None = None,
        part: str | Part | None = None,
    ) -> None:
        self.cfg = cfg
        self.overrides = list(overrides)
        self.config_path = str(config_path) if config_path is not None else None
        self.overwrite = overwrite
        self.progress_enabled = progress
        self.progress_stream = progress_stream
        self.output: Path | str = output_location(cfg.output)
        self.storage = StorageOptions.of(cfg.storage)
        self.fingerprint: str = cfg.fingerprint()
        self.part = parse_part(part)
        """Which part of the experiment this run runs (``--part I/N``), or None for all of it."""
        self.notes: list[str] = []

    def _note(self, text: str) -> None:
        """Say something the user should know now (not at the end of a long run)."""
        self.notes.append(text)
        stream = self.progress_stream or sys.stderr
        print(f"disco-data-logger: note: {for_terminal(text)}", file=stream, flush=True)

    # -- output directory ----------------------------------------------------------------------

    @property
    def _directory(self) -> Path:
        """The output directory (of a run whose output is not in object storage)."""
        assert isinstance(self.output, Path)
        return self.output

    def _check_own_names(self) -> None:
        """``shards/``, ``index/`` and ``experiment.json`` must be what they seem, in the output.

        A symbolic link there would make the run write through it (outside the experiment) and
        resume whatever it points to as if it were this experiment's. It is refused; with
        ``--force`` the link itself is removed (never its target) and the run starts afresh.
        """
        for name, is_dir in ((SHARDS_DIR, True), (INDEX_DIR, True), (EXPERIMENT_JSON, False)):
            path = self._directory / name
            if path.is_symlink():
                target = os.readlink(path)
                if not self.overwrite:
                    raise UnsafePathError(
                        f"{path} is a symbolic link (to {target}); the experiment's {name} must "
                        "be inside its output directory. Remove the link, or run with --force "
                        "to replace it (the link only: what it points to is left alone)")
                path.unlink()
                self._note(f"removed the symbolic link {path} -> {target} (--force); "
                           "what it points to was left alone")
            elif path.exists() and path.is_dir() != is_dir:
                kind = "a directory" if is_dir else "a file"
                raise UnsafePathError(f"{path} is not {kind}; this output directory does not "
                                      "look like an experiment: choose another output")

    def _remove(self, path: Path) -> None:
        """Delete one of the experiment's own entries for ``--force``; any failure stops the run."""
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UnsafePathError(
                f"--force could not remove {exc.filename or path}: {exc.strerror or exc}; nothing "
                "of the old results was reused; remove it yourself (or fix the cause) and run "
                "again") from None

    def _prepare_output(self) -> None:
        """Refuse to mix results of different configs in one output, unless told to replace them."""
        self._check_own_names()
        output = self._directory
        check_run_output(output)
        previous = read_experiment_json(output)
        found: set[str] = set()
        if previous is not None and previous.get("fingerprint"):
            found.add(previous["fingerprint"])
        # The journals too: experiment.json may be missing or stale (a run killed before its
        # first merge), and a shard of another config must never be resumed as this one's.
        for shard in scan_shards(output, warn=False):
            m = ShardManifest.load(shard, warn=False)
            if m is not None and m.fingerprint:
                found.add(m.fingerprint)
        others = found - {self.fingerprint}
        if not others:
            return
        if not self.overwrite:
            raise ConfigError(
                f"{self.output} holds results of a different config (fingerprint "
                f"{sorted(others)[0][:12]}, this config {self.fingerprint[:12]}); "
                "re-run with --force to replace them, or choose another output"
            )
        for name in (SHARDS_DIR, INDEX_DIR, EXPERIMENT_JSON):
            self._remove(output / name)

    # -- running -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        from .config import resolve_entry_point

        t0 = time.perf_counter()
        resolve_entry_point(self.cfg.entry_point)  # fail here, not in every worker
        if self.part is not None and self.overwrite:
            raise ConfigError(f"--force cannot be combined with --part {self.part}: it would "
                              "replace the results of every part; run the whole experiment "
                              "once with --force (or choose another output)")
        if self.part is not None:
            refuse_stop_rule(self.cfg, f"--part {self.part}")
        elif self.cfg.execution.backend == "slurm":
            refuse_stop_rule(self.cfg, "the slurm backend (one part per array task)")
        if self.cfg.execution.backend == "slurm":
            from .slurm import SlurmLauncher

            result: RunResult = SlurmLauncher(self, RunResult, git_commit).run()
            return result
        if self.cfg.execution.backend == "ray":
            import_ray()  # say how to install it before touching the output
        if isinstance(self.output, str):
            return self._run_in_store(t0, self.output)
        self.output.mkdir(parents=True, exist_ok=True)
        lock = ExperimentLock(self.output, str(self.part) if self.part is not None else None)
        with lock:
            for note in lock.notes:
                self._note(note)
            self._prepare_output()
            (self.output / SHARDS_DIR).mkdir(exist_ok=True)  # marks the folder as an experiment
            result = self._run_locked(t0, lock.run_id)
        return result

    # -- an output in object storage -----------------------------------------------------------

    def _run_in_store(self, t0: float, uri: str) -> RunResult:
        """``run`` into ``s3://...``: the same run, with the store's lock, checks and merge; the
        workers stage locally and publish (:mod:`.publish`)."""
        from .lock import StoreLock
        from .mirror import StoreMirror

        mirror = StoreMirror(uri, self.storage)  # a bad URI or no credentials: stops here
        mirror.store.check()  # a missing bucket, denied access, no endpoint: before any work
        with StoreLock(mirror.store, mirror.root,
                       str(self.part) if self.part is not None else None) as lock:
            for note in lock.notes:
                self._note(note)
            self._prepare_store_output(mirror)
            return self._run_locked(t0, lock.run_id)

    def _prepare_store_output(self, mirror: Any) -> None:
        """:meth:`_prepare_output` for a store: never mix configs, ``--force`` deletes the old
        results (the experiment's own prefixes only)."""
        from ..errors import NotAnExperimentError

        mirror.refresh()
        foreign = mirror.foreign_index()
        if foreign:
            raise NotAnExperimentError(
                f"{mirror.uri}: holds {' and '.join(foreign)} that disco-data-logger did not "
                "write (a run would replace them); choose another output")
        found = set(mirror.fingerprints())
        raw = mirror.store.get_or_none(EXPERIMENT_JSON)
        if raw is not None:
            try:
                previous = json.loads(raw)
            except ValueError:
                previous = None
            if isinstance(previous, dict) and isinstance(previous.get("fingerprint"), str):
                found.add(previous["fingerprint"])
        others = found - {self.fingerprint}
        if not others:
            return
        if not self.overwrite:
            raise ConfigError(
                f"{mirror.uri} holds results of a different config (fingerprint "
                f"{sorted(others)[0][:12]}, this config {self.fingerprint[:12]}); "
                "re-run with --force to replace them, or choose another output"
            )
        for name in (SHARDS_DIR, INDEX_DIR):
            mirror.store.delete_prefix(name)
        mirror.store.delete(EXPERIMENT_JSON)
        self._note(f"removed the results of the other config from {mirror.uri} (--force)")

    def _worker_count(self, backend: str, requested: int, pending: int) -> int:
        """``execution.workers``, capped at the tasks to run and at what the machine allows."""
        if backend == "serial":
            return 1
        workers = requested
        if workers > pending:
            workers = max(1, pending)
            self._note(f"execution.workers={requested} capped at {workers}: only {pending} "
                       "task(s) to run")
        limit = machine_worker_limit(backend)
        if limit is not None and workers > limit[0]:
            self._note(f"execution.workers={requested} capped at {limit[0]}: {limit[1]}")
            workers = limit[0]
        return workers

    def _run_locked(self, t0: float, run_id: str) -> RunResult:
        from .config import config_snapshot

        plan = TaskPlan(self.cfg, self.part)
        execution = self.cfg.execution
        run_record = RunRecord(
            run_id=run_id,
            started=_now_iso(),
            backend=execution.backend,
            workers=execution.workers if execution.backend != "serial" else 1,
            retries=execution.retries,
            max_failures=execution.max_failures,
            pid=os.getpid(),
        )
        if self.part is not None:
            run_record.part = str(self.part)
            run_record.host = socket.gethostname()
            run_record.batch_job = batch_job_id(os.environ)
        self._run_info: dict[str, Any] = {
            "plan": initial_plan(self.cfg, plan),
            "experiment": {
                "organisation": self.cfg.experiment.organisation,
                "model": self.cfg.experiment.model,
                "name": self.cfg.experiment.name,
            },
            "fingerprint": self.fingerprint,
            "config": config_snapshot(self.cfg),
            "overrides": self.overrides,
            "config_path": self.config_path,
            "git_commit": git_commit(),
            "run": run_record,
            "state": RunState.RUNNING,
            # Only tasks that failed or needed more than one attempt: the commits hold the rest.
            "failed": {},
            "attempts": {},
            "tracebacks": {},
        }
        if self.part is not None:
            self._run_info["part"] = str(self.part)
        start_index = merge(self.output, run=self._run_info, storage=self.storage)
        done = plan.empty_mask()
        committed = start_index.committed()
        resumed = plan.mark(done, committed["task_id"],
                            committed["point_index"].fill_null(-1).to_numpy(),
                            committed["replication"].fill_null(-1).to_numpy())
        del committed
        source = self._task_source(plan, done, resumed, start_index)
        del start_index
        to_run = source.upper_bound()
        # Staged commits a dead worker never made durable run again first; failed attempts are
        # tried again after the fresh tasks.
        requeued: deque[tuple[Task, int]] = deque()
        retry: deque[tuple[Task, int]] = deque()
        inflight: dict[str, Task] = {}
        interrupted: set[str] = set()  # attempts stopped by this run's end (Ctrl-C)

        def next_task() -> tuple[Task, int] | None:
            if requeued:
                return requeued.popleft()
            if policy.stopping:
                return None  # no new task and no retry once the failure policy stopped the run
            task = source.next_task()
            if task is not None:
                return (task, 1)
            return retry.popleft() if retry else None

        def more_may_come() -> bool:
            return source.waiting() and not policy.stopping and not stopping

        def show_progress() -> None:
            bar.total, bar.status = source.total, source.status()
            bar.update()

        result = RunResult(output=self.output, state=RunState.RUNNING, planned=source.total,
                           resumed=resumed, committed=0, notes=self.notes,
                           part=str(self.part) if self.part is not None else None)
        bar = ProgressBar(source.total, skipped=resumed,
                          stream=self.progress_stream, enabled=self.progress_enabled)
        bar.status = source.status()
        failed: dict[str, str] = self._run_info["failed"]
        attempts: dict[str, int] = self._run_info["attempts"]
        tracebacks: dict[str, str] = self._run_info["tracebacks"]
        policy = FailurePolicy(execution.max_failures)
        last_failure: dict[str, TaskOutcome] = {}

        def give_up(outcome: TaskOutcome) -> None:
            source.failed(outcome.task_id)
            failed[outcome.task_id] = outcome.error or "failed"
            if outcome.traceback:
                tracebacks[outcome.task_id] = outcome.traceback
            bar.failed += 1
            policy.task_failed()

        def handle(outcome: TaskOutcome) -> None:
            tid = outcome.task_id
            task = inflight.pop(tid, None)
            status = outcome.status
            if status is OutcomeStatus.INTERRUPTED:
                interrupted.add(tid)
                return  # stopped by this run's end, not an attempt that counts: stays pending
            if outcome.attempt > 1 or status is not OutcomeStatus.COMMITTED:
                attempts[tid] = max(attempts.get(tid, 0), outcome.attempt)
            if status is OutcomeStatus.COMMITTED:
                source.committed(tid)
                result.committed += 1
                bar.done += 1
                policy.succeeded()
                return
            if status is OutcomeStatus.STAGED:
                raise RuntimeError(f"the {execution.backend} backend reported the staged commit "
                                   f"of {tid} before its group was durable")
            if task is None:
                return
            if status is OutcomeStatus.REQUEUED:
                # A staged commit of a worker that died before its group was durable: it never
                # counted as an attempt, so it runs again as it was.
                if not stopping:
                    requeued.append((task, outcome.attempt))
                return
            policy.attempt_failed(outcome)
            last_failure[tid] = outcome
            if outcome.attempt <= execution.retries and not stopping and not policy.stopping:
                retry.append((task, outcome.attempt + 1))
                result.retried += 1
                bar.retried += 1
            else:
                give_up(outcome)

        def stop_early() -> None:
            # No new task, no retry: a queued retry has failed before, so it counts as failed;
            # a task never tried stays pending for the next run. Attempts a backend holds but
            # has not started are taken back the same way.
            held = list(retry)
            retry.clear()
            if backend is not None:
                held.extend(backend.withdraw())
            for task, attempt in held:
                inflight.pop(task.task_id, None)
                if attempt > 1 and task.task_id in last_failure:
                    give_up(last_failure[task.task_id])

        stopping = False
        backend: Backend | None = None
        restore = self._catch_sigterm()
        pending = next_task()
        try:
            if pending is not None:
                workers = self._worker_count(execution.backend, execution.workers, to_run)
                run_record.workers = workers
                backend = make_backend(execution.backend, self.cfg, self.output,
                                       self.fingerprint, workers)
                backend.start()
                bar.update(force=True)
                while pending is not None or backend.in_flight() or more_may_come():
                    if policy.stopping:
                        stop_early()
                        pending = None
                    while pending is not None and backend.free_slots() > 0:
                        task, attempt = pending
                        inflight[task.task_id] = task
                        backend.submit(task, attempt)
                        pending = next_task()
                    if pending is None and not backend.in_flight():
                        # Nothing runs: the source decides now what comes next (a stop: run's
                        # next batches), or there is nothing left.
                        source.poll(idle=True)
                        pending = next_task()
                        if pending is None and more_may_come():
                            raise RuntimeError("the task source is waiting for nothing")
                        show_progress()
                        continue
                    outcomes = backend.wait(timeout=0.25)
                    if backend.attempts_ok:
                        # A model that returned counts as a success for the failure policy even
                        # while its group commit is still being made durable.
                        policy.succeeded()
                    for outcome in outcomes:
                        handle(outcome)
                    if policy.stopping:
                        stop_early()
                        pending = None
                    else:
                        source.poll(idle=False)
                        if pending is None:
                            pending = next_task()  # a retry queued by handle(), or a new batch
                    show_progress()
                backend.shutdown()
                backend = None
            result.state = RunState.FAILED if failed or policy.stopping else RunState.COMPLETE
        except KeyboardInterrupt:
            stopping = True
            result.state = RunState.INTERRUPTED
            with _sigint_ignored():
                if backend is not None:
                    for outcome in backend.interrupt():
                        handle(outcome)
                    backend = None
        except BaseException:
            stopping = True
            result.state = RunState.ERROR
            with _sigint_ignored():
                if backend is not None:
                    backend.interrupt()
            raise
        finally:
            restore()
            bar.total, bar.status = source.total, source.status()
            bar.finish()
            result.planned = source.total
            self._run_info["plan"] = source.plan_summary()
            result.precision = stop_plan(self._run_info["plan"])
            result.failed = dict(failed)
            result.stopped_early = policy.stop_reason
            result.first_traceback = policy.first_traceback
            result.wall_seconds = time.perf_counter() - t0
            run_record.finish(result.state, finished=_now_iso(),
                              wall_seconds=result.wall_seconds, committed=result.committed,
                              failed=len(failed), resumed=result.resumed)
            run_record.stopped_early = policy.stop_reason
            if self.notes:
                run_record.notes = list(self.notes)
            self._run_info["state"] = result.state
            result.index = merge(self.output, run=self._run_info, storage=self.storage)
            raced = _committed_among(result.index, interrupted)
            if raced:
                # Commits made durable as the run was interrupted, before their workers could
                # report them: the journals, and so the index, hold them; count them here too.
                result.committed += raced
                run_record.committed = result.committed
                result.index = merge(self.output, run=self._run_info, storage=self.storage)
        return result

    def _task_source(self, plan: TaskPlan, done: np.ndarray, resumed: int,
                     start: ExperimentIndex) -> TaskSource:
        """The fixed plan, or the batches of the config's ``stop:`` rule (:mod:`.sources`)."""
        if self.cfg.stop is None:
            return PlannedTasks(plan, done, resumed)
        rows = row_bounds(start.stored_replications, *plan.shape)
        return PrecisionTasks(plan, done, rows, precision_rule(self.cfg), self._refresh)

    def _refresh(self, plan: dict[str, Any]) -> Experiment:
        """Merge what is committed so far (recording ``plan``) and open it for the stop rule."""
        self._run_info["plan"] = plan
        index = merge(self.output, run=self._run_info, storage=self.storage)
        return Experiment(index.output_dir, index)  # a store's index lives in its local mirror

    def _catch_sigterm(self) -> Any:
        """Treat SIGTERM like Ctrl-C while running (a batch scheduler stopping the job)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        return lambda: signal.signal(signal.SIGTERM, previous)


def _committed_among(index: ExperimentIndex, task_ids: set[str]) -> int:
    """How many of ``task_ids`` the index has as committed."""
    if not task_ids:
        return 0
    committed = index.committed()["task_id"]
    return int(pc.sum(pc.is_in(committed, value_set=pa.array(sorted(task_ids)))).as_py() or 0)


class _sigint_ignored:
    """Ignore further Ctrl-C while workers close their writers (bounded by the stop grace)."""

    def __enter__(self) -> None:
        self._main = threading.current_thread() is threading.main_thread()
        if self._main:
            self._previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        if self._main:
            signal.signal(signal.SIGINT, self._previous)


def run_experiment(config: str | os.PathLike[str], overrides: Sequence[str] = (), *,
                   overwrite: bool = False, progress: bool = True,
                   part: str | Part | None = None) -> RunResult:
    """Load a YAML config and run it: the library form of ``disco-data-logger run``
    (``part="I/N"`` runs one part of it, as ``--part``)."""
    from .config import load_config

    cfg = load_config(Path(config), overrides)
    return Coordinator(cfg, overrides=overrides, config_path=config, overwrite=overwrite,
                       progress=progress, part=part).run()
