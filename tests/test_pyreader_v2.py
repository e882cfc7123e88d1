"""Format 2 (FORMAT.md sections 2 to 7) through both readers, on segments built byte by byte.

tests/format_v2.py crafts what the real writer never makes; every case states what the spec
requires (records, and where and of which kind each skipped part is) and both readers must give
exactly that.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib

import format_v2 as v2
import numpy as np
import pytest

from disco_data_logger import pyreader
from tests.common import (
    Decoded,
    assert_same_records,
    both_readers,
    decode_python,
    put_varint,
    quantise,
)

NAME = "00000.seg.zst"
Q = v2.Stream(3, 1e-3, 0.01, {"entity": "q", "model": "M", "replication": 5})
X = v2.Stream(9, 0.5, None, {"entity": "x", "model": "M", "weights": [1, 2.5, None]},
              periodicity=2.0, kind="accumulator")
P = v2.Stream(40, 0.25, 1.0, {"entity": "p", "model": "M"}, periodicity=1.0)
STREAMS = {3: Q, 9: X, 40: P}
RECORDS = [
    (3, 1.0, [1, 5, 9], [1.0, 2.0, -3.0]),
    (9, 2.0, [0, 3], [math.pi, -0.0]),
    (3, 2.5, [1, 5, 9], [1.5, 2.0, -3.01]),  # same indices as its predecessor
    (9, 3.0, [0, 3], [1e300, float("nan")]),  # same indices, exact values XORed
    (40, 0.5, [7], [2.0]),
    (3, 3.0, [], []),
    (3, 3.5, [], []),  # same (empty) index list
    (9, 9.0, [2**63 - 1], [5e-324]),
    (40, 0.75, [7], [-4.0]),
    (3, -7.5, [0, 2**40], [-1e6, 123.45]),
    (9, -1.0, [2**63 - 1], [-math.inf]),
]


def write(directory, data: bytes, number: int = 0):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{number:05d}.seg.zst"
    path.write_bytes(data)
    return path


def expected(records) -> list[tuple[int, float, list[int], np.ndarray]]:
    """What FORMAT.md promises for ``records`` of one block, in its order (section 7)."""
    out = []
    for sid, epoch, idx, vals in v2.spec_order(records):
        s = STREAMS[sid]
        want = [v if s.value_scale is None else quantise(v, s.value_scale) for v in vals]
        out.append((sid, quantise(epoch, s.epoch_scale), list(idx),
                    np.array(want, dtype=np.float64)))
    return out


def check(got: Decoded, blocks) -> None:
    want = [r for records in blocks for r in expected(records)]
    assert len(got) == len(want), (len(got), len(want))
    for (sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals) in zip(want, got.records(),
                                                                     strict=True):
        assert (gsid, gepoch, gidx.tolist()) == (sid, epoch, idx)
        np.testing.assert_array_equal(gvals.view(np.uint64), vals.view(np.uint64))


def kinds(got: Decoded) -> list[tuple[str, int, str]]:
    """Every skipped part as (file name, offset, kind), sorted."""
    return sorted((s["segment"].rsplit("/", 1)[-1], int(s["offset"]), s["kind"])
                  for s in got.skipped)


def sidecars(directory, streams) -> None:
    (directory / "streams").mkdir(parents=True, exist_ok=True)
    for s in streams:
        (directory / "streams" / f"{s.sid:08d}.json").write_text(json.dumps(s.metadata()))


# --------------------------------------------------------------------------- intact segments


@both_readers
def test_hand_built_segment(tmp_path, decode):
    write(tmp_path, v2.segment(STREAMS, [RECORDS, RECORDS[:2], RECORDS[4:]]))
    got = decode(tmp_path)
    check(got, [RECORDS, RECORDS[:2], RECORDS[4:]])
    assert got.skipped == []


def test_registrations_are_the_metadata(tmp_path):
    write(tmp_path, v2.segment(STREAMS, [RECORDS]))
    regs = pyreader.read_directory(tmp_path).registrations
    assert regs == {sid: s.metadata() for sid, s in STREAMS.items()}
    assert list(regs[9]) == ["entity", "model", "weights", "stream_id", "epoch_scale",
                             "value_scale", "periodicity", "kind"]


@both_readers
def test_same_indices_and_compression_are_the_writers_choice(tmp_path, decode):
    write(tmp_path / "a", v2.segment(STREAMS, [RECORDS]))
    plain = bytearray(v2.segment_header())
    plain += v2.registrations(list(STREAMS.values()), v2.Strings(), compress=False)
    plain += v2.block(v2.block_payload(STREAMS, RECORDS, same_indices=False))
    write(tmp_path / "b", bytes(plain))
    packed = bytearray(v2.segment_header())
    packed += v2.registrations(list(STREAMS.values()), v2.Strings(), compress=True)
    packed += v2.block(v2.block_payload(STREAMS, RECORDS), level=19)
    write(tmp_path / "c", bytes(packed))
    a = decode(tmp_path / "a")
    for other in ("b", "c"):
        got = decode(tmp_path / other)
        assert_same_records(a, got)
        assert got.skipped == []
    check(a, [RECORDS])


@both_readers
def test_strings_interned_across_frames(tmp_path, decode):
    """Later frames refer to strings of earlier ones; a re-registration replaces the earlier."""
    strings = v2.Strings()
    data = bytearray(v2.segment_header())
    data += v2.registrations([Q], strings)
    data += v2.block(v2.block_payload(STREAMS, [r for r in RECORDS if r[0] == 3]))
    data += v2.registrations([X, P], strings)  # "model", "M", "entity" are not repeated
    second = v2.units(bytes(data) + v2.footer(0, 0))[-2]
    assert second.kind == 2 and struct.unpack_from("<I", data, second.offset + 8 + 12)[0] > 0
    data += v2.block(v2.block_payload(STREAMS, RECORDS), seq=1)
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] == 3], RECORDS])
    assert got.skipped == []
    regs = pyreader.read_directory(tmp_path).registrations
    assert regs == {sid: s.metadata() for sid, s in STREAMS.items()}


@both_readers
def test_several_segments_in_numeric_order(tmp_path, decode):
    for number in (0, 1, 2, 10):
        records = [(3, float(number), [number], [float(number)])]
        write(tmp_path, v2.segment(STREAMS, [records], number=number), number)
    got = decode(tmp_path)
    assert got.epoch.tolist() == [0.0, 1.0, 2.0, 10.0]


@both_readers
def test_unclosed_segment_loses_nothing(tmp_path, decode):
    write(tmp_path, v2.segment(STREAMS, [RECORDS, RECORDS], closed=False))
    got = decode(tmp_path)
    check(got, [RECORDS, RECORDS])
    assert got.skipped == []


@both_readers
def test_many_streams_in_one_block(tmp_path, decode):
    rng = np.random.default_rng(3)
    streams = {sid: v2.Stream(sid, 1e-3, None if sid % 3 == 0 else 0.5, {"i": sid})
               for sid in range(0, 3000, 7)}
    records = []
    for k in range(2000):
        sid = int(rng.choice(list(streams)))
        n = int(rng.integers(0, 5))
        records.append((sid, k * 0.01, sorted(rng.choice(100, n, replace=False).tolist()),
                        rng.normal(size=n).tolist()))
    write(tmp_path, v2.segment(streams, [records[:1500], records[1500:]]))
    got = decode(tmp_path)
    assert got.skipped == []
    want = [r for block in (records[:1500], records[1500:]) for r in v2.spec_order(block)]
    assert got.stream_id.tolist() == [r[0] for r in want]
    for (sid, epoch, idx, vals), (_, gepoch, gidx, gvals) in zip(want, got.records(),
                                                                 strict=True):
        s = streams[sid]
        assert gepoch == quantise(epoch, s.epoch_scale) and gidx.tolist() == idx
        assert gvals.tolist() == [v if s.value_scale is None else quantise(v, s.value_scale)
                                  for v in vals]


# --------------------------------------------------------------------------- registrations


def two_frames_lost_first(damage: bool) -> tuple[bytes, int, int]:
    """A segment whose first registrations frame (Q) is damaged when asked; the second (X, P)
    refers to strings the first defined. Returns the bytes and the two frames' offsets."""
    strings = v2.Strings()
    data = bytearray(v2.segment_header())
    first_at = len(data)
    first = bytearray(v2.registrations([Q], strings))
    if damage:
        first[-10] ^= 0x40
    data += first
    second_at = len(data)
    data += v2.registrations([X, P], strings)
    data += v2.block(v2.block_payload(STREAMS, RECORDS))
    data += v2.block(v2.block_payload(STREAMS, RECORDS), seq=1)
    data += v2.footer(2, 2 * len(RECORDS))
    return bytes(data), first_at, second_at


