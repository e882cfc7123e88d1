"""Running an experiment on a SLURM cluster: the ``slurm`` backend and ``sbatch`` scripts.

The unit of work on a cluster is a job array task, so the experiment is split into parts
(:mod:`.parts`): array task ``k`` runs part ``k+1`` of N with its own local workers, under its
own part lock and into its own shards of the one output directory, which every node must see
(a shared filesystem). No task is in two parts, and the index keeps exactly one commit of a
task, so the parts together give exactly what one run gives.

Two routes:

* :class:`SlurmLauncher` (``execution.backend: slurm``, through ``submitit``): submits the parts
  that have work left as one job array with the resources of ``execution.slurm``, shows progress
  while it waits, resubmits an array task that ended without finishing its part (cancelled,
  timed out, out of memory, node lost) up to ``execution.slurm.resubmit`` times (the part
  resumes from its journals), and merges. Running the same command again submits only the
  parts with replications left.
* :func:`sbatch_script` (``disco-data-logger sbatch CONFIG --parts N``): a plain script for users
  who submit by hand; each array task runs ``disco-data-logger run CONFIG --part auto/N``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigError, ExperimentLockedError, SlurmSubmitError, UnsafePathError
from .config import ExperimentConfig
from .index import ExperimentIndex, merge
from .layout import SHARDS_DIR, SLURM_DIR, SLURM_LOCK_NAME
from .lock import ExperimentLock
from .names import shell_word
from .parts import Part, part_progress, refuse_stop_rule
from .planning import TaskPlan
from .progress import ProgressBar
from .records import ReplicationStatus, RunRecord, RunState

__all__ = ["SlurmLauncher", "sbatch_script", "import_submitit", "SUBMITIT_MISSING"]

SUBMITIT_MISSING = ("the slurm backend needs submitit, an optional extra: "
                    'pip install "disco-data-logger[slurm]"')

JOBS_FILE = "jobs.json"
"""``<output>/slurm/jobs.json``: the jobs the last launcher submitted (to refuse a second
launch while they still run)."""

_GONE_GRACE = 10.0
"""Seconds a job may be missing from the queue without a result before it counts as ended
(a result file on a shared filesystem may show up a moment after the job left the queue)."""


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"execution.backend: {SUBMITIT_MISSING}") from None
    return submitit


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def job_name(cfg: ExperimentConfig) -> str:
    return cfg.execution.slurm.job_name or f"ddl-{cfg.experiment.name}"


def local_execution(cfg: ExperimentConfig) -> tuple[str, int]:
    """The backend and workers one array task runs its part with."""
    workers = cfg.execution.slurm.part_workers()
    return ("multiprocessing" if workers > 1 else "serial"), workers


# ------------------------------------------------------------------------------ sbatch script


def _sbatch_lines(cfg: ExperimentConfig, parts: int) -> list[str]:
    s = cfg.execution.slurm
    array = f"0-{parts - 1}" + (f"%{s.array_parallelism}" if s.array_parallelism else "")
    options: list[tuple[str, Any]] = [
        ("job-name", job_name(cfg)), ("array", array), ("partition", s.partition),
        ("account", s.account), ("qos", s.qos), ("constraint", s.constraint),
        ("time", s.time_text), ("ntasks", 1), ("cpus-per-task", s.cpus_per_task),
        ("mem", s.mem_text), ("output", f"{job_name(cfg)}-%A_%a.out"),
    ]
    options += sorted(s.options.items())
    lines = []
    for key, value in options:
        if value is None or value is False:
            continue
        lines.append(f"#SBATCH --{key}" if value is True else f"#SBATCH --{key}={value}")
    return lines


def sbatch_script(cfg: ExperimentConfig, config_path: str | os.PathLike[str], overrides: list[str],
                  parts: int, *, python: str | None = None, cwd: Path | None = None,
                  name: str | None = None) -> str:
    """A job array script that runs ``cfg`` as ``parts`` parts (see the module docstring);
    ``name`` is the script's file name, as its comments show it."""
    if not 1 <= parts <= 100_000:
        raise ConfigError(f"--parts {parts}: give a number of parts between 1 and 100000")
    refuse_stop_rule(cfg, "an sbatch script (one part per array task)")
    s = cfg.execution.slurm
    here = (cwd or Path.cwd()).absolute()
    config = Path(config_path).absolute()
    output = Path(cfg.output) if Path(cfg.output).is_absolute() else here / cfg.output
    backend, workers = local_execution(cfg)
    run_overrides = [o for o in overrides if not o.startswith(("execution.backend=",
                                                               "execution.workers="))]
    python_cmd = python or s.python or shell_word(sys.executable)
    exp = cfg.experiment
    run = " ".join([python_cmd, "-m", "disco_data_logger", "run", shell_word(str(config)),
                    *(shell_word(o) for o in run_overrides), "--part", f"auto/{parts}",
                    "--backend", backend, "--workers", str(workers), "--no-progress"])
    out = shell_word(str(output))
    job = job_name(cfg)
    lines = [
        "#!/bin/bash",
        f"# {exp.organisation}/{exp.model}/{exp.name} as a SLURM job array of {parts} parts "
        f"(disco-data-logger {__version__}).",
        "#",
        "#   sbatch THIS_FILE                      submit every part (array tasks "
        f"0..{parts - 1})",
        f"#   disco-data-logger inspect {out}",
        "#                                         progress of every part and of the whole",
        "#",
        f"# Array task k runs part k+1 of {parts} into {out} with {workers} worker "
        f"process(es), under its own",
        "# lock (run.part-K-of-N.lock) and into its own shards. No replication is in two "
        "parts, and the",
        "# experiment index keeps exactly one commit of every replication, so the parts give "
        "what one run",
        "# gives. A part that failed, timed out or was cancelled resumes where it stopped "
        "when its array",
        "# task is submitted again, alone; e.g. part 3:",
        "#   sbatch --array=2 THIS_FILE",
        "# Every part merges the index when it ends, so it is complete once the last part "
        "ended. To merge",
        f"# by hand (harmless at any time): disco-data-logger merge {out}",
        f"# SLURM's output of each task: {job}-JOBID_TASK.out in the directory sbatch was "
        "run from.",
        *_sbatch_lines(cfg, parts),
        "",
        "set -euo pipefail",
        f"cd {shell_word(str(here))}",
    ]
    if s.setup:
        lines += ["# execution.slurm.setup", *s.setup]
    lines += [f"exec {run}", ""]
    text = "\n".join(lines)
    return text.replace("THIS_FILE", shell_word(name)) if name else text


