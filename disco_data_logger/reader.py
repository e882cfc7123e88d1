"""Reading logger directories back: native decode into columns, then zero-copy into Arrow.

Works on any logger directory: closed or still being written, killed mid-write, written by
disco-data-logger 0.2.0 (format 1) or by the 0.1.x library (one zstd frame per record, scales in
the sidecars). Torn or corrupt parts are skipped and reported (a :class:`CorruptDataWarning` and
``table.schema.metadata[b"disco.skipped"]``, each part with its :class:`SkipKind`); every intact
block is returned. The native decoder sizes its output from the block headers and writes every
record once, into the buffers that become the Arrow arrays; blocks decode in parallel.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from .errors import CorruptDataWarning, FormatError, SkipKind
from .layout import (
    EPOCH_SCALE,
    KIND,
    PERIODICITY,
    RECORD_COLUMNS,
    SEGMENT_NAME_RE,
    STREAM_ID,
    VALUE_SCALE,
)
from .sidecars import read_sidecars

__all__ = [
    "DecodedColumns",
    "SkipKind",
    "columns_to_arrow",
    "decode_columns",
    "load_sidecars",
    "read",
    "read_registrations",
]

METADATA_FIELDS = (STREAM_ID, EPOCH_SCALE, VALUE_SCALE, PERIODICITY, KIND)


@dataclass
class DecodedColumns:
    """Decoded records of a directory: record ``k`` owns ``indices[offsets[k]:offsets[k+1]]``.

    ``offsets`` are int32 when the non-zeros fit (Arrow's list layout), else int64. ``streams``
    (labels and scales per stream id) is built on first use: plain decoding never parses a label.
    """

    stream_id: np.ndarray
    epoch: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    skipped: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    registrations: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    sidecars: dict[int, dict[str, Any]] | None = field(default=None, repr=False)
    _streams: dict[int, dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def streams(self) -> dict[int, dict[str, Any]]:
        """Stream id -> metadata: in-band registrations first, sidecars for the others."""
        if self._streams is None:
            if self.sidecars is None:
                self.sidecars = load_sidecars(self.path) if self.path is not None else {}
            streams = {sid: dict(meta) for sid, meta in self.sidecars.items()}
            streams.update(_metadata(self.registrations))
            self._streams = streams
        return self._streams

    def __len__(self) -> int:
        return len(self.stream_id)


def _label_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # not JSON (only a hand-made file holds such a label): its text as it is


def stream_metadata(reg: Mapping[str, Any]) -> dict[str, Any]:
    """A stream's metadata from its in-band registration (docs/FORMAT.md section 3.1): labels in
    their stored order, then ``stream_id``, ``epoch_scale``, ``value_scale`` and, for periodic
    streams, ``periodicity`` and ``kind`` (the keys of a sidecar)."""
    sid = int(reg["stream_id"])
    if reg["labels"] is None:  # format 1: the sidecar JSON text itself
        try:
            meta = json.loads(reg["json"].decode("utf-8"))
            if isinstance(meta, dict):
                return meta
        except (UnicodeDecodeError, ValueError):
            pass
        return {STREAM_ID: sid, EPOCH_SCALE: reg["epoch_scale"], VALUE_SCALE: reg["value_scale"]}
    out: dict[str, Any] = {name: _label_value(text) for name, text in reg["labels"]}
    out[STREAM_ID] = sid
    out[EPOCH_SCALE] = reg["epoch_scale"]
    out[VALUE_SCALE] = reg["value_scale"]
    if reg["kind"] is not None:
        out[PERIODICITY] = reg["periodicity"]
        out[KIND] = reg["kind"]
    return out


def _metadata(registrations: Mapping[int, Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(sid): stream_metadata(reg) for sid, reg in registrations.items()}


def load_sidecars(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Stream id -> sidecar dict for every readable ``streams/*.json`` of a logger directory;
    unreadable ones are skipped with a :class:`CorruptDataWarning`."""
    sidecars, problems = read_sidecars(path)
    for file, why in problems:
        warnings.warn(CorruptDataWarning(f"{file}: unreadable stream sidecar ignored ({why})"),
                      stacklevel=3)
    return sidecars


def _fallback_scales(
    sidecars: Mapping[int, Mapping[str, Any]],
) -> dict[int, tuple[float, float | None]]:
    """Scales of the sidecars for streams without in-band registrations (0.1.x directories).

    Only usable scales (positive, finite) are passed on: with a damaged sidecar the stream's
    records are skipped and reported, as the pure-Python reader does, never decoded with a
    negative or infinite scale."""
    out: dict[int, tuple[float, float | None]] = {}
    for sid, meta in sidecars.items():
        try:
            es = float(meta[EPOCH_SCALE])
            raw_vs = meta.get(VALUE_SCALE)
            vs = None if raw_vs is None else float(raw_vs)
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if all(s is None or (math.isfinite(s) and s > 0) for s in (es, vs)):
            out[sid] = (es, vs)
    return out


def _is_legacy_directory(path: Path) -> bool:
    """True when any segment starts with a bare zstd frame: the 0.1.x layout (FORMAT.md 9)."""
    for segment in _core.list_segments(str(path)):
        try:
            with open(segment, "rb") as fh:
                if fh.read(4) == b"\x28\xb5\x2f\xfd":
                    return True
        except OSError:
            continue
    return False


def _warn_skipped(path: Path, skipped: list[dict[str, Any]], stacklevel: int) -> None:
    first = skipped[0]
    warnings.warn(
        CorruptDataWarning(
            f"{path}: skipped {len(skipped)} torn or corrupt part(s); every intact block was "
            f"read. First: {first['segment']} at byte {first['offset']} ({first['kind']}): "
            f"{first['reason']}"
        ),
        stacklevel=stacklevel,
    )


def _segment_names(segments: Iterable[str] | None) -> list[str] | None:
    """The segment file names to read, checked: plain names such as ``00003.seg.zst``."""
    if segments is None:
        return None
    if isinstance(segments, (str, bytes)):
        raise ValueError(f"segments must be an iterable of segment file names, not {segments!r}")
    names = sorted({str(s) for s in segments})
    bad = [n for n in names if not SEGMENT_NAME_RE.match(n)]
    if bad:
        raise ValueError(f"segments: {bad[0]!r} is not a segment file name (such as "
                         "'00000.seg.zst'; names, not paths)")
    return names


def decode_columns(
    path: str | os.PathLike[str],
    *,
    stream_ids: Iterable[int] | None = None,
    warn: bool = True,
    threads: int = 0,
    segments: Iterable[str] | None = None,
    registrations: bool = True,
) -> DecodedColumns:
    """Decode every segment of a logger directory into flat numpy columns.

    ``stream_ids`` keeps only those streams (their sections alone are decoded, and blocks without
    any of them are not even decompressed; only their registrations are returned); ``threads``
    bounds the decoding threads (0: all cores); ``segments`` names the segment files to read
    (``"00000.seg.zst"``, ...; others in the directory are ignored; None: all of them).
    ``registrations=False`` returns no in-band registrations (``streams`` then holds only what
    sidecars say): for callers that never look at the streams' labels.
    """
    p = Path(path)
    if not p.is_dir():
        raise FormatError(f"'{p}' is not a logger directory")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(
            f"threads must be a non-negative integer, 0 for all cores (got {threads!r})"
        )
    # Formats 2 and 1 carry their registrations in-band, so sidecars are read only for 0.1.x
    # directories or, after a first pass, for the streams that turned out to have none.
    sidecars = load_sidecars(p) if _is_legacy_directory(p) else None
    ids = None if stream_ids is None else sorted({int(s) for s in stream_ids})
    names = _segment_names(segments)
    raw = _core.decode_directory(str(p), _fallback_scales(sidecars or {}), ids, threads, names,
                                 registrations)
    if raw["unregistered"] and sidecars is None:
        sidecars = load_sidecars(p)
        if sidecars:
            raw = _core.decode_directory(str(p), _fallback_scales(sidecars), ids, threads, names,
                                         registrations)
    cols = DecodedColumns(
        stream_id=raw["stream_id"],
        epoch=raw["epoch"],
        offsets=raw["offsets"],
        indices=raw["indices"],
        values=raw["values"],
        skipped=[dict(s) for s in raw["skipped"]],
        segments=[dict(s) for s in raw["segments"]],
        path=p,
        registrations={int(k): dict(v) for k, v in raw["registrations"].items()},
        sidecars=sidecars,
    )
    if warn and cols.skipped:
        _warn_skipped(p, cols.skipped, stacklevel=3)
    return cols


def read_registrations(
    path: str | os.PathLike[str], *, warn: bool = True, segments: Iterable[str] | None = None
) -> dict[int, dict[str, Any]]:
    """Stream id -> metadata of every stream registered in-band in a logger directory, found
    without decompressing a single block (for selecting streams by label where sidecars are
    absent, as in a shard of the experiment service). ``segments`` reads only the named
    segment files, as in :func:`read`."""
    p = Path(path)
    if not p.is_dir():
        raise FormatError(f"'{p}' is not a logger directory")
    raw = _core.read_registrations(str(p), _segment_names(segments))
    skipped = [dict(s) for s in raw["skipped"]]
    if warn and skipped:
        _warn_skipped(p, skipped, stacklevel=3)
    return _metadata(raw["registrations"])


def _arrow(array: np.ndarray, type_: Any) -> Any:
    """A zero-copy Arrow array over a numpy array (without pyarrow's pandas shim)."""
    import pyarrow as pa

    return pa.Array.from_buffers(type_, len(array), [None, pa.py_buffer(array)])


def _empty_table() -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "stream_id": pa.array([], type=pa.uint32()),
            "epoch": pa.array([], type=pa.float64()),
            "indices": pa.array([], type=pa.list_(pa.int64())),
            "values": pa.array([], type=pa.list_(pa.float64())),
        }
    )


