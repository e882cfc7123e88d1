"""The parts benchmark (``python -m benchmarks.slurm_parts``) runs end to end on a tiny size
against its own SLURM test cluster and writes well-formed results. Structure only, never
timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from slurm_cluster import unavailable  # noqa: E402

pytestmark = pytest.mark.slurm


def test_slurm_parts_benchmark_smoke(tmp_path: Path) -> None:
    why = unavailable()
    if why is not None:
        if os.environ.get("DDL_REQUIRE_SLURM"):
            pytest.fail(f"DDL_REQUIRE_SLURM is set but {why}")
        pytest.skip(why)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.slurm_parts", "--replications",
                           "2", "--reps", "1", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["tasks"] == 4 and doc["reps"] == 1
    assert set(doc["median_seconds"]) == {"one-run", "slurm-4-parts", "local-4-parts"}
    assert all(len(v) == 1 and v[0] > 0 for v in doc["seconds"].values())
    assert "| slurm-4-parts |" in (tmp_path / "results.md").read_text()
