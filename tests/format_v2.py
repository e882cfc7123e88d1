"""Build format-2 segments byte by byte from docs/FORMAT.md, for cases the real writer never makes.

The native writer is the source of real segments; this builder exists to craft what it cannot: an
unknown format version, a block or section whose crcs are right but whose content is wrong, an
inconsistent directory, a lost registrations frame followed by frames that refer to its strings,
unregistered streams, data after the footer. It follows FORMAT.md sections 2 to 5 literally, is
deliberately simple (one Python loop per value), and shares no code with either reader.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

from tests.common import put_varint, round_half_away, zigzag

SKIPPABLE_MAGIC = 0x184D2A5D
Record = tuple[int, float, Sequence[int], Sequence[float]]  # (stream id, epoch, indices, values)


def frame(kind: int, rest: bytes, *, magic: bytes = b"DDL2") -> bytes:
    """A skippable frame: ``DDL2``, kind, ``rest`` (payload from offset 5), crc32 of it all."""
    payload = magic + bytes([kind]) + rest
    payload += struct.pack("<I", zlib.crc32(payload))
    return struct.pack("<II", SKIPPABLE_MAGIC, len(payload)) + payload


def recrc(frame_bytes: bytes) -> bytes:
    """The same frame with its trailing crc32 recomputed (after an edit of its payload)."""
    body = bytearray(frame_bytes)
    struct.pack_into("<I", body, len(body) - 4, zlib.crc32(bytes(body[8:-4])))
    return bytes(body)


def segment_header(number: int = 0, *, version: int = 2) -> bytes:
    return frame(1, bytes([version]) + struct.pack("<HIQI", 0, number, 1_700_000_000, 4242))


def footer(blocks: int, records: int) -> bytes:
    return frame(4, bytes(3) + struct.pack("<IQ", blocks, records))


@dataclass
class Stream:
    sid: int
    epoch_scale: float
    value_scale: float | None  # None: exact float64 values
    labels: Mapping[str, Any] = field(default_factory=dict)
    periodicity: float | None = None
    kind: str = "state"

    def metadata(self) -> dict[str, Any]:
        """What a reader returns for this stream (FORMAT.md 3.1)."""
        meta = {**self.labels, "stream_id": self.sid, "epoch_scale": self.epoch_scale,
                "value_scale": self.value_scale}
        if self.periodicity is not None:
            meta.update(periodicity=self.periodicity, kind=self.kind)
        return meta


class Strings:
    """The interned strings of one segment: ids in order of first use (FORMAT.md 3.1)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)


def registrations_body(streams: Sequence[Stream], strings: Strings) -> tuple[bytes, int]:
    """The raw body of one registrations frame, and its first string id; ``strings`` learns the
    strings this frame defines."""
    first = len(strings)
    new: list[str] = []

    def sid_of(text: str) -> int:
        if text not in strings.ids:
            strings.ids[text] = len(strings.ids)
            new.append(text)
        return strings.ids[text]

    entries = bytearray()
    for s in streams:
        put_varint(entries, s.sid)
        flags = ((1 if s.value_scale is None else 0) | (2 if s.periodicity is not None else 0)
                 | (4 if s.periodicity is not None and s.kind == "accumulator" else 0))
        entries.append(flags)
        entries += struct.pack("<dd", s.epoch_scale, s.value_scale or 0.0)
        if s.periodicity is not None:
            entries += struct.pack("<d", s.periodicity)
        put_varint(entries, len(s.labels))
        for name, value in s.labels.items():
            put_varint(entries, sid_of(name))
            put_varint(entries, sid_of(json.dumps(value, separators=(",", ":"))))
    body = bytearray()
    put_varint(body, len(new))
    for text in new:
        raw = text.encode()
        put_varint(body, len(raw))
        body += raw
    return bytes(body + entries), first


def registrations_frame(raw_body: bytes, entries: int, first_string_id: int, *,
                        compress: bool | None = None) -> bytes:
    """A registrations frame around ``raw_body``; compressed when that is smaller (or as told)."""
    packed = zstandard.ZstdCompressor(level=3).compress(raw_body)
    if compress is None:
        compress = len(packed) < len(raw_body)
    body = packed if compress else raw_body
    rest = bytes([1 if compress else 0]) + struct.pack(
        "<HIIII", 0, entries, first_string_id, len(raw_body), zlib.crc32(raw_body)) + body
    return frame(2, rest)


def registrations(streams: Sequence[Stream], strings: Strings, *,
                  compress: bool | None = None) -> bytes:
    body, first = registrations_body(streams, strings)
    return registrations_frame(body, len(streams), first, compress=compress)


