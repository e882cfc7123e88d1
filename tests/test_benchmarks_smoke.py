"""The benchmark harness runs end to end on tiny sizes and writes well-formed results.

Asserts the structure of the output only, never timings. Contenders that cannot run here (the
0.1.5 anchor without ``--setup-anchors``; ours before the extension is built) must be reported
as skipped, and every contender that did run must have its measures and its ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NNZ_KEYS = {"nnz8", "nnz64", "nnz1024", "churn8", "churn64", "new64"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--quiet",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "results.json").read_text()), out


def _available(doc: dict) -> set[str]:
    return {name for name, info in doc["contenders"].items() if info["available"]}


def test_top_level_keys(smoke):
    doc, out = smoke
    assert {"meta", "contenders", "workloads", "results", "ratios", "targets", "checks",
            "failures", "memory"} <= doc.keys()
    assert doc["meta"]["mode"] == "smoke"
    assert {"cpu", "cores", "python"} <= doc["meta"]["machine"].keys()
    assert (out / "results.md").read_text().startswith("## Benchmark results")


def test_every_contender_is_reported_available_or_skipped(smoke):
    doc, _ = smoke
    assert set(doc["contenders"]) == {"ours", "seed", "arrow_ipc", "arrow_parquet"}
    for info in doc["contenders"].values():
        assert isinstance(info["available"], bool)
        assert info.get("version") if info["available"] else info.get("reason")
    # pyarrow is a dependency of the project, so the hand-written anchors always run.
    assert {"arrow_ipc", "arrow_parquet"} <= _available(doc)


def test_measures_present_for_available_contenders(smoke):
    doc, _ = smoke
    res = doc["results"]
    for name in _available(doc):
        for measure in ("record_records_per_s", "bytes_per_record", "decode_records_per_s",
                        "decode_nonzeros_per_s"):
            assert set(res[measure]) == NNZ_KEYS
            for cell in res[measure].values():
                assert isinstance(cell[name]["median"], float)
                assert len(cell[name]["runs"]) == doc["meta"]["reps"]
    if "seed" in _available(doc) or "ours" in _available(doc):
        assert set(res["periodic_updates_per_s"]) == {"state", "accumulator"}
    for name in {"ours", "seed"} - _available(doc):
        assert all(name not in cell for cell in res["record_records_per_s"].values())


def test_ratios_present_for_available_anchors(smoke):
    doc, _ = smoke
    if "ours" not in _available(doc):
        assert doc["ratios"] == {} or all(
            "ours/" not in k for per in doc["ratios"].values() for v in per.values() for k in v)
        return
    anchors = _available(doc) & {"seed", "arrow_ipc", "arrow_parquet"}
    for wl in NNZ_KEYS:
        got = doc["ratios"]["record_records_per_s"][wl]
        assert {f"ours/{a}" for a in anchors} <= got.keys()
        assert {f"ours/{a}" for a in anchors} <= doc["ratios"]["bytes_per_record"][wl].keys()
    assert "workers2/workers1" in doc["ratios"]["sweep_records_per_s"]["scaling"]
    for wl in NNZ_KEYS:  # ours decodes with one and with two threads too
        assert "2 threads/1 thread" in doc["ratios"]["decode2_nonzeros_per_s"][wl]
    assert isinstance(doc["results"]["select_one_over_all"]["select10"]["ours"]["median"], float)
    assert doc["memory"]["ok"] and doc["memory"]["samples"]


def test_targets_listed_and_runs_clean(smoke):
    doc, _ = smoke
    names = [t["target"] for t in doc["targets"]]
    assert any(n.startswith("record() nnz 8") for n in names)
    assert any(n.startswith("sweep") for n in names)
    for t in doc["targets"]:
        assert t["holds"] in (True, False, None)
    assert doc["failures"] == []
    assert all(c["round_trip_ok"] for c in doc["checks"])
