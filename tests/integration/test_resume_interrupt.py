"""Resume after a finished or interrupted run, and Ctrl-C on the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import decoded, run, statuses

from disco_data_logger.sharding import Experiment, ShardManifest
from disco_data_logger.sharding.manifest import JournalWriter
from tests.common import sigint_at


def test_second_run_skips_finished_tasks(make_config: Any, tmp_path: Path) -> None:
    config = make_config()
    first = run(config, "replications=2")
    assert first.committed == 4
    second = run(config)  # replications: 3 (the count is not part of the fingerprint)
    assert (second.resumed, second.committed) == (4, 2)
    third = run(config)
    assert (third.resumed, third.committed) == (6, 0)
    exp = Experiment.open(tmp_path / "out")
    assert exp.info["totals"]["committed"] == 6 and exp.info["totals"]["duplicates_dropped"] == 0
    assert len(exp.info["runs"]) == 3
    reference = make_config(tmp_path / "ref")
    run(reference)
    assert decoded(tmp_path / "out").equals(decoded(tmp_path / "ref"))


def _commits(output: Path) -> int:
    shards = output / "shards"
    if not shards.is_dir():
        return 0
    total = 0
    for d in shards.iterdir():
        m = ShardManifest.load(d)
        total += len(m.replications) if m is not None else 0
    return total


def test_ctrl_c_stops_cleanly_and_the_rerun_completes(make_config: Any, tmp_path: Path) -> None:
    config = make_config(replications=12, parameters={"sleep": 0.3},
                         execution={"backend": "multiprocessing", "workers": 2})
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "disco_data_logger", "run", str(config), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while _commits(out) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert f"results: {out}" in stdout

    info = json.loads((out / "experiment.json").read_text())
    assert info["state"] == "interrupted"
    done = info["totals"]["committed"]
    assert 2 <= done < 24
    assert done == _commits(out)  # the index records exactly what finished
    assert f"({done} this run, 0 resumed)" in stdout  # and the run's summary says the same
    for shard in (out / "shards").iterdir():  # every worker closed its writer
        manifest = ShardManifest.load(shard)
        assert manifest is not None and manifest.closed, shard.name
        assert (shard / "_DONE").exists()

    result = run(config)
    assert result.resumed == done and result.committed == 24 - done
    assert set(statuses(out).values()) == {"committed"}
    assert Experiment.open(out).info["totals"]["duplicates_dropped"] == 0


def test_a_commit_racing_ctrl_c_is_counted_by_the_run(make_config: Any, tmp_path: Path) -> None:
    """Ctrl-C lands while the second replication's commit is written (the serial backend runs it
    in this process; a real SIGINT at the journal's fsync): the commit completes, the run stops
    as interrupted, and the run counts that commit, as the index does (it used to say one)."""
    config = make_config(replications=3, execution={"backend": "serial", "commit_group": 1})
    out = tmp_path / "out"
    with sigint_at(JournalWriter._append, "os.fsync(self._fd)", skip=2) as delivered:
        result = run(config)  # passes: the journal's header, the first commit; then the second
    assert delivered
    assert result.state == "interrupted"
    info = Experiment.open(out).info
    assert result.committed == info["totals"]["committed"] == _commits(out) == 2
    assert info["runs"][-1]["committed"] == 2
    again = run(config)
    assert (again.resumed, again.committed) == (2, 4)
    assert Experiment.open(out).info["totals"]["duplicates_dropped"] == 0