def encode_section(stream: Stream, records: Sequence[Record], *,
                   same_indices: bool = True) -> tuple[bytes, int]:
    """One stream's section (FORMAT.md 5.2) and its number of non-zeros."""
    ticks, counts, index_col, values = bytearray(), bytearray(), bytearray(), bytearray()
    prev: tuple[int, list[int], list[int]] | None = None
    nnz = 0
    for _sid, epoch, indices, vals in records:
        tick = round_half_away(epoch / stream.epoch_scale)
        idx = [int(i) for i in indices]
        if stream.value_scale is None:
            state = [int(b) for b in np.asarray(vals, dtype=np.float64).view(np.uint64)]
        else:
            state = [round_half_away(float(v) / stream.value_scale) for v in vals]
        put_varint(ticks, zigzag(tick - prev[0] if prev else tick))
        same = same_indices and prev is not None and prev[1] == idx
        put_varint(counts, 0 if same else len(idx) + 1)
        if not same:
            for k, i in enumerate(idx):
                put_varint(index_col, i if k == 0 else i - idx[k - 1] - 1)
        for k, x in enumerate(state):
            if stream.value_scale is None:
                values += struct.pack("<Q", x ^ prev[2][k] if same else x)  # type: ignore[index]
            else:
                put_varint(values, zigzag(x - prev[2][k] if same else x))  # type: ignore[index]
        prev = (tick, idx, state)
        nnz += len(idx)
    return bytes(ticks + counts + index_col + values), nnz


def spec_order(records: Sequence[Record]) -> list[Record]:
    """The order a reader returns a block's records in (FORMAT.md 7): by stream id, stably."""
    return sorted(records, key=lambda r: r[0])


@dataclass
class Payload:
    """A block payload and the header fields that describe it."""

    raw: bytes
    records: int
    nnz: int
    streams: int
    lo: int
    hi: int


def directory(entries: Sequence[tuple[int, int, int, int]]) -> bytes:
    """A directory of ``(stream id, R, N, B)`` entries, ids as given (FORMAT.md 5.1)."""
    out = bytearray()
    put_varint(out, len(entries))
    prev = None
    for sid, r, n, b in entries:
        put_varint(out, sid if prev is None else sid - prev - 1)
        put_varint(out, r)
        put_varint(out, n)
        put_varint(out, b)
        prev = sid
    return bytes(out)


def block_payload(streams: Mapping[int, Stream], records: Sequence[Record], *,
                  same_indices: bool = True) -> Payload:
    """The raw payload of one block: the directory, then one section per stream."""
    by_stream: dict[int, list[Record]] = {}
    for rec in records:
        by_stream.setdefault(rec[0], []).append(rec)
    entries, sections = [], []
    for sid in sorted(by_stream):
        section, nnz = encode_section(streams[sid], by_stream[sid], same_indices=same_indices)
        entries.append((sid, len(by_stream[sid]), nnz, len(section)))
        sections.append(section)
    sids = sorted(by_stream)
    return Payload(directory(entries) + b"".join(sections), len(records),
                   sum(e[2] for e in entries), len(entries),
                   sids[0] if sids else 0, sids[-1] if sids else 0)


def block(p: Payload, *, seq: int = 0, level: int = 3, **override: int) -> bytes:
    """A block header frame followed by the zstd frame of ``p.raw``; header fields can be
    overridden (``records``, ``raw_size``, ``compressed_size``, ``nnz``, ``streams``, ``lo``,
    ``hi``, ``compressed_crc``, ``raw_crc``) to forge a header whose own crc is right."""
    compressed = zstandard.ZstdCompressor(level=level).compress(p.raw)
    fields = {"records": p.records, "raw_size": len(p.raw), "compressed_size": len(compressed),
              "compressed_crc": zlib.crc32(compressed), "raw_crc": zlib.crc32(p.raw),
              "nnz": p.nnz, "streams": p.streams, "lo": p.lo, "hi": p.hi}
    fields.update(override)
    header = bytes([0]) + struct.pack(
        "<HIIIIIIQIII", 0, seq, fields["records"], fields["raw_size"], fields["compressed_size"],
        fields["compressed_crc"], fields["raw_crc"], fields["nnz"], fields["streams"],
        fields["lo"], fields["hi"])
    return frame(3, header) + compressed


def segment(streams: Mapping[int, Stream], blocks: Sequence[Sequence[Record]], *,
            number: int = 0, closed: bool = True, first_seq: int = 0,
            registered: Sequence[int] | None = None) -> bytes:
    """A whole segment: header, one registrations frame (of ``registered``, default every
    stream), the blocks and, when closed, the footer."""
    out = bytearray(segment_header(number))
    regs = [streams[s] for s in (streams if registered is None else registered)]
    if regs:
        out += registrations(regs, Strings())
    for k, records in enumerate(blocks):
        out += block(block_payload(streams, records), seq=first_seq + k)
    if closed:
        out += footer(len(blocks), sum(len(b) for b in blocks))
    return bytes(out)


@dataclass(frozen=True)
class Unit:
    """One unit of a format-2 segment: a skippable frame, or a block header with its zstd frame."""

    offset: int
    end: int
    kind: int
    records: int  # records of a block, 0 for other kinds


def units(data: bytes) -> list[Unit]:
    """Walk an intact format-2 segment into its units, in file order."""
    out = []
    pos = 0
    while pos < len(data):
        magic, size = struct.unpack_from("<II", data, pos)
        assert magic == SKIPPABLE_MAGIC and data[pos + 8:pos + 12] == b"DDL2", pos
        kind = data[pos + 12]
        end = pos + 8 + size
        records = 0
        if kind == 3:
            records, _raw, compressed = struct.unpack_from("<III", data, pos + 8 + 12)
            end += compressed
        out.append(Unit(pos, end, kind, records))
        pos = end
    return out
