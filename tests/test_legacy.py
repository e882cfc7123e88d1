"""Reading directories of the 0.1.x library (FORMAT.md section 6) with both readers."""

from __future__ import annotations

import numpy as np
import pytest

from disco_data_logger import pyreader, read
from disco_data_logger.errors import SkipKind
from tests.common import assert_same_records, both_readers, decode_native, decode_python, quantise
from tests.legacy import LegacyLogger

SCALES = {1: (1e-3, 1e-2), 2: (0.25, 1.0), 3: (1e-6, 1e-4)}


def write_legacy(path, *, records: int = 400, rotate_bytes: int = 1500, seed: int = 3):
    """A 0.1.x directory with three streams over several segments; returns what was recorded."""
    rng = np.random.default_rng(seed)
    recorded = []
    with LegacyLogger(path, rotate_bytes=rotate_bytes) as lg:
        for sid, (es, vs) in SCALES.items():
            assert lg.register_stream({"entity": f"e{sid}", "measure": "stock"},
                                      epoch_scale=es, value_scale=vs) == sid
        for k in range(records):
            sid = int(rng.choice([1, 1, 1, 2, 3]))  # stream 3 is rare: long gaps across files
            idx = np.sort(rng.choice(500, size=int(rng.integers(0, 7)), replace=False))
            vals = rng.normal(size=len(idx)) * 1000
            epoch = 100.0 + k * 0.731 - (50.0 if sid == 2 else 0.0)
            lg.record(sid, epoch, idx, vals)
            recorded.append((sid, epoch, idx, vals))
    return recorded


def check(decoded, recorded) -> None:
    assert len(decoded) == len(recorded)
    for (sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals) in zip(
            recorded, decoded.records(), strict=True):
        es, vs = SCALES[sid]
        assert gsid == sid
        assert gepoch == quantise(epoch, es)
        assert gidx.tolist() == idx.tolist()
        want = np.array([quantise(v, vs) for v in vals], dtype=np.float64)
        np.testing.assert_array_equal(gvals.view(np.uint64), want.view(np.uint64))


@both_readers
def test_several_segments(tmp_path, decode):
    recorded = write_legacy(tmp_path)
    assert len(list(tmp_path.glob("*.seg.zst"))) >= 4
    got = decode(tmp_path)
    check(got, recorded)
    assert got.skipped == []


def test_readers_agree_bit_for_bit(tmp_path):
    write_legacy(tmp_path, records=1000, rotate_bytes=700, seed=11)
    assert_same_records(decode_python(tmp_path), decode_native(tmp_path))


def test_read_with_labels_and_stream_selection(tmp_path):
    recorded = write_legacy(tmp_path)
    table = read(tmp_path, "entity=e3", label_columns=True)
    assert set(table.column("stream_id").to_pylist()) == {3}
    assert table.num_rows == sum(1 for r in recorded if r[0] == 3)
    assert set(table.column("measure").to_pylist()) == {"stock"}
    only = read(tmp_path, stream_ids=[2])
    assert only.num_rows == sum(1 for r in recorded if r[0] == 2)


@both_readers
def test_ticks_run_across_segments(tmp_path, decode):
    """The 0.1.x tick delta of a stream refers to its previous record, even in an earlier file."""
    with LegacyLogger(tmp_path, rotate_bytes=1) as lg:  # every record in its own segment
        sid = lg.register_stream({}, epoch_scale=1.0, value_scale=1.0)
        for epoch in (1000.0, 1003.0, 999.0, -5.0):
            lg.record(sid, epoch, [1], [epoch])
    assert len(list(tmp_path.glob("*.seg.zst"))) == 5  # 0.1.x left an empty file after rotating
    got = decode(tmp_path)
    assert got.epoch.tolist() == [1000.0, 1003.0, 999.0, -5.0]
    assert got.values.tolist() == [1000.0, 1003.0, 999.0, -5.0]
    assert got.skipped == []


