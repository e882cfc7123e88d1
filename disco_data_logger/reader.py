"""Reading logger directories back: native decode into columns, then zero-copy into Arrow.

Works on any logger directory: closed or still being written, killed mid-write, or written by the
0.1.x library (one zstd frame per record, scales in the sidecars). Torn or corrupt parts are
skipped and reported (a :class:`CorruptDataWarning` and
``table.schema.metadata[b"disco.skipped"]``); every intact block is returned.
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
from .errors import CorruptDataWarning, FormatError
from .sidecars import read_sidecars

METADATA_FIELDS = ("stream_id", "epoch_scale", "value_scale", "periodicity", "kind")


@dataclass
class ColumnPart:
    """Decoded records of one segment: record ``k`` owns ``indices[offsets[k]:offsets[k+1]]``."""

    stream_id: np.ndarray
    epoch: np.ndarray
    offsets: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.stream_id)


@dataclass
class DecodedColumns:
    """Decoded records of a directory, kept as per-segment parts (no concatenation needed for
    Arrow); the flat properties concatenate on first use. ``streams`` (labels and scales per
    stream id) is built on first use too: plain decoding never parses a JSON text."""

    parts: list[ColumnPart]
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
            for sid, reg in self.registrations.items():
                try:
                    streams[int(sid)] = json.loads(reg["json"].decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    streams.setdefault(int(sid), {"stream_id": int(sid),
                                                  "epoch_scale": reg["epoch_scale"],
                                                  "value_scale": reg["value_scale"]})
            self._streams = streams
        return self._streams

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def _flat(self, name: str, dtype: Any) -> np.ndarray:
        arrays = [getattr(p, name) for p in self.parts]
        return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)

    @property
    def stream_id(self) -> np.ndarray:
        return self._flat("stream_id", np.uint32)

    @property
    def epoch(self) -> np.ndarray:
        return self._flat("epoch", np.float64)

    @property
    def indices(self) -> np.ndarray:
        return self._flat("indices", np.int64)

    @property
    def values(self) -> np.ndarray:
        return self._flat("values", np.float64)

    @property
    def offsets(self) -> np.ndarray:
        out = [np.zeros(1, dtype=np.int64)]
        base = 0
        for p in self.parts:
            out.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        return np.concatenate(out)


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
            es = float(meta["epoch_scale"])
            raw_vs = meta.get("value_scale")
            vs = None if raw_vs is None else float(raw_vs)
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if all(s is None or (math.isfinite(s) and s > 0) for s in (es, vs)):
            out[sid] = (es, vs)
    return out


def _is_legacy_directory(path: Path) -> bool:
    """True when the first non-empty segment starts with a bare zstd frame (the 0.1.x layout)."""
    for segment in _core.list_segments(str(path)):
        with open(segment, "rb") as fh:
            head = fh.read(4)
        if head:
            return head == b"\x28\xb5\x2f\xfd"
    return False


def decode_columns(
    path: str | os.PathLike[str],
    *,
    stream_ids: Iterable[int] | None = None,
    warn: bool = True,
) -> DecodedColumns:
    """Decode every segment of a logger directory (in parallel) into flat numpy columns."""
    p = Path(path)
    if not p.is_dir():
        raise FormatError(f"'{p}' is not a logger directory")
    # Format 1 carries its registrations in-band, so sidecars are read only for 0.1.x directories
    # or, after a first pass, for the streams that turned out to have no registration.
    sidecars = load_sidecars(p) if _is_legacy_directory(p) else None
    ids = None if stream_ids is None else sorted({int(s) for s in stream_ids})
    raw = _core.decode_directory(str(p), _fallback_scales(sidecars or {}), ids)
    if raw["unregistered"] and sidecars is None:
        # A block stops at its first unregistered stream, so the list may be incomplete: take
        # every sidecar for the second pass (rare: written by hand, or registrations damaged).
        sidecars = load_sidecars(p)
        if sidecars:
            raw = _core.decode_directory(str(p), _fallback_scales(sidecars), ids)
    cols = DecodedColumns(
        parts=[ColumnPart(**part) for part in raw["parts"]],
        skipped=list(raw["skipped"]),
        segments=list(raw["segments"]),
        path=p,
        registrations={int(k): v for k, v in raw["registrations"].items()},
        sidecars=sidecars,
    )
    if warn and cols.skipped:
        first = cols.skipped[0]
        warnings.warn(
            CorruptDataWarning(
                f"{p}: skipped {len(cols.skipped)} torn or corrupt part(s); every intact block was "
                f"read. First: {first['segment']} at byte {first['offset']}: {first['reason']}"
            ),
            stacklevel=3,
        )
    return cols


def _arrow(array: np.ndarray, type_: Any) -> Any:
    """A zero-copy Arrow array over a numpy array (without pyarrow's pandas shim)."""
    import pyarrow as pa

    return pa.Array.from_buffers(type_, len(array), [None, pa.py_buffer(array)])


def _part_arrays(part: ColumnPart) -> list[Any]:
    import pyarrow as pa

    if len(part.indices) < 2**31:
        offsets = _arrow(part.offsets.astype(np.int32), pa.int32())
        list_type = pa.ListArray
    else:
        offsets = _arrow(part.offsets, pa.int64())
        list_type = pa.LargeListArray
    return [
        _arrow(part.stream_id, pa.uint32()),
        _arrow(part.epoch, pa.float64()),
        list_type.from_arrays(offsets, _arrow(part.indices, pa.int64())),
        list_type.from_arrays(offsets, _arrow(part.values, pa.float64())),
    ]


def columns_to_arrow(cols: DecodedColumns, *, label_columns: bool | Iterable[str] = False) -> Any:
    """Arrow table (stream_id, epoch, indices, values [, labels]) sharing the columns' memory:
    one record batch per segment."""
    import pyarrow as pa

    names = ["stream_id", "epoch", "indices", "values"]
    batches = [
        pa.RecordBatch.from_arrays(_part_arrays(p), names=names) for p in cols.parts if len(p)
    ]
    if batches:
        # A huge segment may need large_list; unify so every batch has the same schema.
        if any(b.schema != batches[0].schema for b in batches):
            large = pa.schema(
                [
                    ("stream_id", pa.uint32()),
                    ("epoch", pa.float64()),
                    ("indices", pa.large_list(pa.int64())),
                    ("values", pa.large_list(pa.float64())),
                ]
            )
            batches = [b.cast(large) for b in batches]
        table = pa.Table.from_batches(batches)
    else:
        table = pa.table(
            {
                "stream_id": pa.array([], type=pa.uint32()),
                "epoch": pa.array([], type=pa.float64()),
                "indices": pa.array([], type=pa.list_(pa.int64())),
                "values": pa.array([], type=pa.list_(pa.float64())),
            }
        )
    if label_columns:
        for key, arr in _label_arrays(cols, label_columns).items():
            table = table.append_column(key, arr)
    if cols.skipped:
        table = table.replace_schema_metadata({b"disco.skipped": json.dumps(cols.skipped).encode()})
    return table


def _label_arrays(cols: DecodedColumns, which: bool | Iterable[str]) -> dict[str, Any]:
    import pyarrow as pa

    sids = cols.stream_id
    uniq, inverse = np.unique(sids, return_inverse=True)
    metas = [cols.streams.get(int(s), {}) for s in uniq]
    if which is True:
        keys: list[str] = []
        for m in metas:
            keys.extend(k for k in m if k not in METADATA_FIELDS and k not in keys)
    else:
        keys = [k for k in which if k not in ("stream_id", "epoch", "indices", "values")]  # type: ignore[union-attr]
    take = pa.array(inverse.astype(np.int64))
    out = {}
    for key in keys:
        values = [m.get(key) for m in metas]
        try:
            per_stream = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Streams give this label values of different JSON types ("kg" here, 5 there):
            # one string column, non-strings as their JSON text, missing ones null.
            per_stream = pa.array([v if v is None or isinstance(v, str) else json.dumps(v)
                                   for v in values], type=pa.string())
        out[key] = per_stream.take(take)
    return out


def read(
    path: str | os.PathLike[str],
    rule: Any = None,
    *,
    stream_ids: Iterable[int] | None = None,
    label_columns: bool | Iterable[str] = False,
) -> Any:
    """Read a logger directory into a ``pyarrow.Table``.

    ``rule`` selects streams by their labels (a mapping, a selector string such as
    ``"measure=stock,entity in (a,b)"``, or a callable on the labels dict); ``stream_ids``
    selects by id. ``label_columns=True`` adds one column per label (or give the names).
    """
    p = Path(path)
    ids: set[int] | None = None if stream_ids is None else {int(s) for s in stream_ids}
    if rule is not None:
        from .selector import compile_rule

        match = compile_rule(rule)
        sidecars = load_sidecars(p)
        if sidecars:
            chosen = {sid for sid, meta in sidecars.items() if match(meta)}
            ids = chosen if ids is None else ids & chosen
        else:  # sidecars lost: select on the in-band registrations after decoding
            cols = decode_columns(p, stream_ids=ids)
            chosen = {sid for sid, meta in cols.streams.items() if match(meta)}
            return _filter(columns_to_arrow(cols, label_columns=label_columns), chosen)
    cols = decode_columns(p, stream_ids=ids)
    return columns_to_arrow(cols, label_columns=label_columns)


def _filter(table: Any, stream_ids: set[int]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.is_in(table["stream_id"], value_set=pa.array(sorted(stream_ids), type=pa.uint32()))
    return table.filter(mask)
