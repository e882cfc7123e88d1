"""Scale benchmark: experiments of many tiny replications (the shape of issue 8).

``python -m benchmarks.scale --quick`` (1,000 and 10,000 replications, under 2 minutes) or
``--full`` (adds 100,000). Each replication registers 10 plain streams and records 20 vectors of 8
non-zeros on each (:mod:`benchmarks.scale_model`); 2 workers, multiprocessing backend. For each
size it measures, each in a fresh process so that nothing is cached in Python:

- ``run``: wall time of the coordinator (plan, run, merge), replications per second, the
  coordinator's peak RSS (``ru_maxrss`` of its own process) and the workers' peak RSS (sampled
  ``VmHWM``);
- the output directory: files, bytes (sum of file sizes) and disk used (``du -s``), against one
  ``DataLogger`` holding the same records with the 10 streams registered once (the baseline);
- ``merge`` with nothing new, ``inspect`` (the summary the command prints),
  ``Experiment.open`` plus ``exp.replications``, and a query of one stream name out of ten
  (``select("stream=s000")``): median wall time of ``--reps`` fresh processes, timing only the
  call (interpreter start-up and imports excluded);
- the model's own cost per replication without any logging.

Results go to ``--out`` (default ``benchmarks/results/scale-<mode>``): ``results.json``,
``results.md`` and ``scale.png`` (when matplotlib is installed). ``--label`` names the code
measured (``before``/``after``); ``--compare OTHER/results.json`` adds a before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results"
STREAMS = 10
RECORDS = 20
NNZ = 8
WORKERS = 2
SEED = 4242
MODES = {"smoke": [200], "quick": [1_000, 10_000], "full": [1_000, 10_000, 100_000]}
TIMED_OPS = ("merge", "inspect", "open", "query")


def config(output: Path, replications: int) -> dict[str, Any]:
    return {
        "experiment": {"organisation": "bench", "model": "scale", "name": "scale"},
        "output": str(output),
        "replications": replications,
        "seed": SEED,
        "entry_point": "benchmarks.scale_model:run",
        "duration": 1.0,
        "parameters": {"records": RECORDS, "nnz": NNZ},
        "execution": {"backend": "multiprocessing", "workers": WORKERS, "retries": 0},
        "streams": [{"name": f"s{s:03d}", "epoch_scale": 1e-3, "value_scale": 0.01}
                    for s in range(STREAMS)],
    }


# ----------------------------------------------------------------------------- child processes


def _peak_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _children_hwm(pid: int) -> dict[int, int]:
    """VmHWM (peak RSS, kB) of every child process of ``pid``."""
    out: dict[int, int] = {}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[int(child)] = int(line.split()[1])
        except OSError:
            continue
    return out


def child_run(cfg_path: str) -> dict[str, Any]:
    from disco_data_logger.sharding.config import load_config
    from disco_data_logger.sharding.coordinator import Coordinator

    workers: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            for pid, kb in _children_hwm(os.getpid()).items():
                workers[pid] = max(workers.get(pid, 0), kb)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cfg = load_config(cfg_path)
    before = _peak_rss_kb()
    t0 = time.perf_counter()
    result = Coordinator(cfg, progress=False).run()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if result.state != "complete":
        raise SystemExit(f"run ended {result.state}: {dict(list(result.failed.items())[:3])}")
    return {"wall_seconds": wall, "committed": result.committed,
            "replications_per_s": result.committed / wall,
            "coordinator_peak_rss_kb": _peak_rss_kb(), "coordinator_rss_before_run_kb": before,
            "worker_peak_rss_kb": max(workers.values()) if workers else None}


def child_op(op: str, out: str) -> dict[str, Any]:
    path = Path(out)
    if op == "merge":
        from disco_data_logger.sharding.index import merge

        t0 = time.perf_counter()
        merge(path)
        return {"seconds": time.perf_counter() - t0}
    if op == "inspect":
        from disco_data_logger.cli import inspect_summary

        t0 = time.perf_counter()
        summary = inspect_summary(path)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "committed": summary["replications"]["committed"]}
    from disco_data_logger.sharding.experiment import Experiment

    if op == "open":
        t0 = time.perf_counter()
        exp = Experiment.open(path)
        n = exp.replications.num_rows
        return {"seconds": time.perf_counter() - t0, "replications": n}
    if op == "query":
        exp = Experiment.open(path)
        t0 = time.perf_counter()
        table = exp.select("stream=s000")
        return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}
    raise SystemExit(f"unknown op {op}")


def child_baseline(out: str, replications: int) -> dict[str, Any]:
    """One DataLogger, the 10 streams registered once, every replication's records in turn."""
    import numpy as np

    from benchmarks.scale_model import EPOCH_SCALE, VALUE_SCALE, records_of
    from disco_data_logger import DataLogger

    t0 = time.perf_counter()
    with DataLogger(out) as dl:
        sids = [dl.register_stream({"organisation": "bench", "model": "scale",
                                    "experiment": "scale", "stream": f"s{s:03d}"},
                                   epoch_scale=EPOCH_SCALE, value_scale=VALUE_SCALE)
                for s in range(STREAMS)]
        record = dl.record
        for r in range(replications):
            rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(0, r)))
            for s, epoch, idx, vals in records_of(rng, STREAMS, RECORDS, NNZ):
                record(sids[s], epoch, idx, vals)
    return {"seconds": time.perf_counter() - t0}


