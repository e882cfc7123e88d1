"""Markdown rendering of a results document (see runner.py for its structure)."""

from __future__ import annotations

from typing import Any

ANCHORS = ("seed", "arrow_ipc", "arrow_parquet")
CONTENDERS = ("ours", "seed", "arrow_ipc", "arrow_parquet")
BASELINE = "baseline"

ROWS = [
    ("record_records_per_s", "record() records/s, incl. close", "{:,.0f}"),
    ("record_nonzeros_per_s", "record() nonzeros/s", "{:,.0f}"),
    ("record_many_records_per_s", "bulk call records/s (ours: record_many)", "{:,.0f}"),
    ("bytes_per_record", "bytes on disk per record (data)", "{:,.2f}"),
    ("total_bytes_per_record", "bytes on disk per record (dir total)", "{:,.2f}"),
    ("decode_records_per_s", "decode to Arrow, records/s", "{:,.0f}"),
    ("decode_nonzeros_per_s", "decode to Arrow, nonzeros/s", "{:,.0f}"),
    ("decode1_nonzeros_per_s", "decode, one thread (ours), nonzeros/s", "{:,.0f}"),
    ("decode2_nonzeros_per_s", "decode, two threads (ours), nonzeros/s", "{:,.0f}"),
    ("select_one_over_all", "one stream of ten: time / all ten (ours)", "{:.3f}"),
    ("periodic_updates_per_s", "periodic stream updates/s, incl. close", "{:,.0f}"),
    ("sweep_records_per_s", "sweep records/s", "{:,.0f}"),
    ("sweep_cores_busy", "sweep: CPU seconds per wall second", "{:.2f}"),
    ("sweep_cpu_us_per_record", "sweep: CPU µs per record (all processes)", "{:.2f}"),
]


def _fmt(fmt: str, value: Any) -> str:
    return "–" if value is None else fmt.format(value)


def _load(values: list[float] | None) -> str:
    return "?" if not values else ", ".join(f"{v:.2f}" for v in values)


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    m = meta["machine"]
    lines = [
        f"## Benchmark results ({meta['mode']} mode, {meta['reps']} repetitions, medians)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, "
        f"Python {m['python']}, {m['platform']}. Command: `{meta['command']}`. "
        f"Took {meta['duration_s']:.0f} s. Load average (1, 5, 15 min) at start "
        f"{_load(m.get('loadavg_at_start'))}, at end {_load(m.get('loadavg_at_end'))}: "
        "anything above ~0.2 means other processes shared the 2 cores.",
        "",
    ]
    for name in (*CONTENDERS, BASELINE):
        info = doc["contenders"].get(name)
        if info is None:
            continue
        state = f"version {info['version']}" if info["available"] else f"skipped: {info['reason']}"
        lines.append(f"- `{name}`: {state}")
    lines += ["", "| measure | workload | ours | seed 0.1.5 | arrow_ipc | arrow_parquet "
                  "| ours/seed | ours/ipc | ours/parquet |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, label, fmt in ROWS:
        for wl, per_c in doc["results"].get(key, {}).items():
            vals = [_fmt(fmt, per_c.get(c, {}).get("median")) for c in CONTENDERS]
            rat = doc["ratios"].get(key, {}).get(wl, {})
            rs = [_fmt("{:.2f}×", rat.get(f"ours/{a}")) for a in ANCHORS]
            lines.append(f"| {label} | {wl} | " + " | ".join(vals + rs) + " |")
    if any(BASELINE in per_c for per_wl in doc["results"].values() for per_c in per_wl.values()):
        lines += ["", "Before and after: `baseline` is an earlier build of ours "
                      f"({doc['contenders'].get(BASELINE, {}).get('version', '?')}, "
                      f"`{doc['contenders'].get(BASELINE, {}).get('python', '?')}`), run the same "
                      "way in the same repetitions.", "",
                  "| measure | workload | baseline | ours | ours/baseline |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for key, label, fmt in ROWS:
            for wl, per_c in doc["results"].get(key, {}).items():
                if BASELINE not in per_c:
                    continue
                rat = doc["ratios"].get(key, {}).get(wl, {}).get(f"ours/{BASELINE}")
                lines.append(f"| {label} | {wl} | {_fmt(fmt, per_c[BASELINE].get('median'))} | "
                             f"{_fmt(fmt, per_c.get('ours', {}).get('median'))} | "
                             f"{_fmt('{:.2f}×', rat)} |")
    for wl, rat in doc["ratios"].get("decode2_nonzeros_per_s", {}).items():
        lines.append(f"| decode scaling (ours) | {wl} | {rat['2 threads/1 thread']:.2f}× "
                     "| | | | | | |")
    scaling = doc["ratios"].get("sweep_records_per_s", {}).get("scaling", {})
    if scaling:
        lines.append(f"| sweep scaling | 2 workers / 1 | {scaling['workers2/workers1']:.2f}× "
                     "| | | | | | |")
    mem = doc.get("memory")
    if mem and mem.get("ok"):
        lines += ["", f"Memory (ours, {mem['seconds']:.0f} s, {mem['records']:,} records, "
                      f"{mem['data_bytes'] / 2**20:.0f} MiB written): RSS baseline "
                      f"{mem['baseline_rss_bytes'] / 2**20:.0f} MiB, peak "
                      f"+{mem['peak_above_baseline_bytes'] / 2**20:.1f} MiB above it, growth "
                      f"after warm-up {mem['growth_after_warmup_bytes'] / 2**20:.1f} MiB."]
    lines += ["", "| target | measured | bound | holds |", "| --- | ---: | ---: | --- |"]
    for t in doc["targets"]:
        big = t["target"].startswith("memory")
        fmt = "{:,.0f}" if big else "{:.3g}"
        holds = {True: "yes", False: "**no**", None: "n/a"}[t["holds"]]
        lines.append(f"| {t['target']} | {_fmt(fmt, t['value'])} | {t['op']} "
                     f"{fmt.format(t['bound'])} | {holds} |")
    bad = [c for c in doc["checks"] if not c["round_trip_ok"]]
    lines += ["", f"Round-trip checks (rows, nonzeros, value sum of the decoded table vs the "
                  f"input): {len(doc['checks']) - len(bad)} ok, {len(bad)} failed."]
    for c in bad:
        lines.append(f"- {c['contender']} {c['workload']}: decoded {c['decoded']}")
    for f in doc["failures"]:
        lines.append(f"- FAILED {f['contender']} {f['task']} {f['workload']}: {f['error']}")
    return "\n".join(lines) + "\n"