@both_readers
def test_lost_registrations_frame_costs_its_labels_not_the_blocks(tmp_path, decode):
    """Issue 9 item 14 for format 2: the frames after a damaged registrations frame are read;
    entries referring to its strings are taken without those labels."""
    data, first_at, second_at = two_frames_lost_first(damage=True)
    write(tmp_path, data)
    sidecars(tmp_path, [Q])  # Q's only registration was lost: its sidecar serves
    got = decode(tmp_path)
    check(got, [RECORDS, RECORDS])
    assert kinds(got) == [(NAME, first_at, "corrupt_frame"),
                          (NAME, second_at, "unresolved_label"),
                          (NAME, second_at, "unresolved_label")]
    assert sorted(s["stream_id"] for s in got.skipped if "stream_id" in s) == [9, 40]
    regs = pyreader.read_directory(tmp_path).registrations
    # "model" and "M" were defined by the lost frame; "entity" too. What X and P defined stays.
    assert regs[9] == {"weights": [1, 2.5, None], "stream_id": 9, "epoch_scale": 0.5,
                       "value_scale": None, "periodicity": 2.0, "kind": "accumulator"}
    assert regs[40] == {"stream_id": 40, "epoch_scale": 0.25, "value_scale": 1.0,
                        "periodicity": 1.0, "kind": "state"}


