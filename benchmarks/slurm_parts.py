"""The demo as parts: one 2-worker run against a SLURM job array of 4 parts (and 4 local parts).

``python -m benchmarks.slurm_parts [--replications 16] [--reps 3]`` starts the single-node test
cluster of ``tests/slurm_cluster.py`` (root, Debian's slurm-wlm and munge), then runs
``configs/demo.yaml`` with ``--reps`` repetitions of, in turn:

- ``one-run``: ``disco-data-logger run`` with the multiprocessing backend and 2 workers;
- ``slurm-4-parts``: ``execution.backend: slurm`` with 4 parts of 1 worker each (one array task
  per part, ``cpus_per_task: 1``), i.e. submit, wait, merge;
- ``local-4-parts``: 4 ``run --part I/4`` processes (serial) started at once on this machine.

Each is timed end to end (the command's wall time, interpreter start-up included) into a fresh
output; outputs are checked to hold every replication. Medians go to ``--out`` (default
``benchmarks/results/slurm-parts``) as ``results.json`` and ``results.md``. The machine has as
many CPUs as it has: on 2 CPUs, 4 parts of 1 worker oversubscribe it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEMO = ROOT / "configs" / "demo.yaml"
DEFAULT_OUT = HERE / "results" / "slurm-parts"
VARIANTS = ("one-run", "slurm-4-parts", "local-4-parts")


def _cluster(root: Path) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from slurm_cluster import SlurmCluster, unavailable

    why = unavailable()
    if why is not None:
        raise SystemExit(f"benchmarks.slurm_parts: {why}")
    return SlurmCluster(root).start()


def _run(variant: str, output: Path, replications: int, env: dict[str, str]) -> float:
    base = [sys.executable, "-m", "disco_data_logger", "run", str(DEMO),
            f"replications={replications}", f"output={output}", "--no-progress"]
    t0 = time.perf_counter()
    if variant == "one-run":
        procs = [subprocess.Popen([*base, "--backend", "multiprocessing", "--workers", "2"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    elif variant == "slurm-4-parts":
        procs = [subprocess.Popen([*base, "--backend", "slurm", "execution.slurm.parts=4",
                                   "execution.slurm.cpus_per_task=1",
                                   "execution.slurm.poll_seconds=0.5"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    else:
        procs = [subprocess.Popen([*base, "--backend", "serial", "--part", f"{i}/4"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(1, 5)]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"{variant} failed: {err.decode(errors='replace')}")
    seconds = time.perf_counter() - t0
    info = json.loads((output / "experiment.json").read_text())
    points = info["plan"]["points"]
    if info["totals"]["committed"] != points * replications:
        raise SystemExit(f"{variant}: {info['totals']} is not every replication")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slurm_parts",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every variant")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ddl-slurm-bench-"))
    cluster = _cluster(work / "cluster")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        env = cluster.env
        for rep in range(args.reps):
            for variant in VARIANTS:  # side by side, in turn
                out = work / f"{variant}-{rep}"
                times[variant].append(_run(variant, out, args.replications, env))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    medians = {v: statistics.median(t) for v, t in times.items()}
    doc = {
        "replications": args.replications, "tasks": 2 * args.replications, "reps": args.reps,
        "cpus": os.cpu_count(), "platform": platform.platform(), "seconds": times,
        "median_seconds": medians,
        "ratio_to_one_run": {v: medians[v] / medians["one-run"] for v in VARIANTS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# The demo ({doc['tasks']} tasks) as parts, median of {args.reps}",
             "", "| variant | median s | runs (s) | x one run |", "|---|---:|---|---:|"]
    for v in VARIANTS:
        lines.append(f"| {v} | {medians[v]:.1f} | {', '.join(f'{t:.1f}' for t in times[v])} | "
                     f"{doc['ratio_to_one_run'][v]:.2f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
