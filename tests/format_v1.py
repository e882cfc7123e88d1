"""Build format-1 segments byte by byte from docs/FORMAT.md, for cases the real writer never makes.

The native writer is the source of real segments; this builder exists to craft what it cannot:
an unknown format version, a block whose crc is right but whose payload is wrong, a stream with no
registration, data after the footer. It follows FORMAT.md literally and is deliberately simple.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from tests.common import put_varint, round_half_away, zigzag

SKIPPABLE_MAGIC = 0x184D2A5D


def frame(kind: int, body: bytes, *, version_or_flags: int = 0) -> bytes:
    """A skippable frame: ``DDL1``, kind, one flag/version byte, ``body`` (from offset 6), crc."""
    payload = b"DDL1" + bytes([kind, version_or_flags]) + body
    payload += struct.pack("<I", zlib.crc32(payload))
    return struct.pack("<II", SKIPPABLE_MAGIC, len(payload)) + payload


def segment_header(segment: int = 0, *, version: int = 1) -> bytes:
    return frame(1, struct.pack("<HIQI", 0, segment, 0, 0), version_or_flags=version)


def registration(sid: int, meta: Mapping[str, Any], *, epoch_scale: float,
                 value_scale: float | None, periodic: bool = False) -> bytes:
    text = json.dumps(dict(meta), separators=(",", ":")).encode()
    flags = (1 if value_scale is None else 0) | (2 if periodic else 0)
    body = struct.pack("<HIddI", 0, sid, epoch_scale, value_scale or 0.0, len(text)) + text
    return frame(2, body, version_or_flags=flags)


def footer(blocks: int, records: int) -> bytes:
    return frame(4, b"\0\0" + struct.pack("<IQ", blocks, records))


def block(raw: bytes, count: int, *, seq: int = 0, level: int = 3) -> bytes:
    """A block header frame followed by the zstd frame of ``raw``."""
    compressed = zstandard.ZstdCompressor(level=level).compress(raw)
    header = struct.pack("<HIIIIII", 0, seq, count, len(raw), len(compressed),
                         zlib.crc32(compressed), zlib.crc32(raw))
    return frame(3, header) + compressed


@dataclass
class Stream:
    sid: int
    epoch_scale: float
    value_scale: float | None  # None: exact float64 values


def encode_records(streams: Mapping[int, Stream],
                   records: Sequence[tuple[int, float, Sequence[int], Sequence[float]]],
                   *, same_indices: bool = True) -> bytes:
    """The raw payload of one block (FORMAT.md section 4); predecessors are per stream."""
    out = bytearray()
    preds: dict[int, tuple[int, list[int], list[int]]] = {}
    for sid, epoch, indices, values in records:
        s = streams[sid]
        tick = round_half_away(epoch / s.epoch_scale)
        idx = [int(i) for i in indices]
        if s.value_scale is None:
            state = [int(b) for b in np.asarray(values, dtype=np.float64).view(np.uint64)]
        else:
            state = [round_half_away(float(v) / s.value_scale) for v in values]
        pred = preds.get(sid)
        same = same_indices and pred is not None and pred[1] == idx
        put_varint(out, (sid << 1) | int(same))
        put_varint(out, zigzag(tick - pred[0] if pred else tick))
        if not same:
            put_varint(out, len(idx))
            for k, i in enumerate(idx):
                put_varint(out, i if k == 0 else i - idx[k - 1] - 1)
        for k, x in enumerate(state):
            if s.value_scale is None:
                out += struct.pack("<Q", x ^ pred[2][k] if same else x)
            else:
                put_varint(out, zigzag(x - pred[2][k] if same else x))
        preds[sid] = (tick, idx, state)
    return bytes(out)


def segment(streams: Mapping[int, Stream],
            blocks: Sequence[Sequence[tuple[int, float, Sequence[int], Sequence[float]]]],
            *, number: int = 0, closed: bool = True, labels: Mapping[int, Mapping] | None = None,
            first_seq: int = 0) -> bytes:
    """A whole segment: header, every registration, the blocks and (when closed) the footer."""
    out = bytearray(segment_header(number))
    for sid, s in streams.items():
        meta = {**(labels or {}).get(sid, {}), "stream_id": sid, "epoch_scale": s.epoch_scale,
                "value_scale": s.value_scale}
        out += registration(sid, meta, epoch_scale=s.epoch_scale, value_scale=s.value_scale)
    for k, records in enumerate(blocks):
        out += block(encode_records(streams, records), len(records), seq=first_seq + k)
    if closed:
        out += footer(len(blocks), sum(len(b) for b in blocks))
    return bytes(out)