@both_readers
def test_lost_registration_without_sidecar_reports_the_stream(tmp_path, decode):
    data, first_at, second_at = two_frames_lost_first(damage=True)
    write(tmp_path, data)
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 3]] * 2)
    blocks_at = [u.offset for u in v2.units(two_frames_lost_first(damage=False)[0])
                 if u.kind == 3]
    assert kinds(got) == [(NAME, first_at, "corrupt_frame"),
                          (NAME, second_at, "unresolved_label"),
                          (NAME, second_at, "unresolved_label"),
                          (NAME, blocks_at[0], "unregistered_stream")]  # once per segment


@both_readers
def test_registration_with_bad_scales_is_ignored(tmp_path, decode):
    bad = v2.Stream(9, -0.5, None, {"entity": "x"})
    data = bytearray(v2.segment_header())
    reg_at = len(data)
    data += v2.registrations([Q, bad, P], v2.Strings())
    block_at = len(data)
    data += v2.block(v2.block_payload(STREAMS, RECORDS))
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 9]])
    assert kinds(got) == [(NAME, reg_at, "invalid_registration"),
                          (NAME, block_at, "unregistered_stream")]


@both_readers
@pytest.mark.parametrize("bad", [
    v2.Stream(9, 0.5, None, periodicity=0.0),
    v2.Stream(9, 0.5, None, periodicity=math.inf),
    v2.Stream(9, 0.5, math.nan),
    v2.Stream(9, 0.0, 1.0),
], ids=["periodicity 0", "periodicity inf", "value_scale nan", "epoch_scale 0"])
def test_entry_with_bad_numbers_is_ignored(tmp_path, decode, bad):
    data = bytearray(v2.segment_header())
    reg_at = len(data)
    data += v2.registrations([Q, bad, P], v2.Strings())
    block_at = len(data)
    data += v2.block(v2.block_payload(STREAMS, RECORDS))
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 9]])
    assert kinds(got) == [(NAME, reg_at, "invalid_registration"),
                          (NAME, block_at, "unregistered_stream")]
    assert [(s["length"], s["stream_id"]) for s in got.skipped] == [(0, 9), (0, 9)]


@both_readers
def test_accumulator_flag_without_periodic_flag_is_ignored(tmp_path, decode):
    body, first = v2.registrations_body([Q, X], v2.Strings())
    # X's flags byte: after Q's entry; X is exact and periodic accumulator (0b111): make it 0b101
    at = body.index(bytes([9, 0b111]))
    body = body[:at + 1] + bytes([0b101]) + body[at + 2:at + 2 + 16] + body[at + 2 + 24:]
    data = bytearray(v2.segment_header())
    reg_at = len(data)
    data += v2.registrations_frame(body, 2, first) + v2.registrations([P], v2.Strings())
    data += v2.block(v2.block_payload(STREAMS, RECORDS))
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 9]])
    assert [k[1:] for k in kinds(got)][0] == (reg_at, "invalid_registration")


@both_readers
@pytest.mark.parametrize("case", ["raw crc", "trailing byte", "not utf-8", "wrong entries",
                                  "bad zstd"])
def test_registrations_body_that_cannot_be_read(tmp_path, decode, case):
    """A valid frame whose body is wrong is ignored whole, its strings included."""
    body, first = v2.registrations_body([Q], v2.Strings())
    entries = 1
    if case == "raw crc":
        reg = bytearray(v2.registrations_frame(body, 1, first, compress=False))
        struct.pack_into("<I", reg, 8 + 20, zlib.crc32(body) ^ 1)
        reg = bytearray(v2.recrc(bytes(reg)))
    else:
        if case == "trailing byte":
            body += b"\x00"
        elif case == "not utf-8":
            body = body.replace(b"entity", b"entit\xff")
        elif case == "wrong entries":
            entries = 2
        reg = bytearray(v2.registrations_frame(body, entries, first, compress=case == "bad zstd"))
        if case == "bad zstd":
            reg[8 + 24 + 6] ^= 0xFF  # inside the zstd frame; the frame crc is then redone
            reg = bytearray(v2.recrc(bytes(reg)))
    data = bytearray(v2.segment_header())
    reg_at = len(data)
    data += reg
    data += v2.registrations([X, P], v2.Strings())  # a later frame defining its own strings
    block_at = len(data)
    data += v2.block(v2.block_payload(STREAMS, RECORDS))
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 3]])
    assert kinds(got) == [(NAME, reg_at, "invalid_registration"),
                          (NAME, block_at, "unregistered_stream")]