def child_model(replications: int) -> dict[str, Any]:
    """The model's own cost: the same records generated and dropped."""
    import numpy as np

    from benchmarks.scale_model import records_of

    t0 = time.perf_counter()
    for r in range(replications):
        rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(0, r)))
        for _ in records_of(rng, STREAMS, RECORDS, NNZ):
            pass
    return {"ms_per_replication": (time.perf_counter() - t0) * 1e3 / replications}


def _child_main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "run":
        result = child_run(args[0])
    elif kind == "op":
        result = child_op(args[0], args[1])
    elif kind == "baseline":
        result = child_baseline(args[0], int(args[1]))
    elif kind == "model":
        result = child_model(int(args[0]))
    else:
        raise SystemExit(f"unknown child {kind}")
    print("RESULT " + json.dumps(result))


def _child(*args: str, timeout: float = 7200) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# ------------------------------------------------------------------------------------ measuring


def tree_size(path: Path) -> dict[str, int]:
    files = 0
    size = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    du = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True,
                        text=True, check=True)
    return {"files": files, "bytes": size, "du_bytes": int(du.stdout.split()[0])}


def shard_files(path: Path) -> dict[str, int]:
    shards = [p for p in (path / "shards").iterdir() if p.is_dir()]
    per = [sum(1 for _ in os.scandir(p)) for p in shards]
    nested = sum(len(files) for p in shards for _, _, files in os.walk(p)) - sum(per)
    return {"shards": len(shards), "max_entries_per_shard": max(per, default=0),
            "files_below_shard_subfolders": nested}


def measure(n: int, work: Path, reps: int, log: Any) -> dict[str, Any]:
    out = work / f"exp-{n}"
    base = work / f"base-{n}"
    for p in (out, base):
        shutil.rmtree(p, ignore_errors=True)
    cfg_path = work / f"scale-{n}.json"
    cfg_path.write_text(json.dumps(config(out, n)))  # JSON is YAML
    row: dict[str, Any] = {"replications": n}
    log(f"[{n:,}] run ...")
    row["run"] = _child("run", str(cfg_path))
    log(f"[{n:,}] run {row['run']['wall_seconds']:.1f} s, "
        f"{row['run']['replications_per_s']:.0f} replications/s")
    row["output"] = tree_size(out)
    row["output"].update(shard_files(out))
    for op in TIMED_OPS:
        runs = [_child("op", op, str(out)) for _ in range(reps)]
        row[op] = {"seconds": statistics.median(r["seconds"] for r in runs),
                   "all": [r["seconds"] for r in runs],
                   **{k: v for k, v in runs[0].items() if k != "seconds"}}
        log(f"[{n:,}] {op}: {row[op]['seconds']:.3f} s")
    row["output_after_ops"] = tree_size(out)
    log(f"[{n:,}] baseline DataLogger ...")
    row["baseline"] = _child("baseline", str(base), str(n))
    row["baseline"].update(tree_size(base))
    row["bytes_ratio"] = row["output"]["bytes"] / row["baseline"]["bytes"]
    row["du_ratio"] = row["output"]["du_bytes"] / row["baseline"]["du_bytes"]
    shutil.rmtree(base, ignore_errors=True)
    return row


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def _mib(x: float) -> str:
    return f"{x / 2**20:,.1f} MiB"


def table_rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for r in doc["rows"]:
        o = r["output"]
        rows.append((
            _fmt_int(r["replications"]),
            _fmt_int(o["files"]),
            f"{_mib(o['bytes'])} ({r['bytes_ratio']:.2f}×)",
            f"{_mib(o['du_bytes'])} ({r['du_ratio']:.2f}×)",
            _mib(r["run"]["coordinator_peak_rss_kb"] * 1024),
            f"{r['run']['wall_seconds']:.1f} s",
            _fmt_int(r["run"]["replications_per_s"]),
            *(f"{r[op]['seconds']:.3f} s" for op in TIMED_OPS),
        ))
    return rows


HEADER = ("replications", "files", "bytes (× baseline)", "du -s (× baseline)",
          "coordinator peak RSS", "run", "replications/s", "merge (nothing new)", "inspect",
          "open + replications", "query one stream")


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Scale benchmark ({doc['meta']['label']}, {doc['meta']['mode']})", "",
             f"Machine: {doc['meta']['machine']}; load average at start "
             f"{doc['meta']['load_start']}, at end {doc['meta']['load_end']}.", "",
             f"Shape: {STREAMS} streams × {RECORDS} records × nnz {NNZ} per replication, "
             f"{WORKERS} workers (multiprocessing). Model alone: "
             f"{doc['model_ms_per_replication']:.2f} ms per replication.", "",
             "| " + " | ".join(HEADER) + " |",
             "| " + " | ".join("---:" for _ in HEADER) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(doc)]
    lines += ["", "Baseline: one DataLogger with the same records, the streams registered once:"]
    for r in doc["rows"]:
        b = r["baseline"]
        lines.append(f"- {r['replications']:,}: {b['files']} files, {_mib(b['bytes'])}, "
                     f"du {_mib(b['du_bytes'])}; experiment shards: {r['output']['shards']}, "
                     f"at most {r['output']['max_entries_per_shard']} entries per shard "
                     f"directory, {r['output']['files_below_shard_subfolders']} files in "
                     f"shard subfolders; worker peak RSS "
                     f"{_mib((r['run']['worker_peak_rss_kb'] or 0) * 1024)}")
    return "\n".join(lines) + "\n"