def columns_to_arrow(cols: DecodedColumns, *, label_columns: bool | Iterable[str] = False) -> Any:
    """Arrow table (stream_id, epoch, indices, values [, labels]) over the columns' memory: the
    decoded buffers become the Arrow buffers as they are, list offsets included."""
    import pyarrow as pa

    if len(cols):
        if cols.offsets.dtype == np.int32:
            offsets = _arrow(cols.offsets, pa.int32())
            list_type = pa.ListArray
        else:
            offsets = _arrow(cols.offsets, pa.int64())
            list_type = pa.LargeListArray
        arrays = [
            _arrow(cols.stream_id, pa.uint32()),
            _arrow(cols.epoch, pa.float64()),
            list_type.from_arrays(offsets, _arrow(cols.indices, pa.int64())),
            list_type.from_arrays(offsets, _arrow(cols.values, pa.float64())),
        ]
        batch = pa.RecordBatch.from_arrays(arrays, names=list(RECORD_COLUMNS))
        table = pa.Table.from_batches([batch])
    else:
        table = _empty_table()
    if label_columns:
        for key, arr in _label_arrays(cols, label_columns).items():
            table = table.append_column(key, arr)
    if cols.skipped:
        table = table.replace_schema_metadata({b"disco.skipped": json.dumps(cols.skipped).encode()})
    return table