@both_readers
def test_registration_must_come_before_the_block(tmp_path, decode):
    data = bytearray(v2.segment_header())
    data += v2.registrations([X, P], v2.Strings())
    block_at = len(data)
    data += v2.block(v2.block_payload(STREAMS, RECORDS))
    data += v2.registrations([Q], v2.Strings())  # too late for the block before it
    data += v2.block(v2.block_payload(STREAMS, RECORDS), seq=1)
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 3], RECORDS])
    assert kinds(got) == [(NAME, block_at, "unregistered_stream")]


@both_readers
def test_registrations_of_earlier_segments_are_not_used(tmp_path, decode):
    write(tmp_path, v2.segment(STREAMS, [RECORDS]), 0)
    later = v2.segment(STREAMS, [RECORDS], number=1, registered=[3, 40])
    write(tmp_path, later, 1)
    got = decode(tmp_path)
    check(got, [RECORDS, [r for r in RECORDS if r[0] != 9]])
    block_at = next(u.offset for u in v2.units(later) if u.kind == 3)
    assert kinds(got) == [("00001.seg.zst", block_at, "unregistered_stream")]
    assert got.skipped[0]["stream_id"] == 9


@both_readers
def test_sidecar_serves_a_stream_without_registration(tmp_path, decode):
    write(tmp_path, v2.segment(STREAMS, [RECORDS, RECORDS], registered=[3]))
    sidecars(tmp_path, [X, P])
    got = decode(tmp_path)
    check(got, [RECORDS, RECORDS])
    assert got.skipped == []


@both_readers
def test_unregistered_stream_is_reported_once_per_segment(tmp_path, decode):
    for number in (0, 1):
        write(tmp_path, v2.segment(STREAMS, [RECORDS] * 3, number=number, registered=[3, 40]),
              number)
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] != 9]] * 6)
    assert [(k[0], k[2]) for k in kinds(got)] == [("00000.seg.zst", "unregistered_stream"),
                                                  ("00001.seg.zst", "unregistered_stream")]


# --------------------------------------------------------------------------- blocks and sections


def forged_section(case: str) -> tuple[bytes, int, int]:
    """A section of stream 3 that is not valid (FORMAT.md 5.3), with its R and N."""
    good, nnz = v2.encode_section(Q, [r for r in RECORDS if r[0] == 3])
    r = sum(1 for x in RECORDS if x[0] == 3)
    if case == "first count 0":
        return b"\x02" + b"\x00" + b"\x01", 1, 0  # tick 1, count 0, no indices
    if case == "trailing byte":
        return good + b"\x00", r, nnz
    if case == "short":
        return good[:-1], r, nnz
    if case == "index beyond 2**63":
        return b"\x00\x02" + b"\xff" * 8 + b"\x80\x01" + b"\x00", 1, 1
    if case == "lengths differ from N":
        return good, r, nnz + 1
    if case == "varint too long":
        return b"\x80" * 11 + b"\x00" + b"\x01", 1, 0
    raise AssertionError(case)


SECTION_CASES = ["first count 0", "trailing byte", "short", "index beyond 2**63",
                 "lengths differ from N", "varint too long"]


@both_readers
@pytest.mark.parametrize("case", SECTION_CASES)
def test_bad_section_is_skipped_alone(tmp_path, decode, case):
    section, r, n = forged_section(case)
    others = [x for x in RECORDS if x[0] != 3]
    good = v2.block_payload(STREAMS, others)
    by = {9: [x for x in others if x[0] == 9], 40: [x for x in others if x[0] == 40]}
    s9, n9 = v2.encode_section(X, by[9])
    s40, n40 = v2.encode_section(P, by[40])
    raw = v2.directory([(3, r, n, len(section)), (9, len(by[9]), n9, len(s9)),
                        (40, len(by[40]), n40, len(s40))]) + section + s9 + s40
    payload = v2.Payload(raw, r + len(others), n + good.nnz, 3, 3, 40)
    data = bytearray(v2.segment_header()) + v2.registrations(list(STREAMS.values()), v2.Strings())
    block_at = len(data)
    data += v2.block(payload)
    data += v2.block(v2.block_payload(STREAMS, RECORDS), seq=1)
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [others, RECORDS])
    assert kinds(got) == [(NAME, block_at, "bad_section")]
    assert got.skipped[0]["stream_id"] == 3


