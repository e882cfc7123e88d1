"""The pure-Python reader: its API, and FORMAT.md cases checked with both readers.

Hand-built segments (tests/format_v1.py) cover what the real writer never produces; segments of the
real DataLogger check that the two independent readers agree and give back what was recorded.
"""

from __future__ import annotations

import json
import math

import format_v1 as v1
import numpy as np
import pyarrow as pa
import pytest

from disco_data_logger import DataLogger, pyreader
from disco_data_logger.errors import SkipKind
from tests.common import (
    assert_same_records,
    both_readers,
    decode_native,
    decode_python,
    frame_units,
    quantise,
)

Q = v1.Stream(3, 1e-3, 0.01)
X = v1.Stream(9, 0.5, None)
STREAMS = {3: Q, 9: X}
RECORDS = [
    (3, 1.0, [1, 5, 9], [1.0, 2.0, -3.0]),
    (9, 2.0, [0, 3], [math.pi, -0.0]),
    (3, 2.5, [1, 5, 9], [1.5, 2.0, -3.01]),  # same indices as its predecessor
    (9, 3.0, [0, 3], [1e300, float("nan")]),  # same indices, exact values XORed
    (3, 3.0, [], []),
    (9, 9.0, [2**63 - 1], [5e-324]),
    (3, -7.5, [0, 2**40], [-1e6, 123.45]),
]


def write_segment(directory, data: bytes, number: int = 0):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{number:05d}.seg.zst"
    path.write_bytes(data)
    return path


def expected_value(stream: v1.Stream, v: float) -> float:
    return v if stream.value_scale is None else quantise(v, stream.value_scale)


def kinds(got) -> list[tuple[str, int, str]]:
    """Every skipped part as (file name, offset, kind), sorted."""
    return sorted((s["segment"].rsplit("/", 1)[-1], int(s["offset"]), s["kind"])
                  for s in got.skipped)


def check_records(got, records) -> None:
    assert len(got) == len(records)
    for (sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals) in zip(
            records, got.records(), strict=True):
        s = STREAMS[sid]
        assert gsid == sid
        assert gepoch == quantise(epoch, s.epoch_scale)
        assert gidx.tolist() == list(idx)
        want = np.array([expected_value(s, v) for v in vals], dtype=np.float64)
        np.testing.assert_array_equal(gvals.view(np.uint64), want.view(np.uint64))


# --------------------------------------------------------------------------- hand-built


@both_readers
def test_hand_built_segment(tmp_path, decode):
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS, RECORDS[:2]]))
    got = decode(tmp_path)
    check_records(got, RECORDS + RECORDS[:2])
    assert got.skipped == []


@both_readers
def test_same_indices_is_optional(tmp_path, decode):
    """A writer may always spell out the indices; the reader must not care."""
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS]))
    write_segment(tmp_path / "b", v1.segment(STREAMS, [[]]))
    plain = v1.segment(STREAMS, [[]], closed=False)
    plain += v1.block(v1.encode_records(STREAMS, RECORDS, same_indices=False), len(RECORDS))
    write_segment(tmp_path / "c", plain)
    assert_same_records(decode(tmp_path), decode(tmp_path / "c"))
    assert len(decode(tmp_path / "b")) == 0


@both_readers
def test_several_segments_in_numeric_order(tmp_path, decode):
    for number in (0, 1, 2):
        records = [(3, float(number), [number], [float(number)])]
        write_segment(tmp_path, v1.segment(STREAMS, [records], number=number), number)
    got = decode(tmp_path)
    assert got.epoch.tolist() == [0.0, 1.0, 2.0]
    assert got.indices.tolist() == [0, 1, 2]


@both_readers
def test_unclosed_segment_has_no_footer_and_loses_nothing(tmp_path, decode):
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS], closed=False))
    got = decode(tmp_path)
    check_records(got, RECORDS)
    assert got.skipped == []


@both_readers
def test_unknown_format_version_skips_that_file(tmp_path, decode):
    """FORMAT.md 2.1: the file is refused (skipped whole, its version named), the others read."""
    data = v1.segment(STREAMS, [RECORDS])
    bad = v1.segment_header(version=2) + data[len(v1.segment_header()):]
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS]), 0)
    write_segment(tmp_path, bad, 1)
    got = decode(tmp_path)
    check_records(got, RECORDS)
    assert [(s["kind"], s["offset"], s["length"]) for s in got.skipped] == [
        ("unsupported_version", 0, len(bad))]
    assert "version 2" in got.skipped[0]["reason"]
    assert "00001.seg.zst" in got.skipped[0]["reason"]