def _label_arrays(cols: DecodedColumns, which: bool | Iterable[str]) -> dict[str, Any]:
    """Label columns of the records: one value per distinct stream, typed by the project's one
    rule (:func:`disco_data_logger.labels.label_array`), then spread over the records by an Arrow
    ``take`` (no Python work per record)."""
    import pyarrow as pa

    from .labels import label_array

    uniq, inverse = np.unique(cols.stream_id, return_inverse=True)
    metas = [cols.streams.get(int(s), {}) for s in uniq]
    if which is True:
        keys: dict[str, None] = {}
        for m in metas:
            for k in m:
                if k not in METADATA_FIELDS:
                    keys.setdefault(k)
        names = list(keys)
    else:
        names = [k for k in which if k not in RECORD_COLUMNS]  # type: ignore[union-attr]
    take = pa.array(inverse.astype(np.int64, copy=False))
    return {key: label_array([m.get(key) for m in metas]).take(take) for key in names}


def read(
    path: str | os.PathLike[str],
    rule: Any = None,
    *,
    stream_ids: Iterable[int] | None = None,
    label_columns: bool | Iterable[str] = False,
    threads: int = 0,
    segments: Iterable[str] | None = None,
) -> Any:
    """Read a logger directory into a ``pyarrow.Table``.

    ``rule`` selects streams by their labels (a mapping, a selector string such as
    ``"measure=stock,entity in (a,b)"``, or a callable on the labels dict); ``stream_ids``
    selects by id. Only the selected streams are decoded. ``label_columns=True`` adds one column
    per label (or give the names). ``segments`` reads only the named segment files of the
    directory (for example the ones a shard's journal lists), ignoring any other: their data
    and, for a ``rule``, their registrations.
    """
    p = Path(path)
    ids: set[int] | None = None if stream_ids is None else {int(s) for s in stream_ids}
    if rule is not None:
        from .selector import compile_rule

        match = compile_rule(rule)
        streams = load_sidecars(p)
        if not streams:  # no sidecars (a service shard, or lost): the in-band registrations
            streams = read_registrations(p, warn=False, segments=segments)
        chosen = {sid for sid, meta in streams.items() if match(meta)}
        ids = chosen if ids is None else ids & chosen
    # Without label columns the table needs no stream metadata: none is built (a one-stream
    # query of a shard with a million streams would otherwise build 100,000 label dicts).
    cols = decode_columns(p, stream_ids=ids, threads=threads, segments=segments,
                          registrations=bool(label_columns))
    return columns_to_arrow(cols, label_columns=label_columns)
