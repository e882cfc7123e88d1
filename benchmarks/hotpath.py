"""Run one hot path of ours in a loop, for a profiler to look at.

Run it by path (so the repository root is not on ``sys.path`` and the installed package is used):

    perf record -F 999 -g -o perf.data -- python benchmarks/hotpath.py record --nnz 8
    valgrind --tool=callgrind python benchmarks/hotpath.py record --nnz 64 --records 20000
    python benchmarks/hotpath.py decode --nnz 64

Paths: ``record`` (record() per record, then close), ``record_many`` (CSR chunks of 4096),
``decode`` (``disco_data_logger.read`` of a directory written first, repeated), ``periodic``.
Prints the rate of the timed part.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", choices=["record", "record_many", "decode", "periodic"])
    ap.add_argument("--nnz", type=int, default=8)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5,
                    help="decode: read() passes; record, record_many: passes over the workload")
    args = ap.parse_args()

    import disco_data_logger as ddl

    cache = Path(tempfile.gettempdir()) / "ddl-hotpath"
    if args.path == "periodic":
        wl = workloads.build(workloads.PeriodicSpec("hot-periodic", args.records), cache)
    else:
        wl = workloads.build(workloads.SparseSpec(f"hot-{args.nnz}", args.nnz, args.records),
                             cache)
    with np.load(wl) as z:
        a = {k: z[k] for k in z.files}
    cuts = a["offsets"][1:-1]
    idx, vals = np.split(a["indices"], cuts), np.split(a["values"], cuts)
    epochs = a["epochs"].tolist()
    out = cache / f"out-{args.path}-{args.nnz}"
    shutil.rmtree(out, ignore_errors=True)
    dl = ddl.DataLogger(out)
    n = len(epochs)
    if args.path == "periodic":
        streams = [dl.register_periodic_stream({"s": s}, epoch_scale=1e-3, value_scale=1e-2,
                                               kind=str(k))  # type: ignore[arg-type]
                   for s, k in enumerate(a["kinds"])]
        recs = [streams[s].record for s in a["stream_ids"].tolist()]
        t0 = time.perf_counter()
        for rec, e, i, v in zip(recs, epochs, idx, vals, strict=True):
            rec(e, i, v)
        for ps in streams:
            ps.close(epochs[-1] + 1.0)
        dl.close()
    else:
        sid_of = [dl.register_stream({"s": s}, epoch_scale=1e-3, value_scale=1e-2)
                  for s in range(128)]
        sids = [sid_of[s] for s in a["stream_ids"].tolist()]
        passes = 1 if args.path == "decode" else args.repeat
        span = epochs[-1] + 1.0
        shifted = [[e + p * span for e in epochs] for p in range(passes)]
        t0 = time.perf_counter()
        for p in range(passes):
            if args.path == "record_many":
                off = a["offsets"]
                sid_arr = np.asarray(sids)
                ep = np.asarray(shifted[p])
                for k0 in range(0, n, 4096):
                    k1 = min(n, k0 + 4096)
                    dl.record_many(sid_arr[k0:k1], ep[k0:k1], off[k0:k1 + 1] - off[k0],
                                   a["indices"][off[k0]:off[k1]], a["values"][off[k0]:off[k1]])
            else:
                record = dl.record
                for s, e, i, v in zip(sids, shifted[p], idx, vals, strict=True):
                    record(s, e, i, v)
        dl.close()
        n *= passes
    elapsed = time.perf_counter() - t0
    if args.path == "decode":
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            table = ddl.read(out)
        elapsed = (time.perf_counter() - t0) / args.repeat
        n = table.num_rows
    print(f"{args.path} nnz={args.nnz}: {n / elapsed:,.0f} records/s ({elapsed:.3f} s)")


if __name__ == "__main__":
    main()
