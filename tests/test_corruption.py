"""Torn and corrupt segments (FORMAT.md section 4), with both readers.

Intact segments, one of the real native writer and one each built byte by byte in format 2 and
format 1 (tests/format_v2.py, tests/format_v1.py), are cut, flipped and spliced; for every damage
the expected outcome is worked out from the frame layout alone (which blocks stay intact, where
and of which kind each skipped part is), and both readers must return exactly those records and
report exactly those parts. Damage to a frame costs that frame: the reader resynchronises at the
next valid one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import format_v1 as v1
import format_v2 as v2
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
    sidecars: dict[str, bytes] = field(default_factory=dict)  # streams/ of the directory

    @property
    def header_bytes(self) -> int:
        """Skippable frame header + block header payload (FORMAT.md 2.2 and 8.1.3)."""
        return 8 + (56 if self.data[8:12] == b"DDL2" else 36)

    def blocks(self) -> list[int]:
        return [k for k, u in enumerate(self.units) if u.kind == 3]

    def records_of(self, keep_units: set[int]) -> Decoded:
        return select_records(self.full, np.isin(self.block_of_record, sorted(keep_units)))


def _records(rng: np.random.Generator, n: int) -> list[tuple[int, float, list[int], list[float]]]:
    out = []
    for k in range(n):
        sid = (3, 9, 40)[k % 3]
        idx = [1, 4, 9] if k % 4 else sorted(rng.choice(40, 3, replace=False).tolist())
        out.append((sid, k * 0.25, idx, rng.normal(size=3).tolist()))
    return out


def _writer_segment(path) -> None:
    rng = np.random.default_rng(5)
    with DataLogger(path) as dl:
        q = dl.register_stream({"entity": "q"}, epoch_scale=1e-3, value_scale=1e-2)
        x = dl.register_stream({"entity": "x"}, epoch_scale=1e-3, value_scale=None)
        for k in range(120):
            idx = np.array([1, 4, 9]) if k % 4 else np.sort(rng.choice(40, 3, replace=False))
            dl.record(q if k % 3 else x, k * 0.25, idx, rng.normal(size=3))
            if k % 20 == 19:
                dl.flush()  # seals the block: the segment gets several


def _builder_segment(path, version: int) -> None:
    rng = np.random.default_rng(7)
    records = _records(rng, 120)
    blocks = [records[k:k + 20] for k in range(0, 120, 20)]
    scales = {3: (1e-3, 1e-2), 9: (1e-3, None), 40: (0.25, 1.0)}
    path.mkdir(parents=True)
    if version == 2:
        streams2 = {sid: v2.Stream(sid, es, vs, {"entity": f"e{sid}", "model": "M"})
                    for sid, (es, vs) in scales.items()}
        data = v2.segment(streams2, blocks)
        metas = [s.metadata() for s in streams2.values()]
    else:
        streams1 = {sid: v1.Stream(sid, es, vs) for sid, (es, vs) in scales.items()}
        data = v1.segment(streams1, blocks, labels={sid: {"entity": f"e{sid}"} for sid in scales})
        metas = [{"entity": f"e{sid}", "stream_id": sid, "epoch_scale": es, "value_scale": vs}
                 for sid, (es, vs) in scales.items()]
    (path / NAME).write_bytes(data)
    (path / "streams").mkdir()
    import json

    for meta in metas:
        (path / "streams" / f"{meta['stream_id']:08d}.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module", params=["writer", "built_v2", "built_v1"])
def segment(request, tmp_path_factory) -> Segment:
    path = tmp_path_factory.mktemp("intact") / "d"
    if request.param == "writer":
        _writer_segment(path)
    else:
        _builder_segment(path, 2 if request.param == "built_v2" else 1)
    data = (path / NAME).read_bytes()
    units = frame_units(data)
    full = decode_python(path)
    assert full.skipped == []
    counts = [(k, u.records) for k, u in enumerate(units) if u.kind == 3]
    assert len(counts) >= 4, "the fixture needs several blocks"
    block_of_record = np.repeat([k for k, _ in counts], [n for _, n in counts])
    assert len(block_of_record) == len(full) == 120
    assert units[0].kind == 1 and units[-1].kind == 4
    sidecars = {p.name: p.read_bytes() for p in (path / "streams").glob("*.json")}
    return Segment(data, full, units, block_of_record, sidecars)


def test_the_native_reader_agrees_on_the_intact_segments(segment, tmp_path):
    got = decode_damaged(tmp_path, segment, segment.data, decode_native)
    assert_same_records(got, segment.full)
    assert got.skipped == []


def decode_damaged(tmp_path, seg: Segment, data: bytes, decode, *, sidecars: bool = True
                   ) -> Decoded:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / NAME).write_bytes(data)
    if sidecars and seg.sidecars:
        (tmp_path / "streams").mkdir(exist_ok=True)
        for name, text in seg.sidecars.items():
            (tmp_path / "streams" / name).write_bytes(text)
    return decode(tmp_path)


def kinds(got: Decoded) -> list[tuple[int, str]]:
    """(offset, kind) of every skipped part, sorted; each must have a reason."""
    for entry in got.skipped:
        assert entry["reason"], "every skipped part needs a reason"
    return sorted((int(s["offset"]), s["kind"]) for s in got.skipped)


def check(got: Decoded, expected: Decoded, skipped: list[tuple[int, str]]) -> None:
    assert_same_records(got, expected)
    assert kinds(got) == sorted(skipped)


def unit_at(seg: Segment, offset: int) -> int:
    return next(k for k, u in enumerate(seg.units) if u.offset <= offset < u.end)


def expect_truncated(seg: Segment, cut: int) -> tuple[Decoded, list[tuple[int, str]]]:
    """A file cut at ``cut``: the blocks that end before it; the torn unit, if any, reported."""
    kept = {k for k in seg.blocks() if seg.units[k].end <= cut}
    boundaries = {u.offset for u in seg.units} | {len(seg.data)}
    torn = [] if cut in boundaries else [(seg.units[unit_at(seg, cut)].offset, "torn_tail")]
    return seg.records_of(kept), torn


def interesting_cuts(seg: Segment) -> list[int]:
    cuts = set()
    for u in seg.units:
        for delta in (0, 1, 4, 7, 8, 9, 12, seg.header_bytes - 1, seg.header_bytes,
                      seg.header_bytes + 1):
            cuts.add(u.offset + delta)
        cuts.update((u.end - 1, u.end - 4))
    rng = np.random.default_rng(17)
    cuts.update(int(c) for c in rng.integers(0, len(seg.data), 40))
    return sorted(c for c in cuts if 0 <= c <= len(seg.data))


@both_readers
def test_truncation_at_every_interesting_offset(tmp_path, segment, decode):
    for cut in interesting_cuts(segment):
        got = decode_damaged(tmp_path / str(cut), segment, segment.data[:cut], decode)
        expected, torn = expect_truncated(segment, cut)
        check(got, expected, torn)


def flip_offsets(seg: Segment) -> list[int]:
    """Every byte of the small frames and block headers, a handful inside each zstd frame."""
    offsets = []
    for u in seg.units:
        head_end = u.offset + seg.header_bytes if u.kind == 3 else u.end
        offsets.extend(range(u.offset, head_end))
        if u.kind == 3:
            offsets.extend(np.linspace(head_end, u.end - 1, 6).astype(int).tolist())
    return sorted(set(offsets))


def expect_flipped(seg: Segment, data: bytes, offset: int
                   ) -> tuple[Decoded, list[tuple[int, str]]]:
    """One damaged unit: a block's zstd data costs that block (bad_block); any other frame is
    not valid any more and costs that frame alone (corrupt_frame, or a torn tail when it was the
    last and now claims to run past the end of the file)."""
    k = unit_at(seg, offset)
    u = seg.units[k]
    blocks = set(seg.blocks())
    if u.kind == 3 and offset >= u.offset + seg.header_bytes:
        return seg.records_of(blocks - {k}), [(u.offset, "bad_block")]
    size = struct.unpack_from("<I", data, u.offset + 4)[0] if u.offset + 8 <= len(data) else 0
    last = k == len(seg.units) - 1
    torn = last and u.offset + 8 + size > len(data)
    lost = {k} if u.kind == 3 else set()
    return seg.records_of(blocks - lost), [(u.offset, "torn_tail" if torn else "corrupt_frame")]


def without_unresolved(got: Decoded, seg: Segment, damaged: int) -> Decoded:
    """Registrations after a lost registrations frame may miss its strings: those entries are
    reported as unresolved_label, at registration frames after the damaged one (FORMAT.md 3.3)."""
    later = {u.offset for u in seg.units[damaged + 1:] if u.kind == 2}
    rest = []
    for s in got.skipped:
        if s["kind"] == "unresolved_label":
            assert seg.units[damaged].kind == 2 and s["offset"] in later, s
        else:
            rest.append(s)
    return Decoded(got.stream_id, got.epoch, got.offsets, got.indices, got.values, rest)


@both_readers
def test_flipped_bytes(tmp_path, segment, decode):
    for offset in flip_offsets(segment):
        damaged = bytearray(segment.data)
        damaged[offset] ^= 0x5A
        got = decode_damaged(tmp_path / str(offset), segment, bytes(damaged), decode)
        expected, skipped = expect_flipped(segment, bytes(damaged), offset)
        check(without_unresolved(got, segment, unit_at(segment, offset)), expected, skipped)


@both_readers
def test_lost_registrations_without_sidecars_cost_their_streams_only(tmp_path, segment, decode):
    """Issue 9 item 14: one flipped byte in a registration frame loses neither the frames nor
    the blocks after it; without sidecars, the records of the streams it alone registered are
    reported (unregistered_stream) and every other stream's records are returned (in format 1,
    those of the blocks without such a stream)."""
    reg = next(k for k, u in enumerate(segment.units) if u.kind == 2)
    damaged = bytearray(segment.data)
    damaged[segment.units[reg].end - 6] ^= 0x01
    got = decode_damaged(tmp_path, segment, bytes(damaged), decode, sidecars=False)
    lost = {int(s["stream_id"]) for s in got.skipped if s["kind"] == "unregistered_stream"}
    assert lost, "the damaged frame registered at least one stream"
    keep = ~np.isin(segment.full.stream_id, sorted(lost))
    if segment.data[8:12] == b"DDL1":  # a format-1 block interleaves streams: lost whole
        spoiled = np.unique(segment.block_of_record[~keep])
        keep = ~np.isin(segment.block_of_record, spoiled)
    assert_same_records(got, select_records(segment.full, keep))
    assert (segment.units[reg].offset, "corrupt_frame") in kinds(got)
    assert {k for _, k in kinds(got)} <= {"corrupt_frame", "unregistered_stream",
                                          "unresolved_label"}


def cut_out(seg: Segment, k: int) -> bytes:
    u = seg.units[k]
    return seg.data[:u.offset] + seg.data[u.end:]


@both_readers
def test_splices(tmp_path, segment, decode):
    blocks = segment.blocks()
    second, third = (segment.units[k] for k in blocks[1:3])
    data = segment.data

    # a block taken out: blocks decode independently, the rest is intact
    got = decode_damaged(tmp_path / "removed", segment, cut_out(segment, blocks[1]), decode)
    check(got, segment.records_of(set(blocks) - {blocks[1]}), [])

    # a block repeated: both copies are intact blocks
    repeated = data[:third.offset] + data[second.offset:second.end] + data[third.offset:]
    got = decode_damaged(tmp_path / "repeated", segment, repeated, decode)
    order = np.concatenate([np.flatnonzero(segment.block_of_record <= blocks[1]),
                            np.flatnonzero(segment.block_of_record == blocks[1]),
                            np.flatnonzero(segment.block_of_record > blocks[1])])
    check(got, select_records(segment.full, order), [])

    # two blocks swapped
    swapped = (data[:second.offset] + data[third.offset:third.end]
               + data[second.offset:second.end] + data[third.end:])
    got = decode_damaged(tmp_path / "swapped", segment, swapped, decode)
    order = np.concatenate([np.flatnonzero(segment.block_of_record < blocks[1]),
                            np.flatnonzero(segment.block_of_record == blocks[2]),
                            np.flatnonzero(segment.block_of_record == blocks[1]),
                            np.flatnonzero(segment.block_of_record > blocks[2])])
    check(got, select_records(segment.full, order), [])

    # garbage between two blocks: skipped up to the next valid frame, nothing else lost
    garbage = bytes(np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8))
    got = decode_damaged(tmp_path / "garbage", segment,
                         data[:third.offset] + garbage + data[third.offset:], decode)
    check(got, segment.full, [(third.offset, "corrupt_frame")])
    assert got.skipped[0]["length"] == 64

    # a zstd frame cut short and the next unit glued on: the block fails its crc; the reader,
    # resuming where the declared size ends, lands 5 bytes into the next unit and resynchronises
    # at the unit after it
    glued = data[:second.end - 5] + data[second.end:]
    got = decode_damaged(tmp_path / "glued", segment, glued, decode)
    check(got, segment.records_of(set(blocks) - {blocks[1], blocks[2]}),
          [(second.offset, "bad_block"), (second.end, "corrupt_frame")])


@both_readers
def test_segment_appended_to_itself(tmp_path, segment, decode):
    got = decode_damaged(tmp_path, segment, segment.data + segment.data, decode)
    check(got, segment.full, [(len(segment.data), "after_footer")])


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
        got = decode_damaged(tmp_path / str(trial), segment, bytes(damaged), decode)
        for s, e, i, v in got.records():
            assert (s, e.hex(), i.tobytes(), v.tobytes()) in intact
        if trial % 2 == 0:  # the other reader agrees on the same file
            other = decode_native if decode is decode_python else decode_python
            again = other(tmp_path / str(trial))
            assert_same_records(got, again)
            assert kinds(got) == kinds(again)


def test_random_damage_readers_agree(tmp_path, segment):
    rng = np.random.default_rng(29)
    for trial in range(60):
        damaged = bytearray(segment.data)
        at = int(rng.integers(0, len(damaged)))
        damaged[at] ^= int(rng.integers(1, 256))
        cut = int(rng.integers(len(damaged) // 2, len(damaged) + 1))
        path = tmp_path / str(trial)
        py = decode_damaged(path, segment, bytes(damaged[:cut]), decode_python)
        native = decode_native(path)
        assert_same_records(py, native)
        assert kinds(py) == kinds(native)


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
    assert [(s["segment"].rsplit("/", 1)[-1], s["offset"], s["kind"]) for s in got.skipped] == [
        (last.name, torn.offset, "torn_tail")]


def decode_file(tmp_path, data: bytes, decode) -> Decoded:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / NAME).write_bytes(data)
    return decode(tmp_path)


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
    got = decode_file(tmp_path, head + huge_raw + tail, decode)
    assert kinds(got) == [(len(head), "bad_block")]
    assert len(got) == 2


@both_readers
def test_sizes_running_past_the_end_stop_the_reader(tmp_path, decode):
    """Huge declared sizes are refused without being allocated (format 1)."""
    head = v1.segment(STREAM_1, [GOOD], closed=False)

    huge_frame = forged_block_header(100, 0xFFFFFFF0)
    got = decode_file(tmp_path / "frame", head + huge_frame + b"x" * 100, decode)
    assert len(got) == 1 and kinds(got) == [(len(head), "torn_tail")]

    lying_size = struct.pack("<II", 0x184D2A5D, 0xFFFFFFFF) + b"DDL1\x03"
    got = decode_file(tmp_path / "skippable", head + lying_size, decode)
    assert len(got) == 1 and kinds(got) == [(len(head), "torn_tail")]

    json_len = bytearray(v1.registration(2, {}, epoch_scale=1.0, value_scale=1.0))
    struct.pack_into("<I", json_len, 8 + 28, 1 << 30)
    struct.pack_into("<I", json_len, len(json_len) - 4, zlib.crc32(bytes(json_len[8:-4])))
    got = decode_file(tmp_path / "json", head + bytes(json_len), decode)
    assert len(got) == 1 and kinds(got) == [(len(head), "corrupt_frame")]


STREAMS_2 = {1: v2.Stream(1, 1.0, 1.0)}


@both_readers
def test_sizes_running_past_the_end_stop_the_reader_v2(tmp_path, decode):
    """The same in format 2, and a registrations body declared beyond 2**26."""
    head = v2.segment(STREAMS_2, [GOOD], closed=False)
    payload = v2.block_payload(STREAMS_2, GOOD)

    huge_frame = v2.block(payload, compressed_size=0xFFFFFFF0)[:8 + 56]
    got = decode_file(tmp_path / "frame", head + huge_frame + b"x" * 100, decode)
    assert len(got) == 1 and kinds(got) == [(len(head), "torn_tail")]

    lying_size = struct.pack("<II", 0x184D2A5D, 0xFFFFFFFF) + b"DDL2\x03"
    got = decode_file(tmp_path / "skippable", head + lying_size, decode)
    assert len(got) == 1 and kinds(got) == [(len(head), "torn_tail")]

    body, first = v2.registrations_body([STREAMS_2[1]], v2.Strings())
    big = bytearray(v2.registrations_frame(body, 1, first, compress=True))
    struct.pack_into("<I", big, 8 + 16, (1 << 26) + 1)
    got = decode_file(tmp_path / "body", head + v2.recrc(bytes(big)), decode)
    assert len(got) == 1 and kinds(got) == [(len(head), "invalid_registration")]

    raw = v2.block(payload, raw_size=(1 << 28) + 1)
    got = decode_file(tmp_path / "raw", head + raw + v2.block(payload, seq=1), decode)
    assert len(got) == 2 and kinds(got) == [(len(head), "bad_block")]


def test_corrupt_data_warning_names_what_was_skipped(tmp_path, segment):
    from disco_data_logger import read
    from disco_data_logger.errors import CorruptDataWarning

    (tmp_path / NAME).write_bytes(segment.data[:-7])
    with pytest.warns(CorruptDataWarning, match=NAME):
        table = read(tmp_path)
    assert table.num_rows == len(segment.full)
