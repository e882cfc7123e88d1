"""ShardWriter and ShardManifest: replication-level commit, journal, consolidated manifest."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from disco_data_logger.sharding import ShardManifest, ShardWriter
from disco_data_logger.sharding.manifest import JOURNAL_NAME, MANIFEST_NAME, atomic_write_json
from disco_data_logger.sharding.shard import check_shard_id


def _record_some(rep, n: int = 3, value: float = 1.0) -> int:
    sid = rep.logger.register_stream({"measure": "stock"}, value_scale=0.01)
    for k in range(n):
        rep.logger.record(sid, float(k), [0, 2], [value, value + k])
    return sid


def test_commit_lists_streams_counts_and_epochs(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1") as shard:
        with shard.replication("t0", replication=0, point_id="p0", params={"a": 1}) as rep:
            sid = _record_some(rep, n=4)
            periodic = rep.logger.register_periodic_stream(
                {"measure": "demand"}, value_scale=None, periodicity=1.0, kind="accumulator")
            periodic.record(0.5, [1], [2.0])
            periodic.close(3.0)
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m is not None and m.closed
    (rep_entry,) = m.replications
    assert rep_entry["task_id"] == "t0" and rep_entry["params"] == {"a": 1}
    streams = {s["stream_id"]: s for s in rep_entry["streams"]}
    assert streams[sid]["labels"] == {"measure": "stock"}
    assert streams[sid]["records"] == 4
    assert (streams[sid]["min_epoch"], streams[sid]["max_epoch"]) == (0.0, 3.0)
    assert streams[periodic.stream_id]["kind"] == "accumulator"
    assert streams[periodic.stream_id]["records"] >= 1


def test_failed_replication_is_not_committed(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1") as shard:
        with pytest.raises(RuntimeError):
            with shard.replication("bad", replication=0) as rep:
                _record_some(rep)
                raise RuntimeError("model failed")
        with shard.replication("good", replication=1) as rep:
            _record_some(rep)
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert [r["task_id"] for r in m.replications] == ["good"]
    assert [f["task_id"] for f in m.failures] == ["bad"]
    assert "model failed" in m.failures[0]["error"]


def test_segments_listed_with_checksums_on_close(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1") as shard:
        with shard.replication("t0") as rep:
            _record_some(rep)
    shard_dir = tmp_path / "shards" / "s1"
    doc = json.loads((shard_dir / MANIFEST_NAME).read_text())
    assert doc["closed"] and doc["segments"]
    for seg in doc["segments"]:
        data = (shard_dir / seg["name"]).read_bytes()
        assert seg["bytes"] == len(data)
        assert seg["crc32"] == zlib.crc32(data)
    assert (shard_dir / "_DONE").exists()


def test_journal_of_unclosed_shard_and_torn_last_line(tmp_path: Path) -> None:
    shard = ShardWriter(tmp_path, "s1")
    with shard.replication("t0") as rep:
        _record_some(rep)
    shard._logger.flush()
    journal = tmp_path / "shards" / "s1" / JOURNAL_NAME
    # A worker killed mid-commit leaves an unterminated line: it must not count.
    with open(journal, "ab") as fh:
        fh.write(b'{"type":"commit","replication":{"task_id":"t1"')
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m is not None and not m.closed
    assert [r["task_id"] for r in m.replications] == ["t0"]
    assert m.torn_lines == 1
    shard.close()


def test_streams_must_be_registered_inside_a_replication(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1") as shard:
        with pytest.raises(RuntimeError, match="outside a replication"):
            shard.logger.register_stream({"x": 1}, value_scale=1.0)
        rep = shard.begin("t0")
        with pytest.raises(RuntimeError, match="still open"):
            shard.begin("t1")
        rep.commit()
        with pytest.raises(RuntimeError, match="already committed"):
            rep.commit()


def test_open_replication_is_aborted_by_close(tmp_path: Path) -> None:
    shard = ShardWriter(tmp_path, "s1")
    rep = shard.begin("t0")
    _record_some(rep)
    shard.close()
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m.replications == [] and [f["task_id"] for f in m.failures] == ["t0"]


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 200, "a b"])
def test_unsafe_shard_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not safe"):
        check_shard_id(bad)


def test_shard_directory_is_never_reused(tmp_path: Path) -> None:
    ShardWriter(tmp_path, "s1").close()
    with pytest.raises(FileExistsError, match="own shard id"):
        ShardWriter(tmp_path, "s1")


def test_fresh_shard_ids_are_unique(tmp_path: Path) -> None:
    a, b = ShardWriter(tmp_path), ShardWriter(tmp_path)
    assert a.shard_id != b.shard_id
    a.close()
    b.close()


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