def forged_block(case: str) -> bytes:
    p = v2.block_payload(STREAMS, RECORDS)
    entries = [(3, 6, 9, 0), (9, 3, 5, 0), (40, 2, 2, 0)]
    secs = {}
    for sid in (3, 9, 40):
        secs[sid] = v2.encode_section(STREAMS[sid], [r for r in RECORDS if r[0] == sid])[0]
    sections = b"".join(secs[s] for s in (3, 9, 40))
    entries = [(sid, r, n, len(secs[sid])) for sid, r, n, _ in entries]
    if case == "D differs from header":
        return v2.block(p, streams=2)
    if case == "D is 0":
        return v2.block(v2.Payload(v2.directory([]), 0, 0, 0, 0, 0))
    if case == "records differ":
        return v2.block(p, records=p.records - 1)
    if case == "nnz differ":
        return v2.block(p, nnz=p.nnz + 1)
    if case == "ids outside range":
        return v2.block(p, lo=4)
    if case == "range not reached":
        return v2.block(p, hi=41)
    if case == "sections short":
        return v2.block(v2.Payload(v2.directory(entries) + sections + b"\x00", p.records, p.nnz,
                                   3, 3, 40))
    if case == "zero records":
        bad = [(3, 6, 9, len(secs[3])), (9, 0, 0, 0), (9 + 1, 3, 5, len(secs[9])),
               (40, 2, 2, len(secs[40]))]
        return v2.block(v2.Payload(v2.directory(bad) + sections, p.records, p.nnz, 4, 3, 40))
    if case == "raw crc":
        return v2.block(p, raw_crc=zlib.crc32(p.raw) ^ 1)
    if case == "compressed crc":
        return v2.block(p, compressed_crc=0)
    if case == "raw size":
        return v2.block(p, raw_size=len(p.raw) + 1)
    if case == "raw size beyond 2**28":
        return v2.block(p, raw_size=(1 << 28) + 1)
    if case == "counts beyond raw size":
        return v2.block(p, records=len(p.raw) + 1)
    raise AssertionError(case)


BLOCK_CASES = ["D differs from header", "D is 0", "records differ", "nnz differ",
               "ids outside range", "range not reached", "sections short", "zero records",
               "raw crc", "compressed crc", "raw size", "raw size beyond 2**28",
               "counts beyond raw size"]


@both_readers
@pytest.mark.parametrize("case", BLOCK_CASES)
def test_inconsistent_block_is_skipped_whole(tmp_path, decode, case):
    data = bytearray(v2.segment_header()) + v2.registrations(list(STREAMS.values()), v2.Strings())
    block_at = len(data)
    bad = forged_block(case)
    data += bad
    data += v2.block(v2.block_payload(STREAMS, RECORDS), seq=1)
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [RECORDS])
    assert kinds(got) == [(NAME, block_at, "bad_block")]
    assert got.skipped[0]["length"] == len(bad)


# --------------------------------------------------------------------------- frames


@both_readers
def test_unknown_format_version_skips_that_file_only(tmp_path, decode):
    good = v2.segment(STREAMS, [RECORDS])
    bad = v2.segment_header(version=3) + good[len(v2.segment_header()):]
    write(tmp_path, good, 0)
    write(tmp_path, bad, 1)
    got = decode(tmp_path)
    check(got, [RECORDS])
    assert kinds(got) == [("00001.seg.zst", 0, "unsupported_version")]
    assert "version 3" in got.skipped[0]["reason"] and "00001.seg.zst" in got.skipped[0]["reason"]
    assert got.skipped[0]["length"] == len(bad)


@both_readers
def test_unknown_ddl_prefix_is_unsupported(tmp_path, decode):
    """A first frame of another DDL prefix is a format this reader does not know, even when
    DDL2 frames follow it (FORMAT.md 4.1)."""
    good = v2.segment(STREAMS, [RECORDS])
    write(tmp_path, v2.frame(1, bytes([3]) + bytes(22), magic=b"DDL3") + good)
    got = decode(tmp_path)
    assert len(got) == 0 and kinds(got) == [(NAME, 0, "unsupported_version")]


@both_readers
def test_ddl2_magic_with_version_1_is_unsupported(tmp_path, decode):
    good = v2.segment(STREAMS, [RECORDS])
    write(tmp_path, v2.segment_header(version=1) + good[len(v2.segment_header()):])
    got = decode(tmp_path)
    assert len(got) == 0 and kinds(got) == [(NAME, 0, "unsupported_version")]


@both_readers
def test_data_after_the_footer(tmp_path, decode):
    data = v2.segment(STREAMS, [RECORDS])
    write(tmp_path, data + v2.segment(STREAMS, [RECORDS], number=1))
    got = decode(tmp_path)
    check(got, [RECORDS])
    assert kinds(got) == [(NAME, len(data), "after_footer")]
    assert got.skipped[0]["length"] == len(data)


