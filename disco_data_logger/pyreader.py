"""A pure-Python reader of logger directories (numpy + zstandard, no native code).

This module implements ``docs/FORMAT.md`` a second time, independently of the C++ decoder, so
the two can be tested against each other record for record; it is also the reader a user can
follow by eye when a segment looks wrong. Speed is secondary: it works section by section with
numpy, and it reads formats 2 and 1 and the 0.1.x layout.

It never raises on torn, corrupt or unsupported data (FORMAT.md section 4): intact blocks are
returned and everything skipped is listed in ``result.skipped`` as ``{"segment", "offset",
"length", "kind", "reason"}`` (plus ``"stream_id"`` for the kinds about one stream), ``kind``
being one of :data:`SKIP_KINDS`.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from .errors import SkipKind
from .layout import SEGMENT_GLOB, SEGMENT_SUFFIX
from .sidecars import read_sidecars

__all__ = [
    "FORMAT_VERSION",
    "SKIP_KINDS",
    "DirectoryResult",
    "FrameWalk",
    "SegmentResult",
    "read_directory",
    "read_segment",
    "walk_frames",
]

FORMAT_VERSION = 2
"""The format this package writes; 1 and the 0.1.x layout are read too."""

SKIPPABLE_MAGIC = 0x184D2A5D
ZSTD_MAGIC = 0xFD2FB528
DDL2 = b"DDL2"
DDL1 = b"DDL1"
VERSION_OF_MAGIC = {DDL2: 2, DDL1: 1}
KIND_SEGMENT_HEADER = 1
KIND_REGISTRATION = 2
KIND_BLOCK_HEADER = 3
KIND_SEGMENT_FOOTER = 4

# payload sizes of the fixed-size frames, per magic (FORMAT.md sections 2 and 8.1)
FIXED_SIZES = {
    DDL2: {KIND_SEGMENT_HEADER: 28, KIND_BLOCK_HEADER: 56, KIND_SEGMENT_FOOTER: 24},
    DDL1: {KIND_SEGMENT_HEADER: 28, KIND_BLOCK_HEADER: 36, KIND_SEGMENT_FOOTER: 24},
}

MAX_RAW_SIZE = 1 << 28
MAX_REGISTRATION_BODY = 1 << 26
MAX_JSON_SIZE = 1 << 24
MAX_JSON_DEPTH = 4096  # arrays and objects in a label value or registration JSON (FORMAT.md 3.3)

FLAG_EXACT = 1
FLAG_PERIODIC = 2
FLAG_ACCUMULATOR = 4

SKIP_KINDS = frozenset(kind.value for kind in SkipKind)
"""The ``kind`` of every skip report (FORMAT.md section 4), as :class:`SkipKind` defines them."""

_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63
_DECOMPRESS_CHUNK = 1 << 20
_SKIPPABLE_BYTES = struct.pack("<I", SKIPPABLE_MAGIC)
_LEGACY_HEAD = struct.pack("<I", ZSTD_MAGIC)


class _BadData(Exception):
    """Raised inside the reader for data that fails validation; never escapes this module."""


class _Truncated(_BadData):
    """Data that runs past the end of the file (a torn tail rather than damage)."""


class _NotAFrame(Exception):
    """No valid frame where one should start; ``torn`` when it is cut by the end of the file."""

    def __init__(self, reason: str, torn: bool) -> None:
        super().__init__(reason)
        self.torn = torn


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
    """Decoded records as columns (FORMAT.md section 7), plus what the reader knew and skipped."""

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
        """The columns as a ``pyarrow.Table`` with the schema of FORMAT.md section 7.

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
    legacy: bool = False  # True for a 0.1.x segment (FORMAT.md section 9)
    version: int | None = None  # 2, 1, 0 for 0.1.x; None when no format could be told


@dataclass
class DirectoryResult(_Columns):
    """The decoded content of a logger directory, segment by segment in order."""

    path: Path = Path()
    segments: list[Path] = field(default_factory=list)