@both_readers
def test_stream_without_registration_uses_its_sidecar(tmp_path, decode):
    data = bytearray(v1.segment_header())
    data += v1.block(v1.encode_records(STREAMS, RECORDS), len(RECORDS))
    write_segment(tmp_path, bytes(data))
    (tmp_path / "streams").mkdir()
    for sid, s in STREAMS.items():
        meta = {"stream_id": sid, "epoch_scale": s.epoch_scale, "value_scale": s.value_scale}
        (tmp_path / "streams" / f"{sid:08d}.json").write_text(json.dumps(meta))
    got = decode(tmp_path)
    check_records(got, RECORDS)
    assert got.skipped == []


@both_readers
def test_block_of_unknown_stream_is_skipped(tmp_path, decode):
    data = bytearray(v1.segment_header())
    data += v1.registration(3, {"stream_id": 3}, epoch_scale=Q.epoch_scale,
                            value_scale=Q.value_scale)
    q_only = [r for r in RECORDS if r[0] == 3]
    units_before = len(data)
    data += v1.block(v1.encode_records(STREAMS, RECORDS), len(RECORDS), seq=0)
    data += v1.block(v1.encode_records(STREAMS, q_only), len(q_only), seq=1)
    write_segment(tmp_path, bytes(data))
    got = decode(tmp_path)
    check_records(got, q_only)
    assert kinds(got) == [("00000.seg.zst", units_before, "unregistered_stream")]


def payload_cases():
    good = v1.encode_records(STREAMS, RECORDS)
    n = len(RECORDS)
    same_first = bytearray()
    same_first += bytes([(3 << 1) | 1, 0])  # same_indices without a predecessor
    return {
        "count too high": (good, n + 1),
        "count too low": (good, n - 1),
        "trailing byte": (good + b"\x00", n),
        "truncated payload": (good[:-3], n),
        "same_indices first": (bytes(same_first), 1),
        "varint too long": (bytes([6]) + b"\x80" * 11 + b"\x00", 1),
        "index overflow": (bytes([6, 0, 2]) + b"\xff" * 8 + b"\x7f" + b"\xff" * 9 + b"\x01"
                           + b"\x00\x00", 1),
    }


@both_readers
@pytest.mark.parametrize("case", sorted(payload_cases()))
def test_block_with_intact_crcs_but_bad_payload_is_skipped(tmp_path, decode, case):
    raw, count = payload_cases()[case]
    good = RECORDS[:2]
    data = bytearray(v1.segment(STREAMS, [good], closed=False))
    bad_at = len(data)
    data += v1.block(raw, count, seq=1)
    data += v1.block(v1.encode_records(STREAMS, good), len(good), seq=2)
    data += v1.footer(3, 2 * len(good) + count)
    write_segment(tmp_path, bytes(data))
    got = decode(tmp_path)
    check_records(got, good + good)
    assert kinds(got) == [("00000.seg.zst", bad_at, "bad_block")]


@both_readers
def test_header_that_declares_a_wrong_raw_size_is_skipped(tmp_path, decode):
    import struct
    import zlib

    raw = v1.encode_records(STREAMS, RECORDS)
    block = bytearray(v1.block(raw, len(RECORDS)))
    payload = block[8:8 + 36]
    struct.pack_into("<I", payload, 16, len(raw) + 1)
    struct.pack_into("<I", payload, 32, zlib.crc32(bytes(payload[:32])))
    block[8:8 + 36] = payload
    data = v1.segment(STREAMS, [], closed=False)
    write_segment(tmp_path, data + bytes(block) + v1.block(raw, len(RECORDS), seq=1))
    got = decode(tmp_path)
    check_records(got, RECORDS)
    assert kinds(got) == [("00000.seg.zst", len(data), "bad_block")]


@both_readers
def test_data_after_the_footer_is_reported(tmp_path, decode):
    data = v1.segment(STREAMS, [RECORDS])
    write_segment(tmp_path, data + v1.segment(STREAMS, [RECORDS], number=1))
    got = decode(tmp_path)
    check_records(got, RECORDS)
    assert kinds(got) == [("00000.seg.zst", len(data), "after_footer")]


@both_readers
def test_segment_without_header_is_read(tmp_path, decode):
    data = v1.segment(STREAMS, [RECORDS])
    write_segment(tmp_path, data[len(v1.segment_header()):])
    got = decode(tmp_path)
    check_records(got, RECORDS)
    assert got.skipped == []  # FORMAT.md 4.1: a valid frame at offset 0 starts the walk


@both_readers
def test_empty_directory(tmp_path, decode):
    got = decode(tmp_path)
    assert len(got) == 0 and got.skipped == []


# --------------------------------------------------------------------------- pyreader API


