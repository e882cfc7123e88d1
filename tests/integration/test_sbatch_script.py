"""``disco-data-logger sbatch``: the script it writes, run by bash as SLURM would run each array
task (SLURM_ARRAY_TASK_ID set), and the ``execution.slurm`` settings it is made from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import assert_same_as_one_run, run

from disco_data_logger.errors import ConfigError
from disco_data_logger.sharding.config import load_config
from disco_data_logger.sharding.coordinator import Coordinator


def _sbatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "disco_data_logger", "sbatch", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_script_runs_every_part_as_array_tasks_would(make_config: Any,
                                                         tmp_path: Path) -> None:
    reference = tmp_path / "one-run"
    run(make_config(output=reference, replications=4))
    work = tmp_path / "a dir 'q' $(touch PWNED)"
    work.mkdir()
    out = work / "out put"
    config = make_config(output=out, replications=4, execution={"slurm": {
        "partition": "short", "time": "1:30:00", "cpus_per_task": 2, "mem": "3GiB",
        "array_parallelism": 2, "account": "proj-7", "options": {"gres": "gpu:1",
                                                                 "requeue": True},
        "setup": ["export DDL_SETUP_RAN=yes"]}})
    script = work / "job.sh"
    wrote = _sbatch(str(config), "--parts", "4", "--out", str(script), "seed=20240601",
                    cwd=work)
    assert wrote.returncode == 0, wrote.stderr
    assert "sbatch" in wrote.stderr
    text = script.read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=short", "#SBATCH --time=01:30:00",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --mem=3072M", "#SBATCH --account=proj-7",
                 "#SBATCH --gres=gpu:1", "#SBATCH --requeue", "#SBATCH --job-name=ddl-itest",
                 "export DDL_SETUP_RAN=yes", "sbatch --array=2 job.sh"):
        assert line in text.splitlines() or line in text, line
    run_line = next(line for line in text.splitlines() if line.startswith("exec "))
    assert "--part auto/4 --backend multiprocessing --workers 2 --no-progress" in run_line
    assert "seed=20240601" in run_line
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    # Each array task as SLURM starts it: the script with its index in the environment.
    for k in range(4):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_JOB_ID": "77"}
        done = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert f"of part {k + 1}/4" in done.stdout
    assert_same_as_one_run(out, reference)
    assert not list(tmp_path.glob("PWN*")) and not list(work.glob("PWN*"))


def test_to_stdout_with_the_default_parts(make_config: Any, tmp_path: Path) -> None:
    config = make_config(execution={"backend": "slurm", "workers": 3})
    printed = _sbatch(str(config), cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "#SBATCH --array=0-2" in printed.stdout and "--part auto/3" in printed.stdout
    # one worker per part: the part runs in the job's own process
    assert "--backend serial --workers 1" in printed.stdout


@pytest.mark.parametrize(("override", "field", "message"), [
    ("execution.slurm.partition=a b", "execution.slurm.partition", "one word"),
    ("execution.slurm.partition=x;rm", "execution.slurm.partition", "one word"),
    ("execution.slurm.time=soon", "execution.slurm.time", "2:00:00"),
    ("execution.slurm.options.array=0-9", "execution.slurm.options.array", "set by"),
    ("execution.slurm.options.--gres=x", "execution.slurm.options", "long option name"),
    ("execution.slurm.cpus_per_task=0", "execution.slurm.cpus_per_task", ""),
])
def test_bad_slurm_settings_are_refused(make_config: Any, override: str, field: str,
                                        message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(make_config(), [override])
    assert field in str(info.value) and message in str(info.value)


def test_times_are_read_as_slurm_writes_them(make_config: Any, tmp_path: Path) -> None:
    path = make_config()
    doc = yaml.safe_load(path.read_text())
    path.write_text(path.read_text().replace("execution:", "execution:\n  slurm: {time: "
                                             "2:00:00}", 1))
    assert doc["execution"]  # the replacement above hit the execution section
    cfg = load_config(path)
    assert cfg.execution.slurm.time == 120 and cfg.execution.slurm.time_text == "02:00:00"
    assert load_config(path, ["execution.slurm.time=1-12"]).execution.slurm.time == 36 * 60
    setup = load_config(path, ["execution.slurm.setup=[\"module load x\"]"])
    assert setup.execution.slurm.setup == ["module load x"]


def test_the_slurm_backend_says_where_it_can_run(make_config: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    assert shutil.which("sbatch") is None
    cfg = load_config(make_config(execution={"backend": "slurm"}))
    with pytest.raises(ConfigError, match="sbatch and squeue are not on this machine's PATH"):
        Coordinator(cfg, progress=False).run()
    assert not Path(cfg.output).exists()
    with pytest.raises(ConfigError, match="cannot be used with execution.backend: slurm"):
        Coordinator(cfg, progress=False, part="1/2").run()