class _Builder:
    """Collects decoded records as column chunks, one chunk per decoded section or block."""

    def __init__(self, stream_ids: frozenset[int] | None) -> None:
        self.stream_ids = stream_ids
        self.sids: list[np.ndarray] = []
        self.epochs: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.idx: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []

    def wants(self, sid: int) -> bool:
        return self.stream_ids is None or sid in self.stream_ids

    def wants_range(self, lo: int, hi: int) -> bool:
        """Whether a block whose stream ids lie in ``[lo, hi]`` can hold a wanted stream."""
        return self.stream_ids is None or any(lo <= s <= hi for s in self.stream_ids)

    def add(self, sids: np.ndarray, epochs: np.ndarray, lengths: np.ndarray,
            indices: np.ndarray, values: np.ndarray) -> None:
        self.sids.append(sids.astype(np.uint32))
        self.epochs.append(epochs.astype(np.float64))
        self.lengths.append(lengths.astype(np.int64))
        self.idx.append(indices.astype(np.int64))
        self.vals.append(values.astype(np.float64))

    def extend(self, records: list[tuple[int, float, np.ndarray, np.ndarray]]) -> None:
        """Records one by one (format 1 and 0.1.x), those of unwanted streams dropped."""
        records = [r for r in records if self.wants(r[0])]
        if not records:
            return
        self.add(np.array([r[0] for r in records], dtype=np.uint32),
                 np.array([r[1] for r in records], dtype=np.float64),
                 np.array([len(r[2]) for r in records], dtype=np.int64),
                 np.concatenate([r[2] for r in records]),
                 np.concatenate([r[3] for r in records]))

    def columns(self) -> dict[str, np.ndarray]:
        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        lengths = cat(self.lengths, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return {
            "stream_id": cat(self.sids, np.uint32),
            "epoch": cat(self.epochs, np.float64),
            "offsets": offsets,
            "indices": cat(self.idx, np.int64),
            "values": cat(self.vals, np.float64),
        }


# --------------------------------------------------------------------------- primitives


def _skip(path: Path, offset: int, length: int, kind: SkipKind, reason: str,
          stream_id: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"segment": str(path), "offset": int(offset), "length": int(length),
                           "kind": kind.value, "reason": reason}
    if stream_id is not None:
        out["stream_id"] = int(stream_id)
    return out


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
    if end - pos < 4:
        raise _Truncated("zstd frame runs past the end of the data")
    if struct.unpack_from("<I", buf, pos)[0] != ZSTD_MAGIC:
        raise _BadData("not a zstd frame")
    if end - pos < 6:
        raise _Truncated("zstd frame runs past the end of the data")
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
            raise _Truncated("zstd frame runs past the end of the data")
        bh = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        last = bh & 1
        btype = (bh >> 1) & 3
        bsize = bh >> 3
        if btype == 3:
            raise _BadData("zstd block of reserved type")
        pos += 3 + (1 if btype == 1 else bsize)
        if pos > end:
            raise _Truncated("zstd frame runs past the end of the data")
        if last:
            break
    pos += 4 * has_checksum
    if pos > end:
        raise _Truncated("zstd frame runs past the end of the data")
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




# --------------------------------------------------------------------------- format 2 sections


def _section(raw: bytes, varints: _Varints, pos: int, end: int, count: int, nnz: int,
             stream: _Stream) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One stream's section of a block (FORMAT.md 5.2), exactly ``raw[pos:end]``.

    Returns the records' epochs, lengths, concatenated indices and concatenated values.
    """
    u, pos = varints.take(pos, count, end)
    ticks = np.cumsum(_unzigzag(u))  # int64 arrays wrap modulo 2**64, the format's arithmetic
    c, pos = varints.take(pos, count, end)
    if c[0] == 0:
        raise _BadData("the first record has count 0 (the same indices as no record)")
    explicit = c != 0
    if np.any(c[explicit] - np.uint64(1) > np.uint64(nnz)):
        raise _BadData("a record claims more non-zeros than its section")
    # the record that set each record's index list: itself, or the last one before with c >= 1
    owner = np.maximum.accumulate(np.where(explicit, np.arange(count), 0))
    n = (np.where(explicit, c, np.uint64(1)) - np.uint64(1)).astype(np.int64)[owner]
    total = int(n.sum())
    if total != nnz:
        raise _BadData(f"record lengths sum to {total}, the directory says {nnz}")

    listed = c >= 2  # records whose indices follow in the indices column
    m = n[listed]
    gaps, pos = varints.take(pos, int(m.sum()), end)
    if gaps.size and int(gaps.max()) >= _SIGN64:
        raise _BadData("index or index gap beyond 2**63 - 1")
    # idx[0] = v0 and idx[i] = idx[i-1] + v_i + 1: per list, cumsum(v + 1) - 1. Every step is at
    # most 2**63, so the first partial sum past 2**63 - 1 is still exact and caught below.
    cs = np.cumsum(gaps + np.uint64(1), dtype=np.uint64)
    list_starts = np.cumsum(m) - m
    base = np.zeros(m.size, dtype=np.uint64)
    base[1:] = cs[list_starts[1:] - 1]
    lists = cs - np.repeat(base, m) - np.uint64(1)
    if lists.size and int(lists.max()) >= _SIGN64:
        raise _BadData("index beyond 2**63 - 1")
    source = np.zeros(count, dtype=np.int64)
    source[listed] = list_starts
    out_starts = np.cumsum(n) - n
    gather = np.repeat(source[owner] - out_starts, n) + np.arange(total, dtype=np.int64)
    indices = lists[gather].view(np.int64)

    if stream.exact:
        if 8 * total > end - pos:
            raise _BadData("exact values run past the end of the section")
        state = np.frombuffer(raw, dtype="<u8", count=total, offset=pos).astype(np.uint64)
        pos += 8 * total
    else:
        zz, pos = varints.take(pos, total, end)
        state = _unzigzag(zz).copy()
    if pos != end:
        raise _BadData(f"{end - pos} bytes left in the section after its values")
    # A record with count 0 holds differences to its predecessor (sums for quantised values,
    # XOR for exact bits): accumulate down each run of records that share one index list.
    run_starts = np.flatnonzero(explicit)
    run_ends = np.append(run_starts[1:], count)
    for r0, r1 in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        width = int(n[r0])
        if r1 - r0 < 2 or width == 0:
            continue
        lo = int(out_starts[r0])
        run = state[lo:lo + (r1 - r0) * width].reshape(r1 - r0, width)
        if stream.exact:
            np.bitwise_xor.accumulate(run, axis=0, out=run)
        else:
            np.cumsum(run, axis=0, out=run)
    epochs = ticks.astype(np.float64) * stream.epoch_scale
    if stream.exact:
        values = state.view(np.float64)
    else:
        values = state.astype(np.float64) * float(stream.value_scale)  # type: ignore[arg-type]
    return epochs, n, indices, values


_JSON_TOKEN = re.compile(r"""
    (?P<ws>[ \t\n\r]+)
  | (?P<open>[\[{]) | (?P<close>[\]}]) | (?P<colon>:) | (?P<comma>,)
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
  | (?P<scalar>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?
        |true|false|null|NaN|Infinity|-Infinity)
""", re.VERBOSE)


def _json_value(text: str) -> Any:
    """The value of a JSON text as Python's ``json.loads`` reads it (FORMAT.md 3.3), or
    ValueError. A text nested too deep for ``json.loads`` is checked without recursion and, when
    valid, given as its text. The nesting bound (MAX_JSON_DEPTH) is checked here, not left to
    ``json.loads``, whose depth follows ``sys.getrecursionlimit()``: with a raised limit it
    would accept what the format (and the native reader) refuses."""
    deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH  # may nest too deep: check it
    if deep and not _is_json(text):
        raise ValueError("not JSON text, or nested deeper than the format allows")
    try:
        return json.loads(text)
    except RecursionError:
        if deep or _is_json(text):
            return text
        raise ValueError("not JSON text") from None


def _is_json(text: str) -> bool:
    """Whether ``text`` is one JSON value (the grammar ``json.loads`` accepts), with a stack."""
    closing = {"[": "]", "{": "}"}
    stack: list[str] = []  # the open containers
    # what may come next: a value, a value or "]" (just after "["), a key or "}" (just after
    # "{"), a key, a colon, "," or a close (after a value in a container), nothing (done)
    state = "value"
    pos = 0
    while pos < len(text):
        m = _JSON_TOKEN.match(text, pos)
        if m is None:
            return False
        pos, kind, token = m.end(), m.lastgroup, m.group()
        if kind == "ws":
            continue
        if kind == "close" and (state in ("value_or_close", "key_or_close", "after")
                                and stack and token == closing[stack[-1]]):
            stack.pop()
            state = "after" if stack else "done"
        elif state in ("value", "value_or_close") and kind == "open":
            if len(stack) == MAX_JSON_DEPTH:
                return False
            stack.append(token)
            state = "value_or_close" if token == "[" else "key_or_close"
        elif state in ("value", "value_or_close") and kind in ("string", "scalar"):
            state = "after" if stack else "done"
        elif state in ("key", "key_or_close") and kind == "string":
            state = "colon"
        elif state == "colon" and kind == "colon":
            state = "value"
        elif state == "after" and kind == "comma":
            state = "key" if stack[-1] == "{" else "value"
        else:
            return False
    return state == "done"


def _registration_body(raw: bytes, entries: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Parse a registrations body (FORMAT.md 3.1): its strings and its stream entries."""
    end = len(raw)
    count, pos = _read_varint(raw, 0, end)
    if count > end - pos:
        raise _BadData(f"{count} strings in {end} bytes")
    strings = []
    for _ in range(count):
        length, pos = _read_varint(raw, pos, end)
        if length > end - pos:
            raise _BadData("a string runs past the end of the body")
        try:
            strings.append(raw[pos:pos + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise _BadData("a string is not UTF-8") from None
        pos += length
    if entries > end - pos:
        raise _BadData(f"{entries} entries in {end - pos} bytes")
    parsed = []
    for _ in range(entries):
        sid, pos = _read_varint(raw, pos, end)
        if sid > 0xFFFFFFFF:
            raise _BadData(f"stream id {sid} beyond 32 bits")
        if end - pos < 17:
            raise _BadData("an entry runs past the end of the body")
        flags = raw[pos]
        epoch_scale, value_scale = struct.unpack_from("<dd", raw, pos + 1)
        pos += 17
        periodicity = None
        if flags & FLAG_PERIODIC:
            if end - pos < 8:
                raise _BadData("an entry runs past the end of the body")
            (periodicity,) = struct.unpack_from("<d", raw, pos)
            pos += 8
        n_labels, pos = _read_varint(raw, pos, end)
        if n_labels > end - pos:
            raise _BadData("labels run past the end of the body")
        labels = []
        for _ in range(n_labels):
            name, pos = _read_varint(raw, pos, end)
            value, pos = _read_varint(raw, pos, end)
            labels.append((name, value))
        parsed.append((sid, flags, epoch_scale, value_scale, periodicity, labels))
    if pos != end:
        raise _BadData(f"{end - pos} bytes left after the last entry")
    return strings, parsed


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
    return sidecars, [_skip(file, 0, 0, SkipKind.UNREADABLE_FILE,
                            f"unreadable stream sidecar: {why}")
                      for file, why in problems]


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
        stem = p.name[: -len(SEGMENT_SUFFIX)]
        return (int(stem), p.name) if stem.isdigit() else (1 << 62, p.name)

    return sorted(directory.glob(SEGMENT_GLOB), key=number)


# --------------------------------------------------------------------------- frames


def _check_frame(data: bytes, view: memoryview, pos: int, magic: bytes) -> tuple[int, int]:
    """Validate the frame at ``pos`` as a frame of ``magic`` (FORMAT.md sections 4 and 8.2).

    Returns its kind and where its payload ends; raises :class:`_NotAFrame` otherwise.
    """
    n = len(data)
    if n - pos < 8:
        raise _NotAFrame("frame header cut short by the end of the file", torn=True)
    frame_magic, size = struct.unpack_from("<II", data, pos)
    if frame_magic != SKIPPABLE_MAGIC:
        raise _NotAFrame(f"no frame magic (0x{frame_magic:08X})", torn=False)
    end = pos + 8 + size
    if end > n:
        raise _NotAFrame(f"frame of {size} bytes runs past the end of the file", torn=True)
    if size < 9 or data[pos + 8:pos + 12] != magic:
        raise _NotAFrame(f"skippable frame is not a {magic.decode()} frame", torn=False)
    kind = data[pos + 12]
    fixed = FIXED_SIZES[magic]
    if kind in fixed:
        if size != fixed[kind]:
            raise _NotAFrame(f"frame of kind {kind} has {size} bytes, not {fixed[kind]}",
                             torn=False)
    elif kind == KIND_REGISTRATION and magic == DDL2:
        if size < 28:
            raise _NotAFrame(f"registrations frame of {size} bytes", torn=False)
        raw_size = struct.unpack_from("<I", data, pos + 8 + 16)[0]
        if not data[pos + 8 + 5] & 1 and size - 28 != raw_size:
            raise _NotAFrame("raw registrations body of the wrong size", torn=False)
    elif kind == KIND_REGISTRATION:
        json_len = struct.unpack_from("<I", data, pos + 8 + 28)[0] if size >= 36 else -1
        if size < 36 or json_len > MAX_JSON_SIZE or size != 36 + json_len:
            raise _NotAFrame("stream registration with an inconsistent JSON length", torn=False)
    else:
        raise _NotAFrame(f"unknown frame kind {kind}", torn=False)
    if zlib.crc32(view[pos + 8:end - 4]) != struct.unpack_from("<I", data, end - 4)[0]:
        raise _NotAFrame(f"crc mismatch in a frame of kind {kind}", torn=False)
    return kind, end


def _shows_ddl(data: bytes) -> bool:
    """Whether a file's first bytes show format 2 or 1: the skippable magic, then DDL2 or DDL1."""
    return data[:4] == _SKIPPABLE_BYTES and data[8:12] in VERSION_OF_MAGIC


def _intact_skippable(data: bytes, view: memoryview, pos: int) -> bool:
    """A complete skippable frame at ``pos`` whose payload ends with the crc32 of the rest."""
    if len(data) - pos < 8:
        return False
    magic, size = struct.unpack_from("<II", data, pos)
    end = pos + 8 + size
    return (magic == SKIPPABLE_MAGIC and 9 <= size and end <= len(data)
            and zlib.crc32(view[pos + 8:end - 4]) == struct.unpack_from("<I", data, end - 4)[0])


def _next_valid(data: bytes, view: memoryview, start: int,
                magics: tuple[bytes, ...]) -> tuple[int, bytes] | None:
    """The lowest offset ``>= start`` where a valid frame of one of ``magics`` starts."""
    at = data.find(_SKIPPABLE_BYTES, start)
    while at != -1:
        for magic in magics:
            try:
                _check_frame(data, view, at, magic)
            except _NotAFrame:
                continue
            return at, magic
        at = data.find(_SKIPPABLE_BYTES, at + 1)
    return None


class _Unregistered(_BadData):
    def __init__(self, sid: int) -> None:
        super().__init__(f"stream {sid} has no registration and no usable sidecar")
        self.sid = sid


class _Segment:
    """Walks the frames of one format-2 or format-1 segment (FORMAT.md sections 2 to 5, 8)."""

    def __init__(self, path: Path, data: bytes, fallback: Mapping[int, _Stream],
                 builder: _Builder, *, frames_only: bool = False) -> None:
        self.frames_only = frames_only  # walk and check crcs, decompress nothing (verify)
        self.blocks = 0  # blocks whose zstd frame is complete
        self.declared_records = 0  # records declared by those whose compressed crc matches
        self.footer = False
        self.path = path
        self.data = data
        self.view = memoryview(data)
        self.fallback = fallback  # usable sidecars
        self.builder = builder
        self.magic = DDL2
        self.version: int | None = None
        self.streams: dict[int, _Stream] = {}
        self.registrations: dict[int, dict[str, Any]] = {}
        self.strings: dict[int, str] = {}
        self.unregistered: set[int] = set()
        self.skipped: list[dict[str, Any]] = []

    def report(self, offset: int, length: int, kind: SkipKind, reason: str,
               stream_id: int | None = None) -> None:
        self.skipped.append(_skip(self.path, offset, length, kind, reason, stream_id))

    def run(self) -> None:
        data, view, n = self.data, self.view, len(self.data)
        if n == 0:
            return  # a writer killed right after creating the file
        if not self.tell_format():
            return
        pos = 0
        while pos < n:
            try:
                kind, end = _check_frame(data, view, pos, self.magic)
            except _NotAFrame as exc:
                pos = self.resynchronise(pos, exc)
                continue
            if kind == KIND_SEGMENT_HEADER:
                if pos != 0:
                    self.report(pos, end - pos, SkipKind.CORRUPT_FRAME,
                                "a segment header not at offset 0")
                pos = end
            elif kind == KIND_REGISTRATION:
                if self.frames_only:
                    pass
                elif self.magic == DDL2:
                    self.registrations_v2(pos, end)
                else:
                    self.registration_v1(pos, end)
                pos = end
            elif kind == KIND_BLOCK_HEADER:
                pos = self.block(pos, end)
            else:  # the footer: once, last
                self.footer = True
                if end < n:
                    self.report(end, n - end, SkipKind.AFTER_FOOTER,
                                f"{n - end} bytes after the segment footer")
                return

    def tell_format(self) -> bool:
        """Which format the file is in (FORMAT.md 4.1); False when it is not to be read."""
        data, view, n = self.data, self.view, len(self.data)
        if (data[8:11] == b"DDL" and data[8:12] not in VERSION_OF_MAGIC
                and _intact_skippable(data, view, 0)):
            self.report(0, n, SkipKind.UNSUPPORTED_VERSION,
                        f"{self.path}: segment of format {data[8:12]!r}, not supported; this "
                        "reader knows versions 2 and 1 and the 0.1.x layout. Upgrade "
                        "disco-data-logger to read it.")
            return False
        for magic in VERSION_OF_MAGIC:
            try:
                kind, _ = _check_frame(data, view, 0, magic)
            except _NotAFrame:
                continue
            if kind == KIND_SEGMENT_HEADER and data[13] != VERSION_OF_MAGIC[magic]:
                self.report(0, n, SkipKind.UNSUPPORTED_VERSION,
                            f"{self.path}: segment format version {data[13]} "
                            f"({magic.decode()}) is not supported; this reader knows versions 2 "
                            "and 1 and the 0.1.x layout. Upgrade disco-data-logger to read it.")
                return False
            self.magic = magic
            break
        else:  # the first frame is damaged: the first valid frame of either format decides
            first = _next_valid(data, view, 1, tuple(VERSION_OF_MAGIC))
            if first is None:
                try:
                    _check_frame(data, view, 0, DDL2)
                except _NotAFrame as exc:
                    self.report(0, n, SkipKind.TORN_TAIL if exc.torn else SkipKind.CORRUPT_FRAME,
                                f"no valid frame in the file ({exc})")
                return False
            self.magic = first[1]
        self.version = VERSION_OF_MAGIC[self.magic]
        return True

    def resynchronise(self, pos: int, exc: _NotAFrame) -> int:
        """Report the damage at ``pos``; return where the next valid frame starts (or the end)."""
        n = len(self.data)
        later = _next_valid(self.data, self.view, pos + 1, (self.magic,))
        if later is None:
            if exc.torn:
                self.report(pos, n - pos, SkipKind.TORN_TAIL, f"torn tail: {exc}")
            else:
                self.report(pos, n - pos, SkipKind.CORRUPT_FRAME, f"{exc}; no valid frame after it")
            return n
        nxt = later[0]
        self.report(pos, nxt - pos, SkipKind.CORRUPT_FRAME,
                    f"{exc}; resynchronised at the next valid frame, offset {nxt}")
        return nxt

    # ------------------------------------------------------------------ registrations

    def registrations_v2(self, pos: int, end: int) -> None:
        payload = self.view[pos + 8:end]
        flags = payload[5]
        entries, first_id, raw_size, raw_crc = struct.unpack_from("<4I", payload, 8)
        body = payload[24:len(payload) - 4]
        try:
            if raw_size > MAX_REGISTRATION_BODY:
                raise _BadData(f"raw body of {raw_size} bytes exceeds 2**26")
            if flags & 1:
                if zstd_frame_size(body, 0, len(body)) != len(body):
                    raise _BadData("the body is not exactly one zstd frame")
                raw = _decompress(body, raw_size)
                if len(raw) != raw_size:
                    raise _BadData(f"body decompresses to {len(raw)} bytes, not {raw_size}")
            else:
                raw = bytes(body)
            if zlib.crc32(raw) != raw_crc:
                raise _BadData("crc mismatch of the raw body")
            strings, parsed = _registration_body(raw, entries)
        except _BadData as exc:
            self.report(pos, end - pos, SkipKind.INVALID_REGISTRATION,
                        f"registrations frame ignored: {exc}")
            return
        for k, string in enumerate(strings):
            self.strings[first_id + k] = string
        for sid, sflags, epoch_scale, value_scale, periodicity, labels in parsed:
            exact = bool(sflags & FLAG_EXACT)
            try:
                _check_scales(epoch_scale, None if exact else value_scale)
                if sflags & FLAG_PERIODIC and not (math.isfinite(periodicity) and periodicity > 0):
                    raise _BadData(f"periodicity {periodicity!r} is not a positive finite number")
                if sflags & FLAG_ACCUMULATOR and not sflags & FLAG_PERIODIC:
                    raise _BadData("the accumulator flag without the periodic flag")
            except _BadData as exc:
                self.report(pos, 0, SkipKind.INVALID_REGISTRATION,
                            f"registration of stream {sid} ignored: {exc}", sid)
                continue
            meta: dict[str, Any] = {}
            missing = []
            for name_id, value_id in labels:
                label, text = self.strings.get(name_id), self.strings.get(value_id)
                try:
                    if label is None or text is None:
                        raise ValueError("a string never defined in this segment")
                    meta[label] = _json_value(text)
                except ValueError:
                    missing.append(f"{name_id}={value_id}")
            if missing:
                self.report(pos, 0, SkipKind.UNRESOLVED_LABEL,
                            f"stream {sid}: labels with strings never defined in this segment or "
                            f"values that are not JSON dropped (string ids {', '.join(missing)})",
                            sid)
            meta.update(stream_id=sid, epoch_scale=epoch_scale,
                        value_scale=None if exact else value_scale)
            if sflags & FLAG_PERIODIC:
                meta["periodicity"] = periodicity
                meta["kind"] = "accumulator" if sflags & FLAG_ACCUMULATOR else "state"
            self.streams[sid] = _Stream(epoch_scale, None if exact else value_scale)
            self.registrations[sid] = meta

    def registration_v1(self, pos: int, end: int) -> None:
        payload = self.view[pos + 8:end]
        flags = payload[5]
        sid, epoch_scale, value_scale, json_len = struct.unpack_from("<IddI", payload, 8)
        stream = _Stream(epoch_scale, None if flags & FLAG_EXACT else value_scale)
        try:
            _check_scales(stream.epoch_scale, stream.value_scale)
        except _BadData as exc:
            self.report(pos, end - pos, SkipKind.INVALID_REGISTRATION,
                        f"registration of stream {sid} ignored: {exc}", sid)
            return
        try:
            text = bytes(payload[32:32 + json_len]).decode("utf-8")
            meta = _json_value(text)
            if isinstance(meta, str) and text.lstrip(" \t\n\r").startswith("{"):
                # valid, but nested beyond what json.loads builds: the scales serve, no labels
                meta = {"stream_id": sid, "epoch_scale": epoch_scale,
                        "value_scale": stream.value_scale}
            if not isinstance(meta, dict):
                raise ValueError("the registration JSON is not an object")
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            self.report(pos, end - pos, SkipKind.INVALID_REGISTRATION,
                        f"registration of stream {sid} ignored: {exc}", sid)
            return
        self.streams[sid] = stream
        self.registrations[sid] = meta

    def stream(self, sid: int) -> _Stream | None:
        return self.streams.get(sid) or self.fallback.get(sid)

    # ------------------------------------------------------------------ blocks

    def block(self, pos: int, end: int) -> int:
        """Decode the block whose header frame is ``[pos, end)``; returns the next position."""
        payload = self.view[pos + 8:end]
        seq, count, raw_size, comp_size, comp_crc, raw_crc = struct.unpack_from("<6I", payload, 8)
        n = len(self.data)
        data_end = end + comp_size
        if data_end > n:
            self.report(pos, n - pos, SkipKind.TORN_TAIL,
                        f"torn tail: block {seq} needs {comp_size} compressed bytes, "
                        f"{n - end} left")
            return n
        self.blocks += 1
        if self.frames_only:
            if zlib.crc32(self.view[end:data_end]) == comp_crc:
                self.declared_records += count
            else:
                self.report(pos, data_end - pos, SkipKind.BAD_BLOCK,
                            f"block {seq}: compressed-data checksum (crc32) mismatch")
            return data_end
        if self.magic == DDL2:
            nnz, n_streams, lo, hi = struct.unpack_from("<QIII", payload, 32)
            if not self.builder.wants_range(lo, hi):
                return data_end  # none of the selected streams: skipped unchecked
        try:
            if raw_size > MAX_RAW_SIZE:
                raise _BadData(f"raw size {raw_size} exceeds the 2**28 bound")
            if self.magic == DDL2 and max(count, nnz, n_streams) > raw_size:
                raise _BadData("counts larger than the raw size")
            frame = self.view[end:data_end]
            if zlib.crc32(frame) != comp_crc:
                raise _BadData("crc mismatch of the compressed data")
            if zstd_frame_size(frame, 0, comp_size) != comp_size:
                raise _BadData("the zstd frame is not exactly the declared compressed size")
            raw = _decompress(frame, raw_size)
            if len(raw) != raw_size:
                raise _BadData(f"decompressed to {len(raw)} bytes, expected {raw_size}")
            if zlib.crc32(raw) != raw_crc:
                raise _BadData("crc mismatch of the decompressed payload")
            if self.magic == DDL2:
                self.payload_v2(pos, raw, count, nnz, n_streams, lo, hi)
            else:
                self.builder.extend(self.payload_v1(raw, count))
        except _Unregistered as exc:
            self.report(pos, data_end - pos, SkipKind.UNREGISTERED_STREAM,
                        f"block {seq} skipped: {exc}", exc.sid)
        except _BadData as exc:
            self.report(pos, data_end - pos, SkipKind.BAD_BLOCK, f"block {seq} skipped: {exc}")
        return data_end

    def payload_v2(self, pos: int, raw: bytes, count: int, nnz: int, n_streams: int, lo: int,
                   hi: int) -> None:
        """The directory and the sections of one block (FORMAT.md 5.1 and 5.3)."""
        end = len(raw)
        varints = _Varints(raw)
        d, at = _read_varint(raw, 0, end)
        if d != n_streams or d == 0:
            raise _BadData(f"directory of {d} streams, the header says {n_streams}")
        table, at = varints.take(at, 4 * d, end)
        gap, records, nonzeros, nbytes = table.reshape(d, 4).T
        if int(gap.max()) > 0xFFFFFFFF:
            raise _BadData("stream id gap beyond 32 bits")
        sids = np.cumsum(gap + np.uint64(1)) - np.uint64(1)
        if int(sids[-1]) > 0xFFFFFFFF:
            raise _BadData("stream id beyond 32 bits")
        if int(sids[0]) != lo or int(sids[-1]) != hi:
            raise _BadData(f"stream ids {int(sids[0])}..{int(sids[-1])}, the header says "
                           f"{lo}..{hi}")
        if (int(records.min()) == 0 or int(records.max()) > count or int(nonzeros.max()) > nnz
                or int(nbytes.max()) > end):
            raise _BadData("directory entry out of bounds")
        if int(records.sum()) != count or int(nonzeros.sum()) != nnz:
            raise _BadData("directory counts differ from the header's")
        if at + int(nbytes.sum()) != end:
            raise _BadData("directory and sections do not fill the payload")
        starts = at + np.cumsum(nbytes) - nbytes
        for k in range(d):
            sid = int(sids[k])
            if not self.builder.wants(sid):
                continue
            stream = self.stream(sid)
            if stream is None:
                if sid not in self.unregistered:
                    self.unregistered.add(sid)
                    self.report(pos, 0, SkipKind.UNREGISTERED_STREAM,
                                f"stream {sid} has no registration in this segment and no "
                                "usable sidecar; its records are skipped", sid)
                continue
            start = int(starts[k])
            try:
                epochs, lengths, indices, values = _section(
                    raw, varints, start, start + int(nbytes[k]), int(records[k]),
                    int(nonzeros[k]), stream)
            except _BadData as exc:
                self.report(pos, 0, SkipKind.BAD_SECTION,
                            f"section of stream {sid} skipped: {exc}", sid)
                continue
            self.builder.add(np.full(len(lengths), sid, dtype=np.uint32), epochs, lengths,
                             indices, values)

    def payload_v1(self, raw: bytes, count: int) -> list[tuple[int, float, np.ndarray, np.ndarray]]:
        """Parse exactly ``count`` records from exactly ``len(raw)`` bytes (FORMAT.md 8.3)."""
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
            stream = self.stream(sid)
            if stream is None:
                raise _Unregistered(sid)
            u, pos = _read_varint(raw, pos, end)
            pred = preds.get(sid)
            tick = _wrap64(pred[0] + _zigzag(u)) if pred is not None else _zigzag(u)
            if same:
                if pred is None:
                    raise _BadData(f"same_indices on the first record of stream {sid}")
                idx = pred[1]
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
    """Decode a 0.1.x segment: one zstd frame per write, records of FORMAT.md section 9."""
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
                # 0.1.x always wrote the content size (FORMAT.md section 9); a frame without one
                # is damaged.
                raise _BadData("frame without a usable content size")
            raw = _decompress(frame, declared)
            if len(raw) != declared:
                raise _BadData("frame decompresses to a size other than declared")
            records = _legacy_records(raw, ticks)
        except (_BadData, zstandard.ZstdError) as exc:
            ticks.broken = True
            kind = SkipKind.TORN_TAIL if isinstance(exc, _Truncated) else SkipKind.CORRUPT_FRAME
            skipped.append(_skip(path, pos, end - pos, kind,
                                 f"0.1.x frame unreadable ({exc}); rest of the segment skipped"))
            return
        decoded = []
        for sid, tick, idx, q in records:
            if not builder.wants(sid):
                continue
            stream = sidecars.get(sid)
            if stream is None or stream.exact:
                if sid not in reported:
                    reported.add(sid)
                    skipped.append(_skip(path, pos, size, SkipKind.UNREGISTERED_STREAM,
                                         f"0.1.x stream {sid} has no usable sidecar "
                                         f"streams/{sid:08d}.json; its records skipped", sid))
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
class FrameWalk:
    """What a walk over a segment's frames finds without decompressing (``verify``)."""

    version: int | None  # 2, 1, 0 for 0.1.x (not walked), None when no format could be told
    blocks: int = 0  # block headers whose zstd frame is complete
    records: int = 0  # records those blocks declare, for those whose compressed crc matches
    footer: bool = False
    skipped: list[dict[str, Any]] = field(default_factory=list)


def walk_frames(path: str | Path, data: bytes | None = None) -> FrameWalk:
    """Walk one segment's frames as a reader does (FORMAT.md 4.1), checking the frames and the
    compressed crcs of blocks but decompressing nothing; skipped parts as in ``read_segment``
    (``bad_block`` only for a compressed-crc mismatch). 0.1.x segments are not walked."""
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    if data[:4] == _LEGACY_HEAD:
        return FrameWalk(0)
    segment = _Segment(path, data, {}, _Builder(None), frames_only=True)
    segment.run()
    return FrameWalk(segment.version, segment.blocks, segment.declared_records, segment.footer,
                     segment.skipped)


@dataclass
class _SegmentOutcome:
    registrations: dict[int, dict[str, Any]]
    skipped: list[dict[str, Any]]
    version: int | None  # 2, 1, 0 for 0.1.x, None when the file could not be told


def _read_one(path: Path, fallback: Mapping[int, _Stream], builder: _Builder,
              ticks: _LegacyTicks) -> _SegmentOutcome:
    # ticks and values times a scale may overflow to infinity: IEEE arithmetic, as the format
    # says (float64), not an error
    with np.errstate(over="ignore", invalid="ignore"):
        return _read_one_file(path, fallback, builder, ticks)


def _read_one_file(path: Path, fallback: Mapping[int, _Stream], builder: _Builder,
                   ticks: _LegacyTicks) -> _SegmentOutcome:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _SegmentOutcome({}, [_skip(path, 0, _size(path), SkipKind.UNREADABLE_FILE,
                                          f"unreadable segment: {exc}")], None)
    if data[:4] == _LEGACY_HEAD:
        skipped: list[dict[str, Any]] = []
        _read_legacy(path, data, fallback, ticks, builder, skipped)
        return _SegmentOutcome({}, skipped, 0)
    segment = _Segment(path, data, fallback, builder)
    segment.run()
    return _SegmentOutcome(segment.registrations, segment.skipped, segment.version)


def read_segment(path: str | Path,
                 registrations: Mapping[int, Mapping[str, Any]] | None = None) -> SegmentResult:
    """Decode one segment file (format 2, 1 or 0.1.x).

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
                         skipped=problems + outcome.skipped, path=path,
                         legacy=outcome.version == 0, version=outcome.version)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _head(path: Path, size: int) -> bytes:
    """The first bytes of a segment: which format it is in, if any."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def read_directory(path: str | Path, stream_ids: Iterable[int] | None = None,
                   segments: Iterable[str] | None = None) -> DirectoryResult:
    """Decode every segment of a logger directory in order (formats 2 and 1, 0.1.x; finished,
    killed or still being written); ``segments``: only these segment file names.

    ``stream_ids`` selects streams: the sections of other streams are skipped unparsed, and
    blocks that hold none of them are skipped unchecked (FORMAT.md sections 2.2 and 5.3).
    Streams without in-band registrations in a segment take their scales from the sidecars
    ``streams/*.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a logger directory")
    sidecars, skipped = load_sidecars(path)
    known: dict[int, dict[str, Any]] = dict(sidecars)
    fallback = _sidecar_streams(sidecars)
    builder = _Builder(None if stream_ids is None else frozenset(int(s) for s in stream_ids))
    ticks = _LegacyTicks()
    wanted = None if segments is None else {str(name) for name in segments}
    files = [seg for seg in _segment_files(path) if wanted is None or seg.name in wanted]
    seen_legacy = False  # a 0.1.x segment came before
    for seg in files:
        head = _head(seg, 12)
        legacy = head[:4] == _LEGACY_HEAD
        if ticks.broken and (legacy or (seen_legacy and head and not _shows_ddl(head))):
            skipped.append(_skip(seg, 0, _size(seg), SkipKind.LEGACY_CHAIN_BROKEN,
                                 "not read: an earlier 0.1.x segment is damaged and 0.1.x "
                                 "epochs are deltas that run across segments"))
            continue
        seen_legacy = seen_legacy or legacy
        outcome = _read_one(seg, fallback, builder, ticks)
        skipped.extend(outcome.skipped)
        known.update(outcome.registrations)
        unreadable = any(s["kind"] == SkipKind.UNREADABLE_FILE for s in outcome.skipped)
        if outcome.version != 0 and (head != b"" or unreadable):
            # A non-empty segment that is not 0.1.x: the tick deltas of any 0.1.x segment after
            # it would start from unknown values and invent epochs (FORMAT.md section 9).
            ticks.broken = True
    return DirectoryResult(**builder.columns(), registrations=known, skipped=skipped,
                           path=path, segments=files)
