"""A pure-Python reader of logger directories (numpy + zstandard, no native code).

This module implements ``docs/FORMAT.md`` a second time, independently of the C++ decoder, so
the two can be tested against each other record for record; it is also the fallback a user can
read by eye when a segment looks wrong. Speed is secondary: per-record work is a few numpy calls.

It never raises on torn or corrupt data (FORMAT.md section 3): intact blocks are returned and
everything skipped is listed in ``result.skipped`` as ``{"segment", "offset", "reason"}``. Only a
segment of an unknown format version raises :class:`~disco_data_logger.errors.FormatError`.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from .errors import FormatError
from .sidecars import read_sidecars

__all__ = [
    "FORMAT_VERSION",
    "DirectoryResult",
    "SegmentResult",
    "read_directory",
    "read_segment",
]

FORMAT_VERSION = 1

SKIPPABLE_MAGIC = 0x184D2A5D
ZSTD_MAGIC = 0xFD2FB528
DDL_MAGIC = b"DDL1"
KIND_SEGMENT_HEADER = 1
KIND_STREAM_REGISTRATION = 2
KIND_BLOCK_HEADER = 3
KIND_SEGMENT_FOOTER = 4

MAX_RAW_SIZE = 1 << 28
MAX_JSON_SIZE = 1 << 24

FLAG_EXACT = 1
FLAG_PERIODIC = 2

_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63
_SEGMENT_SUFFIX = ".seg.zst"
_DECOMPRESS_CHUNK = 1 << 20


class _BadData(Exception):
    """Raised inside the reader for data that fails validation; never escapes this module."""


@dataclass(frozen=True)
class _Stream:
    """What a decoder needs to know about a stream: its scales and whether values are exact."""

    epoch_scale: float
    value_scale: float | None  # None: values are stored as exact float64 bits

    @property
    def exact(self) -> bool:
        return self.value_scale is None


@dataclass
class _Columns:
    """Decoded records as columns (FORMAT.md section 5), plus what the reader knew and skipped."""

    stream_id: np.ndarray
    epoch: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    registrations: dict[int, dict[str, Any]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.stream_id.shape[0])

    def record(self, k: int) -> tuple[int, float, np.ndarray, np.ndarray]:
        """Record ``k`` as ``(stream_id, epoch, indices, values)``."""
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return (int(self.stream_id[k]), float(self.epoch[k]),
                self.indices[lo:hi], self.values[lo:hi])

    def records(self) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
        """Iterate ``(stream_id, epoch, indices, values)`` in file order (for tests and eyes)."""
        for k in range(len(self)):
            yield self.record(k)

    def to_arrow(self) -> Any:
        """The columns as a ``pyarrow.Table`` with the schema of FORMAT.md section 5.

        The list columns share the ``offsets`` array, so no per-record Python object is made.
        Skipped parts are listed as JSON in the schema metadata key ``disco.skipped``.
        """
        import pyarrow as pa

        if len(self.indices) > np.iinfo(np.int32).max:
            raise OverflowError("more than 2**31 - 1 non-zeros do not fit one Arrow list array")
        offsets = pa.array(self.offsets.astype(np.int32))
        table = pa.table({
            "stream_id": pa.array(self.stream_id, type=pa.uint32()),
            "epoch": pa.array(self.epoch, type=pa.float64()),
            "indices": pa.ListArray.from_arrays(offsets, pa.array(self.indices, type=pa.int64())),
            "values": pa.ListArray.from_arrays(offsets, pa.array(self.values, type=pa.float64())),
        })
        if self.skipped:
            table = table.replace_schema_metadata(
                {b"disco.skipped": json.dumps(self.skipped).encode()})
        return table


@dataclass
class SegmentResult(_Columns):
    """The decoded content of one segment file."""

    path: Path = Path()
    legacy: bool = False  # True for a 0.1.x segment (FORMAT.md section 6)


@dataclass
class DirectoryResult(_Columns):
    """The decoded content of a logger directory, segment by segment in order."""

    path: Path = Path()
    segments: list[Path] = field(default_factory=list)


class _Builder:
    """Collects decoded records; a block's records are committed only once all of it is valid."""

    def __init__(self, stream_ids: frozenset[int] | None) -> None:
        self.stream_ids = stream_ids
        self.sids: list[int] = []
        self.epochs: list[float] = []
        self.idx: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []

    def extend(self, records: list[tuple[int, float, np.ndarray, np.ndarray]]) -> None:
        wanted = self.stream_ids
        for sid, epoch, idx, vals in records:
            if wanted is not None and sid not in wanted:
                continue
            self.sids.append(sid)
            self.epochs.append(epoch)
            self.idx.append(idx)
            self.vals.append(vals)

    def columns(self) -> dict[str, np.ndarray]:
        lengths = np.fromiter((len(a) for a in self.idx), dtype=np.int64, count=len(self.idx))
        offsets = np.zeros(len(self.idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return {
            "stream_id": np.asarray(self.sids, dtype=np.uint32),
            "epoch": np.asarray(self.epochs, dtype=np.float64),
            "offsets": offsets,
            "indices": (np.concatenate(self.idx).astype(np.int64)
                        if self.idx else np.zeros(0, np.int64)),
            "values": (np.concatenate(self.vals).astype(np.float64)
                       if self.vals else np.zeros(0, np.float64)),
        }


# --------------------------------------------------------------------------- primitives


def _skip(path: Path, offset: int, reason: str) -> dict[str, Any]:
    return {"segment": str(path), "offset": int(offset), "reason": reason}


def _read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """One unsigned LEB128 varint at ``pos``; at most 10 bytes and no bits beyond 2**64."""
    result = 0
    shift = 0
    for i in range(10):
        if pos >= end:
            raise _BadData("varint runs past the end of the data")
        byte = buf[pos]
        pos += 1
        if i == 9 and byte > 1:
            raise _BadData("varint overflows 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise _BadData("varint longer than 10 bytes")


def _zigzag(u: int) -> int:
    """Inverse zigzag of one 64-bit value, as a Python int in the int64 range."""
    return (u >> 1) ^ -(u & 1)


def _wrap64(x: int) -> int:
    """``x`` modulo 2**64, seen as a signed int64 (the format's tick and value arithmetic)."""
    x &= _MASK64
    return x - (1 << 64) if x & _SIGN64 else x


class _Varints:
    """Vectorised varint decoding of one payload: every varint ends at a byte below 0x80."""

    def __init__(self, payload: bytes) -> None:
        self.buf = np.frombuffer(payload, dtype=np.uint8)
        self.ends = np.flatnonzero(self.buf < 0x80)

    def take(self, pos: int, count: int, end: int) -> tuple[np.ndarray, int]:
        """``count`` consecutive varints starting at ``pos`` as uint64, and the position after."""
        if count == 0:
            return np.zeros(0, np.uint64), pos
        k = int(np.searchsorted(self.ends, pos))
        if k + count > len(self.ends):
            raise _BadData("varints run past the end of the data")
        last = self.ends[k:k + count]
        stop = int(last[-1]) + 1
        if stop > end:
            raise _BadData("varints run past the end of the data")
        starts = np.empty(count, dtype=np.int64)
        starts[0] = pos
        starts[1:] = last[:-1] + 1
        lengths = last - starts + 1
        if int(lengths.max()) > 10:
            raise _BadData("varint longer than 10 bytes")
        seg = self.buf[pos:stop]
        rel = starts - pos
        within = np.arange(stop - pos, dtype=np.int64) - np.repeat(rel, lengths)
        if np.any(seg[within == 9] > 1):
            raise _BadData("varint overflows 64 bits")
        parts = (seg & 0x7F).astype(np.uint64) << (within.astype(np.uint64) * np.uint64(7))
        return np.bitwise_or.reduceat(parts, rel), stop


def _unzigzag(u: np.ndarray) -> np.ndarray:
    return ((u >> np.uint64(1)) ^ np.negative(u & np.uint64(1))).view(np.int64)


def _indices_from_gaps(first: int, gaps: np.ndarray) -> np.ndarray:
    """Absolute indices from the first index and the ``idx[i] - idx[i-1] - 1`` gaps, checked."""
    if first >= _SIGN64:
        raise _BadData("index beyond 2**63 - 1")
    if gaps.size and int(gaps.max()) >= _SIGN64:
        raise _BadData("index gap beyond 2**63 - 1")
    steps = np.empty(gaps.size + 1, dtype=np.uint64)
    steps[0] = first
    steps[1:] = gaps + np.uint64(1)
    idx = np.cumsum(steps, dtype=np.uint64)
    # every step is below 2**63, so a wrap past 2**64 shows up as a decrease
    if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
        raise _BadData("indices overflow 64 bits")
    if int(idx[-1]) >= _SIGN64:
        raise _BadData("index beyond 2**63 - 1")
    return idx.view(np.int64)


def _read_index_list(raw: bytes, pos: int, end: int,
                     varints: _Varints) -> tuple[np.ndarray, int]:
    """A count, then that many indices as first value + gaps (FORMAT.md sections 4 and 6)."""
    n, pos = _read_varint(raw, pos, end)
    if n > end - pos:  # every index takes at least one byte
        raise _BadData(f"record claims {n} non-zeros, more than the bytes left")
    if not n:
        return np.zeros(0, np.int64), pos
    first, pos = _read_varint(raw, pos, end)
    gaps, pos = varints.take(pos, n - 1, end)
    return _indices_from_gaps(first, gaps), pos


def zstd_frame_size(buf: bytes | memoryview, pos: int, end: int) -> int:
    """Length of the standard zstd frame at ``pos``, from its headers alone (RFC 8878).

    python-zstandard does not expose ``ZSTD_findFrameCompressedSize``; walking the block headers
    lets the reader check that a frame is exactly its declared size and find 0.1.x frame ends.
    """
    start = pos
    if end - pos < 6 or struct.unpack_from("<I", buf, pos)[0] != ZSTD_MAGIC:
        raise _BadData("not a zstd frame")
    fhd = buf[pos + 4]
    if fhd & 0x08:
        raise _BadData("zstd frame header has the reserved bit set")
    fcs_flag = fhd >> 6
    single_segment = (fhd >> 5) & 1
    has_checksum = (fhd >> 2) & 1
    did_size = (0, 1, 2, 4)[fhd & 3]
    fcs_size = (single_segment, 2, 4, 8)[fcs_flag]
    pos += 5 + (0 if single_segment else 1) + did_size + fcs_size
    while True:
        if pos + 3 > end:
            raise _BadData("zstd frame runs past the end of the data")
        bh = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        last = bh & 1
        btype = (bh >> 1) & 3
        bsize = bh >> 3
        if btype == 3:
            raise _BadData("zstd block of reserved type")
        pos += 3 + (1 if btype == 1 else bsize)
        if pos > end:
            raise _BadData("zstd frame runs past the end of the data")
        if last:
            break
    pos += 4 * has_checksum
    if pos > end:
        raise _BadData("zstd frame runs past the end of the data")
    return pos - start


def _decompress(frame: bytes | memoryview, limit: int) -> bytes:
    """Decompress one zstd frame, allocating at most ``limit + 1`` bytes of output."""
    reader = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(frame), read_across_frames=False, closefd=False)
    chunks = []
    total = 0
    try:
        while True:
            chunk = reader.read(min(_DECOMPRESS_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _BadData(f"zstd frame decompresses to more than {limit} bytes")
    except zstandard.ZstdError as exc:
        raise _BadData(f"zstd frame does not decompress: {exc}") from None
    return b"".join(chunks)


# --------------------------------------------------------------------------- sidecars


def _stream_from_sidecar(meta: Mapping[str, Any]) -> _Stream:
    epoch_scale = float(meta["epoch_scale"])
    raw_value_scale = meta.get("value_scale")
    value_scale = None if raw_value_scale is None else float(raw_value_scale)
    _check_scales(epoch_scale, value_scale)
    return _Stream(epoch_scale, value_scale)


def _check_scales(epoch_scale: float, value_scale: float | None) -> None:
    for name, scale in (("epoch_scale", epoch_scale), ("value_scale", value_scale)):
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise _BadData(f"{name} {scale!r} is not a positive finite number")


def load_sidecars(directory: str | Path) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """The sidecars ``streams/*.json`` of a logger directory, and those that could not be read."""
    sidecars, problems = read_sidecars(directory)
    return sidecars, [_skip(file, 0, f"unreadable stream sidecar: {why}") for file, why in problems]


def _sidecar_streams(sidecars: Mapping[int, Mapping[str, Any]]) -> dict[int, _Stream]:
    streams = {}
    for sid, meta in sidecars.items():
        try:
            streams[int(sid)] = _stream_from_sidecar(meta)
        except (_BadData, KeyError, TypeError, ValueError, OverflowError):
            continue  # reported when a record of that stream needs it
    return streams


def _segment_files(directory: Path) -> list[Path]:
    def number(p: Path) -> tuple[int, str]:
        stem = p.name[: -len(_SEGMENT_SUFFIX)]
        return (int(stem), p.name) if stem.isdigit() else (1 << 62, p.name)

    return sorted(directory.glob("*" + _SEGMENT_SUFFIX), key=number)


# --------------------------------------------------------------------------- format 1


class _SegmentV1:
    """Walks the frames of one format-1 segment (FORMAT.md sections 2 to 4)."""

    def __init__(self, path: Path, data: bytes, fallback: Mapping[int, _Stream],
                 builder: _Builder) -> None:
        self.path = path
        self.data = data
        self.view = memoryview(data)
        self.fallback = fallback
        self.builder = builder
        self.streams: dict[int, _Stream] = {}
        self.registrations: dict[int, dict[str, Any]] = {}
        self.skipped: list[dict[str, Any]] = []

    def run(self) -> None:
        end = len(self.data)
        pos = 0
        first = True
        while pos < end:
            try:
                kind, payload_end = self._frame(pos, end)
            except _BadData as exc:
                self.skipped.append(_skip(self.path, pos, f"{exc}; rest of the segment skipped"))
                return
            payload = self.view[pos + 8: payload_end]
            if first != (kind == KIND_SEGMENT_HEADER):
                reason = ("segment does not start with a segment header" if first
                          else "unexpected second segment header")
                self.skipped.append(_skip(self.path, pos, f"{reason}; rest of the segment skipped"))
                return
            first = False
            if kind == KIND_SEGMENT_HEADER:
                version = payload[5]
                if version != FORMAT_VERSION:
                    raise FormatError(
                        f"{self.path}: segment format version {version} is not supported; this "
                        f"reader knows version {FORMAT_VERSION} and 0.1.x. Upgrade "
                        "disco-data-logger to read it.")
                pos = payload_end
            elif kind == KIND_STREAM_REGISTRATION:
                self._registration(pos, payload)
                pos = payload_end
            elif kind == KIND_BLOCK_HEADER:
                pos = self._block(pos, payload, end)
                if pos < 0:
                    return
            else:  # footer: "once, last"
                pos = payload_end
                if pos < end:
                    self.skipped.append(_skip(
                        self.path, pos,
                        "data after the segment footer; rest of the segment skipped"))
                return

    def _frame(self, pos: int, end: int) -> tuple[int, int]:
        """Validate the skippable frame at ``pos``; returns its kind and where its payload ends."""
        if end - pos < 8:
            raise _BadData("torn tail: frame header cut short")
        magic, size = struct.unpack_from("<II", self.data, pos)
        if magic != SKIPPABLE_MAGIC:
            raise _BadData(f"unknown frame magic 0x{magic:08X}")
        payload_end = pos + 8 + size
        if payload_end > end:
            raise _BadData(f"torn tail: frame of {size} bytes runs past the end of the file")
        payload = self.view[pos + 8: payload_end]
        if size < 9 or payload[:4] != DDL_MAGIC:
            raise _BadData("skippable frame is not a DDL1 frame")
        kind = payload[4]
        expected = {KIND_SEGMENT_HEADER: 28, KIND_BLOCK_HEADER: 36, KIND_SEGMENT_FOOTER: 24}
        if kind in expected:
            if size != expected[kind]:
                raise _BadData(f"frame of kind {kind} has {size} bytes, expected {expected[kind]}")
        elif kind == KIND_STREAM_REGISTRATION:
            if size < 36:
                raise _BadData(f"stream registration of {size} bytes is too short")
            json_len = struct.unpack_from("<I", payload, 28)[0]
            if json_len > MAX_JSON_SIZE or size != 36 + json_len:
                raise _BadData("stream registration has an inconsistent JSON length")
        else:
            raise _BadData(f"unknown frame kind {kind}")
        (crc,) = struct.unpack_from("<I", payload, size - 4)
        if zlib.crc32(payload[: size - 4]) != crc:
            raise _BadData(f"crc mismatch in frame of kind {kind}")
        return kind, payload_end

    def _registration(self, pos: int, payload: memoryview) -> None:
        flags = payload[5]
        sid, epoch_scale, value_scale, json_len = struct.unpack_from("<IddI", payload, 8)
        try:
            meta = json.loads(bytes(payload[32: 32 + json_len]).decode("utf-8"))
            if not isinstance(meta, dict):
                raise _BadData("registration JSON is not an object")
            stream = _Stream(epoch_scale, None if flags & FLAG_EXACT else value_scale)
            _check_scales(stream.epoch_scale, stream.value_scale)
        except (ValueError, _BadData) as exc:
            self.skipped.append(_skip(self.path, pos, f"bad stream registration {sid}: {exc}"))
            return
        self.streams[sid] = stream
        self.registrations[sid] = meta

    def _block(self, pos: int, payload: memoryview, end: int) -> int:
        """Decode one block; returns the next frame position, or -1 to stop reading."""
        seq, count, raw_size, comp_size, comp_crc, raw_crc = struct.unpack_from("<6I", payload, 8)
        frame_pos = pos + 8 + 36
        frame_end = frame_pos + comp_size
        if frame_end > end:
            self.skipped.append(_skip(
                self.path, pos,
                f"torn tail: block {seq} needs {comp_size} compressed bytes, "
                f"{end - frame_pos} left; rest of the segment skipped"))
            return -1
        try:
            if raw_size > MAX_RAW_SIZE:
                raise _BadData(f"raw size {raw_size} exceeds the 2**28 bound")
            frame = self.view[frame_pos:frame_end]
            if zlib.crc32(frame) != comp_crc:
                raise _BadData("crc mismatch of the compressed data")
            if zstd_frame_size(frame, 0, comp_size) != comp_size:
                raise _BadData("zstd frame is shorter than the declared compressed size")
            raw = _decompress(frame, raw_size)
            if len(raw) != raw_size:
                raise _BadData(f"decompressed to {len(raw)} bytes, expected {raw_size}")
            if zlib.crc32(raw) != raw_crc:
                raise _BadData("crc mismatch of the decompressed payload")
            records = self._payload(raw, count)
        except _BadData as exc:
            self.skipped.append(_skip(self.path, pos, f"block {seq} skipped: {exc}"))
            return frame_end
        self.builder.extend(records)
        return frame_end

    def _stream(self, sid: int) -> _Stream:
        stream = self.streams.get(sid) or self.fallback.get(sid)
        if stream is None:
            raise _BadData(f"stream {sid} has no registration and no readable sidecar")
        return stream

    def _payload(self, raw: bytes, count: int) -> list[tuple[int, float, np.ndarray, np.ndarray]]:
        """Parse exactly ``count`` records from exactly ``len(raw)`` bytes (FORMAT.md section 4)."""
        end = len(raw)
        varints = _Varints(raw)
        # predecessor per stream: (tick, indices uint64-as-int64, quantised ints or float bits)
        preds: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        out: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        pos = 0
        for _ in range(count):
            head, pos = _read_varint(raw, pos, end)
            sid, same = head >> 1, head & 1
            if sid > 0xFFFFFFFF:
                raise _BadData(f"stream id {sid} beyond 32 bits")
            stream = self._stream(sid)
            u, pos = _read_varint(raw, pos, end)
            pred = preds.get(sid)
            tick = _wrap64(pred[0] + _zigzag(u)) if pred is not None else _zigzag(u)
            if same:
                if pred is None:
                    raise _BadData(f"same_indices on the first record of stream {sid}")
                idx = pred[1]
                n = len(idx)
            else:
                idx, pos = _read_index_list(raw, pos, end, varints)
                n = len(idx)
            if stream.exact:
                if 8 * n > end - pos:
                    raise _BadData("exact values run past the end of the payload")
                bits = np.frombuffer(raw, dtype="<u8", count=n, offset=pos).astype(np.uint64)
                pos += 8 * n
                if same:
                    bits = bits ^ pred[2].view(np.uint64)  # type: ignore[index]
                state = bits.view(np.int64)
                vals = bits.view(np.float64)
            else:
                zz, pos = varints.take(pos, n, end)
                q = _unzigzag(zz)
                if same:
                    q = q + pred[2]  # type: ignore[index]  # int64 arrays wrap modulo 2**64
                state = q
                vals = q.astype(np.float64) * float(stream.value_scale)  # type: ignore[arg-type]
            preds[sid] = (tick, idx, state)
            out.append((sid, float(tick) * stream.epoch_scale, idx, vals))
        if pos != end:
            raise _BadData(f"{end - pos} bytes left after {count} records")
        return out


# --------------------------------------------------------------------------- 0.1.x


class _LegacyTicks:
    """The 0.1.x previous tick per stream, carried across frames and segments of a directory."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.broken = False  # an earlier segment was damaged: later deltas cannot be trusted


def _read_legacy(path: Path, data: bytes, sidecars: Mapping[int, _Stream], ticks: _LegacyTicks,
                 builder: _Builder, skipped: list[dict[str, Any]]) -> None:
    """Decode a 0.1.x segment: one zstd frame per write, records of FORMAT.md section 6."""
    view = memoryview(data)
    end = len(data)
    reported: set[int] = set()
    pos = 0
    while pos < end:
        try:
            size = zstd_frame_size(view, pos, end)
            frame = view[pos:pos + size]
            declared = zstandard.frame_content_size(bytes(frame[:18]))
            if not 0 <= declared <= MAX_RAW_SIZE:
                # 0.1.x always wrote the content size (FORMAT.md section 6); a frame without one
                # is damaged, as the native reader also decides.
                raise _BadData("frame without a usable content size")
            raw = _decompress(frame, declared)
            if len(raw) != declared:
                raise _BadData("frame decompresses to a size other than declared")
            records = _legacy_records(raw, ticks)
        except (_BadData, zstandard.ZstdError) as exc:
            ticks.broken = True
            skipped.append(_skip(path, pos, f"0.1.x frame unreadable ({exc}); rest of the "
                                            "segment skipped"))
            return
        decoded = []
        for sid, tick, idx, q in records:
            stream = sidecars.get(sid)
            if stream is None or stream.exact:
                if sid not in reported:
                    reported.add(sid)
                    skipped.append(_skip(path, pos, f"0.1.x stream {sid} has no usable sidecar "
                                                    f"streams/{sid:08d}.json; its records skipped"))
                continue
            decoded.append((sid, float(tick) * stream.epoch_scale, idx,
                            q.astype(np.float64) * float(stream.value_scale)))  # type: ignore[arg-type]
        builder.extend(decoded)
        pos += size


def _legacy_records(raw: bytes,
                    ticks: _LegacyTicks) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Parse every record of one 0.1.x frame; ticks are updated only if the whole frame parses."""
    end = len(raw)
    varints = _Varints(raw)
    last = dict(ticks.last)
    out = []
    pos = 0
    while pos < end:
        sid, pos = _read_varint(raw, pos, end)
        if sid > 0xFFFFFFFF:
            raise _BadData(f"stream id {sid} beyond 32 bits")
        u, pos = _read_varint(raw, pos, end)
        prev = last.get(sid)
        tick = _zigzag(u) if prev is None else _wrap64(prev + _zigzag(u))
        last[sid] = tick
        idx, pos = _read_index_list(raw, pos, end, varints)
        zz, pos = varints.take(pos, len(idx), end)
        out.append((sid, tick, idx, _unzigzag(zz)))
    ticks.last = last
    return out


# --------------------------------------------------------------------------- public API


@dataclass
class _SegmentOutcome:
    registrations: dict[int, dict[str, Any]]
    streams: dict[int, _Stream]
    skipped: list[dict[str, Any]]
    legacy: bool


def _read_one(path: Path, fallback: Mapping[int, _Stream], builder: _Builder,
              ticks: _LegacyTicks) -> _SegmentOutcome:
    data = path.read_bytes()
    if data[:4] == struct.pack("<I", ZSTD_MAGIC):
        skipped: list[dict[str, Any]] = []
        _read_legacy(path, data, fallback, ticks, builder, skipped)
        return _SegmentOutcome({}, {}, skipped, True)
    segment = _SegmentV1(path, data, fallback, builder)
    segment.run()
    return _SegmentOutcome(segment.registrations, segment.streams, segment.skipped, False)


def read_segment(path: str | Path,
                 registrations: Mapping[int, Mapping[str, Any]] | None = None) -> SegmentResult:
    """Decode one segment file (format 1 or 0.1.x).

    ``registrations`` (stream id -> sidecar dict) describes streams that have no in-band
    registration; when it is None the sidecars beside the segment (``../streams``) are used.
    A 0.1.x segment read alone starts its tick chains from zero, as if it were the first.
    """
    path = Path(path)
    problems: list[dict[str, Any]] = []
    if registrations is None:
        sidecars, problems = load_sidecars(path.parent)
    else:
        sidecars = {int(k): dict(v) for k, v in registrations.items()}
    builder = _Builder(None)
    outcome = _read_one(path, _sidecar_streams(sidecars), builder, _LegacyTicks())
    known = dict(sidecars)
    known.update(outcome.registrations)
    return SegmentResult(**builder.columns(), registrations=known,
                         skipped=problems + outcome.skipped, path=path, legacy=outcome.legacy)


_LEGACY_HEAD = struct.pack("<I", ZSTD_MAGIC)


def _head(path: Path) -> bytes:
    """The first 4 bytes of a segment: which format it is in, if any."""
    with open(path, "rb") as fh:
        return fh.read(4)


def read_directory(path: str | Path, stream_ids: Iterable[int] | None = None) -> DirectoryResult:
    """Decode every segment of a logger directory in order (format 1, 0.1.x, finished or not).

    Streams without in-band registrations (0.1.x) take their scales from ``streams/*.json``;
    a registration seen in an earlier segment also serves later ones.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a logger directory")
    sidecars, skipped = load_sidecars(path)
    known: dict[int, dict[str, Any]] = dict(sidecars)
    fallback = _sidecar_streams(sidecars)
    builder = _Builder(None if stream_ids is None else frozenset(int(s) for s in stream_ids))
    ticks = _LegacyTicks()
    segments = _segment_files(path)
    legacy_directory = any(_head(seg) == _LEGACY_HEAD for seg in segments)
    for seg in segments:
        if ticks.broken:
            skipped.append(_skip(seg, 0, "not read: an earlier 0.1.x segment is damaged and 0.1.x "
                                         "epochs are deltas that run across segments"))
            continue
        outcome = _read_one(seg, fallback, builder, ticks)
        skipped.extend(outcome.skipped)
        known.update(outcome.registrations)
        fallback.update(outcome.streams)
        if legacy_directory and not outcome.legacy and _head(seg) != b"":
            # In a 0.1.x directory, a segment that is not 0.1.x is a damaged one: the tick deltas
            # of the segments after it start from unknown values, and would invent epochs.
            ticks.broken = True
    return DirectoryResult(**builder.columns(), registrations=known, skipped=skipped,
                           path=path, segments=segments)
