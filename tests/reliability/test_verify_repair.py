"""``disco-data-logger verify [--repair]`` on real killed-writer directories, plain logger
directories and an experiment: per-segment report, and a repair that cuts a torn tail and
nothing else, keeping the original."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from disco_data_logger import DataLogger
from disco_data_logger.cli import main
from disco_data_logger.sharding.verify import repair_segment, verify_path, walk_segment
from tests.common import assert_same_records, decode_native, decode_python, frame_units
from tests.reliability.helpers import last_segment, tear_copy
from tests.test_crash import check_recovered, kill_once


def backups(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg.zst.torn-*"))


def assert_repaired(path: Path, torn_at: int) -> None:
    """A repaired torn directory reads back exactly as before, with nothing skipped any more."""
    seg = last_segment(path)
    original = seg.read_bytes()
    before_native, before_python = decode_native(path), decode_python(path)
    assert_same_records(before_native, before_python)
    assert before_native.skipped_at() == [(seg.name, torn_at)]

    report = verify_path(path, repair=True)
    assert report.ok, list(report.lines())
    checks = {c.name: c for c in report.shards[0].segments}
    repair = checks[seg.name].repair
    assert repair is not None and repair.repaired, repair
    assert repair.cut_at == torn_at and repair.removed_bytes == len(original) - torn_at
    assert not checks[seg.name].torn_tail  # the report is of the state after the repair

    assert seg.read_bytes() == original[:torn_at]
    (backup,) = backups(path)
    assert backup.read_bytes() == original  # the whole original, torn tail included
    after_native, after_python = decode_native(path), decode_python(path)
    assert after_native.skipped == [] and after_python.skipped == []
    assert_same_records(after_native, before_native)
    assert_same_records(after_python, before_native)


def test_repair_directories_of_killed_writers(tmp_path: Path) -> None:
    """Real writers killed with SIGKILL; each directory torn once more inside its last unit (a
    kill in the middle of a write: the kill itself rarely lands there)."""
    rng = random.Random(5150)
    for i in range(6):
        killed = tmp_path / f"killed{i}"
        acked, _ = kill_once(killed, rng)
        torn_by_kill = any(s.torn_tail for s in walk_segment_all(killed))
        report = verify_path(killed, repair=True)  # an untorn directory is left as it is
        assert report.ok, list(report.lines())
        assert len(backups(killed)) == torn_by_kill
        check_recovered(killed, acked)  # nothing acknowledged lost, by either reader

        torn = tmp_path / f"torn{i}"
        _, torn_at = tear_copy(killed, torn, rng.random())
        assert_repaired(torn, torn_at)
        assert main(["verify", str(torn)]) == 0


def walk_segment_all(path: Path) -> list:
    return [walk_segment(seg) for seg in sorted(path.glob("*.seg.zst"))]


@pytest.fixture(scope="module")
def closed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain logger directory with several segments of several blocks each."""
    path = tmp_path_factory.mktemp("closed")
    rng = np.random.default_rng(8)
    with DataLogger(path, rotate_bytes=6000, block_bytes=1024) as dl:
        q = dl.register_stream({"m": "q"}, epoch_scale=1e-3, value_scale=1e-2)
        x = dl.register_stream({"m": "x"}, value_scale=None)
        for k in range(600):
            n = int(rng.integers(0, 12))
            dl.record(q if k % 2 else x, k * 0.1, np.arange(n), rng.normal(size=n))
    assert len(list(path.glob("*.seg.zst"))) >= 3
    return path


