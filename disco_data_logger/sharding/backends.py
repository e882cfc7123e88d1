"""Execution backends: where tasks run. The coordinator decides *what* runs; a backend only
dispatches tasks to its workers and reports how each attempt ended.

Every worker owns one :class:`~.worker.TaskRunner` (so one ShardWriter, so one native logger) for
its whole life. A worker that dies (``os._exit``, SIGKILL, out of memory) is noticed through its
process sentinel or Ray's actor error, its task is reported as a failed attempt with
``worker_died=True``, and a fresh worker with a fresh shard takes its slot: the dead worker's
shard keeps what it committed before, and its torn tail is never read as committed data.

**Group commits** (serial and multiprocessing backends). Short replications are committed in
groups of up to ``execution.commit_group``: a worker stages each commit and makes its group
durable (one logger flush, one journal frame, one fsync) when the group is full, when it has
nothing queued, or when the oldest staged commit is ``execution.commit_delay`` seconds old. A task
counts as committed only once its group is durable. To keep groups filling, each worker may
hold several tasks at once (the one it runs, the ones queued behind it, the staged ones): as
many as fit in the commit delay at the task duration observed so far, so long replications get
one at a time and commit one by one, as without groups. With ``execution.timeout`` set, every
worker holds one task at a time (the timeout counts from when a task starts). A worker that
dies takes its staged commits with it: they are run again without using up a retry, and only
the task it was running counts as a failed attempt.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataLoggerError
from .config import DEFAULT_COMMIT_DELAY, ExperimentConfig
from .interrupts import sigint_deferred
from .planning import Task
from .shard import new_shard_id
from .storage import output_location
from .worker import ShardActor, TaskOutcome, TaskRunner

__all__ = [
    "Backend",
    "SerialBackend",
    "MultiprocessingBackend",
    "RayBackend",
    "WorkerStartupError",
    "machine_worker_limit",
    "make_backend",
]

STOP_GRACE_SECONDS = 30.0
"""How long stopping workers may take to close their writers before they are killed."""

PLACEMENT_TIMEOUT = 10.0
"""Seconds a Ray actor that asked for custom resources may wait to be placed before it is
replaced by one placed anywhere (only while no live node offers those resources)."""

WORKER_START_SECONDS = 120.0
"""With ``execution.timeout``, how long a worker may take to start (import the model, open its
writer) before the task it holds is taken back: the timeout counts from the moment the worker
is ready, since a replication cannot run before that. A worker that does not start in this time
is killed and counts as dying before its first task (:data:`MAX_STARTUP_DEATHS`)."""

MAX_STARTUP_DEATHS = 3
"""Consecutive workers dying before running anything: the setup is broken, stop retrying."""

CPU_OVERSUBSCRIPTION = 4
"""Most worker processes per CPU this process may use: beyond that, processes only add memory."""

FDS_PER_WORKER = 4
"""Descriptors the coordinator holds per worker process (pipe, sentinel) with a margin."""


def machine_worker_limit(backend: str) -> tuple[int, str] | None:
    """The most workers this machine allows for ``backend``, and why; None: no local limit.

    For local processes: :data:`CPU_OVERSUBSCRIPTION` per usable CPU, and what the open-file
    limit leaves room for. Ray places actors on its cluster, which it sizes itself.
    """
    if backend != "multiprocessing":
        return None
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limits = [(CPU_OVERSUBSCRIPTION * cpus,
               f"{CPU_OVERSUBSCRIPTION} worker processes per CPU, and this process may use "
               f"{cpus} CPU(s)")]
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        limits.append((max(1, (soft - 64) // FDS_PER_WORKER),
                       f"the open-file limit (ulimit -n {soft}) leaves room for that many"))
    return min(limits)


class WorkerStartupError(DataLoggerError, RuntimeError):
    """Workers cannot start (their logger or the model's module fails in the worker)."""


class Backend(ABC):
    """Runs attempts of tasks on ``workers`` long-lived workers; the contract every backend keeps.

    **Who calls what.** One :class:`~.coordinator.Coordinator` owns a backend and calls every
    method from one thread (the one that created it): :meth:`start` once, then any number of
    rounds of :meth:`free_slots`, :meth:`submit` (only while ``free_slots() > 0``),
    :meth:`in_flight` and :meth:`wait`, possibly :meth:`withdraw` when the run stops early, and
    at the end exactly one of :meth:`shutdown` (everything reported) or :meth:`interrupt`
    (Ctrl-C, SIGTERM, an error). A backend is never used again after either; both may be
    called more than once and do nothing the second time. No method is called concurrently,
    and a backend starts no thread of its own that calls back into the coordinator.

    **Outcomes.** Every submitted attempt is accounted for exactly once: by one
    :class:`~.worker.TaskOutcome` from :meth:`wait` or :meth:`interrupt`, or by being returned
    from :meth:`withdraw`. An outcome's :attr:`~.worker.TaskOutcome.status` is

    - ``COMMITTED``: the model returned and the commit is durable in the worker's shard journal
      (a staged commit of a group is reported only once its group is durable);
    - ``FAILED``: the model raised (``error`` is its first line, ``traceback`` the whole text),
      the attempt timed out, or the worker died running it (``worker_died``);
    - ``REQUEUED``: the attempt never counted (its worker died before running it or before its
      commit was durable); the coordinator runs it again with the same attempt number;
    - ``INTERRUPTED`` (from :meth:`interrupt` only): stopped before it finished.

    **Workers.** Each worker owns one :class:`~.worker.TaskRunner` (one shard, one logger)
    created in the worker itself; a worker that dies is replaced by a fresh one with a fresh
    shard (:attr:`shard_ids` lists every shard this backend created). Workers run the model;
    the coordinator's process never holds a worker's logger except in the serial backend.
    """

    name = "backend"
    groups = False
    """Whether this backend commits in groups (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, output_dir: Path | str, fingerprint: str | None,
                 workers: int) -> None:
        self.cfg = cfg
        # A local directory, or an object-store URI (workers stage and publish: .publish).
        self.output_dir = output_location(output_dir)
        self.fingerprint = fingerprint
        self.workers = max(1, int(workers))
        self.shard_ids: list[str] = []
        execution = cfg.execution
        self.timeout: float | None = execution.timeout
        self.commit_group = int(execution.commit_group) if self.groups else 1
        self.commit_delay = float(execution.commit_delay)
        self._task_seconds: float | None = None
        self.attempts_ok = 0
        """Attempts whose model returned (committed, or staged in a group not yet durable)."""

    @property
    def depth(self) -> int:
        """Tasks one worker may hold at once (the one it runs, queued ones, staged commits)."""
        if self.commit_group <= 1 or self.timeout is not None:
            return 1
        if self._task_seconds is None:
            return 2
        fit = int(self.commit_delay / max(self._task_seconds, 1e-6))
        return 1 + max(1, min(self.commit_group, fit))

    def _observe(self, outcome: TaskOutcome) -> None:
        if outcome.ok:
            self.attempts_ok += 1
        if outcome.ok and outcome.seconds > 0:
            prev = self._task_seconds
            self._task_seconds = outcome.seconds if prev is None else \
                0.9 * prev + 0.1 * outcome.seconds

    @abstractmethod
    def start(self) -> None:
        """Start the workers (they create their writers themselves). Called once, first.

        Raises :class:`WorkerStartupError` (here or from a later :meth:`wait`) when workers
        cannot start: the model's module does not import, the logger cannot open its shard.
        """

    @abstractmethod
    def free_slots(self) -> int:
        """How many more attempts :meth:`submit` accepts now (0: wait for outcomes first).

        Never negative; it falls by one with each :meth:`submit` and rises again as outcomes
        are reported. It may exceed ``workers`` when each worker holds several tasks at once
        (group commits: see the module docstring).
        """

    @abstractmethod
    def in_flight(self) -> int:
        """Attempts submitted and not yet accounted for (by an outcome or :meth:`withdraw`);
        a staged commit whose group is not yet durable still counts."""

    @abstractmethod
    def submit(self, task: Task, attempt: int) -> None:
        """Hand attempt ``attempt`` (1 for the first) of ``task`` to a worker; returns at once.

        Only called while ``free_slots() > 0`` (a backend may raise ``RuntimeError`` otherwise).
        """

    @abstractmethod
    def wait(self, timeout: float) -> list[TaskOutcome]:
        """The outcomes that became known, waiting up to about ``timeout`` seconds for one
        (possibly none). Never an outcome twice, never one of an attempt not submitted.

        The serial backend runs one queued attempt in the calling thread here, so its wait
        lasts as long as that replication, whatever ``timeout`` says.
        """

    @abstractmethod
    def shutdown(self) -> None:
        """Stop the workers once everything submitted was reported: each closes its writer
        (``_DONE``, the journal's close record). Idempotent; nothing is reported any more."""

    def withdraw(self) -> list[tuple[Task, int]]:
        """Take back submitted attempts that have not started (the run is stopping early):
        they are no longer in flight and will never be reported. Attempts already handed to
        a worker are not taken back: they run and are reported by :meth:`wait` as usual.

        The default, for backends that hand every attempt straight to a worker (Ray: one
        call per actor at a time; multiprocessing: sent down the worker's pipe), takes none.
        """
        return []

    @abstractmethod
    def interrupt(self) -> list[TaskOutcome]:
        """Stop now (Ctrl-C, SIGTERM, an error in the coordinator): running replications are
        aborted (never committed), writers closed. Returns an outcome for every attempt still
        in flight: commits that became durable while closing (``COMMITTED``), and
        ``INTERRUPTED`` (or ``FAILED``) for the rest. Idempotent."""

    def _new_shard_id(self, slot: int) -> str:
        shard_id = new_shard_id(f"{self.name[:2]}{slot:02d}")
        self.shard_ids.append(shard_id)
        return shard_id


# ----------------------------------------------------------------------------------- serial


class SerialBackend(Backend):
    """Runs tasks in the coordinator's own process: simplest, and easiest to debug."""

    name = "serial"
    groups = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = 1
        self._runner: TaskRunner | None = None
        self._queued: deque[tuple[Task, int]] = deque()
        self._running: tuple[Task, int] | None = None
        """The attempt :meth:`wait` runs now (a Ctrl-C during it reaches :meth:`interrupt`)."""

    def start(self) -> None:
        self._runner = TaskRunner(self.cfg, self.output_dir, self._new_shard_id(0),
                                  self.fingerprint, commit_group=self.commit_group,
                                  commit_delay=self.commit_delay)

    def _held(self) -> int:
        return len(self._queued) + (self._runner.staged if self._runner is not None else 0)

    def free_slots(self) -> int:
        return max(0, self.depth - self._held())

    def in_flight(self) -> int:
        return self._held()

    def submit(self, task: Task, attempt: int) -> None:
        self._queued.append((task, attempt))

    def withdraw(self) -> list[tuple[Task, int]]:
        taken = list(self._queued)
        self._queued.clear()
        return taken

    def wait(self, timeout: float) -> list[TaskOutcome]:
        runner = self._runner
        if runner is None:
            return []
        out: list[TaskOutcome] = []
        if self._queued:
            task, attempt = self._running = self._queued.popleft()
            outcome, earlier = runner.run(task, attempt)
            self._running = None
            self._observe(outcome)
            out.extend(earlier)
            if outcome.durable or not outcome.ok:
                out.append(outcome)
        if runner.sync_due(idle=not self._queued):
            out.extend(_sync_or_drop(runner))
        return out

    def shutdown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def interrupt(self) -> list[TaskOutcome]:
        stopped = [*([self._running] if self._running is not None else []), *self._queued]
        self._running = None
        self._queued.clear()
        runner, self._runner = self._runner, None
        outcomes = runner.close() if runner is not None else []
        shard_id = runner.shard_id if runner is not None else None
        outcomes.extend(TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                                    shard_id=shard_id, interrupted=True)
                        for task, attempt in stopped)
        return outcomes


def _sync_or_drop(runner: TaskRunner) -> list[TaskOutcome]:
    """Sync the runner's group; after a writer failure its staged commits are failed attempts."""
    try:
        return runner.sync()
    except OSError as exc:
        text = str(exc).strip().splitlines()
        return runner.drop_staged(f"{type(exc).__name__}: {text[0] if text else ''}")


# --------------------------------------------------------------------------- multiprocessing


def _stop_on_first_sigint(signum: int, frame: Any) -> None:
    # The terminal sends SIGINT to the whole process group and the coordinator forwards one too:
    # react to the first, ignore the rest so that closing the writer is never interrupted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _mp_worker_main(conn: Connection, cfg: ExperimentConfig, output_dir: str, shard_id: str,
                    fingerprint: str | None, commit_group: int = 1,
                    commit_delay: float = DEFAULT_COMMIT_DELAY) -> None:
    """A spawned worker: build the writer here, then serve tasks until told to stop.

    Messages to the coordinator: ``("ready", pid)``; ``("done", outcome)`` after every attempt
    (a staged commit has ``durable=False``); ``("durable", task_ids)`` when a group commit made
    staged commits durable; ``("closed", shard_id)`` at the end.
    """
    signal.signal(signal.SIGINT, _stop_on_first_sigint)
    runner: TaskRunner | None = None

    def send(message: tuple[str, Any]) -> None:
        with sigint_deferred():  # never half a message in the pipe
            conn.send(message)

    def report(outcomes: list[TaskOutcome]) -> None:
        """Tell the coordinator what a group commit (or the close) made durable or failed."""
        durable = [o.task_id for o in outcomes if o.ok]
        if durable:
            send(("durable", durable))
        for o in outcomes:
            if not o.ok:
                send(("done", o))

    def sync() -> None:
        assert runner is not None
        with sigint_deferred():  # a group made durable is also reported as such
            report(_sync_or_drop(runner))

    try:
        try:
            runner = TaskRunner(cfg, output_dir, shard_id, fingerprint,
                                commit_group=commit_group, commit_delay=commit_delay)
        except Exception as exc:
            send(("fatal", f"{type(exc).__name__}: {exc}"))
            return
        send(("ready", os.getpid()))
        while True:
            if runner.staged and not conn.poll(runner.time_to_sync()):
                sync()  # nothing new arrived before the oldest staged commit fell due
                continue
            message = conn.recv()
            if message is None:
                break
            task, attempt = message
            outcome, earlier = runner.run(task, attempt)
            send(("done", outcome))
            if earlier:
                send(("durable", [o.task_id for o in earlier]))
            if runner.sync_due(idle=not conn.poll(0)):
                sync()
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # stopped by the coordinator (or it went away): close the writer below
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if runner is not None:
                report(runner.close())
            conn.send(("closed", shard_id))
        except (OSError, ValueError):
            pass
        conn.close()


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    conn: Connection
    shard_id: str
    queue: deque[tuple[Task, int, float]] = field(default_factory=deque)
    """Tasks sent and not yet reported, in order: the first one is running."""
    awaiting: dict[str, tuple[Task | None, TaskOutcome]] = field(default_factory=dict)
    """Commits staged in the worker's group, not yet durable."""
    ready: bool = False
    ready_at: float | None = None
    """When the coordinator learned that the worker listens (its ``ready`` message)."""
    ran_any: bool = False
    killed_for_timeout: bool = False
    killed_starting: bool = False
    undelivered: set[str] = field(default_factory=set)
    """Task ids whose sending failed: the worker was already gone."""

    @property
    def busy(self) -> bool:
        return bool(self.queue) or bool(self.awaiting)

    @property
    def held(self) -> int:
        return len(self.queue) + len(self.awaiting)


