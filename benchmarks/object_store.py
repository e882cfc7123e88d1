"""The demo into object storage against a local directory, and what crosses the network.

``python -m benchmarks.object_store [--reps 3] [--backends multiprocessing,ray]`` runs the
default demo (configs/demo.yaml: 2 points x 16 replications on 2 workers) with the command line,
in a fresh process each time, into a local directory and into ``s3://`` on moto's S3 server on
127.0.0.1 (tests/s3_server.py) behind a counting proxy, alternating the two so that both see the
same load, and reports per backend: the median wall time of each (``run`` command, interpreter
start-up included), their ratio, and the requests and bytes the run sent to and received from
the store per replication (the proxy's counts: headers and bodies). A loopback server has no
network latency: the ratio is the service's own overhead of staging, publishing and reading back,
not a cloud's round trips. Results go to ``--out`` (default ``benchmarks/results/object-store``):
``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEMO = REPO / "configs" / "demo.yaml"


def _run(output: str, backend: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(DEMO),
                           f"output={output}", f"execution.backend={backend}",
                           "--no-progress"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{backend} into {output} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from tests.s3_server import S3Proxy, S3Server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default="multiprocessing,ray")
    parser.add_argument("--out", default=str(HERE / "results" / "object-store"))
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    tasks = 32
    work = Path(tempfile.mkdtemp(prefix="ddl-bench-os-"))
    results: dict[str, Any] = {"tasks": tasks, "reps": args.reps, "backends": {}}
    try:
        with S3Server() as server, S3Proxy(server.port) as proxy:
            env = {**os.environ, **S3Server.environment(proxy.endpoint),
                   "XDG_CACHE_HOME": str(work / "cache"), "RAY_AUTH_MODE": "disabled",
                   "RAY_USAGE_STATS_ENABLED": "0"}
            for backend in backends:
                local: list[float] = []
                store: list[float] = []
                traffic: list[dict[str, Any]] = []
                for rep in range(args.reps):
                    out = work / f"{backend}-{rep}"
                    local.append(_run(str(out), backend, env))
                    shutil.rmtree(out)
                    bucket = f"bench-{backend[:5]}-{rep}"
                    server.create_bucket(bucket)
                    proxy.reset()
                    store.append(_run(f"s3://{bucket}/demo", backend, env))
                    stats = proxy.stats
                    traffic.append({"requests": stats.requests, "bytes_up": stats.bytes_up,
                                    "bytes_down": stats.bytes_down,
                                    "by_method": dict(stats.by_method)})
                    shutil.rmtree(work / "cache", ignore_errors=True)  # every run reads afresh
                stored = server.objects(f"bench-{backend[:5]}-0/demo")
                segment_bytes = sum(v for k, v in stored.items() if "/segments/" in k)
                med = {k: statistics.median(t[k] for t in traffic)
                       for k in ("requests", "bytes_up", "bytes_down")}
                results["backends"][backend] = {
                    "local_seconds": local, "s3_seconds": store,
                    "local_median": statistics.median(local),
                    "s3_median": statistics.median(store),
                    "ratio": statistics.median(store) / statistics.median(local),
                    "traffic": traffic,
                    "per_replication": {k: v / tasks for k, v in med.items()},
                    "segment_bytes_per_replication": segment_bytes / tasks,
                    "objects": len(stored),
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| backend | local dir (s) | s3:// (s) | ratio | requests / rep | sent / rep | "
             "received / rep | segment bytes / rep | objects |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for backend, r in results["backends"].items():
        p = r["per_replication"]
        lines.append(f"| {backend} | {r['local_median']:.1f} | {r['s3_median']:.1f} | "
                     f"{r['ratio']:.2f} | {p['requests']:.1f} | {p['bytes_up'] / 1024:.0f} KiB | "
                     f"{p['bytes_down'] / 1024:.0f} KiB | "
                     f"{r['segment_bytes_per_replication'] / 1024:.0f} KiB | {r['objects']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