def test_verify_reports_per_segment(closed_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify_path(closed_dir)
    assert report.ok
    (shard,) = report.shards
    assert shard.closed and shard.name == closed_dir.name
    total = 0
    for check in shard.segments:
        data = (closed_dir / check.name).read_bytes()
        units = frame_units(data)
        blocks = [u for u in units if u.kind == 3]
        assert (check.blocks, check.records) == (len(blocks), sum(u.records for u in blocks))
        assert check.footer and not check.torn_tail and check.checksum_failures == 0
        total += check.records
    assert total == len(decode_native(closed_dir)) == 600

    assert main(["verify", str(closed_dir)]) == 0
    out = capsys.readouterr().out
    for check in shard.segments:
        assert check.name in out
    assert "blocks" in out and "records" in out and "crc fail" in out and "torn" in out


def test_verify_counts_checksum_failures(closed_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "flipped"
    shutil.copytree(closed_dir, path)
    seg = sorted(path.glob("*.seg.zst"))[1]
    data = bytearray(seg.read_bytes())
    block = next(u for u in frame_units(bytes(data)) if u.kind == 3)
    data[block.end - 3] ^= 0xFF  # inside the compressed frame: that block only
    seg.write_bytes(bytes(data))
    report = verify_path(path, repair=True)
    check = next(c for c in report.shards[0].segments if c.name == seg.name)
    assert check.checksum_failures >= 1 and not check.torn_tail
    assert check.repair is None and backups(path) == []  # nothing torn: nothing touched
    assert seg.read_bytes() == bytes(data)
    assert main(["verify", str(path), "--repair"]) == 1
    err = capsys.readouterr().err
    assert seg.name in err and "checksum" in err

    seg.write_bytes(bytes(data[:-3]))  # and torn: the cut would be safe, but a human decides
    result = repair_segment(seg)
    assert not result.repaired and "damaged before" in result.message
    assert seg.read_bytes() == bytes(data[:-3]) and backups(path) == []


def test_repair_refuses_damage_in_the_middle(closed_dir: Path, tmp_path: Path) -> None:
    """A size field that lies looks like a torn tail from where it is, but intact frames follow:
    cutting there would lose them."""
    path = tmp_path / "lying"
    shutil.copytree(closed_dir, path)
    seg = sorted(path.glob("*.seg.zst"))[0]
    data = bytearray(seg.read_bytes())
    units = frame_units(bytes(data))
    middle = units[len(units) // 2]
    struct.pack_into("<I", data, middle.offset + 4, 0x7FFFFFFF)
    seg.write_bytes(bytes(data))
    check = walk_segment(seg)
    assert not check.torn_tail and check.problems
    result = repair_segment(seg)
    assert not result.repaired and seg.read_bytes() == bytes(data) and backups(path) == []
    assert not verify_path(path, repair=True).ok

    # a torn tail after a damaged header is not repaired either (the walk, like the readers,
    # stops at the damaged header): the segment needs a human
    crc_bad = bytearray(data)
    struct.pack_into("<I", crc_bad, middle.offset + 4, middle.end - middle.offset - 8)
    crc_bad[units[1].offset + 12] ^= 0x01  # a header byte: its crc fails
    crc_bad = crc_bad[:-3]
    seg.write_bytes(bytes(crc_bad))
    result = repair_segment(seg)
    assert not result.repaired and backups(path) == []
    assert seg.read_bytes() == bytes(crc_bad)


def test_repair_zero_filled_tail(closed_dir: Path, tmp_path: Path) -> None:
    """A machine crash can leave a file longer than its data, padded with zeros."""
    path = tmp_path / "zeros"
    shutil.copytree(closed_dir, path)
    (path / "_DONE").unlink()
    seg = last_segment(path)
    size = seg.stat().st_size
    with open(seg, "ab") as fh:
        fh.write(bytes(4096))
    assert_repaired(path, size)


def test_repair_leaves_open_segments_alone(closed_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "open"
    shutil.copytree(closed_dir, path)
    seg = last_segment(path)
    seg.write_bytes(seg.read_bytes()[:-5])
    with open(seg, "rb"):
        result = repair_segment(seg)
        assert not result.repaired and str(os.getpid()) in result.message
    assert repair_segment(seg).repaired


SHARD_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from disco_data_logger import ShardWriter

    out = sys.argv[1]
    shard = ShardWriter(out, "shard-a", logger_kwargs={"flush_interval": 0.02,
                                                       "block_bytes": 2048})
    rng = np.random.default_rng(0)
    for r in range(10**6):
        rep = shard.begin(f"p0000-r{r:06d}", replication=r)
        sid = rep.logger.register_stream({"measure": "q", "replication": r}, value_scale=0.01)
        for k in range(50):
            rep.logger.record(sid, float(k), np.arange(8), rng.normal(size=8))
        rep.commit()
        print(r, flush=True)
    """
)


def test_repair_torn_shard_of_a_killed_worker(tmp_path: Path) -> None:
    """A shard writer killed mid-replication; its last segment torn: after the repair, every
    committed replication still decodes to its committed record count."""
    from disco_data_logger import merge
    from disco_data_logger.sharding import Experiment

    out = tmp_path / "exp"
    with subprocess.Popen([sys.executable, "-c", SHARD_WRITER, str(out)],
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for _ in range(5):
            committed = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
    shard_dir = out / "shards" / "shard-a"
    seg = last_segment(shard_dir)
    data = seg.read_bytes()
    tail = struct.pack("<II", 0x184D2A5D, 36) + b"DDL1\x03"  # a block header cut after 13 bytes
    seg.write_bytes(data + tail)
    assert verify_path(out).shards[0].segments[-1].torn_tail
    assert main(["verify", str(out), "--repair"]) == 0
    assert seg.read_bytes() == data
    merge(out)
    reps = Experiment.open(out).replications
    assert sum(s == "committed" for s in reps["status"].to_pylist()) >= committed + 1
    assert verify_path(out).ok
