"""The scale benchmark (``python -m benchmarks.scale``) runs end to end on a tiny size and writes
well-formed results. Structure only, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--smoke", "--reps", "1",
                           "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    (row,) = doc["rows"]
    assert row["replications"] == 200
    assert row["run"]["committed"] == 200 and row["run"]["replications_per_s"] > 0
    assert row["output"]["shards"] == 2
    assert row["output"]["files"] <= 10 * row["output"]["shards"] + 10
    assert row["output"]["files_below_shard_subfolders"] == 0
    assert row["open"]["replications"] == 200 and row["inspect"]["committed"] == 200
    assert row["query"]["rows"] == 200 * 20 * 8  # one stream of ten: 20 records of 8 values
    assert row["baseline"]["bytes"] > 0 and row["bytes_ratio"] > 0
    assert "| 200 |" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "work").exists()  # experiments are removed without --keep
