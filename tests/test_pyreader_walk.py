"""The frame walk without decompression (``pyreader.walk_frames``) and ``verify``'s use of it, on
format-2 segments built byte by byte: the same walk as the readers (FORMAT.md 4.1)."""

from __future__ import annotations

import format_v2 as v2

from disco_data_logger import pyreader
from disco_data_logger.sharding.verify import walk_segment

S = {1: v2.Stream(1, 1.0, 1.0, {"a": 1}), 2: v2.Stream(2, 0.5, None, {"a": 2})}
BLOCK = [(1, 1.0, [0, 3], [1.0, 2.0]), (2, 1.5, [4], [0.25]), (1, 2.0, [0, 3], [1.0, 3.0])]


def write(tmp_path, data: bytes):
    path = tmp_path / "00000.seg.zst"
    path.write_bytes(data)
    return path


def test_intact_segment(tmp_path):
    path = write(tmp_path, v2.segment(S, [BLOCK, BLOCK[:1], BLOCK]))
    walk = pyreader.walk_frames(path)
    assert (walk.version, walk.blocks, walk.records, walk.footer, walk.skipped) == (
        2, 3, 7, True, [])
    check = walk_segment(path)
    assert (check.blocks, check.records, check.footer, check.problems, check.torn_tail) == (
        3, 7, True, [], False)


def test_damage_is_skipped_and_the_rest_still_walked(tmp_path):
    data = bytearray(v2.segment(S, [BLOCK, BLOCK, BLOCK]))
    units = v2.units(bytes(data))
    reg, first, second = units[1], units[2], units[3]
    data[reg.offset + 20] ^= 1  # the registrations frame
    data[second.end - 2] ^= 1  # inside the second block's zstd frame
    check = walk_segment(write(tmp_path, bytes(data)))
    assert [(s["offset"], s["kind"]) for s in check.skipped] == [
        (reg.offset, "corrupt_frame"), (second.offset, "bad_block")]
    assert check.blocks == 3 and check.records == 6 and check.footer
    assert check.checksum_failures == 2 and len(check.problems) == 2
    assert not check.torn_tail and first.kind == 3


def test_torn_tail_is_what_repair_may_cut(tmp_path):
    data = v2.segment(S, [BLOCK, BLOCK], closed=False)
    last = v2.units(data)[-1]
    check = walk_segment(write(tmp_path, data[:last.end - 3]))
    assert check.torn_tail and check.torn_offset == last.offset and check.problems == []
    assert check.blocks == 1 and check.records == 3


def test_block_running_past_the_end_before_intact_frames_is_not_a_torn_tail(tmp_path):
    """The readers stop at such a block (a torn tail for them); a repair must not cut there,
    since intact frames follow: verify reports it as a problem instead."""
    head = v2.segment(S, [], closed=False)
    p = v2.block_payload(S, BLOCK)
    liar = v2.block(p, compressed_size=1 << 20)[:8 + 56]
    check = walk_segment(write(tmp_path, head + liar + v2.block(p)[8 + 56:] + v2.block(p)))
    assert not check.torn_tail and check.problems
    assert [s["kind"] for s in check.skipped] == ["torn_tail"]


def test_legacy_segments_are_not_walked(tmp_path):
    path = write(tmp_path, b"\x28\xb5\x2f\xfd" + bytes(20))
    assert pyreader.walk_frames(path).version == 0 and walk_segment(path).legacy
