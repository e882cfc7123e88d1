"""DataLogger: record sparse vectors into compressed, crash-safe segment files.

The heavy lifting is native (``_core.LoggerCore``): records are validated and encoded on the
calling thread with the GIL released, grouped into blocks, and compressed and written by one
background thread per logger. This module owns what is naturally Python: labels, the JSON
sidecars, argument checking with friendly messages, and reading back through ``reader``.
"""

from __future__ import annotations

import atexit
import errno
import json
import math
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import _core, _defaults
from .errors import (
    InvalidSettingError,
    InvalidStreamError,
    LoggerClosedError,
    LoggerForkedError,
    UnknownStreamError,
    WriterError,
)
from .layout import DONE_MARKER, SEGMENT_GLOB, STREAMS_DIR, sidecar_name
from .periodic import PeriodicStream

RESERVED_LABELS = frozenset({"stream_id", "epoch_scale", "value_scale", "periodicity", "kind"})
"""Sidecar fields the package writes itself; a user label with one of these names is refused."""

_open_loggers: weakref.WeakSet[DataLogger] = weakref.WeakSet()


@atexit.register
def _close_open_loggers() -> None:
    # Interpreter exit: drain and close what the user left open so no record is lost. A forked
    # child skips its parent's loggers: their writer threads and locks exist only in the parent.
    pid = os.getpid()
    for logger in list(_open_loggers):
        if logger._pid != pid:
            continue
        try:
            logger.close()
        except Exception:  # noqa: BLE001 - nothing sensible to do at exit; _DONE stays absent
            pass