@both_readers
def test_misplaced_segment_header_is_skipped_alone(tmp_path, decode):
    data = v2.segment(STREAMS, [RECORDS], closed=False)
    header = v2.segment_header(number=7)
    write(tmp_path, data + header + v2.block(v2.block_payload(STREAMS, RECORDS), seq=1))
    got = decode(tmp_path)
    check(got, [RECORDS, RECORDS])
    assert kinds(got) == [(NAME, len(data), "corrupt_frame")]
    assert got.skipped[0]["length"] == len(header)


@both_readers
def test_segment_without_header(tmp_path, decode):
    data = v2.segment(STREAMS, [RECORDS])
    write(tmp_path, data[len(v2.segment_header()):])
    got = decode(tmp_path)
    check(got, [RECORDS])
    assert got.skipped == []  # FORMAT.md 4.1: a valid frame at offset 0 starts the walk


@both_readers
def test_garbage_before_the_header(tmp_path, decode):
    data = v2.segment(STREAMS, [RECORDS])
    write(tmp_path, b"\x01\x02garbage" + data)
    got = decode(tmp_path)
    check(got, [RECORDS])
    # the garbage, then the header (valid only at offset 0), each a corrupt_frame
    assert kinds(got) == [(NAME, 0, "corrupt_frame"), (NAME, 9, "corrupt_frame")]
    assert [s["length"] for s in got.skipped] == [9, len(v2.segment_header())]


@both_readers
def test_file_without_any_valid_frame(tmp_path, decode):
    write(tmp_path / "garbage", b"\x00" * 100)
    write(tmp_path / "short", b"\x5d\x2a\x4d")
    torn = v2.segment(STREAMS, [RECORDS])[:20]  # the writer died inside the first write
    write(tmp_path / "torn", torn)
    assert kinds(decode(tmp_path / "garbage")) == [(NAME, 0, "corrupt_frame")]
    assert kinds(decode(tmp_path / "short")) == [(NAME, 0, "torn_tail")]
    assert kinds(decode(tmp_path / "torn")) == [(NAME, 0, "torn_tail")]


@both_readers
def test_empty_segment_file_is_nothing(tmp_path, decode):
    write(tmp_path, v2.segment(STREAMS, [RECORDS]), 0)
    write(tmp_path, b"", 1)
    got = decode(tmp_path)
    check(got, [RECORDS])
    assert got.skipped == []


@both_readers
def test_block_running_past_the_end_is_a_torn_tail(tmp_path, decode):
    """A block whose zstd frame runs past the end of the file ends the walk as a torn tail,
    whatever follows (FORMAT.md 4.1)."""
    p = v2.block_payload(STREAMS, RECORDS)
    head = v2.segment(STREAMS, [], closed=False)
    liar = v2.block(p, compressed_size=1 << 30)
    real = v2.block(p)
    header_len = 8 + 56
    data = head + liar[:header_len] + real[header_len:] + v2.block(p, seq=1)
    write(tmp_path, data)
    got = decode(tmp_path)
    assert len(got) == 0
    assert kinds(got) == [(NAME, len(head), "torn_tail")]
    assert got.skipped[0]["length"] == len(data) - len(head)


@both_readers
def test_block_resumes_where_its_declared_frame_ends(tmp_path, decode):
    """After a bad block the next frame should start at its declared end; if none does, the
    reader resynchronises from there (a corrupt_frame), and the block glued on is lost too."""
    p = v2.block_payload(STREAMS, RECORDS)
    head = v2.segment(STREAMS, [], closed=False)
    b1, b2, b3 = v2.block(p), v2.block(p, seq=1), v2.block(p, seq=2)
    glued = head + b1[:-5] + b2 + b3
    write(tmp_path, glued)
    got = decode(tmp_path)
    check(got, [RECORDS])
    assert kinds(got) == [(NAME, len(head), "bad_block"),
                          (NAME, len(head) + len(b1), "corrupt_frame")]


# --------------------------------------------------------------------------- selection


def select_python(path, ids) -> Decoded:
    r = pyreader.read_directory(path, stream_ids=ids)
    return Decoded(r.stream_id, r.epoch, r.offsets, r.indices, r.values, r.skipped)


def select_native(path, ids) -> Decoded:
    from disco_data_logger import read
    from tests.common import decoded_from_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = read(path, stream_ids=ids)
    metadata = table.schema.metadata or {}
    skipped = json.loads(metadata[b"disco.skipped"]) if b"disco.skipped" in metadata else []
    return decoded_from_table(table, skipped)


both_selectors = pytest.mark.parametrize("select", [select_python, select_native],
                                         ids=["python", "native"])


