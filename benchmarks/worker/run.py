"""Run benchmark tasks for one contender in this interpreter; print results as JSON.

Executed by path (``python benchmarks/worker/run.py``) so that the repository root is not on
``sys.path``: ours is imported from wherever it is installed, the seed from the anchors venv.

    run.py --contender ours --tasks tasks.json --out result.json
    run.py --probe ours
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from contenders import CONTENDERS, Contender, probe


def _load(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "meta"}
        meta = json.loads(str(npz["meta"]))
    return meta, arrays


def _split(arrays: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    cuts = arrays["offsets"][1:-1]
    return np.split(arrays["indices"], cuts), np.split(arrays["values"], cuts)


def _fresh(workdir: str, label: str) -> Path:
    path = Path(workdir) / label
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _register_all(c: Contender, meta: dict[str, Any]) -> list[int]:
    return [c.register({"entity": f"e{s:04d}", "measure": "stock", "bench": meta["name"]},
                       meta["epoch_scale"], meta["value_scale"])
            for s in range(meta["n_streams"])]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _table_summary(table: Any) -> dict[str, Any]:
    import pyarrow.compute as pc

    values = table.column("values")
    flat = pc.list_flatten(values)
    return {"rows": table.num_rows, "nonzeros": len(flat),
            "value_sum": float(pc.sum(flat).as_py() or 0.0)}


def task_record(cls: type[Contender], spec: dict[str, Any]) -> dict[str, Any]:
    """record() per record, end to end incl. close(); then sizes; then decode to Arrow."""
    meta, arrays = _load(spec["workload"])
    idx, vals = _split(arrays)
    epochs = arrays["epochs"].tolist()
    c = cls(_fresh(spec["workdir"], f"{cls.name}-{meta['name']}"))
    sid_of = _register_all(c, meta)
    sids = [sid_of[s] for s in arrays["stream_ids"].tolist()]
    n = len(sids)
    nnz = int(arrays["offsets"][-1])
    record = c.recorder()
    gc.collect()
    gc.freeze()  # the prepared workload is not garbage; don't let collections walk it
    t0 = time.perf_counter()
    for s, e, i, v in zip(sids, epochs, idx, vals, strict=True):
        record(s, e, i, v)
    c.close()
    elapsed = time.perf_counter() - t0
    gc.unfreeze()
    out: dict[str, Any] = {
        "records": n, "nonzeros": nnz, "seconds": elapsed,
        "records_per_s": n / elapsed, "nonzeros_per_s": nnz / elapsed,
        "data_bytes": c.data_bytes(), "total_bytes": c.total_bytes(),
    }
    out["bytes_per_record"] = out["data_bytes"] / n
    out["total_bytes_per_record"] = out["total_bytes"] / n
    if spec.get("decode", True):
        gc.collect()
        t0 = time.perf_counter()
        table = c.decode()
        elapsed = time.perf_counter() - t0
        out["decode_seconds"] = elapsed
        out["decode_records_per_s"] = table.num_rows / elapsed
        summary = _table_summary(table)
        out["decode_nonzeros_per_s"] = summary["nonzeros"] / elapsed
        out["decoded"] = summary
        out["input_value_sum"] = float(arrays["values"].sum())
        del table
        # Ours: the same read with one decoding thread, then with two (each into fresh memory,
        # as the first one: every read in this task is a first read of its output).
        for threads in (1, 2):
            gc.collect()
            t0 = time.perf_counter()
            table = c.decode_threads(threads)
            elapsed = time.perf_counter() - t0
            if table is None:
                break
            out[f"decode{threads}_nonzeros_per_s"] = summary["nonzeros"] / elapsed
            del table
    return out


def task_select(cls: type[Contender], spec: dict[str, Any]) -> dict[str, Any]:
    """Read back one stream of ``n_streams`` (selected by its labels) against all of them."""
    meta, arrays = _load(spec["workload"])
    idx, vals = _split(arrays)
    c = cls(_fresh(spec["workdir"], f"{cls.name}-{meta['name']}"))
    sid_of = _register_all(c, meta)
    record = c.recorder()
    for s, e, i, v in zip(arrays["stream_ids"].tolist(), arrays["epochs"].tolist(), idx, vals,
                          strict=True):
        record(sid_of[s], e, i, v)
    c.close()
    wanted = 3
    times: dict[str, list[float]] = {"all": [], "one": []}
    rows = {}
    for order in (("all", "one"), ("one", "all")):  # alternate, so neither always goes first
        for which in order:
            gc.collect()
            t0 = time.perf_counter()
            table = c.decode() if which == "all" else c.select({"entity": f"e{wanted:04d}"})
            times[which].append(time.perf_counter() - t0)
            if table is None:
                raise RuntimeError("this contender cannot select streams")
            rows[which] = table.num_rows
            del table
    expected = int((arrays["stream_ids"] == wanted).sum())
    if rows["one"] != expected or rows["all"] != len(arrays["stream_ids"]):
        raise RuntimeError(f"selection read {rows['one']} records, expected {expected}")
    t_all, t_one = min(times["all"]), min(times["one"])
    return {"records": rows["all"], "selected": rows["one"], "all_seconds": t_all,
            "one_seconds": t_one, "one_over_all": t_one / t_all}


def task_record_many(cls: type[Contender], spec: dict[str, Any]) -> dict[str, Any]:
    """The bulk call, CSR chunks of ``chunk`` records, end to end incl. close()."""
    meta, arrays = _load(spec["workload"])
    c = cls(_fresh(spec["workdir"], f"{cls.name}-{meta['name']}-bulk"))
    sid_of = np.asarray(_register_all(c, meta), dtype=np.int64)
    sids = sid_of[arrays["stream_ids"]]
    offsets = arrays["offsets"]
    n = len(sids)
    step = spec.get("chunk", 4096)
    chunks = []
    for a in range(0, n, step):
        b = min(n, a + step)
        lo, hi = offsets[a], offsets[b]
        chunks.append((sids[a:b], arrays["epochs"][a:b], offsets[a:b + 1] - lo,
                       arrays["indices"][lo:hi], arrays["values"][lo:hi]))
    gc.collect()
    t0 = time.perf_counter()
    for chunk in chunks:
        c.record_many(*chunk)
    c.close()
    elapsed = time.perf_counter() - t0
    return {"records": n, "seconds": elapsed, "records_per_s": n / elapsed,
            "nonzeros_per_s": int(offsets[-1]) / elapsed, "data_bytes": c.data_bytes()}


def task_periodic(cls: type[Contender], spec: dict[str, Any]) -> dict[str, Any]:
    """PeriodicStream.record() per update, end to end incl. every ps.close() and close()."""
    meta, arrays = _load(spec["workload"])
    idx, vals = _split(arrays)
    epochs = arrays["epochs"].tolist()
    c = cls(_fresh(spec["workdir"], f"{cls.name}-{meta['name']}"))
    streams = [c.register_periodic({"entity": f"p{s:04d}", "universe": meta["universe"]},
                                   meta["epoch_scale"], meta["value_scale"],
                                   meta["periodicity"], str(kind))
               for s, kind in enumerate(arrays["kinds"])]
    by_record = [streams[s].record for s in arrays["stream_ids"].tolist()]
    n = len(by_record)
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for rec, e, i, v in zip(by_record, epochs, idx, vals, strict=True):
        rec(e, i, v)
    for ps in streams:
        ps.close(meta["final_epoch"])
    c.close()
    elapsed = time.perf_counter() - t0
    gc.unfreeze()
    table = c.decode()
    return {"updates": n, "seconds": elapsed, "updates_per_s": n / elapsed,
            "emitted_records": table.num_rows, "data_bytes": c.data_bytes()}


def _defaults_ring_bytes() -> int:
    from disco_data_logger import _defaults

    return int(_defaults.RING_BYTES)


def task_memory(cls: type[Contender], spec: dict[str, Any]) -> dict[str, Any]:
    """Record the workload over and over for ``seconds``, sampling RSS as the run grows."""
    meta, arrays = _load(spec["workload"])
    idx, vals = _split(arrays)
    epochs = arrays["epochs"]
    span = float(epochs[-1] - epochs[0]) + 1.0
    c = cls(_fresh(spec["workdir"], f"{cls.name}-{meta['name']}-memory"))
    sid_of = _register_all(c, meta)
    sids = [sid_of[s] for s in arrays["stream_ids"].tolist()]
    record = c.recorder()
    duration = float(spec["seconds"])
    interval = duration / 40
    gc.collect()
    base = _rss_bytes()
    samples: list[tuple[float, int, int]] = []
    n = len(sids)
    done = 0
    lap = 0
    t0 = time.perf_counter()
    next_sample = t0
    running = True
    base_epochs = epochs.tolist()
    while running:
        # No per-lap allocation: a fresh list of epochs per lap would show up in the RSS.
        shift = lap * span
        lap += 1
        for k0 in range(0, n, 1000):
            k1 = min(k0 + 1000, n)
            for k in range(k0, k1):
                record(sids[k], base_epochs[k] + shift, idx[k], vals[k])
            done += k1 - k0
            now = time.perf_counter()
            if now >= next_sample:
                samples.append((now - t0, done, _rss_bytes()))
                next_sample += interval
            if now - t0 >= duration:
                running = False
                break
    c.close()
    elapsed = time.perf_counter() - t0
    samples.append((elapsed, done, _rss_bytes()))
    rss = [s[2] for s in samples]
    tail = rss[len(rss) // 5:]
    return {
        "records": done, "seconds": elapsed, "records_per_s": done / elapsed,
        "baseline_rss_bytes": base, "peak_rss_bytes": max(rss),
        "peak_above_baseline_bytes": max(rss) - base,
        # Growth after the first fifth of the run: a bounded writer stays near zero.
        "growth_after_warmup_bytes": max(tail) - tail[0],
        # Growth over the second half: buffers that join a reuse pool early show up above,
        # a leak (memory proportional to run length) shows up here too.
        "growth_second_half_bytes": max(rss[len(rss) // 2:]) - rss[len(rss) // 2],
        "ring_bytes": _defaults_ring_bytes(),
        "data_bytes": c.data_bytes(),
        "samples": [{"t": t, "records": r, "rss_bytes": b} for t, r, b in samples],
    }


def task_sweep(cls: type[Contender], spec: dict[str, Any]) -> dict[str, Any]:
    from bench_sweep import run_sweep  # only ours has a sharded service

    return run_sweep(spec)


TASKS = {"record": task_record, "record_many": task_record_many, "periodic": task_periodic,
         "memory": task_memory, "sweep": task_sweep, "select": task_select}


def _warm_up() -> None:
    """Pay one-time import costs before any timing, the same for every contender.

    The first ``pa.array`` on a numpy array imports pandas (about 0.2 s here); a timed region
    that happened to be first in its process would otherwise carry it.
    """
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401

    pa.array(np.arange(3))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contender", required=True, choices=sorted(CONTENDERS))
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--tasks")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.contender)))
        return 0
    cls = CONTENDERS[args.contender]
    _warm_up()
    results = []
    for spec in json.loads(Path(args.tasks).read_text()):
        try:
            result = {"ok": True, **TASKS[spec["task"]](cls, spec)}
        except Exception as exc:  # noqa: BLE001 - reported per task, the run goes on
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc(limit=-4)}
        results.append({"spec": spec, "result": result})
        sys.stdout.flush()
    Path(args.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