def test_read_segment_returns_columns_and_registrations(tmp_path):
    labels = {3: {"entity": "a"}, 9: {"entity": "b"}}
    path = write_segment(tmp_path, v1.segment(STREAMS, [RECORDS], labels=labels))
    r = pyreader.read_segment(path)
    assert isinstance(r, pyreader.SegmentResult) and not r.legacy and r.path == path
    assert r.stream_id.dtype == np.uint32 and r.epoch.dtype == np.float64
    assert r.offsets.dtype == np.int64 and r.indices.dtype == np.int64
    assert r.values.dtype == np.float64
    assert len(r.offsets) == len(r) + 1 and r.offsets[-1] == len(r.indices) == len(r.values)
    assert r.registrations[3]["entity"] == "a" and r.registrations[9]["value_scale"] is None
    check_records(r, RECORDS)


def test_read_segment_with_explicit_registrations(tmp_path):
    data = v1.segment_header() + v1.block(v1.encode_records(STREAMS, RECORDS), len(RECORDS))
    path = write_segment(tmp_path, data)
    assert len(pyreader.read_segment(path)) == 0  # no in-band registration, no sidecar
    regs = {sid: {"stream_id": sid, "epoch_scale": s.epoch_scale, "value_scale": s.value_scale}
            for sid, s in STREAMS.items()}
    r = pyreader.read_segment(path, registrations=regs)
    check_records(r, RECORDS)
    assert r.skipped == []


def test_read_directory_filters_stream_ids(tmp_path):
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS]))
    r = pyreader.read_directory(tmp_path, stream_ids=[9])
    check_records(r, [rec for rec in RECORDS if rec[0] == 9])
    assert [p.name for p in r.segments] == ["00000.seg.zst"]
    assert len(pyreader.read_directory(tmp_path, stream_ids=[])) == 0


def test_read_directory_of_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        pyreader.read_directory(tmp_path / "nope")


def test_to_arrow_matches_format_section_5(tmp_path):
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS]))
    table = pyreader.read_directory(tmp_path).to_arrow()
    assert table.schema.names == ["stream_id", "epoch", "indices", "values"]
    assert table.schema.types == [pa.uint32(), pa.float64(), pa.list_(pa.int64()),
                                  pa.list_(pa.float64())]
    assert table.column("indices").to_pylist()[0] == [1, 5, 9]
    assert table.column("values").to_pylist()[5] == [5e-324]
    assert table.schema.metadata is None


def test_to_arrow_lists_skipped_parts(tmp_path):
    data = v1.segment(STREAMS, [RECORDS])
    write_segment(tmp_path, data[:-5])
    table = pyreader.read_directory(tmp_path).to_arrow()
    skipped = json.loads(table.schema.metadata[b"disco.skipped"])
    assert skipped[0]["offset"] == frame_units(data)[-1].offset
    assert skipped[0]["segment"].endswith("00000.seg.zst")
    assert skipped[0]["kind"] == SkipKind.TORN_TAIL


def test_record_accessor(tmp_path):
    write_segment(tmp_path, v1.segment(STREAMS, [RECORDS]))
    r = pyreader.read_directory(tmp_path)
    sid, epoch, idx, vals = r.record(6)
    assert (sid, epoch, idx.tolist()) == (3, -7.5, [0, 2**40])
    assert len(list(r.records())) == len(RECORDS)


def test_zstd_frame_size_walks_real_frames():
    import zstandard

    for payload in (b"", b"x", bytes(range(256)) * 2000, b"a" * 1_000_000):
        for kwargs in ({}, {"write_checksum": True}, {"write_content_size": False}):
            frame = zstandard.ZstdCompressor(**kwargs).compress(payload)
            assert pyreader.zstd_frame_size(frame + b"tail", 0, len(frame) + 4) == len(frame)


# --------------------------------------------------------------------------- real writer


