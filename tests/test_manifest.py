"""ShardWriter and the shard journal: replication-level commit, group commits, the journal's
frames, interning, damage, and what a closed (or failed) shard records."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import zstandard

from disco_data_logger.errors import CorruptDataWarning
from disco_data_logger.sharding import ShardManifest, ShardWriter
from disco_data_logger.sharding.layout import JOURNAL_FORMAT
from disco_data_logger.sharding.manifest import (
    FRAME_HEADER_BYTES,
    JOURNAL_NAME,
    atomic_write_json,
    encode_frame,
)
from disco_data_logger.sharding.shard import check_shard_id
from disco_data_logger.sharding.verify import verify_path


def _record_some(rep, n: int = 3, value: float = 1.0, **labels: object) -> int:
    sid = rep.logger.register_stream({"measure": "stock", **labels}, value_scale=0.01)
    for k in range(n):
        rep.logger.record(sid, float(k), [0, 2], [value, value + k])
    return sid


def journal_lines(shard_dir: Path) -> list[dict]:
    """Every JSON line of a journal, decompressed as ``zstd -dc`` would."""
    data = (shard_dir / JOURNAL_NAME).read_bytes()
    lines, pos = [], 0
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 12)[0]
        body = data[pos + FRAME_HEADER_BYTES:pos + FRAME_HEADER_BYTES + length]
        text = zstandard.ZstdDecompressor().decompress(body)
        lines += [json.loads(line) for line in text.splitlines()]
        pos += FRAME_HEADER_BYTES + length
    return lines


def test_commit_lists_streams_counts_and_epochs(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1") as shard:
        with shard.replication("t0", replication=0, point_id="p0", params={"a": 1}) as rep:
            sid = _record_some(rep, n=4)
            periodic = rep.logger.register_periodic_stream(
                {"measure": "demand"}, value_scale=None, periodicity=1.0, kind="accumulator")
            periodic.record(0.5, [1], [2.0])
            periodic.close(3.0)
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m is not None and m.closed and m.state == "closed"
    (rep_entry,) = m.replications
    assert rep_entry["task_id"] == "t0" and rep_entry["params"] == {"a": 1}
    streams = {s["stream_id"]: s for s in rep_entry["streams"]}
    assert streams[sid]["labels"] == {"measure": "stock"}
    assert streams[sid]["records"] == 4 and streams[sid]["value_scale"] == 0.01
    assert (streams[sid]["min_epoch"], streams[sid]["max_epoch"]) == (0.0, 3.0)
    assert streams[periodic.stream_id]["kind"] == "accumulator"
    assert streams[periodic.stream_id]["periodicity"] == 1.0
    assert streams[periodic.stream_id]["records"] >= 1


def test_a_shard_holds_three_files_however_many_replications(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1", commit_group=16) as shard:
        for r in range(300):
            with shard.replication(f"t{r}", replication=r) as rep:
                for name in ("a", "b", "c"):
                    _record_some(rep, n=2, stream=name, replication=r)
        shard.sync()
        assert shard._logger.streams == {}  # every durable stream was retired
    names = sorted(os.listdir(tmp_path / "shards" / "s1"))
    assert names == sorted(["00000.seg.zst", JOURNAL_NAME, "_DONE"])
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m.commits == 300 and len(m.batch.stream_id) == 900


def test_labels_are_stored_once_per_distinct_set(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1", commit_group=50) as shard:
        for r in range(200):
            with shard.replication(f"t{r}", replication=r, point_id="p0000") as rep:
                for name in ("stock", "demand"):
                    _record_some(rep, n=1, stream=name, organisation="acme-unique-name",
                                 replication=r)
    lines = journal_lines(tmp_path / "shards" / "s1")
    text = "\n".join(json.dumps(line) for line in lines)
    # First commit inline, then one shared set per frame (definitions never span frames, so
    # a damaged frame costs only its own commits).
    assert text.count("acme-unique-name") == 1 + 4
    assert text.count('"stream": "demand"') == 4  # one residual set per name and frame
    commits = [line for line in lines if line["type"] == "commits"]
    assert [c["n"] for c in commits] == [50] * 4
    assert commits[1]["own"][:2] == [{"replication": 50}, {"replication": 51}]
    # ... and every commit reads back with its full labels.
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    last = m.replications[-1]["streams"][1]["labels"]
    assert last == {"measure": "stock", "stream": "demand", "organisation": "acme-unique-name",
                    "replication": 199}
    size = (tmp_path / "shards" / "s1" / JOURNAL_NAME).stat().st_size
    assert size < 200 * 60, f"{size} bytes of journal for 200 commits of 2 streams"


def test_journal_is_zstd_json_lines_with_a_versioned_header(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1", fingerprint="abc") as shard:
        with shard.replication("t0") as rep:
            _record_some(rep)
    proc = subprocess.run(["zstd", "-dc", str(tmp_path / "shards" / "s1" / JOURNAL_NAME)],
                          capture_output=True, check=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["type"] == "shard" and lines[0]["format"] == JOURNAL_FORMAT
    assert lines[0]["fingerprint"] == "abc"
    assert [line["type"] for line in lines] == ["shard", "commits", "close"]
    close = lines[-1]
    assert close["state"] == "closed" and close["commits"] == 1
    seg = close["segments"][0]
    data = (tmp_path / "shards" / "s1" / seg["name"]).read_bytes()
    assert seg["bytes"] == len(data) and seg["crc32"] == zlib.crc32(data)
    (start, end) = lines[1]["sync"][0][1:3]
    assert lines[1]["sync"][0][3] == zlib.crc32(data[start:end])


def test_group_commit_is_durable_only_after_sync(tmp_path: Path) -> None:
    shard = ShardWriter(tmp_path, "s1", commit_group=3)
    summaries = []
    for r in range(2):
        with shard.replication(f"t{r}") as rep:
            _record_some(rep)
        summaries.append(rep)
    assert shard.staged == 2
    assert ShardManifest.load(tmp_path / "shards" / "s1").commits == 0  # nothing durable yet
    assert shard.sync() == ["t0", "t1"]
    assert ShardManifest.load(tmp_path / "shards" / "s1").commits == 2
    for r in range(2, 5):
        with shard.replication(f"t{r}") as rep:
            _record_some(rep)
    assert shard.staged == 0  # the third staged commit filled the group: synced by itself
    with shard.replication("t5") as rep:
        _record_some(rep)
    assert shard.close() == ["t5"]
    assert ShardManifest.load(tmp_path / "shards" / "s1").commits == 6


KILLED_BEFORE_SYNC = textwrap.dedent("""
    import os, sys
    from disco_data_logger.sharding import ShardWriter
    shard = ShardWriter(sys.argv[1], "s1", commit_group=10)
    for r in range(3):
        with shard.replication(f"durable-{r}") as rep:
            sid = rep.logger.register_stream({"m": "x"}, value_scale=None)
            rep.logger.record(sid, 1.0, [r], [1.0])
    print(shard.sync(), flush=True)
    for r in range(2):
        with shard.replication(f"staged-{r}") as rep:
            sid = rep.logger.register_stream({"m": "x"}, value_scale=None)
            rep.logger.record(sid, 1.0, [r], [1.0])
    shard.logger.flush()
    os.kill(os.getpid(), 9)
