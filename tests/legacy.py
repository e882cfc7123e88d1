"""Write logger directories in the layout of disco-data-logger 0.1.x, for the migration tests.

The 0.1.x library wrote one standard zstd frame per record (with the content size in the frame
header, no checksum), kept the previous tick of each stream for the life of the logger (so tick
deltas run across segment files), numbered streams from 1 and kept the scales only in the JSON
sidecars. This helper reproduces that with the ``zstandard`` package (FORMAT.md section 6).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import zstandard

from tests.common import put_varint, round_half_away, zigzag


def encode_legacy_record(stream_id: int, tick_delta: int, indices: Sequence[int],
                         quantised: Sequence[int]) -> bytes:
    """One 0.1.x record: sid, zigzag tick delta, n, first index, gaps, zigzag values."""
    out = bytearray()
    put_varint(out, stream_id)
    put_varint(out, zigzag(tick_delta))
    put_varint(out, len(indices))
    prev = None
    for i in indices:
        put_varint(out, i if prev is None else i - prev - 1)
        prev = i
    for q in quantised:
        put_varint(out, zigzag(q))
    return bytes(out)


class LegacyLogger:
    """A stand-in for the 0.1.x ``DataLogger``: same directory layout, same bytes per record."""

    def __init__(self, path: str | Path, *, rotate_bytes: int = 256 << 20, level: int = 1) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "streams").mkdir(exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self._compressor = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                                    write_checksum=False)
        self._scales: dict[int, tuple[float, float]] = {}
        self._last_tick: dict[int, int] = {}
        self._segment = 0
        self._written = 0
        self.frames: list[tuple[str, int]] = []
        """Where each record's frame went: (segment file name, offset), for corruption tests."""
        self._file = open(self._segment_path(), "wb")  # noqa: SIM115 - closed in close()

    def _segment_path(self) -> Path:
        return self.path / f"{self._segment:05d}.seg.zst"

    def register_stream(self, labels: Mapping[str, Any], *, epoch_scale: float,
                        value_scale: float) -> int:
        sid = len(self._scales) + 1  # 0.1.x reserved stream id 0
        self._scales[sid] = (epoch_scale, value_scale)
        meta = {**labels, "stream_id": sid, "epoch_scale": epoch_scale, "value_scale": value_scale}
        (self.path / "streams" / f"{sid:08d}.json").write_text(
            json.dumps(meta, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        return sid

    def record(self, stream_id: int, epoch: float, indices: Sequence[int],
               values: Sequence[float]) -> None:
        epoch_scale, value_scale = self._scales[stream_id]
        tick = round_half_away(epoch / epoch_scale)
        prev = self._last_tick.get(stream_id)
        self._last_tick[stream_id] = tick
        q = [round_half_away(float(v) / value_scale) for v in values]
        raw = encode_legacy_record(stream_id, tick if prev is None else tick - prev,
                                   [int(i) for i in indices], q)
        frame = self._compressor.compress(raw)
        self.frames.append((self._segment_path().name, self._written))
        self._file.write(frame)
        self._written += len(frame)
        if self._written >= self.rotate_bytes:  # 0.1.x rotated after the write that crossed it
            self._file.close()
            self._segment += 1
            self._written = 0
            self._file = open(self._segment_path(), "wb")  # noqa: SIM115

    def close(self, *, done: bool = True) -> None:
        if not self._file.closed:
            self._file.close()
            if done:
                (self.path / "_DONE").touch()

    def __enter__(self) -> LegacyLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