def _check_scale(labels_desc: str, name: str, value: Any, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidStreamError(
            f"stream ({labels_desc}): {name} must be a positive number"
            f"{' or None' if allow_none else ''} (got {value!r})"
        )
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InvalidStreamError(
            f"stream ({labels_desc}): {name} must be a positive finite number (got {value!r})"
        )
    return v


def _describe(labels: Mapping[str, Any], limit: int = 160) -> str:
    text = ", ".join(f"{k}={v}" for k, v in labels.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    os.replace(tmp, path)


class DataLogger:
    """Records sparse vectors ``(indices, values)`` over simulated time into labelled streams.

    One logger writes one directory: ``NNNNN.seg.zst`` segments, ``streams/<id>.json`` sidecars
    and, after a successful :meth:`close`, an empty ``_DONE`` marker. Safe to use from several
    threads. Everything recorded is on disk (in the OS) within ``flush_interval`` seconds, so a
    killed process loses at most that window.

    The settings are checked by :func:`disco_data_logger._defaults.check_logger_settings`
    (:class:`InvalidSettingError` names the one refused); ``block_bytes=None`` means 4 MiB, or a
    quarter of ``ring_bytes`` when that is smaller. A logger belongs to the process that created
    it: used in a child after ``os.fork()``, every call raises :class:`LoggerForkedError`.
    """

    def __init__(
        self,
        segments_dir: str | os.PathLike[str],
        *,
        ring_bytes: int = _defaults.RING_BYTES,
        rotate_bytes: int = _defaults.ROTATE_BYTES,
        zstd_level: int = _defaults.ZSTD_LEVEL,
        flush_interval: float = _defaults.FLUSH_INTERVAL,
        block_bytes: int | None = None,
        sidecars: bool = True,
    ) -> None:
        if block_bytes is None and _defaults._is_int(ring_bytes):
            block_bytes = _defaults.default_block_bytes(ring_bytes)
        settings = _defaults.check_logger_settings(
            ring_bytes=ring_bytes,
            block_bytes=block_bytes,
            rotate_bytes=rotate_bytes,
            zstd_level=zstd_level,
            flush_interval=flush_interval,
        )

        self._path = Path(segments_dir)
        self._path.mkdir(parents=True, exist_ok=True)
        if (self._path / DONE_MARKER).exists() or any(self._path.glob(SEGMENT_GLOB)):
            raise WriterError(
                errno.EEXIST,
                f"'{self._path}' already holds a logger's segments; record into a new directory "
                "(or remove the old segments first)",
            )
        # Sidecars are the 0.1.x layout users read; a shard of the experiment service turns them
        # off (its journal and the in-band registrations hold the same metadata, and a shard
        # registers far too many streams for a file each).
        self._sidecars = bool(sidecars)
        if self._sidecars:
            (self._path / STREAMS_DIR).mkdir(exist_ok=True)
        self._core = _core.LoggerCore(
            str(self._path),
            settings["ring_bytes"],
            settings["block_bytes"],
            settings["rotate_bytes"],
            settings["zstd_level"],
            settings["flush_interval"],
        )
        self._pid = os.getpid()  # the process whose writer thread this logger has
        self._streams: dict[int, dict[str, Any]] = {}
        self._next_sid = 0  # ids are never reused, even after retire_streams
        # The hot path goes straight to the native method: one Python frame less per record.
        self.record = self._core.record  # type: ignore[method-assign]
        self._register_lock = threading.Lock()  # ids, sidecars and the native table stay in step
        _open_loggers.add(self)

    # -- registration -------------------------------------------------------------------------

    def register_stream(
        self,
        labels: Mapping[str, Any],
        *,
        epoch_scale: float = _defaults.EPOCH_SCALE,
        value_scale: float | None,
    ) -> int:
        """Register a labelled stream and return its id for :meth:`record`.

        ``epoch_scale`` is the time quantum (``tick = round(epoch / epoch_scale)``);
        ``value_scale`` the value quantum, or ``None`` to store float64 values exactly.
        """
        return self._register(labels, epoch_scale, value_scale, None)

    def _register(
        self,
        labels: Mapping[str, Any],
        epoch_scale: float,
        value_scale: float | None,
        periodic: tuple[float, str] | None,
    ) -> int:
        if not isinstance(labels, Mapping):
            raise InvalidStreamError(
                f"labels must be a mapping of str to value (got {type(labels).__name__})"
            )
        desc = _describe(labels)
        for key in labels:
            if not isinstance(key, str):
                raise InvalidStreamError(
                    f"stream ({desc}): label names must be strings (got {key!r})"
                )
            if key in RESERVED_LABELS:
                raise InvalidStreamError(
                    f"stream ({desc}): label '{key}' is reserved for the stream's metadata; "
                    "rename it"
                )
        es = _check_scale(desc, "epoch_scale", epoch_scale, allow_none=False)
        assert es is not None
        vs = _check_scale(desc, "value_scale", value_scale, allow_none=True)
        # The core stores each label as its name and its value's JSON text (FORMAT.md 3.1).
        names = list(labels)
        try:
            texts = [_json_text(labels[k]) for k in names]
        except (TypeError, ValueError) as exc:
            raise InvalidStreamError(
                f"stream ({desc}): labels must be JSON-serialisable: {exc}"
            ) from None
        size = sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) + 4
                   for k, v in zip(names, texts, strict=True))
        if size > _defaults.MAX_LABELS_JSON:
            raise InvalidStreamError(
                f"stream ({desc}): labels take {size:,} bytes as JSON; the format allows "
                f"{_defaults.MAX_LABELS_JSON >> 20} MiB: keep large metadata in a file of "
                "your own and put its path in a label"
            )
        meta: dict[str, Any] = {**labels, "stream_id": None, "epoch_scale": es, "value_scale": vs}
        if periodic is not None:
            meta["periodicity"], meta["kind"] = periodic
        with self._register_lock:
            sid = self._next_sid
            meta["stream_id"] = sid
            period, kind = periodic if periodic is not None else (None, None)
            got = self._core.register_stream(desc, es, vs, period, kind, names, texts)
            if got != sid:
                raise RuntimeError(f"internal error: native stream id {got}, expected {sid}")
            if self._sidecars:
                _write_json_atomic(self._path / STREAMS_DIR / sidecar_name(sid), meta)
            self._streams[sid] = meta
            self._next_sid = sid + 1
        return sid

    def register_periodic_stream(
        self,
        labels: Mapping[str, Any],
        *,
        epoch_scale: float = _defaults.EPOCH_SCALE,
        value_scale: float | None,
        periodicity: float = 1.0,
        kind: Literal["state", "accumulator"] = "state",
    ) -> PeriodicStream:
        """Register a stream that logs one record per period (see :class:`PeriodicStream`)."""
        desc = _describe(labels) if isinstance(labels, Mapping) else repr(labels)
        if kind not in ("state", "accumulator"):
            raise InvalidStreamError(
                f"stream ({desc}): kind must be 'state' or 'accumulator' (got {kind!r})"
            )
        p = _check_scale(desc, "periodicity", periodicity, allow_none=False)
        assert p is not None
        es = _check_scale(desc, "epoch_scale", epoch_scale, allow_none=False)
        assert es is not None
        if round(p / es) < 1:
            raise InvalidStreamError(
                f"stream ({desc}): periodicity {p} is shorter than one epoch_scale tick ({es})"
            )
        sid = self._register(labels, es, value_scale, (p, kind))
        return PeriodicStream(self, sid, periodicity=p, kind=kind)

    # -- recording ----------------------------------------------------------------------------

    def record(self, stream_id: int, epoch: float, indices: Any, values: Any) -> None:
        """Record one sparse vector. Indices are sorted for you; the arrays are copied."""
        self._core.record(stream_id, epoch, indices, values)

    def record_vector(self, stream_id: int, epoch: float, vector: Any) -> None:
        """Record a :class:`sparse_array.Vector`."""
        indices, values = _vector_parts(vector)
        self._core.record(stream_id, epoch, indices, values)

    def record_many(
        self,
        stream_ids: int | Sequence[int] | np.ndarray,
        epochs: Any,
        offsets: Any,
        indices: Any,
        values: Any,
    ) -> None:
        """Record many vectors in one call (CSR layout).

        Record ``k`` is ``indices[offsets[k]:offsets[k+1]]`` / ``values[...]`` at ``epochs[k]``
        in ``stream_ids[k]`` (or in ``stream_ids`` for all, when it is one int). The whole batch
        is validated first: on an error nothing of it is recorded.
        """
        self._core.record_many(stream_ids, epochs, offsets, indices, values)

    # -- lifecycle ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand everything recorded so far to the operating system (survives ``kill -9``)."""
        self._core.flush()

    def close(self) -> None:
        """Drain, write the segment footer, fsync, write ``_DONE``. Idempotent.

        Periodic streams are not closed for you: call ``PeriodicStream.close(final_epoch)``
        first, since only you know the final epoch.
        """
        try:
            self._core.close()
        finally:
            _open_loggers.discard(self)

    @property
    def closed(self) -> bool:
        return bool(self._core.closed)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def streams(self) -> dict[int, dict[str, Any]]:
        """Stream id -> sidecar metadata (labels, ``stream_id``, scales, periodic settings)."""
        return {sid: dict(meta) for sid, meta in self._streams.items()}

    def stats(self) -> dict[str, Any]:
        """Counters: records, nonzeros, raw and compressed bytes, blocks, segments, stalls, ..."""
        return dict(self._core.stats())

    def stream_info(self, stream_id: int) -> dict[str, Any]:
        """The sidecar metadata of one stream (labels, ``stream_id``, scales, periodic settings)."""
        try:
            return dict(self._streams[stream_id])
        except KeyError:
            raise UnknownStreamError(f"unknown stream id {stream_id}") from None

    def retire_streams(self, stream_ids: Iterable[int]) -> None:
        """Forget streams that will never be recorded again, so memory does not grow with them.

        The experiment service retires a replication's streams once it is committed: a shard's
        logger registers thousands of streams over its life. What was recorded stays in the
        segments; ``streams``, ``stream_info`` and ``stream_stats`` no longer list a retired
        stream, and recording into it raises :class:`UnknownStreamError`.
        """
        ids = [int(sid) for sid in stream_ids]
        with self._register_lock:
            self._core.retire_streams(ids)
            for sid in ids:
                self._streams.pop(sid, None)

    def stream_stats(
        self, stream_ids: Iterable[int] | None = None
    ) -> dict[int, tuple[int, float, float]]:
        """Stream id -> (records, min epoch, max epoch) recorded so far, for all streams or only
        ``stream_ids`` (cost proportional to the streams asked for)."""
        counters = self._core.stream_counters(
            None if stream_ids is None else [int(s) for s in stream_ids]
        )
        return {int(sid): (int(n), float(lo), float(hi)) for sid, n, lo, hi in counters}

    def __enter__(self) -> DataLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"DataLogger('{self._path}', streams={len(self._streams)}, {state})"

    # -- reading back -------------------------------------------------------------------------

    def _sync_for_reading(self) -> None:
        if not self.closed:
            self.flush()

    def decode_all_segments(self) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
        """Yield ``(stream_id, epoch, indices, values)`` for every record, in file order."""
        from .reader import decode_columns

        self._sync_for_reading()
        cols = decode_columns(self._path)
        offsets = cols.offsets
        for k in range(len(cols)):
            a, b = offsets[k], offsets[k + 1]
            yield (
                int(cols.stream_id[k]),
                float(cols.epoch[k]),
                cols.indices[a:b].copy(),
                cols.values[a:b].copy(),
            )

    def to_arrow(self) -> Any:
        """All records as a ``pyarrow.Table`` (stream_id, epoch, indices, values)."""
        from .reader import read

        self._sync_for_reading()
        return read(self._path)

    def to_parquet(self, out_path: str | os.PathLike[str]) -> None:
        """Write all records to one Parquet file (zstd-compressed)."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), str(out_path), compression="zstd")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _vector_parts(vector: Any) -> tuple[np.ndarray, np.ndarray]:
    from sparse_array import Vector

    if not isinstance(vector, Vector):
        raise TypeError(f"expected a sparse_array.Vector (got {type(vector).__name__})")
    return vector.indices, vector.values


__all__ = ["DataLogger", "InvalidSettingError", "LoggerClosedError", "LoggerForkedError"]