@both_selectors
@pytest.mark.parametrize("ids", [[3], [9], [40], [3, 40], [9, 3, 40], [5], []])
def test_selection_returns_what_the_whole_read_returns_for_those_streams(tmp_path, select, ids):
    write(tmp_path, v2.segment(STREAMS, [RECORDS, RECORDS[3:], RECORDS[:4]]))
    whole = decode_python(tmp_path)
    got = select(tmp_path, ids)
    keep = np.isin(whole.stream_id, ids)
    from tests.common import select_records

    assert_same_records(got, select_records(whole, keep))
    assert got.skipped == []


@both_selectors
def test_selection_neither_parses_nor_reports_other_streams(tmp_path, select):
    """A bad section of stream 3 and an unregistered stream 9 are reported only when selected;
    a block whose id range holds no selected stream is skipped unchecked."""
    section, r, n = forged_section("trailing byte")
    others = [x for x in RECORDS if x[0] != 3]
    s9, n9 = v2.encode_section(X, [x for x in others if x[0] == 9])
    s40, n40 = v2.encode_section(P, [x for x in others if x[0] == 40])
    raw = v2.directory([(3, r, n, len(section)), (9, 3, n9, len(s9)), (40, 2, n40, len(s40))])
    raw += section + s9 + s40
    data = bytearray(v2.segment_header()) + v2.registrations([Q, P], v2.Strings())
    block_at = len(data)
    data += v2.block(v2.Payload(raw, r + 5, n + n9 + n40, 3, 3, 40))
    bad_crc_at = len(data)
    q_only = v2.block_payload(STREAMS, [x for x in RECORDS if x[0] == 3])
    data += v2.block(q_only, seq=1, raw_crc=0)  # stream 3 only, data damaged
    write(tmp_path, bytes(data))
    assert kinds(select(tmp_path, [40])) == []
    check(select(tmp_path, [40]), [[x for x in RECORDS if x[0] == 40]])
    assert kinds(select(tmp_path, [3])) == [(NAME, block_at, "bad_section"),
                                            (NAME, bad_crc_at, "bad_block")]
    assert kinds(select(tmp_path, [9])) == [(NAME, block_at, "unregistered_stream")]


# --------------------------------------------------------------------------- the Python API


def test_read_segment_reports_version_and_registrations(tmp_path):
    path = write(tmp_path, v2.segment(STREAMS, [RECORDS]))
    r = pyreader.read_segment(path)
    assert r.version == 2 and not r.legacy
    assert r.registrations[40]["kind"] == "state"
    check(Decoded(r.stream_id, r.epoch, r.offsets, r.indices, r.values, r.skipped), [RECORDS])


def test_every_skip_has_a_known_kind(tmp_path):
    data, _, _ = two_frames_lost_first(damage=True)
    write(tmp_path, data[:-7] + b"tail")
    r = pyreader.read_directory(tmp_path)
    assert r.skipped
    for s in r.skipped:
        assert s["kind"] in pyreader.SKIP_KINDS and s["reason"] and s["length"] >= 0


@both_readers
@pytest.mark.parametrize("layout", [("v2 skipped", "v1"), ("v1", "v2 skipped", "v1"),
                                    ("v2 skipped", "v2"), ("v1", "v2")])
def test_directory_mixing_formats(tmp_path, decode, layout):
    """Segments of formats 2 and 1 in one directory (a format-1 directory resumed by this writer,
    or damage): each is read on its own. Found by the fuzzer: a format-2 segment with a skipped
    section followed by a format-1 segment made the native reader return uninitialised values."""
    import format_v1 as v1

    s1 = {sid: v1.Stream(sid, s.epoch_scale, s.value_scale) for sid, s in STREAMS.items()}
    expected_blocks, skipped = [], []
    for k, kind in enumerate(layout):
        if kind == "v1":
            data = v1.segment(s1, [RECORDS], number=k)
            expected_blocks.append(list(RECORDS))  # format 1 keeps the order of recording
        elif kind == "v2":
            data = v2.segment(STREAMS, [RECORDS], number=k)
            expected_blocks.append(v2.spec_order(RECORDS))
        else:
            data = v2.segment(STREAMS, [RECORDS], number=k, registered=[3, 40])
            expected_blocks.append(v2.spec_order([r for r in RECORDS if r[0] != 9]))
            skipped.append((f"{k:05d}.seg.zst", "unregistered_stream"))
        write(tmp_path, data, k)
    got = decode(tmp_path)
    want = []
    for block in expected_blocks:
        for sid, epoch, idx, vals in block:
            s = STREAMS[sid]
            want.append((sid, quantise(epoch, s.epoch_scale), list(idx), [
                v if s.value_scale is None else quantise(v, s.value_scale) for v in vals]))
    assert len(got) == len(want)
    for (sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals) in zip(want, got.records(),
                                                                     strict=True):
        assert (gsid, gepoch, gidx.tolist()) == (sid, epoch, idx)
        np.testing.assert_array_equal(gvals.view(np.uint64),
                                      np.array(vals, dtype=np.float64).view(np.uint64))
    assert [(name, kind) for name, _, kind in kinds(got)] == skipped


