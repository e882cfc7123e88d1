"""Draw throughput against nnz per contender from a results.json (needs matplotlib).

Run by path in whichever interpreter has matplotlib: ``python plot.py results.json out.png``.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("record_records_per_s", "ours", "ours record()", "C0", "-"),
    ("record_many_records_per_s", "ours", "ours record_many()", "C0", "--"),
    ("record_records_per_s", "seed", "seed 0.1.5 record()", "C1", "-"),
    ("record_records_per_s", "arrow_ipc", "pyarrow IPC+zstd by hand", "C2", "-"),
    ("record_many_records_per_s", "arrow_ipc", "pyarrow IPC+zstd, batches", "C2", "--"),
    ("record_records_per_s", "arrow_parquet", "pyarrow Parquet by hand", "C3", "-"),
    ("decode_nonzeros_per_s", "ours", "ours read()", "C0", ":"),
    ("decode1_nonzeros_per_s", "ours", "ours read(), one thread", "C0", "-."),
    ("decode_nonzeros_per_s", "seed", "seed Collector", "C1", ":"),
    ("decode_nonzeros_per_s", "arrow_ipc", "pyarrow IPC read_all", "C2", ":"),
    ("decode_nonzeros_per_s", "arrow_parquet", "pyarrow pq.read_table", "C3", ":"),
]
PANELS = [
    ("write", "nnz", "writing, repeating values (end to end incl. close)", "records / s"),
    ("decode", "nnz", "decoding to Arrow, repeating values", "nonzeros / s"),
    ("decode", "churn", "decoding to Arrow, churning values", "nonzeros / s"),
]


def main(src: str, dst: str) -> None:
    doc = json.load(open(src))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 4.4))
    for ax, (kind, prefix, title, unit) in zip(axes, PANELS, strict=True):
        for measure, contender, label, colour, style in SERIES:
            if (kind == "decode") != measure.startswith("decode"):
                continue
            per_wl = doc["results"].get(measure, {})
            pts = sorted((int(wl[len(prefix):]), cell[contender]["median"])
                         for wl, cell in per_wl.items()
                         if wl.startswith(prefix) and contender in cell)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour,
                        marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("nonzeros per record")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    m = doc["meta"]
    fig.suptitle(f"disco-data-logger benchmarks ({m['mode']}, medians of {m['reps']}; "
                 f"{m['machine']['cores']} cores, shared)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