""")


def test_a_process_killed_before_its_group_sync_commits_only_what_was_synced(
        tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_BEFORE_SYNC, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert [r["task_id"] for r in m.replications] == ["durable-0", "durable-1", "durable-2"]
    assert not m.closed and m.state == "open"


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
    assert "Traceback" in m.failures[0]["traceback"]


def test_torn_last_frame_is_ignored(tmp_path: Path) -> None:
    shard = ShardWriter(tmp_path, "s1")
    with shard.replication("t0") as rep:
        _record_some(rep)
    journal = tmp_path / "shards" / "s1" / JOURNAL_NAME
    # A worker killed mid-append leaves part of a frame: it must not count, nor warn.
    frame = encode_frame([{"type": "commits", "n": 0}], zstandard.ZstdCompressor())
    with open(journal, "ab") as fh:
        fh.write(frame[:len(frame) - 3])
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m is not None and not m.closed and m.problems == []
    assert [r["task_id"] for r in m.replications] == ["t0"]
    assert m.torn_lines == 1
    shard._journal._fd = os.open(journal, os.O_WRONLY | os.O_APPEND)  # keep closing possible
    shard.close()


def _three_groups(tmp_path: Path) -> Path:
    with ShardWriter(tmp_path, "s1") as shard:
        for r in range(3):
            with shard.replication(f"t{r}") as rep:
                _record_some(rep)
    return tmp_path / "shards" / "s1"


def test_a_damaged_frame_costs_only_its_own_commits(tmp_path: Path) -> None:
    shard_dir = _three_groups(tmp_path)
    journal = shard_dir / JOURNAL_NAME
    data = bytearray(journal.read_bytes())
    # Frames: header, t0, t1, t2, close. Flip a byte inside the frame of t1.
    pos = 0
    starts = []
    while pos < len(data):
        starts.append(pos)
        pos += FRAME_HEADER_BYTES + struct.unpack_from("<I", data, pos + 12)[0]
    data[starts[2] + FRAME_HEADER_BYTES + 5] ^= 0xFF
    journal.write_bytes(bytes(data))
    with pytest.warns(CorruptDataWarning, match=rf"{JOURNAL_NAME}: frame at offset {starts[2]}"):
        m = ShardManifest.load(shard_dir)
    assert [r["task_id"] for r in m.replications] == ["t0", "t2"] and m.closed


def test_a_malformed_line_is_skipped_with_its_place(tmp_path: Path) -> None:
    shard_dir = _three_groups(tmp_path)
    journal = shard_dir / JOURNAL_NAME
    good = journal.read_bytes()
    cctx = zstandard.ZstdCompressor()
    bad = [{"type": "commits", "n": 1, "task_id": [None]},  # columns missing, id not a string
           {"type": "mystery"}]
    journal.write_bytes(good + encode_frame(bad, cctx))
    with pytest.warns(CorruptDataWarning) as caught:
        m = ShardManifest.load(shard_dir)
    messages = [str(w.message) for w in caught]
    assert any(f"frame at offset {len(good)}, line 1" in msg for msg in messages)
    assert any("line 2: unknown line type 'mystery'" in msg for msg in messages)
    assert [r["task_id"] for r in m.replications] == ["t0", "t1", "t2"]


def test_shard_id_is_the_folder_name_not_what_the_journal_claims(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "s1") as shard:
        with shard.replication("t0") as rep:
            _record_some(rep)
    src = tmp_path / "shards" / "s1"
    dst = tmp_path / "shards" / "renamed"
    src.rename(dst)
    with pytest.warns(CorruptDataWarning, match="claims shard id 's1'"):
        m = ShardManifest.load(dst)
    assert m.shard_id == "renamed" and m.replications[0]["shard_id"] == "renamed"


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


WRITER_FAILS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from disco_data_logger.sharding import ShardWriter
    shard = ShardWriter(sys.argv[1], "s1", logger_kwargs={"block_bytes": 4096,
                                                          "flush_interval": 3600})
    rng = np.random.default_rng(0)
    with shard.replication("t0") as rep:
        sid = rep.logger.register_stream({"m": "x"}, value_scale=None)
        rep.logger.record(sid, 0, np.arange(100), rng.normal(size=100))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        with shard.replication("t1") as rep:
            sid = rep.logger.register_stream({"m": "x"}, value_scale=None)
            for k in range(100000):
                rep.logger.record(sid, k, np.arange(100), rng.normal(size=100))
    except Exception as exc:
        print("model saw", type(exc).__name__, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    shard.close()
""")


def test_a_writer_failure_is_what_the_journal_records(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", WRITER_FAILS, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "model saw WriterError" in proc.stdout
    m = ShardManifest.load(tmp_path / "shards" / "s1")
    assert m.state == "writer_failed" and not m.closed
    assert "File too large" in m.error
    assert [r["task_id"] for r in m.replications] == ["t0"]
    assert [f["task_id"] for f in m.failures] == ["t1"]
    assert not (tmp_path / "shards" / "s1" / "_DONE").exists()
    report = verify_path(tmp_path)
    problems = [p for s in report.shards for p in s.problems] + [
        p for s in report.shards for seg in s.segments for p in seg.problems]
    assert any("writer failed" in p and "File too large" in p for p in problems)
    assert not any("closed cleanly" in p for p in problems)


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