class MultiprocessingBackend(Backend):
    """Long-lived ``spawn`` worker processes, each creating its own DataLogger after start."""

    name = "multiprocessing"
    groups = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Worker | None] = [None] * self.workers
        self._startup_deaths = 0
        self._stopping = False

    def _spawn(self, slot: int) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        shard_id = self._new_shard_id(slot)
        process = self._ctx.Process(
            target=_mp_worker_main,
            args=(child, self.cfg, str(self.output_dir), shard_id, self.fingerprint,
                  self.commit_group, self.commit_delay),
            name=f"disco-worker-{slot}",
            daemon=True,
        )
        process.start()
        child.close()  # the worker holds the only other end: EOF here means it is gone
        worker = _Worker(slot=slot, process=process, conn=parent, shard_id=shard_id)
        self._slots[slot] = worker
        return worker

    def start(self) -> None:
        for slot in range(self.workers):
            self._spawn(slot)

    def _live(self) -> list[_Worker]:
        return [w for w in self._slots if w is not None]

    def free_slots(self) -> int:
        depth = self.depth
        return sum(max(0, depth - w.held) for w in self._live())

    def in_flight(self) -> int:
        return sum(w.held for w in self._live())

    def submit(self, task: Task, attempt: int) -> None:
        # Tasks may go to a worker still starting up: the pipe holds them until it listens.
        depth = self.depth
        candidates = [w for w in self._live() if w.held < depth]
        if not candidates:
            raise RuntimeError("submit() without a free worker")
        worker = min(candidates, key=lambda w: w.held)
        worker.queue.append((task, attempt, time.monotonic()))
        try:
            worker.conn.send((task, attempt))
        except (OSError, ValueError):
            # The worker died since the last wait() (its sentinel says so at the next one): the
            # attempt never reached it, so it runs again without counting.
            worker.undelivered.add(task.task_id)

    def wait(self, timeout: float) -> list[TaskOutcome]:
        outcomes: list[TaskOutcome] = []
        workers = self._live()
        if not workers:
            return outcomes
        handles: dict[Any, tuple[str, _Worker]] = {}
        for w in workers:
            handles[w.conn] = ("conn", w)
            handles[w.process.sentinel] = ("sentinel", w)
        ready = wait(list(handles), timeout=self._wait_timeout(timeout))
        died: list[_Worker] = []
        for handle in ready:
            kind, w = handles[handle]
            if kind == "conn":
                self._drain(w, outcomes)
            else:
                died.append(w)
        for w in died:
            self._drain(w, outcomes)  # a result sent just before dying still counts
            self._bury(w, outcomes)
        self._enforce_timeouts()
        return outcomes

    def _wait_timeout(self, timeout: float) -> float:
        if self.timeout is None:
            return timeout
        now = time.monotonic()
        deadlines = [w.queue[0][2] + self.timeout - now for w in self._live() if w.queue]
        return max(0.0, min([timeout, *deadlines]))

    def _drain(self, w: _Worker, outcomes: list[TaskOutcome]) -> None:
        try:
            while w.conn.poll():
                message = w.conn.recv()
                self._handle(w, message, outcomes)
        except (EOFError, OSError):
            pass  # the sentinel reports the death

    def _handle(self, w: _Worker, message: tuple[str, Any], outcomes: list[TaskOutcome]) -> None:
        kind, payload = message
        if kind == "ready":
            w.ready = True
            w.ready_at = time.monotonic()
        elif kind == "done":
            outcome: TaskOutcome = payload
            task = None
            for i, (t, _attempt, _sent) in enumerate(w.queue):
                if t.task_id == outcome.task_id:
                    task = t
                    del w.queue[i]
                    break
            if task is None and outcome.task_id in w.awaiting:
                task = w.awaiting.pop(outcome.task_id)[0]  # a staged commit that was dropped
            w.ran_any = True
            self._startup_deaths = 0
            self._observe(outcome)
            if outcome.ok and not outcome.durable:
                w.awaiting[outcome.task_id] = (task, outcome)
            else:
                outcomes.append(outcome)
        elif kind == "durable":
            for tid in payload:
                held = w.awaiting.pop(tid, None)
                if held is not None:
                    held[1].durable = True
                    outcomes.append(held[1])
        elif kind == "fatal" and not self._stopping:
            raise WorkerStartupError(f"worker {w.slot} could not start: {payload}")

    def _orphans(self, w: _Worker, why: str) -> list[TaskOutcome]:
        """What a dead worker held: the running task failed, the rest run again uncounted (all
        of them when the worker died before it started)."""
        out = []
        for i, (task, attempt, sent) in enumerate(w.queue):
            undelivered = task.task_id in w.undelivered
            if i == 0 and not undelivered and not w.killed_starting:
                out.append(TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                                       shard_id=w.shard_id, error=why, worker_died=True,
                                       seconds=time.monotonic() - sent))
                continue
            error = ("its worker died before it was handed over" if undelivered else
                     why if w.killed_starting else "its worker died before running it")
            out.append(TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                                   shard_id=w.shard_id, requeue=True, error=error))
        for tid, (_task, staged) in w.awaiting.items():
            out.append(TaskOutcome(task_id=tid, attempt=staged.attempt, ok=False,
                                   shard_id=w.shard_id, requeue=True, worker_died=True,
                                   error="its worker died before the commit was durable"))
        w.queue.clear()
        w.awaiting.clear()
        return out

    def _bury(self, w: _Worker, outcomes: list[TaskOutcome]) -> None:
        w.process.join(timeout=5)
        code = w.process.exitcode
        w.conn.close()
        self._slots[w.slot] = None
        if w.busy:
            if w.killed_starting:
                why = f"its worker did not start within {WORKER_START_SECONDS:g} s (killed)"
            elif w.killed_for_timeout:
                why = f"timed out after {self.timeout:g} s (worker killed)"
            else:
                why = f"worker process died ({_describe_exit(code)})"
            outcomes.extend(self._orphans(w, why))
        if self._stopping:
            return
        if not w.ran_any and not w.killed_for_timeout:
            self._startup_deaths += 1
            if self._startup_deaths >= MAX_STARTUP_DEATHS:
                last = f"not started within {WORKER_START_SECONDS:g} s, killed" \
                    if w.killed_starting else _describe_exit(code)
                raise WorkerStartupError(
                    f"{self._startup_deaths} worker processes died before finishing a task "
                    f"(last: {last}); giving up"
                )
        self._spawn(w.slot)

    def _enforce_timeouts(self) -> None:
        """Kill a worker whose task runs longer than ``execution.timeout``, counted from when
        the task was sent or the worker became ready, whichever is later (with the timeout
        every worker holds one task, which it starts as soon as it can); and a worker that
        has not started :data:`WORKER_START_SECONDS` after it was given a task."""
        if self.timeout is None:
            return
        now = time.monotonic()
        for w in self._live():
            if not w.queue or w.killed_for_timeout or w.killed_starting:
                continue
            sent = w.queue[0][2]
            if w.ready_at is None:
                if now - sent > WORKER_START_SECONDS:
                    w.killed_starting = True
                    w.process.kill()
            elif now - max(sent, w.ready_at) > self.timeout:
                w.killed_for_timeout = True
                w.process.kill()

    def _stop_all(self, signal_first: bool, outcomes: list[TaskOutcome]) -> None:
        self._stopping = True
        for w in self._live():
            self._drain(w, outcomes)  # learn which workers are ready (SIGINT handler installed)
            if signal_first and w.ready and w.process.is_alive() and w.process.pid is not None:
                try:
                    os.kill(w.process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass

    def _join_all(self, outcomes: list[TaskOutcome] | None) -> None:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in self._live():
            while w.process.is_alive() and time.monotonic() < deadline:
                if outcomes is not None:
                    self._drain(w, outcomes)
                w.process.join(timeout=0.05)
            if outcomes is not None:
                self._drain(w, outcomes)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
            if outcomes is not None:
                # Whatever the worker did not finish stays pending: interrupted, not failed.
                for task, attempt, _sent in w.queue:
                    outcomes.append(TaskOutcome(task_id=task.task_id, attempt=attempt,
                                                ok=False, interrupted=True))
                for tid, (_task, staged) in w.awaiting.items():
                    outcomes.append(TaskOutcome(task_id=tid, attempt=staged.attempt, ok=False,
                                                interrupted=True))
        self._slots = [None] * len(self._slots)

    def shutdown(self) -> None:
        self._stop_all(signal_first=False, outcomes=[])
        self._join_all(None)

    def interrupt(self) -> list[TaskOutcome]:
        outcomes: list[TaskOutcome] = []
        self._stop_all(signal_first=True, outcomes=outcomes)
        self._join_all(outcomes)
        return outcomes


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---------------------------------------------------------------------------------------- ray

RAY_MISSING = (
    'the ray backend needs Ray, which is not installed: pip install "disco-data-logger[ray]"'
)


def import_ray() -> Any:
    """Ray is an optional extra: import it or say how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"execution.backend: {RAY_MISSING}") from None
    return ray


class RayBackend(Backend):
    """Ray actors, each owning one shard writer. The output is a path every node shares, or an
    object-store URI (each actor then stages on its own node and publishes: :mod:`.publish`).

    Connects to ``execution.ray_address`` when set, else uses the Ray instance this process is
    already connected to, else starts a local one. Only a Ray connection this backend opened is
    shut down at the end; a cluster it merely joined keeps running.

    ``execution.ray_resources`` places the actors on the nodes that offer those custom
    resources. While no live node offers them (the nodes that did are gone), replacement actors
    are placed anywhere, with a note; an actor that asked for them and is still not placed
    after :data:`PLACEMENT_TIMEOUT` seconds when no live node offers them is replaced the same
    way, and the task queued on it runs there without counting an attempt.
    """

    name = "ray"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ray = import_ray()
        self._started_ray = False
        self._actor_class: Any = None
        self._actors: list[Any] = [None] * self.workers
        self._actor_shards: list[str] = [""] * self.workers
        self._running: dict[Any, tuple[int, Task, int, float]] = {}
        self._startup_deaths = 0
        self._resources: dict[str, float] = dict(self.cfg.execution.ray_resources)
        self._placing: dict[int, tuple[Any, float]] = {}
        """Slots whose actor asked for custom resources and is not known to be placed yet:
        its ``ready`` call and when it was spawned."""
        self._starting: dict[int, Any] = {}
        """With a timeout: slots whose actor is not known to be ready yet, and its ``ready``
        call."""
        self._ready_at: dict[int, float] = {}
        """With a timeout: when each slot's actor was seen ready (its tasks' clocks start)."""
        self._noted_fallback = False

    def start(self) -> None:
        ray = self.ray
        address = self.cfg.execution.ray_address
        if not ray.is_initialized():
            init_kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                init_kwargs["address"] = address
            ray.init(**init_kwargs)
            self._started_ray = True
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ShardActor)
        for slot in range(self.workers):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        shard_id = self._new_shard_id(slot)
        actor_class = self._actor_class
        wanted = bool(self._resources) and self._resources_offered()
        if wanted:
            actor_class = actor_class.options(resources=dict(self._resources))
        elif self._resources and not self._noted_fallback:
            self._noted_fallback = True
            print(f"disco-data-logger: note: no live Ray node offers execution.ray_resources "
                  f"{self._resources}; actors are placed on any node", file=sys.stderr,
                  flush=True)
        actor = actor_class.remote(self.cfg, str(self.output_dir), shard_id, self.fingerprint)
        self._actors[slot] = actor
        self._actor_shards[slot] = shard_id
        self._placing.pop(slot, None)
        self._ready_at.pop(slot, None)
        if wanted or self.timeout is not None:
            ready = actor.ready.remote()  # one call serves placement and the timeout's clock
            if wanted:
                self._placing[slot] = (ready, time.monotonic())
            if self.timeout is not None:
                self._starting[slot] = ready

    def _resources_offered(self) -> bool:
        """Whether a live node of the cluster offers every custom resource actors ask for."""
        try:
            nodes = self.ray.nodes()
        except Exception:  # noqa: BLE001 - an unanswered question is not a reason to stop
            return True
        return any(node.get("Alive") and all(
            float((node.get("Resources") or {}).get(name, 0.0)) >= amount
            for name, amount in self._resources.items()) for node in nodes)

    def _check_placement(self, outcomes: list[TaskOutcome]) -> None:
        """Replace actors that wait for resources no live node offers any more."""
        if not self._placing:
            return
        now = time.monotonic()
        for slot, (ready, spawned) in list(self._placing.items()):
            done, _ = self.ray.wait([ready], timeout=0)
            if done:
                del self._placing[slot]
                continue
            if now - spawned < PLACEMENT_TIMEOUT or self._resources_offered():
                continue
            del self._placing[slot]
            for ref, (held, task, attempt, _started) in list(self._running.items()):
                if held == slot:  # never started: it runs again without counting an attempt
                    del self._running[ref]
                    outcomes.append(TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                                                requeue=True, error="its actor could not be "
                                                "placed (no node offers its resources)"))
            try:
                self.ray.kill(self._actors[slot], no_restart=True)
            except Exception:  # noqa: BLE001 - it may already be gone
                pass
            self._spawn(slot)

    def _busy_slots(self) -> set[int]:
        return {slot for slot, *_ in self._running.values()}

    def free_slots(self) -> int:
        return self.workers - len(self._running)

    def in_flight(self) -> int:
        return len(self._running)

    def submit(self, task: Task, attempt: int) -> None:
        busy = self._busy_slots()
        for slot in range(self.workers):
            if slot not in busy:
                ref = self._actors[slot].run.remote(task, attempt)
                self._running[ref] = (slot, task, attempt, time.monotonic())
                return
        raise RuntimeError("submit() without a free worker")

    def wait(self, timeout: float) -> list[TaskOutcome]:
        ray = self.ray
        outcomes: list[TaskOutcome] = []
        if not self._running:
            return outcomes
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        # Collect every other result that is already there, without waiting again.
        if ready:
            more, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        for ref in ready:
            slot, task, attempt, started = self._running.pop(ref)
            outcomes.append(self._collect(ref, slot, task, attempt, started))
        self._enforce_timeouts(outcomes)
        self._check_placement(outcomes)
        return outcomes

    def _collect(self, ref: Any, slot: int, task: Task, attempt: int,
                 started: float) -> TaskOutcome:
        ray = self.ray
        try:
            outcome: TaskOutcome = ray.get(ref)
            self._startup_deaths = 0
            return outcome
        except ray.exceptions.RayActorError as exc:
            self._replace_actor(slot, startup=_actor_never_started(exc))
            return TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                               shard_id=self._actor_shards[slot], worker_died=True,
                               error=f"Ray actor died: {_first_line(exc)}",
                               seconds=time.monotonic() - started)
        except ray.exceptions.RayError as exc:
            return TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                               shard_id=self._actor_shards[slot],
                               error=f"Ray task failed: {_first_line(exc)}",
                               seconds=time.monotonic() - started)

    def _replace_actor(self, slot: int, startup: bool) -> None:
        if startup:
            self._startup_deaths += 1
            if self._startup_deaths >= MAX_STARTUP_DEATHS:
                raise WorkerStartupError(
                    f"{self._startup_deaths} Ray actors died before finishing a task; giving up")
        try:
            self.ray.kill(self._actors[slot], no_restart=True)
        except Exception:
            pass
        self._spawn(slot)

    def _enforce_timeouts(self, outcomes: list[TaskOutcome]) -> None:
        """As the multiprocessing backend's: a task's clock starts when it was submitted or
        its actor became ready, whichever is later; an actor not ready
        :data:`WORKER_START_SECONDS` after it was given a task is replaced (its task runs
        again without counting an attempt; it counts as dying before its first task)."""
        if self.timeout is None:
            return
        now = time.monotonic()
        for slot, ready in list(self._starting.items()):
            done, _ = self.ray.wait([ready], timeout=0)
            if done:  # ready, or its constructor failed (its task's result will say so)
                del self._starting[slot]
                self._ready_at[slot] = now
        for ref, (slot, task, attempt, sent) in list(self._running.items()):
            ready_at = self._ready_at.get(slot)
            if ready_at is None:
                if now - sent > WORKER_START_SECONDS:
                    del self._running[ref]
                    outcomes.append(TaskOutcome(
                        task_id=task.task_id, attempt=attempt, ok=False, requeue=True,
                        error=f"its actor did not start within {WORKER_START_SECONDS:g} s"))
                    self._replace_actor(slot, startup=True)
                continue
            started = max(sent, ready_at)
            if now - started > self.timeout:
                del self._running[ref]
                self._replace_actor(slot, startup=False)
                outcomes.append(TaskOutcome(
                    task_id=task.task_id, attempt=attempt, ok=False, worker_died=True,
                    shard_id=None, error=f"timed out after {self.timeout:g} s (actor killed)",
                    seconds=now - started))

    def _close_actors(self, grace: float) -> list[TaskOutcome]:
        ray = self.ray
        outcomes: list[TaskOutcome] = []
        # close() queues behind a running task on the same actor, so running tasks finish first.
        closing = {a.close.remote(): slot for slot, a in enumerate(self._actors) if a is not None}
        deadline = time.monotonic() + grace
        pending = list(closing)
        while pending and time.monotonic() < deadline:
            _, pending = ray.wait(pending, num_returns=len(pending),
                                  timeout=max(0.0, deadline - time.monotonic()))
        for ref, (slot, task, attempt, started) in list(self._running.items()):
            done, _ = ray.wait([ref], timeout=0)
            if done:
                outcomes.append(self._collect_quietly(ref, task, attempt, started))
            else:  # still running when the grace ran out: its actor is killed below
                outcomes.append(TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False,
                                            shard_id=self._actor_shards[slot], interrupted=True,
                                            seconds=time.monotonic() - started))
            del self._running[ref]
        # Kill every actor, closed or not, so that its CPU goes back to a cluster that outlives
        # this run; one that did not close in time still has every commit in its journal.
        for actor in self._actors:
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
        self._actors = [None] * self.workers
        return outcomes

    def _collect_quietly(self, ref: Any, task: Task, attempt: int, started: float) -> TaskOutcome:
        try:
            outcome: TaskOutcome = self.ray.get(ref)
            return outcome
        except Exception as exc:
            return TaskOutcome(task_id=task.task_id, attempt=attempt, ok=False, worker_died=True,
                               error=_first_line(exc), seconds=time.monotonic() - started)

    def _disconnect(self) -> None:
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    def shutdown(self) -> None:
        try:
            self._close_actors(STOP_GRACE_SECONDS)
        finally:
            self._disconnect()

    def interrupt(self) -> list[TaskOutcome]:
        try:
            return self._close_actors(STOP_GRACE_SECONDS)
        finally:
            self._disconnect()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _actor_never_started(exc: BaseException) -> bool:
    # An actor whose constructor raised is reported with "__init__" in the error text.
    return "__init__" in str(exc)


BACKENDS: dict[str, Callable[..., Backend]] = {
    "serial": SerialBackend,
    "multiprocessing": MultiprocessingBackend,
    "ray": RayBackend,
}


def make_backend(name: str, cfg: ExperimentConfig, output_dir: Path | str, fingerprint: str | None,
                 workers: int) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"execution.backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    return factory(cfg, output_dir, fingerprint, workers)
