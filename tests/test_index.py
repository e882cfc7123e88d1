"""merge() and ExperimentIndex: shard journals -> index parts, replications.parquet, state.json
and experiment.json; incremental merges, deduplication, label columns, format-1 journals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from disco_data_logger.errors import NotAnExperimentError
from disco_data_logger.sharding import ExperimentIndex, ShardWriter, merge
from disco_data_logger.sharding.index import MAX_PARTS
from disco_data_logger.sharding.manifest import JOURNAL_V1_NAME, to_json_line


def _write_replication(shard: ShardWriter, task_id: str, replication: int, value: float,
                       **labels: object) -> None:
    with shard.replication(task_id, replication=replication, point_id="p0000") as rep:
        sid = rep.logger.register_stream({"stream": "stock", "replication": replication,
                                          **labels}, value_scale=0.5)
        rep.logger.record(sid, 1.0, [1, 3], [value, value])


def test_merge_writes_index_and_experiment_json(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "a") as shard:
        _write_replication(shard, "t0", 0, 1.0, site="x")
        _write_replication(shard, "t1", 1, 2.0, site="y", weight=1.5)
    index = merge(tmp_path)
    (part,) = (tmp_path / "index" / "parts").glob("streams-*.parquet")
    streams = pq.read_table(part)
    assert streams.num_rows == 2
    assert {"shard_id", "stream_id", "task_id", "replication", "records", "min_epoch",
            "max_epoch", "stream", "site", "weight"} <= set(streams.column_names)
    assert streams["weight"].to_pylist() == [None, 1.5]
    assert streams["records"].to_pylist() == [1, 1]
    info = json.loads((tmp_path / "experiment.json").read_text())
    assert info["totals"]["committed"] == 2 and info["totals"]["records"] == 2
    assert "replications" not in info  # that is index/replications.parquet
    assert info["versions"]["disco_data_logger"]
    assert info["host"] and info["versions"]["python"]
    assert index.committed_task_ids == {"t0", "t1"}
    reps = pq.read_table(tmp_path / "index" / "replications.parquet")
    assert reps["status"].to_pylist() == ["committed", "committed"]


def test_first_commit_wins_and_duplicates_are_counted(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "first") as shard:
        _write_replication(shard, "t0", 0, 1.0)
    time.sleep(0.01)
    with ShardWriter(tmp_path, "second") as shard:
        _write_replication(shard, "t0", 0, 9.0)  # e.g. a retry whose first commit was not acked
    index = merge(tmp_path)
    assert index.streams["shard_id"].to_pylist() == ["first"]
    assert index.duplicates == 1
    assert index.totals["committed"] == 1


def test_failure_without_commit_is_reported_failed(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "a") as shard:
        with pytest.raises(ValueError):
            with shard.replication("t0", replication=0):
                raise ValueError("boom")
        with pytest.raises(ValueError):
            with shard.replication("t1", replication=1):
                raise ValueError("boom")
        _write_replication(shard, "t1", 1, 1.0)  # retried successfully
    rows = {r["task_id"]: r for r in merge(tmp_path).replications.to_pylist()}
    assert rows["t0"]["status"] == "failed" and "boom" in rows["t0"]["error"]
    assert rows["t1"]["status"] == "committed"


def test_mixed_label_types_fall_back_to_text(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "a") as shard:
        _write_replication(shard, "t0", 0, 1.0, site="x")
        _write_replication(shard, "t1", 1, 1.0, site=3)
    streams = merge(tmp_path).streams
    assert streams["site"].to_pylist() == ["x", "3"]


def test_merge_refuses_what_is_not_an_experiment(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotAnExperimentError, match="not an experiment directory"):
        merge(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(FileNotFoundError):
        merge(tmp_path / "missing")
    (tmp_path / "shards").mkdir()  # an experiment whose workers wrote nothing yet
    index = merge(tmp_path)
    assert index.totals["streams"] == 0 and index.replications.num_rows == 0


def _synthetic_shard(root: Path, shard: int, reps: int, streams: int) -> None:
    """A format-1 journal like a worker killed before closing would leave (no segments)."""
    d = root / "shards" / f"s{shard:04d}"
    d.mkdir(parents=True)
    lines = [to_json_line({"type": "shard", "shard_id": d.name, "host": "h", "pid": shard,
                           "created": 0.0, "fingerprint": None})]
    for r in range(reps):
        tid = f"p0000-r{shard * reps + r:06d}"
        lines.append(to_json_line({"type": "commit", "replication": {
            "task_id": tid, "replication": shard * reps + r, "point_id": "p0000",
            "point_index": 0, "params": {}, "attempt": 1, "shard_id": d.name,
            "started": 1.0, "finished": 2.0 + r, "seconds": 1.0,
            "streams": [{"stream_id": r * streams + k, "records": 10, "min_epoch": 0.0,
                         "max_epoch": 9.0, "epoch_scale": 1e-6, "value_scale": 0.01,
                         "periodicity": None, "kind": None,
                         "labels": {"stream": f"m{k}", "replication": shard * reps + r,
                                    "site": f"s{k % 3}"}}
                        for k in range(streams)]}}))
    (d / JOURNAL_V1_NAME).write_bytes(b"".join(lines))


def test_merging_1000_manifests(tmp_path: Path) -> None:
    for shard in range(1000):
        _synthetic_shard(tmp_path, shard, reps=5, streams=4)
    t0 = time.perf_counter()
    index = merge(tmp_path)
    elapsed = time.perf_counter() - t0
    assert index.totals["shards"] == 1000
    assert index.totals["committed"] == 5000
    assert index.streams.num_rows == 20000
    assert index.totals["records"] == 200000
    # Reported, not asserted: timings are noisy on shared machines.
    print(f"merged 1000 manifests (5000 replications, 20000 streams) in {elapsed:.2f} s")


def test_build_does_not_write(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "a") as shard:
        _write_replication(shard, "t0", 0, 1.0)
    ExperimentIndex.build(tmp_path)
    assert not (tmp_path / "index").exists()
    assert not os.path.exists(tmp_path / "experiment.json")


def test_merge_is_incremental(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "a") as shard:
        _write_replication(shard, "t0", 0, 1.0)
    first = merge(tmp_path)
    state = json.loads((tmp_path / "index" / "state.json").read_text())
    assert [p["rows"] for p in state["parts"]] == [1]
    again = merge(tmp_path)  # nothing new: nothing rewritten
    assert again.written and again.info["updated"] == first.info["updated"]
    assert json.loads((tmp_path / "index" / "state.json").read_text()) == state
    with ShardWriter(tmp_path, "b") as shard:
        _write_replication(shard, "t1", 1, 2.0)
    merge(tmp_path)
    state = json.loads((tmp_path / "index" / "state.json").read_text())
    assert [p["rows"] for p in state["parts"]] == [1, 1]  # only the new commit was indexed
    assert sorted(ExperimentIndex.build(tmp_path).streams["task_id"].to_pylist()) == ["t0", "t1"]


def test_parts_are_compacted(tmp_path: Path) -> None:
    for k in range(MAX_PARTS + 2):
        with ShardWriter(tmp_path, f"s{k}") as shard:
            _write_replication(shard, f"t{k}", k, 1.0, site="x" if k % 2 else k)
        merge(tmp_path)
        parts = list((tmp_path / "index" / "parts").glob("streams-*.parquet"))
        assert len(parts) <= MAX_PARTS
    streams = ExperimentIndex.build(tmp_path).streams
    assert streams.num_rows == MAX_PARTS + 2
    assert streams["site"].type == "string"  # ints and strings: text, whatever the part
    assert sorted(streams["site"].to_pylist()) == sorted(
        ["x" if k % 2 else str(k) for k in range(MAX_PARTS + 2)])


def test_a_merge_interrupted_before_its_state_is_rebuilt(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "a") as shard:
        _write_replication(shard, "t0", 0, 1.0)
    merge(tmp_path)
    with ShardWriter(tmp_path, "b") as shard:
        _write_replication(shard, "t1", 1, 1.0)
    # A merge that wrote replications.parquet and died before state.json: they disagree.
    state = (tmp_path / "index" / "state.json").read_bytes()
    merge(tmp_path)
    (tmp_path / "index" / "state.json").write_bytes(state)
    with pytest.warns(Warning, match="does not match"):
        index = merge(tmp_path)
    assert sorted(index.streams["task_id"].to_pylist()) == ["t0", "t1"]


def test_the_index_columns_are_the_ones_layout_reserves():
    """The index tables' fixed columns are named once, in layout.py (which reserves them)."""
    from disco_data_logger import layout
    from disco_data_logger.sharding.index import REPLICATION_COLUMNS, STREAM_COLUMNS

    assert tuple(STREAM_COLUMNS) == layout.INDEX_STREAM_COLUMNS
    assert tuple(REPLICATION_COLUMNS) == layout.INDEX_REPLICATION_COLUMNS
    assert set(STREAM_COLUMNS) | set(REPLICATION_COLUMNS) <= (
        layout.RESERVED_LABELS | set(layout.SERVICE_LABELS))