def test_a_later_segment_alone_starts_its_ticks_from_zero(tmp_path):
    with LegacyLogger(tmp_path, rotate_bytes=1) as lg:
        sid = lg.register_stream({}, epoch_scale=1.0, value_scale=1.0)
        for epoch in (1000.0, 1003.0):
            lg.record(sid, epoch, [], [])
    alone = pyreader.read_segment(tmp_path / "00001.seg.zst")
    assert alone.legacy and alone.epoch.tolist() == [3.0]
    assert alone.registrations[sid]["epoch_scale"] == 1.0


@both_readers
def test_stream_without_sidecar_is_reported(tmp_path, decode):
    recorded = write_legacy(tmp_path)
    (tmp_path / "streams" / "00000002.json").unlink()
    got = decode(tmp_path)
    check(got, [r for r in recorded if r[0] != 2])
    assert got.skipped, "the records of stream 2 must be reported as skipped"
    assert {(s["kind"], s.get("stream_id")) for s in got.skipped} == {
        (SkipKind.UNREGISTERED_STREAM, 2)}


@both_readers
@pytest.mark.parametrize("cut", [1, 3, 10])
def test_torn_last_segment(tmp_path, decode, cut):
    with LegacyLogger(tmp_path) as lg:
        sid = lg.register_stream({}, epoch_scale=1.0, value_scale=1.0)
        for k in range(20):
            lg.record(sid, float(k), [k, k + 1], [1.0, -1.0])
    segment = tmp_path / "00000.seg.zst"
    segment.write_bytes(segment.read_bytes()[:-cut])
    got = decode(tmp_path)
    assert got.epoch.tolist() == [float(k) for k in range(19)]
    assert got.skipped_at() == [lg.frames[-1]]


@pytest.mark.parametrize("label_value", [3, "3"])
def test_sidecar_labels_are_returned(tmp_path, label_value):
    with LegacyLogger(tmp_path) as lg:
        sid = lg.register_stream({"replication": label_value}, epoch_scale=1e-3, value_scale=0.5)
        lg.record(sid, 1.0, [4], [2.5])
    r = pyreader.read_directory(tmp_path)
    assert r.registrations[sid]["replication"] == label_value
    assert r.values.tolist() == [2.5] and r.epoch.tolist() == [1.0]


@both_readers
def test_damaged_middle_segment_never_shifts_later_epochs(tmp_path, decode):
    """0.1.x tick deltas run across segments: once a frame is lost, the later records of the
    directory have no trustworthy epoch. A reader may drop them (and report it) but must not
    return them with epochs shifted by the lost deltas (docs/FORMAT.md: never garbage)."""
    with LegacyLogger(tmp_path, rotate_bytes=200) as lg:
        sid = lg.register_stream({}, epoch_scale=1.0, value_scale=1.0)
        for k in range(40):
            lg.record(sid, float(k), [k], [1.0])
    segments = sorted(tmp_path.glob("*.seg.zst"))
    assert len(segments) >= 3
    damaged = bytearray(segments[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    segments[1].write_bytes(bytes(damaged))
    got = decode(tmp_path)
    assert got.skipped
    # each record's index is its true epoch: every returned record must still say so
    assert got.epoch.tolist() == got.indices.astype(float).tolist()


@both_readers
def test_empty_first_segment_of_a_legacy_directory(tmp_path, decode):
    """A 0.1.x writer killed before its first write leaves an empty 00000; the directory is still
    recognised as 0.1.x by what follows (its scales come from the sidecars)."""
    with LegacyLogger(tmp_path, rotate_bytes=200) as lg:
        sid = lg.register_stream({}, epoch_scale=1.0, value_scale=0.5)
        for k in range(10):
            lg.record(sid, float(k), [k], [k * 0.5])
    segments = sorted(tmp_path.glob("*.seg.zst"))
    for seg in reversed(segments):  # shift every segment one number up, leave 00000 empty
        seg.rename(seg.with_name(f"{int(seg.name[:5]) + 1:05d}.seg.zst"))
    (tmp_path / "00000.seg.zst").write_bytes(b"")
    got = decode(tmp_path)
    assert got.epoch.tolist() == [float(k) for k in range(10)]
    assert got.values.tolist() == [k * 0.5 for k in range(10)]