# ---------------------------------------------------------------------------- the launcher


@dataclass
class _PartJob:
    part: Part
    job: Any
    submissions: int = 1
    gone_since: float | None = None
    outcome: dict[str, Any] | None = None
    ended: str | None = None
    """Why the job ended without finishing its part (None while it runs or when it finished)."""

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)


class SlurmLauncher:
    """The ``slurm`` backend: the coordinator's parts as one SLURM job array (module docstring).

    It holds ``run.slurm.lock`` while it waits (one launcher per experiment), and the
    whole-experiment lock only while it prepares the output, so that the array's parts can take
    their part locks. ``coordinator`` is the :class:`~.coordinator.Coordinator` that was asked
    to run; each array task runs its part with an instance of the same class, and the result is
    a ``result_type`` (its ``RunResult``); ``git_commit`` says which commit the run starts from.
    This module imports neither: the coordinator hands them in.
    """

    def __init__(self, coordinator: Any, result_type: type, git_commit: Callable[[], Any]
                 ) -> None:
        self.c = coordinator
        self.result_type = result_type
        self.git_commit = git_commit
        self.cfg: ExperimentConfig = coordinator.cfg
        self.settings = self.cfg.execution.slurm
        self.count = self.settings.part_count(self.cfg.execution)
        self.output = coordinator.output.absolute()
        self.plan = TaskPlan(self.cfg)

    # -- helpers -----------------------------------------------------------------------------

    def _run_info(self, run_id: str) -> dict[str, Any]:
        from .config import config_snapshot

        execution = self.cfg.execution
        backend, workers = local_execution(self.cfg)
        record = RunRecord(run_id=run_id, started=_now_iso(), backend="slurm",
                           parts=self.count, part_backend=backend, workers=workers,
                           retries=execution.retries, max_failures=execution.max_failures,
                           pid=os.getpid(), jobs={})
        return {
            "plan": self.plan.summary(),
            "experiment": {"organisation": self.cfg.experiment.organisation,
                           "model": self.cfg.experiment.model, "name": self.cfg.experiment.name},
            "fingerprint": self.c.fingerprint,
            "config": config_snapshot(self.cfg),
            "overrides": self.c.overrides,
            "config_path": self.c.config_path,
            "git_commit": self.git_commit(),
            "run": record,
            "state": RunState.RUNNING,
            "failed": {},
            "attempts": {},
            "tracebacks": {},
        }

    def _job_cfg(self) -> ExperimentConfig:
        backend, workers = local_execution(self.cfg)
        execution = self.cfg.execution.model_copy(update={"backend": backend,
                                                          "workers": workers})
        return self.cfg.model_copy(update={"output": self.output, "execution": execution})

    def _slurm_dir(self) -> Path:
        path = self.output / SLURM_DIR
        if path.is_symlink():
            raise UnsafePathError(f"{path} is a symbolic link; the slurm backend's job files "
                                  "must be inside the output directory (remove the link)")
        path.mkdir(exist_ok=True)
        return path

    def _queued(self, job_ids: list[str]) -> set[str] | None:
        """The ids (``123_4``) of these jobs that SLURM still has queued or running; None when
        squeue could not be asked (then nothing counts as gone)."""
        if not job_ids:
            return set()
        mains = sorted({j.split("_")[0] for j in job_ids})
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(mains)],
                                 capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            # squeue refuses ids it no longer knows ("Invalid job id"): they all left.
            return set() if "Invalid job id" in out.stderr else None
        return {line.strip() for line in out.stdout.splitlines() if line.strip()}

    def _refuse_earlier_jobs(self, folder: Path) -> None:
        try:
            doc = json.loads((folder / JOBS_FILE).read_bytes())
            earlier = [str(j) for j in doc.get("jobs", {}).values()]
        except (OSError, ValueError, AttributeError):
            return
        alive = sorted(self._queued(earlier) or ())
        if alive:
            raise ExperimentLockedError(
                f"{self.output}: jobs of an earlier launch are still queued or running "
                f"({', '.join(alive[:5])}{', ...' if len(alive) > 5 else ''}); wait for them "
                f"or cancel them (scancel {alive[0].split('_')[0]}), then run again")

    def _write_jobs(self, folder: Path, jobs: dict[int, _PartJob], run_id: str) -> None:
        from .manifest import atomic_write_json

        atomic_write_json(folder / JOBS_FILE, {
            "run_id": run_id, "parts": self.count,
            "jobs": {str(p.part): p.job_id for p in jobs.values()}})

    def _progress(self, index: ExperimentIndex) -> dict[int, dict[str, Any]]:
        rows = part_progress(index.replications, self.count)
        return {i + 1: row for i, row in enumerate(rows)}

    def _quiet_merge(self) -> ExperimentIndex:
        # Problems of a shard are repeated by every merge; the final merge says them once.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return merge(self.output)

    # -- run ---------------------------------------------------------------------------------

    def run(self) -> Any:
        t0 = time.perf_counter()
        if self.c.part is not None:
            raise ConfigError(f"--part {self.c.part} cannot be used with execution.backend: "
                              "slurm, which runs every part itself; give a local backend "
                              "(--backend multiprocessing) to run one part")
        submitit = import_submitit()
        if shutil.which("sbatch") is None or shutil.which("squeue") is None:
            raise ConfigError("execution.backend: slurm: sbatch and squeue are not on this "
                              "machine's PATH; run on a machine of the cluster (a login node), "
                              "or write a job script with `disco-data-logger sbatch`")
        self.output.mkdir(parents=True, exist_ok=True)
        with ExperimentLock(self.output, name=SLURM_LOCK_NAME) as launcher:
            for note in launcher.notes:
                self.c._note(note)
            folder = self._slurm_dir()
            self._refuse_earlier_jobs(folder)
            with ExperimentLock(self.output) as whole:
                for note in whole.notes:
                    self.c._note(note)
                self.c._prepare_output()
                (self.output / SHARDS_DIR).mkdir(exist_ok=True)
                folder = self._slurm_dir()  # --force may have replaced the output
                info = self._run_info(launcher.run_id)
                start = merge(self.output, run=info)
            progress = self._progress(start)
            resumed = sum(row["committed"] for row in progress.values())
            del start
            result = self.result_type(output=self.output, state=RunState.RUNNING,
                                      planned=len(self.plan), resumed=resumed, committed=0,
                                      notes=self.c.notes)
            todo = [Part(i, self.count) for i, row in progress.items() if row["pending"]]
            record: RunRecord = info["run"]
            restore = self.c._catch_sigterm()  # SIGTERM: cancel the array like Ctrl-C
            try:
                if todo:
                    self._wait(submitit, folder, todo, info, result, progress)
                result.state = RunState.COMPLETE
            except KeyboardInterrupt:
                result.state = RunState.INTERRUPTED
            except BaseException:
                result.state = RunState.ERROR
                raise
            finally:
                restore()
                # The parts' own merges wrote what failed; carry it into this run's record.
                index = self._quiet_merge()
                reps = index.replications
                failed_rows = reps.filter(_status_is(reps, ReplicationStatus.FAILED)).to_pylist()
                info["failed"] = {r["task_id"]: r.get("error") or "failed" for r in failed_rows}
                info["tracebacks"] = {r["task_id"]: r["traceback"] for r in failed_rows
                                      if r.get("traceback")}
                committed = _count_status(reps, ReplicationStatus.COMMITTED)
                result.committed = max(0, committed - resumed)
                result.failed = dict(info["failed"])
                if result.state == RunState.COMPLETE and (result.failed or result.pending):
                    result.state = RunState.FAILED
                if result.stopped_early is None and record.stopped_early:
                    result.stopped_early = record.stopped_early
                result.wall_seconds = time.perf_counter() - t0
                record.finish(result.state, finished=_now_iso(),
                              wall_seconds=result.wall_seconds, committed=result.committed,
                              failed=len(result.failed), resumed=resumed)
                if self.c.notes:
                    record.notes = list(self.c.notes)
                info["state"] = result.state
                result.index = merge(self.output, run=info)
        return result

    def _submit(self, submitit: Any, folder: Path, parts: list[Part]) -> list[Any]:
        s = self.settings
        executor = submitit.SlurmExecutor(folder=str(folder / "%j"),
                                          max_num_timeout=s.resubmit, python=s.python)
        extra: dict[str, Any] = {key: value for key, value in (
            ("mem", s.mem_text), ("account", s.account), ("qos", s.qos),
            ("constraint", s.constraint)) if value is not None}
        extra.update(s.options)
        params: dict[str, Any] = {
            "job_name": job_name(self.cfg), "time": s.time, "cpus_per_task": s.cpus_per_task,
            "ntasks_per_node": 1, "array_parallelism": s.array_parallelism or 100_000,
            "additional_parameters": extra}
        if s.partition is not None:
            params["partition"] = s.partition
        if s.setup:
            params["setup"] = list(s.setup)
        executor.update_parameters(**params)
        from .slurm_job import PartJob

        job_cfg = self._job_cfg()
        jobs: list[Any] = []
        config_path = str(Path(self.c.config_path).absolute()) if self.c.config_path else None
        try:
            # submitit prints sbatch's complaint itself; it is in the one-line error instead
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                for part in parts:
                    jobs.append(executor.submit(PartJob(type(self.c)), job_cfg, str(part),
                                                list(self.c.overrides), config_path))
        except Exception as exc:  # submitit reports sbatch's refusal as its own error types
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            raise SlurmSubmitError(
                f"sbatch refused the job of {len(parts)} part(s): "
                f"{lines[0] if lines else type(exc).__name__}; check execution.slurm "
                "(partition, account, qos, time, mem, options)") from exc
        return jobs

    def _wait(self, submitit: Any, folder: Path, todo: list[Part], info: dict[str, Any],
              result: Any, progress: dict[int, dict[str, Any]]) -> None:
        record: RunRecord = info["run"]
        jobs: dict[int, _PartJob] = {}
        for part, job in zip(todo, self._submit(submitit, folder, todo), strict=True):
            jobs[part.index] = _PartJob(part, job)
        record.jobs = {str(p.part): p.job_id for p in jobs.values()}
        self._write_jobs(folder, jobs, record.run_id)
        first = jobs[todo[0].index].job_id.split("_")[0]
        self.c._note(f"submitted {len(todo)} part(s) of {self.count} as SLURM job {first} "
                     f"({', '.join(f'{p.part}: {p.job_id}' for p in list(jobs.values())[:4])}"
                     f"{', ...' if len(jobs) > 4 else ''}); logs in {folder}")
        bar = ProgressBar(len(self.plan), skipped=result.resumed,
                          stream=self.c.progress_stream, enabled=self.c.progress_enabled)
        poll = self.settings.poll_seconds
        merge_every = poll
        last_merge = time.monotonic()
        try:
            bar.update(force=True)
            while any(p.outcome is None and p.ended is None for p in jobs.values()):
                time.sleep(poll)
                if time.monotonic() - last_merge >= merge_every:
                    t = time.monotonic()
                    progress = self._progress(self._quiet_merge())
                    last_merge = time.monotonic()
                    # Progress merges take at most a tenth of the time.
                    merge_every = max(poll, 10 * (last_merge - t))
                    bar.done = max(0, sum(r["committed"] for r in progress.values())
                                   - result.resumed)
                self._check_jobs(submitit, folder, jobs, info, progress)
                bar.failed = sum(1 for p in jobs.values() if p.ended is not None)
                bar.update()
            progress = self._progress(self._quiet_merge())
            bar.done = max(0, sum(r["committed"] for r in progress.values()) - result.resumed)
        except KeyboardInterrupt:
            alive = [p.job_id for p in jobs.values() if p.outcome is None and p.ended is None]
            if alive:
                self.c._note(f"interrupted: cancelling {len(alive)} array task(s) "
                             f"({', '.join(alive[:4])}{', ...' if len(alive) > 4 else ''}); "
                             "each part stops its workers and merges what it committed")
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(["scancel", *alive], capture_output=True, timeout=60,
                                   check=False)
                self._wait_gone(alive)
            raise
        finally:
            bar.finish()
        for p in jobs.values():
            if p.ended is not None:
                self.c._note(f"part {p.part} did not finish: {p.ended}")
            elif p.outcome is not None and p.outcome.get("stopped_early"):
                if record.stopped_early is None:
                    record.stopped_early = f"part {p.part}: {p.outcome['stopped_early']}"

    def _wait_gone(self, job_ids: list[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queued = self._queued(job_ids)
            if queued is not None and not queued & set(job_ids):
                return
            time.sleep(1.0)

    def _check_jobs(self, submitit: Any, folder: Path, jobs: dict[int, _PartJob],
                    info: dict[str, Any], progress: dict[int, dict[str, Any]]) -> None:
        active = [p for p in jobs.values() if p.outcome is None and p.ended is None]
        queued = self._queued([p.job_id for p in active])
        now = time.monotonic()
        for p in active:
            why: str | None = None
            if p.job.paths.result_pickle.exists():
                try:
                    p.outcome = p.job.result()
                except Exception as exc:  # the job's own error, as submitit reports it
                    lines = [x for x in str(exc).splitlines() if x.strip() and
                             not x.startswith("-")]
                    why = f"job {p.job_id} failed: {lines[-1].strip() if lines else exc}"
                    p.outcome = None
                if p.outcome is not None and p.outcome.get("state") != RunState.INTERRUPTED:
                    continue
                if p.outcome is not None:
                    why = f"job {p.job_id} was stopped (SIGTERM: cancelled or preempted)"
                    p.outcome = None
            elif queued is not None and p.job_id not in queued:
                if p.gone_since is None:
                    p.gone_since = now
                if now - p.gone_since < max(_GONE_GRACE, 3 * self.settings.poll_seconds):
                    continue
                why = (f"job {p.job_id} left the queue without a result (cancelled, timed "
                       "out, out of memory or its node failed)")
            else:
                p.gone_since = None
                continue
            self._ended(submitit, folder, p, why or "ended", info, jobs)

    def _ended(self, submitit: Any, folder: Path, p: _PartJob, why: str, info: dict[str, Any],
               jobs: dict[int, _PartJob]) -> None:
        """A part's job ended without finishing: resubmit it while replications are left."""
        progress = self._progress(self._quiet_merge())
        if progress[p.part.index]["pending"] == 0:
            p.outcome = {"state": RunState.COMPLETE.value, "part": str(p.part)}
            return
        if p.submissions > self.settings.resubmit:
            p.ended = f"{why}; resubmitted {p.submissions - 1} time(s) already " \
                      "(execution.slurm.resubmit); run the same command again to resume it"
            return
        (job,) = self._submit(submitit, folder, [p.part])
        self.c._note(f"part {p.part}: {why}; resubmitted as job {job.job_id} "
                     f"({p.submissions} of {self.settings.resubmit}); it resumes where it "
                     "stopped")
        p.job, p.submissions, p.gone_since = job, p.submissions + 1, None
        record: RunRecord = info["run"]
        record.jobs = {**(record.jobs or {}), str(p.part): p.job_id}
        self._write_jobs(folder, jobs, record.run_id)


def _status_is(table: Any, status: str) -> Any:
    import pyarrow.compute as pc

    return pc.equal(table["status"], status).fill_null(False)


def _count_status(table: Any, status: str) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(_status_is(table, status).cast("int64")).as_py() or 0)