def test_real_logger_read_by_both_readers(tmp_path):
    rng = np.random.default_rng(7)
    with DataLogger(tmp_path, rotate_bytes=4096, block_bytes=1024) as dl:
        q = dl.register_stream({"entity": "a"}, epoch_scale=1e-3, value_scale=1e-2)
        x = dl.register_stream({"entity": "b"}, epoch_scale=1e-6, value_scale=None)
        expected = []
        for k in range(600):
            sid = q if k % 3 else x
            idx = np.sort(rng.choice(200, size=int(rng.integers(0, 9)), replace=False))
            vals = rng.normal(size=len(idx)) * 50
            epoch = k * 0.0137
            dl.record(sid, epoch, idx, vals)
            expected.append((sid, epoch, idx, vals))
    assert len(list(tmp_path.glob("*.seg.zst"))) >= 2
    py, native = decode_python(tmp_path), decode_native(tmp_path)
    assert_same_records(py, native)
    assert py.skipped == [] and native.skipped == []
    # FORMAT.md 7: block by block; within a format-2 block stream by stream, each in recorded order
    ordered, at = [], 0
    for seg in sorted(tmp_path.glob("*.seg.zst")):
        data = seg.read_bytes()
        for unit in frame_units(data):
            if unit.kind == 3:
                block = expected[at:at + unit.records]
                at += unit.records
                ordered += sorted(block, key=lambda r: r[0]) if data[8:12] == b"DDL2" else block
    assert at == len(expected)
    for (sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals) in zip(
            ordered, py.records(), strict=True):
        assert gsid == sid and np.array_equal(gidx, idx)
        assert gepoch == quantise(epoch, 1e-3 if sid == q else 1e-6)
        want = vals if sid == x else np.array([quantise(v, 1e-2) for v in vals])
        np.testing.assert_array_equal(gvals.view(np.uint64), want.view(np.uint64))


@both_readers
@pytest.mark.parametrize("text", [b"[1, 2]", b"{not json", b"\xff\xfe", b"[" * 100_000,
                                  b'{"a": "\x1d"}', b'{"a": 1,}'],
                         ids=["array", "broken", "not utf-8", "unclosed", "control character",
                              "trailing comma"])
def test_registration_whose_json_is_not_an_object_is_ignored(tmp_path, decode, text):
    """FORMAT.md 8.1.2: ignored and reported; without a sidecar the blocks holding the stream
    are skipped whole (format 1 interleaves streams in a block)."""
    data, reg_at, block_at = v1_registration_with_json(text)
    write_segment(tmp_path, data)
    got = decode(tmp_path)
    assert len(got) == 0
    assert kinds(got) == [("00000.seg.zst", reg_at, "invalid_registration"),
                          ("00000.seg.zst", block_at, "unregistered_stream")]


@both_readers
@pytest.mark.parametrize("depth", [3000, 4096, 4097])
def test_registration_json_nesting_up_to_4096_deep(tmp_path, decode, depth):
    """FORMAT.md 3.3: nested at most 4096 deep, deeper than Python's json recursion goes."""
    inner = depth - 1  # the object itself is one level
    text = b'{"a": ' + b"[" * inner + b"]" * inner + b', "b": NaN}'
    data, reg_at, block_at = v1_registration_with_json(text)
    write_segment(tmp_path, data)
    got = decode(tmp_path)
    if depth <= 4096:
        check_records(got, RECORDS)
        assert got.skipped == []
    else:
        assert len(got) == 0
        assert kinds(got) == [("00000.seg.zst", reg_at, "invalid_registration"),
                              ("00000.seg.zst", block_at, "unregistered_stream")]


@both_readers
def test_json_nesting_bound_does_not_follow_the_recursion_limit(tmp_path, decode):
    """With a raised ``sys.setrecursionlimit`` Python's ``json.loads`` parses 4097 levels, and the
    pure-Python reader accepted a registration the native one refused (FORMAT.md 3.3 bounds the
    nesting at 4096 whatever the interpreter allows)."""
    import sys

    inner = 4096  # the object itself is one more level: 4097
    text = b'{"a": ' + b"[" * inner + b"]" * inner + b"}"
    data, reg_at, block_at = v1_registration_with_json(text)
    write_segment(tmp_path, data)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        got = decode(tmp_path)
    finally:
        sys.setrecursionlimit(limit)
    assert len(got) == 0
    assert kinds(got) == [("00000.seg.zst", reg_at, "invalid_registration"),
                          ("00000.seg.zst", block_at, "unregistered_stream")]


def v1_registration_with_json(text: bytes) -> tuple[bytes, int, int]:
    """A format-1 segment registering stream 9 with ``text`` as its JSON, then stream 3, then a
    block of RECORDS; with the offsets of the registration and of the block."""
    import struct
    import zlib

    data = bytearray(v1.segment_header())
    reg_at = len(data)
    body = struct.pack("<HIddI", 0, 9, X.epoch_scale, 0.0, len(text)) + text
    payload = b"DDL1" + bytes([2, 1]) + body
    payload += struct.pack("<I", zlib.crc32(payload))
    data += struct.pack("<II", 0x184D2A5D, len(payload)) + payload
    data += v1.registration(3, {"stream_id": 3}, epoch_scale=Q.epoch_scale,
                            value_scale=Q.value_scale)
    block_at = len(data)
    data += v1.block(v1.encode_records(STREAMS, RECORDS), len(RECORDS))
    return bytes(data), reg_at, block_at
