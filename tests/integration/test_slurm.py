"""The experiment on a real single-node SLURM cluster (tests/slurm_cluster.py): the ``slurm``
backend's job array, and the hand route through ``disco-data-logger sbatch``, each with an array
task cancelled mid-run (``scancel``) and resubmitted.

Needs Debian's ``slurm-wlm`` and ``munge`` and root; elsewhere the tests are skipped, unless
``DDL_REQUIRE_SLURM=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_same_as_one_run, run

from disco_data_logger.sharding import merge
from disco_data_logger.sharding.manifest import ShardManifest
from disco_data_logger.sharding.parts import Part, part_progress

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from slurm_cluster import SlurmCluster, unavailable  # noqa: E402

pytestmark = pytest.mark.slurm
DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    why = unavailable()
    if why is not None:
        if os.environ.get("DDL_REQUIRE_SLURM"):
            pytest.fail(f"DDL_REQUIRE_SLURM is set but {why}")
        pytest.skip(why)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def _cli(cluster: SlurmCluster, *args: str, cwd: Path | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "disco_data_logger", *args], env=cluster.env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _committed_in_part(output: Path, part: Part) -> int:
    """Replications of ``part`` committed in the journals so far (read-only)."""
    total = 0
    for shard in (output / "shards").glob("*"):
        m = ShardManifest.load(shard, warn=False) if shard.is_dir() else None
        for rep in m.replications if m is not None else []:
            if part.contains(int(rep["point_index"]), int(rep["replication"])):
                total += 1
    return total


def _wait_for(condition: Any, timeout: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_job_array_of_four_parts_gives_one_run(cluster: SlurmCluster, tmp_path: Path) -> None:
    reference = tmp_path / "one-run"
    run(DEMO, "replications=4", f"output={reference}", "execution.workers=2")
    out = tmp_path / "array"
    done = _cli(cluster, "run", str(DEMO), "replications=4", f"output={out}",
                "execution.backend=slurm", "execution.slurm.parts=4",
                "execution.slurm.poll_seconds=0.5", "execution.slurm.time=20", "--no-progress",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "submitted 4 part(s) of 4 as SLURM job" in done.stderr
    assert "complete: 8/8 replications committed" in done.stdout
    assert_same_as_one_run(out, reference)
    info = json.loads((out / "experiment.json").read_text())
    assert info["state"] == "complete"
    parts = sorted((r["part"], r["batch_job"]) for r in info["runs"] if r.get("part"))
    assert [p for p, _ in parts] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(re.fullmatch(r"[0-9]+_[0-3]", job) for _, job in parts)
    launcher = [r for r in info["runs"] if r.get("backend") == "slurm"]
    assert len(launcher) == 1 and launcher[0]["state"] == "complete"
    shown = _cli(cluster, "inspect", str(out))
    assert "part 3/4           2/2 committed, 0 failed, 0 pending" in shown.stdout
    # run again: nothing left, nothing submitted
    again = _cli(cluster, "run", str(DEMO), "replications=4", f"output={out}",
                 "execution.backend=slurm", "execution.slurm.parts=4", "--no-progress",
                 cwd=tmp_path)
    assert again.returncode == 0 and "submitted" not in again.stderr
    assert "(0 this run, 8 resumed)" in again.stdout


def _slow_config(make_config: Any, out: Path) -> Path:
    # 2 points x 8 replications: 4 per part, 0.6 s each
    return make_config(output=out, replications=8, parameters={"entities": 8, "sleep": 0.6},
                       execution={"backend": "serial", "workers": 1,
                                  "slurm": {"time": 20, "poll_seconds": 0.3}})


def test_sbatch_route_with_a_cancelled_task_resubmitted(cluster: SlurmCluster, make_config: Any,
                                                        tmp_path: Path) -> None:
    reference = tmp_path / "one-run"
    run(_slow_config(make_config, reference))
    out = tmp_path / "out"
    config = _slow_config(make_config, out)
    script = tmp_path / "job.sh"
    wrote = _cli(cluster, "sbatch", str(config), "--parts", "4", "--out", str(script))
    assert wrote.returncode == 0, wrote.stderr
    text = script.read_text()
    assert "#SBATCH --array=0-3" in text and "--part auto/4" in text
    submitted = subprocess.run(["sbatch", str(script)], env=cluster.env, cwd=tmp_path,
                               capture_output=True, text=True, check=True)
    job = re.search(r"job ([0-9]+)", submitted.stdout)
    assert job is not None, submitted.stdout
    third = Part(3, 4)
    _wait_for(lambda: _committed_in_part(out, third) >= 1, what="part 3's first commit")
    subprocess.run(["scancel", f"{job.group(1)}_2"], env=cluster.env, check=True)
    cluster.wait_idle()
    progress = part_progress(merge(out).replications, 4)
    assert progress[2]["pending"] > 0, progress  # cancelled mid-run
    assert all(row["pending"] == 0 for i, row in enumerate(progress) if i != 2), progress
    # submit array task 2 alone: it runs part 3 of 4 again, and resumes it
    again = subprocess.run(["sbatch", "--array=2", str(script)], env=cluster.env, cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    second = re.search(r"job ([0-9]+)", again.stdout)
    assert second is not None, again.stdout
    cluster.wait_idle()
    log = (tmp_path / f"ddl-itest-{second.group(1)}_2.out").read_text()
    resumed = re.search(r"complete of part 3/4: 4/4 replications committed \(([0-9]) this "
                        r"run, ([0-9]) resumed\)", log)
    assert resumed is not None and int(resumed.group(2)) >= 1, log
    merge(out)
    assert_same_as_one_run(out, reference)


def test_the_backend_resubmits_a_cancelled_array_task(cluster: SlurmCluster, make_config: Any,
                                                      tmp_path: Path) -> None:
    reference = tmp_path / "one-run"
    run(_slow_config(make_config, reference))
    out = tmp_path / "out"
    config = _slow_config(make_config, out)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "disco_data_logger", "run", str(config), "--backend", "slurm",
         "execution.slurm.parts=4", "--no-progress"],
        env=cluster.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        jobs = out / "slurm" / "jobs.json"
        _wait_for(jobs.exists, what="the job array")
        second = json.loads(jobs.read_text())["jobs"]["2/4"]
        _wait_for(lambda: _committed_in_part(out, Part(2, 4)) >= 1, what="part 2's commit")
        subprocess.run(["scancel", second], env=cluster.env, check=True)
        stdout, stderr = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == 0, stderr
    assert re.search(rf"part 2/4: job {second} .*; resubmitted as job [0-9]+ \(1 of 2\)",
                     stderr), stderr
    assert "complete: 16/16 replications committed" in stdout
    assert_same_as_one_run(out, reference)
    info = json.loads((out / "experiment.json").read_text())
    assert sorted(r["part"] for r in info["runs"] if r.get("part")).count("2/4") == 2


def test_a_job_slurm_refuses_is_one_line(cluster: SlurmCluster, make_config: Any,
                                         tmp_path: Path) -> None:
    config = make_config(output=tmp_path / "out", replications=2)
    done = _cli(cluster, "run", str(config), "--backend", "slurm", "execution.slurm.parts=2",
                "execution.slurm.partition=nope", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("disco-data-logger: error: "), done.stderr
    assert "sbatch refused the job of 2 part(s)" in lines[0] and "partition" in lines[0]
    info = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert info["runs"][-1]["state"] == "error" and info["totals"]["pending"] == 4
