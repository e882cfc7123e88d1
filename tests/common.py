"""Helpers shared by the tests: decoding with either reader, comparing records, walking frames."""

from __future__ import annotations

import json
import math
import signal
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

from disco_data_logger import pyreader
from disco_data_logger.errors import CorruptDataWarning


def round_half_away(x: float) -> int:
    """``llround``: nearest integer, halves away from zero (exact: no float rounding of x + 0.5)."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:  # x - trunc(x) is exact for every double
        t += 1 if x > 0 else -1
    return int(t)


def put_varint(out: bytearray, v: int) -> None:
    """Append ``v`` (taken modulo 2**64) as an unsigned LEB128 varint."""
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def zigzag(v: int) -> int:
    """ZigZag of a signed 64-bit integer, as in FORMAT.md."""
    return ((v << 1) ^ (v >> 63)) & ((1 << 64) - 1)


def quantise(x: float, scale: float) -> float:
    """What a quantised stream must give back for ``x``: ``round_half_away(x / scale) * scale``."""
    return float(round_half_away(x / scale)) * scale


def float_to_text(x: float) -> str:
    """Exact, short text of a float64 for JSON: ``repr`` (which round-trips), NaN with its bits."""
    x = float(x)
    if math.isnan(x):
        return f"nan(0x{struct.unpack('<Q', struct.pack('<d', x))[0]:016x})"
    return repr(x)


def text_to_float(text: str) -> float:
    """Inverse of :func:`float_to_text`, bit for bit."""
    if text.startswith("nan("):
        return struct.unpack("<d", struct.pack("<Q", int(text[4:-1], 16)))[0]
    return float(text)


@dataclass
class Decoded:
    """Decoded columns of a directory, whichever reader produced them."""

    stream_id: np.ndarray
    epoch: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    skipped: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.stream_id)

    def records(self) -> list[tuple[int, float, np.ndarray, np.ndarray]]:
        out = []
        for k in range(len(self)):
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            out.append((int(self.stream_id[k]), float(self.epoch[k]),
                        self.indices[lo:hi], self.values[lo:hi]))
        return out

    def skipped_at(self) -> list[tuple[str, int]]:
        """Where things were skipped, as (file name, offset): reasons are worded per reader."""
        return sorted((Path(s["segment"]).name, int(s["offset"])) for s in self.skipped)


def decoded_from_table(table: Any, skipped: list[dict[str, Any]]) -> Decoded:
    """Columns of a FORMAT.md section 5 Arrow table as numpy arrays (one chunk)."""
    table = table.combine_chunks()

    def lists(name: str) -> tuple[np.ndarray, np.ndarray]:
        column = table.column(name)
        arr = column.chunk(0) if column.num_chunks else None
        if arr is None:
            return np.zeros(1, np.int64), np.zeros(0)
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        flat = np.asarray(arr.values)[offsets[0]:offsets[-1]]
        return offsets - offsets[0], flat

    offsets, indices = lists("indices")
    value_offsets, values = lists("values")
    assert np.array_equal(offsets, value_offsets), "indices and values disagree on list lengths"
    return Decoded(
        stream_id=np.asarray(table.column("stream_id"), dtype=np.uint32),
        epoch=np.asarray(table.column("epoch"), dtype=np.float64),
        offsets=offsets,
        indices=indices.astype(np.int64),
        values=values.astype(np.float64),
        skipped=skipped,
    )


def decode_python(path: str | Path) -> Decoded:
    """The pure-Python reader on a logger directory."""
    r = pyreader.read_directory(path)
    return Decoded(r.stream_id, r.epoch, r.offsets, r.indices, r.values, r.skipped)


def decode_native(path: str | Path) -> Decoded:
    """``disco_data_logger.read`` on a logger directory; it must warn exactly when it skipped."""
    from disco_data_logger import read

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read(path)
    metadata = table.schema.metadata or {}
    skipped = json.loads(metadata[b"disco.skipped"]) if b"disco.skipped" in metadata else []
    corrupt = [w for w in caught if issubclass(w.category, CorruptDataWarning)]
    others = [w for w in caught if not issubclass(w.category, CorruptDataWarning)]
    assert not others, [str(w.message) for w in others]
    assert bool(corrupt) == bool(skipped), (
        f"CorruptDataWarning {'without' if corrupt else 'missing for'} skipped parts: {skipped}")
    return decoded_from_table(table, skipped)


both_readers = pytest.mark.parametrize("decode", [decode_python, decode_native],
                                       ids=["python", "native"])
"""Runs a test once with each reader: the two implementations of FORMAT.md face the same checks."""


def assert_same_records(a: Decoded, b: Decoded) -> None:
    """Record for record and bit for bit (``-0.0`` and NaN payloads included)."""
    assert len(a) == len(b), f"{len(a)} records vs {len(b)}"
    np.testing.assert_array_equal(a.stream_id, b.stream_id)
    np.testing.assert_array_equal(a.epoch.view(np.uint64), b.epoch.view(np.uint64))
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values.view(np.uint64), b.values.view(np.uint64))


def by_stream(records: list[tuple[Any, ...]]) -> dict[int, list[tuple[Any, ...]]]:
    """Records grouped by stream id, each stream's in their order.

    A reader returns the records of one stream in the order they were recorded, but records of
    different streams within a format-2 block come stream by stream (FORMAT.md section 7): tests
    that record several streams compare stream by stream.
    """
    out: dict[int, list[tuple[Any, ...]]] = {}
    for rec in records:
        out.setdefault(int(rec[0]), []).append(rec)
    return out


def select_records(d: Decoded, keep: np.ndarray) -> Decoded:
    """The records ``keep`` (a boolean mask or index array) of ``d``, as columns again."""
    rows = np.arange(len(d))[keep]
    lengths = np.diff(d.offsets)[rows]
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    take = (np.concatenate([np.arange(d.offsets[r], d.offsets[r + 1]) for r in rows])
            if len(rows) else np.zeros(0, np.int64)).astype(np.int64)
    return Decoded(d.stream_id[rows], d.epoch[rows], offsets, d.indices[take], d.values[take], [])


@dataclass(frozen=True)
class FrameUnit:
    """One unit of a format-1 segment: a skippable frame, or a block header with its zstd frame."""

    offset: int
    end: int
    kind: int
    records: int  # records of a block, 0 for other kinds


def frame_units(data: bytes) -> list[FrameUnit]:
    """Walk an intact format-1 segment (FORMAT.md section 2) into its units, in file order."""
    units = []
    pos = 0
    while pos < len(data):
        magic, size = struct.unpack_from("<II", data, pos)
        assert magic == 0x184D2A5D, f"not a skippable frame at {pos}"
        kind = data[pos + 12]
        end = pos + 8 + size
        records = 0
        if kind == 3:
            records, _raw, compressed = struct.unpack_from("<III", data, pos + 8 + 12)
            end += compressed
        units.append(FrameUnit(pos, end, kind, records))
        pos = end
    return units


@contextmanager
def sigint_at(function: Callable[..., Any], line_text: str, times: int = 1,
              skip: int = 0) -> Iterator[list[int]]:
    """Raise a real SIGINT in this process (``signal.raise_signal``, Python's default handler
    installed) when ``function`` reaches its first line containing ``line_text``: ``times`` times,
    after letting the first ``skip`` passes go by. Yields the list of deliveries made so far.
    Python runs the handler at the next bytecode, so the KeyboardInterrupt lands right there."""
    code = function.__code__
    lines = [n for n, text in enumerate(Path(code.co_filename).read_text().splitlines(), 1)
             if line_text in text and code.co_firstlineno <= n]
    assert lines, f"{line_text!r} not found in {function.__qualname__}"
    target = lines[0]
    delivered: list[int] = []
    passes = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == target:
            passes[0] += 1
            if passes[0] > skip and len(delivered) < times:
                delivered.append(target)
                signal.raise_signal(signal.SIGINT)
        return local

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.settrace(trace)
    try:
        yield delivered
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGINT, previous)
