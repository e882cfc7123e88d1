"""``python -m benchmarks``: run every contender on the same workloads, alternating, and report.

Each repetition runs every available contender once, in its own subprocess, in an order rotated
from one repetition to the next; medians over repetitions and ratios of ours to each anchor come
from the same run. Results: ``results.json``, ``results.md`` and ``throughput_vs_nnz.png`` in
``--out``.
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

from benchmarks import anchors, report, workloads

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker" / "run.py"
PLOTTER = HERE / "plot.py"
DEFAULT_OUT = HERE / "results"
ANCHORS = ("seed", "arrow_ipc", "arrow_parquet", "baseline")
CONTENDER_ORDER = ("ours", "baseline", "seed", "arrow_ipc", "arrow_parquet")
ALL_TASKS = ("record", "record_many", "periodic", "memory", "sweep", "select")
CHURN_STREAMS = 200
"""Streams of the churning and new-entity workloads (issue 12's shape)."""
CHURN_SIGMA = 150.0
"""Grid steps of the random walk every value of a churning workload takes every record."""
NEW_ENTITY_P = 0.05
"""New-entity workload: per entity and record, chance of being replaced by a new entity."""

MODES: dict[str, dict[str, Any]] = {
    "smoke": {"reps": 1, "records": {8: 1500, 64: 300, 1024: 30},
              "churn": {"churn8": 1500, "churn64": 300, "new64": 300}, "select": 300,
              "periodic_updates": 2000,
              "bulk_chunk": 256, "memory_seconds": 0.5, "memory_nnz": 8,
              "sweep": {"replications": 4, "records": 200, "streams": 8, "nnz": 8, "reps": 1}},
    "quick": {"reps": 3, "records": {8: 40_000, 64: 15_000, 1024: 3_000},
              "churn": {"churn8": 40_000, "churn64": 15_000, "new64": 15_000}, "select": 15_000,
              "periodic_updates": 30_000, "bulk_chunk": 4096, "memory_seconds": 6,
              "memory_nnz": 64,
              "sweep": {"replications": 32, "records": 20_000, "streams": 16, "nnz": 8,
                        "reps": 3}},
    "full": {"reps": 5, "records": {8: 400_000, 64: 100_000, 1024: 12_000},
             "churn": {"churn8": 600_000, "churn64": 200_000, "new64": 200_000},
             "select": 200_000,
             "periodic_updates": 200_000, "bulk_chunk": 4096, "memory_seconds": 45,
             "memory_nnz": 64,
             "sweep": {"replications": 96, "records": 50_000, "streams": 16, "nnz": 8,
                       "reps": 3}},
}

# Which tasks each contender can run (the pyarrow anchor has no periodic streams; the seed has
# no bulk call; only ours has a sharded service).
CAPABILITIES = {
    "ours": {"record", "record_many", "periodic", "memory", "sweep", "select"},
    "baseline": {"record", "record_many", "periodic", "select"},
    "seed": {"record", "periodic"},
    "arrow_ipc": {"record", "record_many"},
    "arrow_parquet": {"record", "record_many"},
}


def _interpreters(baseline: Path | None = None) -> dict[str, Path | None]:
    """Which interpreter runs each contender; None when it is not installed."""
    seed_python = anchors.venv_python()
    return {"ours": Path(sys.executable), "arrow_ipc": Path(sys.executable),
            "arrow_parquet": Path(sys.executable), "seed": seed_python, "baseline": baseline}


def _probe(name: str, python: Path | None) -> dict[str, Any]:
    if python is None:
        return {"available": False,
                "reason": "anchors venv missing: run `python -m benchmarks --setup-anchors`"}
    proc = subprocess.run([str(python), str(WORKER), "--contender", name, "--probe"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return {"available": False, "reason": proc.stderr.strip().splitlines()[-1:]}
    info = json.loads(proc.stdout)
    info["python"] = str(python)
    return info


def _run_worker(name: str, python: Path | None, tasks: list[dict[str, Any]], scratch: Path,
                log) -> list[dict[str, Any]]:
    assert python is not None, f"{name} is available, so it has an interpreter"
    tasks_file = scratch / f"tasks-{name}.json"
    out_file = scratch / f"result-{name}.json"
    tasks_file.write_text(json.dumps(tasks))
    out_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([str(python), str(WORKER), "--contender", name,
                           "--tasks", str(tasks_file), "--out", str(out_file)],
                          capture_output=True, text=True, cwd=scratch, timeout=1800)
    log(f"  {name:<10} {len(tasks)} tasks in {time.perf_counter() - t0:6.1f}s")
    if proc.returncode != 0 or not out_file.exists():
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"spec": t, "result": {"ok": False, "error": f"worker failed: {err}"}}
                for t in tasks]
    items = json.loads(out_file.read_text())
    for item in items:
        if not item["result"]["ok"]:
            log(f"    {item['spec']['task']} failed: {item['result']['error']}")
    return items


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_end": list(os.getloadavg())}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _collect(raw: list[dict[str, Any]]) -> dict[str, Any]:
    """raw items -> results[measure][workload][contender] = {median, runs}."""
    results: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    checks: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []

    def add(measure: str, workload: str, contender: str, value: float) -> None:
        cell = results.setdefault(measure, {}).setdefault(workload, {}).setdefault(
            contender, {"runs": []})
        cell["runs"].append(value)

    for item in raw:
        spec, res, who = item["spec"], item["result"], item["contender"]
        wl = spec.get("key", "")
        if not res.get("ok"):
            failures.append({"contender": who, "task": spec["task"], "workload": wl,
                             "rep": item.get("rep"), "error": str(res.get("error"))[:300],
                             "traceback": res.get("traceback")})
            continue
        task = spec["task"]
        if task == "record":
            add("record_records_per_s", wl, who, res["records_per_s"])
            add("record_nonzeros_per_s", wl, who, res["nonzeros_per_s"])
            add("bytes_per_record", wl, who, res["bytes_per_record"])
            add("total_bytes_per_record", wl, who, res["total_bytes_per_record"])
            if "decode_records_per_s" in res:
                add("decode_records_per_s", wl, who, res["decode_records_per_s"])
                add("decode_nonzeros_per_s", wl, who, res["decode_nonzeros_per_s"])
                for threads in (1, 2):
                    key = f"decode{threads}_nonzeros_per_s"
                    if key in res:
                        add(key, wl, who, res[key])
                dec = res["decoded"]
                ok = (dec["rows"] == res["records"] and dec["nonzeros"] == res["nonzeros"]
                      and abs(dec["value_sum"] - res["input_value_sum"])
                      <= 1e-9 * max(1.0, abs(res["input_value_sum"])))
                checks.append({"contender": who, "workload": wl, "round_trip_ok": ok,
                               "decoded": dec, "input_value_sum": res["input_value_sum"]})
        elif task == "select":
            add("select_one_over_all", wl, who, res["one_over_all"])
        elif task == "record_many":
            add("record_many_records_per_s", wl, who, res["records_per_s"])
        elif task == "periodic":
            add("periodic_updates_per_s", wl, who, res["updates_per_s"])
        elif task == "sweep":
            add("sweep_records_per_s", wl, who, res["records_per_s"])
            add("sweep_replications_per_s", wl, who, res["replications_per_s"])
            if "cpu_per_wall" in res:
                add("sweep_cores_busy", wl, who, res["cpu_per_wall"])
                add("sweep_cpu_us_per_record", wl, who, 1e6 * res["cpu_seconds"] / res["records"])
    for per_wl in results.values():
        for per_c in per_wl.values():
            for cell in per_c.values():
                cell["median"] = _median(cell["runs"])
    # Checks repeat per repetition; keep one per (contender, workload), failing ones first.
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for chk in sorted(checks, key=lambda c: c["round_trip_ok"]):
        seen.setdefault((chk["contender"], chk["workload"]), chk)
    return {"results": results, "checks": list(seen.values()), "failures": failures}


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    """ratios[measure][workload]["ours/<anchor>"] = median(ours) / median(anchor)."""
    ratios: dict[str, Any] = {}
    for measure, per_wl in results.items():
        for wl, per_c in per_wl.items():
            ours = per_c.get("ours", {}).get("median")
            for anchor in ANCHORS:
                theirs = per_c.get(anchor, {}).get("median")
                if ours and theirs:
                    ratios.setdefault(measure, {}).setdefault(wl, {})[f"ours/{anchor}"] = (
                        ours / theirs)
    for wl, per_c in results.get("decode2_nonzeros_per_s", {}).items():
        one = results.get("decode1_nonzeros_per_s", {}).get(wl, {}).get("ours", {}).get("median")
        two = per_c.get("ours", {}).get("median")
        if one and two:
            ratios.setdefault("decode2_nonzeros_per_s", {}).setdefault(wl, {})[
                "2 threads/1 thread"] = two / one
    sweep = results.get("sweep_records_per_s", {})
    one = sweep.get("workers1", {}).get("ours", {}).get("median")
    two = sweep.get("workers2", {}).get("ours", {}).get("median")
    if one and two:
        ratios.setdefault("sweep_records_per_s", {})["scaling"] = {"workers2/workers1": two / one}
    return ratios


def _targets(ratios: dict[str, Any], memory: dict[str, Any] | None,
             nnz_keys: list[str], results: dict[str, Any]) -> list[dict[str, Any]]:
    def r(measure: str, wl: str, key: str) -> float | None:
        return ratios.get(measure, {}).get(wl, {}).get(key)

    out: list[dict[str, Any]] = []

    def target(name: str, value: float | None, op: str, bound: float, note: str = "") -> None:
        holds = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"target": name, "value": value, "op": op, "bound": bound, "holds": holds,
                    "note": note})

    target("record() nnz 8: ours/seed records/s", r("record_records_per_s", "nnz8", "ours/seed"),
           ">=", 10)
    target("record() nnz 64: ours/seed records/s",
           r("record_records_per_s", "nnz64", "ours/seed"), ">=", 5)
    for wl in nnz_keys:
        target(f"bytes/record {wl}: ours/seed", r("bytes_per_record", wl, "ours/seed"),
               "<=", 1 / 3)
        target(f"bytes/record {wl}: ours/arrow_ipc", r("bytes_per_record", wl, "ours/arrow_ipc"),
               "<=", 1.0)
    for wl in nnz_keys:
        target(f"decode {wl}: ours/seed records/s", r("decode_records_per_s", wl, "ours/seed"),
               ">=", 50)
        target(f"decode {wl}: ours/arrow_parquet nonzeros/s",
               r("decode_nonzeros_per_s", wl, "ours/arrow_parquet"), ">=", 1)
        target(f"bytes/record {wl}: ours/arrow_parquet",
               r("bytes_per_record", wl, "ours/arrow_parquet"), "<=", 1.0)
    one_core = results.get("decode1_nonzeros_per_s", {}).get("churn64", {}).get("ours", {})
    target("decode churn64, one thread: nonzeros/s", one_core.get("median"), ">=", 100e6)
    target("decode churn64: 2 threads / 1 thread",
           r("decode2_nonzeros_per_s", "churn64", "2 threads/1 thread"), ">=", 1.7)
    target("select one stream of ten: time / all ten",
           results.get("select_one_over_all", {}).get("select10", {}).get("ours", {})
           .get("median"),
           "<=", 0.3)
    for wl in ("state", "accumulator"):
        target(f"periodic {wl}: ours/seed updates/s",
                   r("periodic_updates_per_s", wl, "ours/seed"), ">=", 5)
    target("sweep: 2 workers / 1 worker records/s",
           r("sweep_records_per_s", "scaling", "workers2/workers1"), ">=", 1.7)
    # The writer's RSS is bounded by the ring size + O(streams), whatever the run's length. So: the
    # peak above the baseline stays within the ring budget (plus 16 MiB for the block being
    # filled, the one being compressed and zstd's context), and the second half is flat.
    if memory and memory.get("ok"):
        ring = int(memory.get("ring_bytes", 64 << 20))
        target("memory: RSS peak above baseline (bytes)", memory["peak_above_baseline_bytes"],
               "<=", ring + (16 << 20), "ring_bytes + 16 MiB")
        target("memory: RSS growth over the second half of the run (bytes)",
               memory["growth_second_half_bytes"], "<=", 1 << 20, "flat: independent of length")
    else:
        target("memory: RSS peak above baseline (bytes)", None, "<=", 80 << 20)
        target("memory: RSS growth over the second half of the run (bytes)", None, "<=", 1 << 20)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="under 2 minutes (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="under 15 minutes")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="tiny sizes, seconds; anchors optional")
    ap.add_argument("--setup-anchors", action="store_true",
                    help="create benchmarks/.anchors/venv with disco-data-logger 0.1.5 first")
    ap.add_argument("--out", type=Path, default=None, help="output directory")
    ap.add_argument("--contenders", default=",".join(c for c in CONTENDER_ORDER if c != "baseline"),
                    help="comma-separated subset of " + ",".join(CONTENDER_ORDER))
    ap.add_argument("--reps", type=int, default=None, help="override the mode's repetitions")
    ap.add_argument("--tasks", default=",".join(ALL_TASKS),
                    help="comma-separated subset of " + ",".join(ALL_TASKS))
    ap.add_argument("--keep", action="store_true", help="keep the written logger directories")
    ap.add_argument("--baseline", type=Path, default=None, metavar="PYTHON",
                    help="also run an earlier build of ours, installed for this interpreter "
                         "(contender 'baseline'): before and after in one run")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.mode = args.mode or "quick"
    cfg = MODES[args.mode]
    reps = args.reps or cfg["reps"]
    if args.tasks != ",".join(ALL_TASKS) and args.out is None:
        ap.error("--tasks selects part of a run: give it its own --out")
    out = (args.out or DEFAULT_OUT / args.mode).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *_: None) if args.quiet else (lambda msg: print(msg, flush=True))
    started = time.time()
    load_at_start = list(os.getloadavg())

    if args.setup_anchors:
        anchors.setup(log)

    wl_dir = out / "workloads"
    log(f"mode {args.mode}: generating workloads in {wl_dir}")
    sparse = {f"nnz{nnz}": workloads.build(
        workloads.SparseSpec(name=f"nnz{nnz}", nnz=nnz, n_records=n), wl_dir)
        for nnz, n in cfg["records"].items()}
    for key, n in cfg["churn"].items():
        nnz = int(key.removeprefix("churn").removeprefix("new"))
        sparse[key] = workloads.build(workloads.SparseSpec(
            name=key, nnz=nnz, n_records=n, n_streams=CHURN_STREAMS, step_sigma=CHURN_SIGMA,
            p_entity_replaced=NEW_ENTITY_P if key.startswith("new") else 0.0), wl_dir)
    selection = workloads.build(workloads.SparseSpec(
        name="select10", nnz=64, n_records=cfg["select"], n_streams=10,
        step_sigma=CHURN_SIGMA), wl_dir)
    periodic = {kind: workloads.build(workloads.PeriodicSpec(
        name=f"periodic-{kind}", kinds=kind, n_updates=cfg["periodic_updates"]), wl_dir)
        for kind in ("state", "accumulator")}

    interpreters = _interpreters(args.baseline)
    chosen = args.contenders.split(",") + (["baseline"] if args.baseline else [])
    wanted = [c for c in CONTENDER_ORDER if c in chosen and (c != "baseline" or args.baseline)]
    contenders = {c: _probe(c, interpreters[c]) for c in wanted}
    available = [c for c in wanted if contenders[c]["available"]]
    wanted_tasks = set(args.tasks.split(","))
    for c, info in contenders.items():
        log(f"contender {c}: " + (f"version {info['version']}" if info["available"]
                                  else f"skipped ({info['reason']})"))

    scratch = Path(tempfile.mkdtemp(prefix="ddl-bench-", dir=out))
    raw: list[dict[str, Any]] = []
    try:
        for rep in range(reps):
            log(f"repetition {rep + 1}/{reps}")
            order = available[rep % len(available):] + available[:rep % len(available)] \
                if available else []
            for c in order:
                caps = CAPABILITIES[c] & wanted_tasks
                tasks: list[dict[str, Any]] = []
                if "record" in caps:
                    for key, path in sparse.items():
                        tasks.append({"task": "record", "key": key, "workload": str(path),
                                      "workdir": str(scratch / "data")})
                if "record_many" in caps:
                    for key, path in sparse.items():
                        tasks.append({"task": "record_many", "key": key, "workload": str(path),
                                      "workdir": str(scratch / "data"),
                                      "chunk": cfg["bulk_chunk"]})
                if "select" in caps:
                    tasks.append({"task": "select", "key": "select10", "workload": str(selection),
                                  "workdir": str(scratch / "data")})
                if "periodic" in caps:
                    for key, path in periodic.items():
                        tasks.append({"task": "periodic", "key": key, "workload": str(path),
                                      "workdir": str(scratch / "data")})
                if not tasks:
                    continue
                for item in _run_worker(c, interpreters[c], tasks, scratch, log):
                    item["contender"] = c
                    item["rep"] = rep
                    raw.append(item)

        memory = None
        if "ours" in available and "memory" in wanted_tasks:
            log("memory: long run of ours")
            mem_key = f"nnz{cfg['memory_nnz']}"
            items = _run_worker("ours", interpreters["ours"], [{
                "task": "memory", "key": mem_key, "workload": str(sparse[mem_key]),
                "workdir": str(scratch / "data"), "seconds": cfg["memory_seconds"]}], scratch, log)
            memory = items[0]["result"]

        sweep_cfg = cfg["sweep"]
        if "ours" in available and "sweep" in wanted_tasks:
            log("sweep: 1 and 2 workers")
            for rep in range(sweep_cfg["reps"]):
                for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    spec = {"task": "sweep", "key": f"workers{workers}", "workers": workers,
                            "workdir": str(scratch / "sweep"), **sweep_cfg}
                    for item in _run_worker("ours", interpreters["ours"], [spec], scratch, log):
                        item["contender"] = "ours"
                        item["rep"] = rep
                        raw.append(item)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    collected = _collect(raw)
    ratios = _ratios(collected["results"])
    doc: dict[str, Any] = {
        "meta": {"mode": args.mode, "reps": reps, "started": started,
                 "duration_s": time.time() - started,
                 "command": "python -m benchmarks " + " ".join(argv if argv is not None
                                                                else sys.argv[1:]),
                 "machine": {**_machine(), "loadavg_at_start": load_at_start}},
        "contenders": contenders,
        "workloads": {"sparse": {k: str(v.name) for k, v in sparse.items()},
                      "periodic": {k: v.name for k, v in periodic.items()}, "config": {
                          "records": {**{f"nnz{k}": v for k, v in cfg["records"].items()},
                                      **cfg["churn"]},
                          "select": {"records": cfg["select"], "streams": 10, "nnz": 64},
                          "churn": {"streams": CHURN_STREAMS, "step_sigma": CHURN_SIGMA,
                                    "new_entity_p": NEW_ENTITY_P},
                          "periodic_updates": cfg["periodic_updates"],
                          "streams": workloads.SparseSpec("x", 1, 1).n_streams,
                          "sweep": sweep_cfg}},
        "results": collected["results"],
        "ratios": ratios,
        "memory": memory,
        "checks": collected["checks"],
        "failures": collected["failures"],
    }
    doc["targets"] = _targets(ratios, memory, list(sparse), collected["results"])
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    md = report.markdown(doc)
    (out / "results.md").write_text(md)
    plot = _plot(out / "results.json", out / "throughput_vs_nnz.png", interpreters["seed"])
    doc["meta"]["plot"] = plot
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    if not args.quiet:
        print(md)
        print(f"results in {out}")
    return 0


def _plot(results: Path, png: Path, anchor_python: Path | None) -> str | None:
    """Draw with whichever interpreter has matplotlib; the run does not depend on it."""
    for python in (Path(sys.executable), anchor_python):
        if python is None:
            continue
        proc = subprocess.run([str(python), str(PLOTTER), str(results), str(png)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return str(png)
    return None
