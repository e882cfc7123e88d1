"""An experiment of a few thousand tiny replications keeps a bounded number of files and small
metadata, commits each replication exactly once through group commits, and its journal, its
in-band registrations and its index agree (two real multiprocessing workers, the real CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import yaml

from disco_data_logger import read
from disco_data_logger.reader import read_registrations
from disco_data_logger.sharding import Experiment, ShardManifest
from disco_data_logger.sharding.index import MAX_PARTS
from disco_data_logger.sharding.verify import verify_path

REPLICATIONS = 3000
STREAMS = 4


def tiny(ctx: Any) -> None:
    """Four streams, three records of two non-zeros each; values identify the replication."""
    for k, name in enumerate(sorted(ctx.streams)):
        sid = ctx.streams[name]
        for day in range(3):
            ctx.logger.record(sid, day + 0.5, [k, 10 + k], [float(ctx.replication), day + 0.25])


def test_thousands_of_replications_keep_a_bounded_number_of_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = {
        "experiment": {"organisation": "acme", "model": "tiny", "name": "scale"},
        "output": str(out),
        "replications": REPLICATIONS,
        "seed": 3,
        "entry_point": "test_scale:tiny",
        "duration": 3,
        "execution": {"backend": "multiprocessing", "workers": 2, "retries": 0},
        "streams": [{"name": f"s{k}", "value_scale": None, "labels": {"unit": "kg"}}
                    for k in range(STREAMS)],
    }
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(path),
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"{REPLICATIONS}/{REPLICATIONS} replications committed" in proc.stdout

    files = [Path(d) / f for d, _, names in os.walk(out) for f in names]
    shards = sorted((out / "shards").iterdir())
    assert len(shards) == 2
    for shard in shards:
        assert sorted(os.listdir(shard)) == ["00000.seg.zst", "_DONE", "journal.jsonl.zst"]
    assert len(files) <= 10 * len(shards) + 10, sorted(map(str, files))
    assert len(list((out / "index" / "parts").iterdir())) <= MAX_PARTS
    info_bytes = (out / "experiment.json").stat().st_size
    assert info_bytes < 20_000  # no per-replication entries
    journal_bytes = sum((s / "journal.jsonl.zst").stat().st_size for s in shards)
    assert journal_bytes < REPLICATIONS * 60, journal_bytes

    exp = Experiment.open(out)
    reps = exp.replications
    assert reps.num_rows == REPLICATIONS
    assert set(reps["status"].to_pylist()) == {"committed"}
    table = exp.select("s2", format="list")  # a rule naming a label that is absent: none
    assert table.num_rows == 0
    table = exp.select("stream=s2", format="list")
    assert table.num_rows == 3 * REPLICATIONS
    firsts = pc.list_element(table["values"], 0).to_numpy()
    assert np.array_equal(np.sort(firsts), np.repeat(np.arange(REPLICATIONS, dtype=float), 3))
    assert exp.streams("unit=kg").num_rows == STREAMS * REPLICATIONS

    # The journal, the in-band registrations and the index say the same of every stream.
    streams = exp.streams()
    for shard in shards:
        manifest = ShardManifest.load(shard)
        assert manifest.closed and manifest.commits > 0
        inband = read_registrations(shard)
        mine = streams.filter(pc.equal(streams["shard_id"], shard.name))
        assert mine.num_rows == len(manifest.batch.stream_id) == len(inband)
        for rep in manifest.replications[:: max(1, manifest.commits // 50)]:
            for s in rep["streams"]:
                reg = inband[s["stream_id"]]
                assert {k: reg[k] for k in s["labels"]} == s["labels"]
                assert set(reg) - set(s["labels"]) <= {"stream_id", "epoch_scale",
                                                       "value_scale", "periodicity", "kind"}
                assert reg["epoch_scale"] == s["epoch_scale"]
        counts = read(shard)["stream_id"].value_counts().to_pylist()
        assert {c["counts"] for c in counts} == {3}
    report = verify_path(out)
    assert report.ok, report.problem_summary()