@both_readers
def test_a_segment_looking_like_0_1_x_costs_only_itself(tmp_path, decode):
    """A format-2 directory with one segment whose first bytes became a zstd frame (a splice):
    formats 2 and 1 do not depend on 0.1.x tick chains, so the other segments are read
    (FORMAT.md section 9); the odd one is skipped as legacy_chain_broken."""
    import zstandard

    for k in range(4):
        data = v2.segment(STREAMS, [RECORDS], number=k)
        if k == 2:
            data = zstandard.ZstdCompressor().compress(b"not records of any kind")[:30]
        write(tmp_path, data, k)
    got = decode(tmp_path)
    check(got, [RECORDS] * 3)
    assert kinds(got) == [("00002.seg.zst", 0, "legacy_chain_broken")]


@both_readers
@pytest.mark.parametrize("value", ['"\x1d"', '{"x":1,}', "01", "nan", '"unclosed'],
                         ids=["control character", "trailing comma", "leading zero", "nan",
                              "unclosed"])
def test_label_value_that_is_not_json_is_dropped(tmp_path, decode, value):
    """FORMAT.md 3.3: valid JSON as Python's json reads it; anything else is an unresolved
    label (the entry is kept without it)."""
    body = bytearray()
    put_varint(body, 3)
    for text in ("a", value, "1"):
        raw = text.encode()
        put_varint(body, len(raw))
        body += raw
    put_varint(body, Q.sid)  # the one entry
    body += bytes([0]) + struct.pack("<dd", Q.epoch_scale, Q.value_scale)
    put_varint(body, 2)  # labels: a=<value>, a=1 (the later one stays)
    for pair in ((0, 1), (0, 2)):
        for sid in pair:
            put_varint(body, sid)
    data = bytearray(v2.segment_header())
    reg_at = len(data)
    data += v2.registrations_frame(bytes(body), 1, 0)
    data += v2.block(v2.block_payload(STREAMS, [r for r in RECORDS if r[0] == 3]))
    write(tmp_path, bytes(data))
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] == 3]])
    assert kinds(got) == [(NAME, reg_at, "unresolved_label")]
    assert pyreader.read_directory(tmp_path).registrations[3]["a"] == 1


@both_readers
@pytest.mark.parametrize("value", ["NaN", "-Infinity", ' [1, {"b": null}] ', '"\\ud800"',
                                  "[" * 3000 + "]" * 3000],
                         ids=["NaN", "-Infinity", "whitespace", "lone surrogate", "deep"])
def test_label_values_json_accepts(tmp_path, decode, value):
    body = bytearray()
    put_varint(body, 2)
    for text in ("a", value):
        raw = text.encode()
        put_varint(body, len(raw))
        body += raw
    put_varint(body, Q.sid)  # the one entry, one label a=<value>
    body += bytes([0]) + struct.pack("<dd", Q.epoch_scale, Q.value_scale)
    for v in (1, 0, 1):
        put_varint(body, v)
    data = v2.segment_header() + v2.registrations_frame(bytes(body), 1, 0)
    data += v2.block(v2.block_payload(STREAMS, [r for r in RECORDS if r[0] == 3]))
    write(tmp_path, data)
    got = decode(tmp_path)
    check(got, [[r for r in RECORDS if r[0] == 3]])
    assert got.skipped == []



@both_readers
def test_damaged_first_frame_the_first_valid_frame_tells_the_format(tmp_path, decode):
    """FORMAT.md 4.1: whatever the damaged first frame's bytes say (here DDL2), the first valid
    frame (here a spliced format-1 segment) tells the format; frames of the other format are then
    damage."""
    import format_v1 as v1

    s1 = {sid: v1.Stream(sid, s.epoch_scale, s.value_scale) for sid, s in STREAMS.items()}
    header = bytearray(v2.segment_header())
    header[-1] ^= 0xFF  # its crc
    spliced = v1.segment(s1, [RECORDS], closed=False)
    tail = v2.block(v2.block_payload(STREAMS, RECORDS))
    write(tmp_path, bytes(header) + spliced + tail)
    got = decode(tmp_path)
    records = [(sid, epoch, idx, vals) for sid, epoch, idx, vals in RECORDS]
    assert len(got) == len(records)
    assert got.stream_id.tolist() == [r[0] for r in records]  # format 1: recording order
    at = len(header)
    assert kinds(got) == [(NAME, 0, "corrupt_frame"), (NAME, at, "corrupt_frame"),
                          (NAME, at + len(spliced), "corrupt_frame")]
    assert [s["length"] for s in sorted(got.skipped, key=lambda s: s["offset"])] == [
        at, len(v1.segment_header()), len(tail)]