def compare_markdown(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = ["| replications | measure | before | after |", "| ---: | --- | ---: | ---: |"]
    b_rows = {r["replications"]: r for r in before["rows"]}
    for r in after["rows"]:
        b = b_rows.get(r["replications"])
        if b is None:
            continue
        pairs = [
            ("files", _fmt_int(b["output"]["files"]), _fmt_int(r["output"]["files"])),
            ("bytes (× baseline)", f"{_mib(b['output']['bytes'])} ({b['bytes_ratio']:.2f}×)",
             f"{_mib(r['output']['bytes'])} ({r['bytes_ratio']:.2f}×)"),
            ("du -s (× baseline)", f"{_mib(b['output']['du_bytes'])} ({b['du_ratio']:.2f}×)",
             f"{_mib(r['output']['du_bytes'])} ({r['du_ratio']:.2f}×)"),
            ("coordinator peak RSS", _mib(b["run"]["coordinator_peak_rss_kb"] * 1024),
             _mib(r["run"]["coordinator_peak_rss_kb"] * 1024)),
            ("run", f"{b['run']['wall_seconds']:.1f} s", f"{r['run']['wall_seconds']:.1f} s"),
            ("replications/s", _fmt_int(b["run"]["replications_per_s"]),
             _fmt_int(r["run"]["replications_per_s"])),
        ]
        pairs += [(op, f"{b[op]['seconds']:.3f} s", f"{r[op]['seconds']:.3f} s")
                  for op in TIMED_OPS]
        for name, x, y in pairs:
            lines.append(f"| {r['replications']:,} | {name} | {x} | {y} |")
    return "\n".join(lines) + "\n"


def plot(docs: list[dict[str, Any]], dst: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("files", lambda r: r["output"]["files"], "files"),
        ("bytes / baseline", lambda r: r["bytes_ratio"], "×"),
        ("du -s / baseline", lambda r: r["du_ratio"], "×"),
        ("coordinator peak RSS", lambda r: r["run"]["coordinator_peak_rss_kb"] / 1024, "MiB"),
        ("replications per second", lambda r: r["run"]["replications_per_s"], "1/s"),
        ("merge / inspect / open / query", None, "s"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    styles = {0: "--", 1: "-"}
    for ax, (title, get, unit) in zip(axes.flat, panels, strict=True):
        for k, doc in enumerate(docs):
            xs = [r["replications"] for r in doc["rows"]]
            label = doc["meta"]["label"]
            if get is None:
                for op, colour in zip(TIMED_OPS, ("C0", "C1", "C2", "C3"), strict=True):
                    ax.plot(xs, [r[op]["seconds"] for r in doc["rows"]], styles.get(k, "-"),
                            color=colour, marker="o", label=f"{op} ({label})")
            else:
                ax.plot(xs, [get(r) for r in doc["rows"]], styles.get(k, "-"), marker="o",
                        label=label)
        ax.set_xscale("log")
        if title != "replications per second" and title != "coordinator peak RSS":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("replications")
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode")
    mode.add_argument("--full", action="store_const", const="full", dest="mode")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode")
    parser.add_argument("--sizes", help="comma-separated replication counts (overrides the mode)")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per timed command")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--work", type=Path, help="where experiments are written (default: OUT)")
    parser.add_argument("--label", default="after", help="name of the code measured")
    parser.add_argument("--compare", type=Path, help="results.json of an earlier run")
    parser.add_argument("--keep", action="store_true", help="keep the experiment directories")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else MODES[mode]
    out = args.out or DEFAULT_OUT / f"scale-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or out / "work"
    work.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    doc: dict[str, Any] = {"meta": {
        "label": args.label, "mode": mode, "sizes": sizes,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "load_start": ", ".join(f"{x:.2f}" for x in os.getloadavg())}}
    doc["model_ms_per_replication"] = _child("model", "2000")["ms_per_replication"]
    doc["rows"] = []
    for n in sizes:
        doc["rows"].append(measure(n, work, args.reps, log))
        if not args.keep:
            shutil.rmtree(work / f"exp-{n}", ignore_errors=True)
    doc["meta"]["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    doc["meta"]["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    text = markdown(doc)
    docs = [doc]
    if args.compare is not None:
        before = json.loads(args.compare.read_text())
        docs = [before, doc]
        text += "\n## Before and after\n\n" + compare_markdown(before, doc)
    (out / "results.md").write_text(text)
    if plot(docs, out / "scale.png"):
        log(f"plot: {out / 'scale.png'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    log(f"results: {out} ({doc['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
