"""Torn and corrupt segments (FORMAT.md section 3), with both readers.

A real segment of the native writer is cut, flipped and spliced; for every damage the expected
outcome is worked out from the frame layout alone (which blocks stay intact, where the reader must
stop or skip), and both readers must return exactly those records and report exactly that offset.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import format_v1 as v1
import numpy as np
import pytest

from disco_data_logger import DataLogger
from tests.common import (
    Decoded,
    FrameUnit,
    assert_same_records,
    both_readers,
    decode_native,
    decode_python,
    frame_units,
    select_records,
)

NAME = "00000.seg.zst"


@dataclass
class Segment:
    data: bytes
    full: Decoded  # what the intact segment decodes to
    units: list[FrameUnit]
    block_of_record: np.ndarray  # unit index of the block each record came from

    def blocks(self) -> list[int]:
        return [k for k, u in enumerate(self.units) if u.kind == 3]

    def records_of(self, keep_units: set[int]) -> Decoded:
        return select_records(self.full, np.isin(self.block_of_record, sorted(keep_units)))


@pytest.fixture(scope="module")
def segment(tmp_path_factory) -> Segment:
    path = tmp_path_factory.mktemp("intact")
    rng = np.random.default_rng(5)
    with DataLogger(path) as dl:
        q = dl.register_stream({"entity": "q"}, epoch_scale=1e-3, value_scale=1e-2)
        x = dl.register_stream({"entity": "x"}, epoch_scale=1e-3, value_scale=None)
        for k in range(120):
            idx = np.array([1, 4, 9]) if k % 4 else np.sort(rng.choice(40, 3, replace=False))
            dl.record(q if k % 3 else x, k * 0.25, idx, rng.normal(size=3))
            if k % 20 == 19:
                dl.flush()  # seals the block: the segment gets several
    data = (path / NAME).read_bytes()
    units = frame_units(data)
    full = decode_python(path)
    assert_same_records(full, decode_native(path))
    counts = [(k, u.records) for k, u in enumerate(units) if u.kind == 3]
    assert len(counts) >= 4, "the fixture needs several blocks"
    block_of_record = np.repeat([k for k, _ in counts], [n for _, n in counts])
    assert len(block_of_record) == len(full) == 120
    assert units[0].kind == 1 and units[-1].kind == 4
    return Segment(data, full, units, block_of_record)


def decode_damaged(tmp_path, data: bytes, decode) -> Decoded:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / NAME).write_bytes(data)
    return decode(tmp_path)


def check(got: Decoded, expected: Decoded, skipped_at: list[int]) -> None:
    assert_same_records(got, expected)
    assert got.skipped_at() == [(NAME, offset) for offset in skipped_at]
    for entry in got.skipped:
        assert entry["reason"], "every skipped part needs a reason"


def unit_at(seg: Segment, offset: int) -> int:
    return next(k for k, u in enumerate(seg.units) if u.offset <= offset < u.end)


def expect_truncated(seg: Segment, cut: int) -> tuple[Decoded, list[int]]:
    """A file cut at ``cut``: the blocks that end before it; the torn unit, if any, is reported."""
    kept = {k for k in seg.blocks() if seg.units[k].end <= cut}
    boundaries = {u.offset for u in seg.units} | {len(seg.data)}
    torn = [] if cut in boundaries else [seg.units[unit_at(seg, cut)].offset]
    return seg.records_of(kept), torn


def interesting_cuts(seg: Segment) -> list[int]:
    cuts = set()
    for u in seg.units:
        for delta in (0, 1, 4, 7, 8, 9, 12, 8 + 36 - 1, 8 + 36, 8 + 36 + 1):
            cuts.add(u.offset + delta)
        cuts.update((u.end - 1, u.end - 4))
    rng = np.random.default_rng(17)
    cuts.update(int(c) for c in rng.integers(0, len(seg.data), 40))
    return sorted(c for c in cuts if 0 <= c <= len(seg.data))


@both_readers
def test_truncation_at_every_interesting_offset(tmp_path, segment, decode):
    for cut in interesting_cuts(segment):
        got = decode_damaged(tmp_path / str(cut), segment.data[:cut], decode)
        expected, torn = expect_truncated(segment, cut)
        check(got, expected, torn)


def flip_offsets(seg: Segment) -> list[int]:
    """Every byte of the small frames and block headers, a handful inside each zstd frame."""
    offsets = []
    for u in seg.units:
        head_end = u.offset + 8 + 36 if u.kind == 3 else u.end
        offsets.extend(range(u.offset, head_end))
        if u.kind == 3:
            offsets.extend(np.linspace(head_end, u.end - 1, 6).astype(int).tolist())
    return sorted(set(offsets))


def expect_flipped(seg: Segment, offset: int) -> tuple[Decoded, list[int]]:
    k = unit_at(seg, offset)
    u = seg.units[k]
    blocks = seg.blocks()
    if u.kind == 3 and offset >= u.offset + 8 + 36:  # inside the zstd frame: that block only
        return seg.records_of(set(blocks) - {k}), [u.offset]
    return seg.records_of({b for b in blocks if b < k}), [u.offset]  # a header: stop there


@both_readers
def test_flipped_bytes(tmp_path, segment, decode):
    for offset in flip_offsets(segment):
        damaged = bytearray(segment.data)
        damaged[offset] ^= 0x5A
        got = decode_damaged(tmp_path / str(offset), bytes(damaged), decode)
        expected, skipped = expect_flipped(segment, offset)
        check(got, expected, skipped)


def cut_out(seg: Segment, k: int) -> bytes:
    u = seg.units[k]
    return seg.data[:u.offset] + seg.data[u.end:]


@both_readers
def test_splices(tmp_path, segment, decode):
    blocks = segment.blocks()
    second, third = (segment.units[k] for k in blocks[1:3])
    data = segment.data

    # a block taken out: blocks decode independently, the rest is intact
    got = decode_damaged(tmp_path / "removed", cut_out(segment, blocks[1]), decode)
    check(got, segment.records_of(set(blocks) - {blocks[1]}), [])

    # a block repeated: both copies are intact blocks
    repeated = data[:third.offset] + data[second.offset:second.end] + data[third.offset:]
    got = decode_damaged(tmp_path / "repeated", repeated, decode)
    order = np.concatenate([np.flatnonzero(segment.block_of_record <= blocks[1]),
                            np.flatnonzero(segment.block_of_record == blocks[1]),
                            np.flatnonzero(segment.block_of_record > blocks[1])])
    check(got, select_records(segment.full, order), [])

    # two blocks swapped
    swapped = (data[:second.offset] + data[third.offset:third.end]
               + data[second.offset:second.end] + data[third.end:])
    got = decode_damaged(tmp_path / "swapped", swapped, decode)
    order = np.concatenate([np.flatnonzero(segment.block_of_record < blocks[1]),
                            np.flatnonzero(segment.block_of_record == blocks[2]),
                            np.flatnonzero(segment.block_of_record == blocks[1]),
                            np.flatnonzero(segment.block_of_record > blocks[2])])
    check(got, select_records(segment.full, order), [])

    # garbage between two blocks: stop at the garbage
    garbage = bytes(np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8))
    got = decode_damaged(tmp_path / "garbage",
                         data[:third.offset] + garbage + data[third.offset:], decode)
    check(got, segment.records_of(set(blocks[:2])), [third.offset])

    # a zstd frame cut short and the next unit glued on: the block fails its crc, and the reader,
    # resuming where the declared size ends, lands 5 bytes into the next unit and stops there
    glued = data[:second.end - 5] + data[second.end:]
    got = decode_damaged(tmp_path / "glued", glued, decode)
    check(got, segment.records_of({blocks[0]}), [second.offset, second.end])


@both_readers
def test_segment_appended_to_itself(tmp_path, segment, decode):
    got = decode_damaged(tmp_path, segment.data + segment.data, decode)
    check(got, segment.full, [len(segment.data)])


@both_readers
def test_random_damage_never_crashes_and_readers_agree(tmp_path, segment, decode):
    """Random multi-byte damage: whatever comes back is a subset of the intact records."""
    rng = np.random.default_rng(23)
    intact = {(int(s), float(e).hex(), i.tobytes(), v.tobytes())
              for s, e, i, v in segment.full.records()}
    for trial in range(40):
        damaged = bytearray(segment.data)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, len(damaged)))
            damaged[at:at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        if trial % 3 == 0:
            damaged = damaged[: int(rng.integers(0, len(damaged)))]
        got = decode_damaged(tmp_path / str(trial), bytes(damaged), decode)
        for s, e, i, v in got.records():
            assert (s, e.hex(), i.tobytes(), v.tobytes()) in intact
        if trial % 2 == 0:  # the other reader agrees on the same file
            other = decode_native if decode is decode_python else decode_python
            again = other(tmp_path / str(trial))
            assert_same_records(got, again)
            assert got.skipped_at() == again.skipped_at()


def test_random_damage_readers_agree(tmp_path, segment):
    rng = np.random.default_rng(29)
    for trial in range(60):
        damaged = bytearray(segment.data)
        at = int(rng.integers(0, len(damaged)))
        damaged[at] ^= int(rng.integers(1, 256))
        cut = int(rng.integers(len(damaged) // 2, len(damaged) + 1))
        path = tmp_path / str(trial)
        path.mkdir()
        (path / NAME).write_bytes(bytes(damaged[:cut]))
        py, native = decode_python(path), decode_native(path)
        assert_same_records(py, native)
        assert py.skipped_at() == native.skipped_at()


@both_readers
def test_torn_last_segment_of_several(tmp_path, decode):
    rng = np.random.default_rng(2)
    with DataLogger(tmp_path, rotate_bytes=2048) as dl:
        sid = dl.register_stream({}, epoch_scale=1e-3, value_scale=None)
        for k in range(400):
            dl.record(sid, k * 0.5, np.arange(k % 5), rng.normal(size=k % 5))
            if k % 25 == 24:
                dl.flush()
    segments = sorted(tmp_path.glob("*.seg.zst"))
    assert len(segments) >= 3
    full = decode_python(tmp_path)
    last = segments[-1]
    data = last.read_bytes()
    units = frame_units(data)
    lost = sum(u.records for u in units[1:] if u.kind == 3 and u.end > len(data) - 10)
    last.write_bytes(data[:-10])
    got = decode(tmp_path)
    assert_same_records(got, select_records(full, np.arange(len(full) - lost)))
    torn = next(u for u in units if u.offset < len(data) - 10 < u.end)
    assert got.skipped_at() == [(last.name, torn.offset)]


STREAM_1 = {1: v1.Stream(1, 1.0, 1.0)}
GOOD = [(1, 1.0, [0], [1.0])]


def forged_block_header(raw_size: int, compressed_size: int) -> bytes:
    """A block header frame with a valid crc that declares the given sizes."""
    return v1.frame(3, struct.pack("<HIIIIII", 0, 9, 1, raw_size, compressed_size, 0, 0))


@both_readers
def test_raw_size_beyond_the_bound_skips_that_block_only(tmp_path, decode):
    """FORMAT.md 2.3/3: the header is intact (its crc matches), its data cannot be: skip it and
    go on with the next frame, whose position the compressed size still gives."""
    head = v1.segment(STREAM_1, [GOOD], closed=False)
    huge_raw = forged_block_header((1 << 28) + 1, 16) + b"\x28\xb5\x2f\xfd" + bytes(12)
    tail = v1.block(v1.encode_records(STREAM_1, GOOD), 1, seq=1)
    got = decode_damaged(tmp_path, head + huge_raw + tail, decode)
    assert got.skipped_at() == [(NAME, len(head))]
    assert len(got) == 2


@both_readers
def test_sizes_running_past_the_end_stop_the_reader(tmp_path, decode):
    """Huge declared sizes are refused without being allocated."""
    head = v1.segment(STREAM_1, [GOOD], closed=False)

    huge_frame = forged_block_header(100, 0xFFFFFFF0)
    got = decode_damaged(tmp_path / "frame", head + huge_frame + b"x" * 100, decode)
    assert len(got) == 1 and got.skipped_at() == [(NAME, len(head))]

    lying_size = struct.pack("<II", 0x184D2A5D, 0xFFFFFFFF) + b"DDL1\x03"
    got = decode_damaged(tmp_path / "skippable", head + lying_size, decode)
    assert len(got) == 1 and got.skipped_at() == [(NAME, len(head))]

    json_len = bytearray(v1.registration(2, {}, epoch_scale=1.0, value_scale=1.0))
    struct.pack_into("<I", json_len, 8 + 28, 1 << 30)
    struct.pack_into("<I", json_len, len(json_len) - 4, zlib.crc32(bytes(json_len[8:-4])))
    got = decode_damaged(tmp_path / "json", head + bytes(json_len), decode)
    assert len(got) == 1 and got.skipped_at() == [(NAME, len(head))]


def test_corrupt_data_warning_names_what_was_skipped(tmp_path, segment):
    from disco_data_logger import read
    from disco_data_logger.errors import CorruptDataWarning

    (tmp_path / NAME).write_bytes(segment.data[:-7])
    with pytest.warns(CorruptDataWarning, match=NAME):
        table = read(tmp_path)
    assert table.num_rows == len(segment.full)
