"""Collect the records of many logger directories into one Arrow writer.

This is the 0.1.x ``Collector`` kept for users who migrate: pick streams across logger
directories by their labels (:mod:`disco_data_logger.selector`), wait until those loggers have
finished (their ``_DONE`` marker), and write the records as Arrow record batches with the columns
``stream_id, epoch, indices, values`` plus any label columns asked for. Decoding goes through the
native :func:`disco_data_logger.read`, one call per directory, so no Python runs per record.
Label values become columns by the project's one rule (:mod:`disco_data_logger.labels`): a
boolean label is a boolean column, integers int64, integers with floats float64, and labels of
mixed kinds text (``true``, ``3``, ``"kg"`` as ``kg``), the same as in the experiment index.

Streams are selected from their sidecars (``streams/*.json``); a directory whose sidecars were
lost can still be read with :func:`disco_data_logger.read`, which uses the in-band registrations.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .labels import label_array
from .layout import DONE_MARKER, SEGMENT_GLOB, STREAMS_DIR
from .selector import Rule, compile_rule

__all__ = ["Collector", "DONE_MARKER"]

BASE_COLUMNS = ("stream_id", "epoch", "indices", "values")
LOGGER_PATH_LABEL = "_logger_path"
"""Added to every stream's labels: selectable, and available as an output column."""


class BatchWriter(Protocol):
    """What ``collect`` writes to: pyarrow IPC and Parquet writers, or anything alike."""

    def write_batch(self, batch: Any) -> None: ...


class Collector:
    """Collect stream records from one or more logger directories."""

    def __init__(self, paths: Sequence[str | Path] | str | Path, *,
                 batch_rows: int = 65_536) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self._paths = [Path(p) for p in paths]
        if not self._paths:
            raise ValueError("Collector needs at least one logger directory")
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self._batch_rows = batch_rows

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def streams(self) -> list[dict[str, Any]]:
        """Every stream's sidecar (labels, ``stream_id``, scales) plus ``_logger_path``."""
        out = []
        for base in self._paths:
            streams_dir = base / STREAMS_DIR
            if not streams_dir.is_dir():
                continue
            for file in sorted(streams_dir.glob("*.json")):
                meta = json.loads(file.read_text(encoding="utf-8"))
                if not isinstance(meta, dict) or "stream_id" not in meta:
                    raise ValueError(f"{file}: stream sidecar without a stream_id")
                meta["stream_id"] = int(meta["stream_id"])
                meta[LOGGER_PATH_LABEL] = str(base)
                out.append(meta)
        return out

    def collect(self, writer: BatchWriter, rule: Rule = None,
                columns: Sequence[str] | None = None, backoff: int = 100,
                timeout: int | None = 60_000) -> bool:
        """Write the records of the streams ``rule`` selects to ``writer``, directory by directory.

        Waits for ``_DONE`` in every directory holding a selected stream, polling every
        ``backoff`` ms; returns False, having written nothing, when ``timeout`` ms pass first
        (``None`` waits for ever). ``columns`` names labels to add as columns (a stream without
        the label gets null). When ``writer`` has a ``schema``, batches follow it: its columns in
        its order and types, label columns included. Returns True when everything was written.
        """
        matches = compile_rule(rule)
        chosen: dict[Path, dict[int, dict[str, Any]]] = {}
        for meta in self.streams():
            if matches(meta):
                chosen.setdefault(Path(meta[LOGGER_PATH_LABEL]), {})[meta["stream_id"]] = meta
        if not chosen:
            return True
        schema = getattr(writer, "schema", None)
        wanted = list(dict.fromkeys([*(columns or ()), *(schema.names if schema else ())]))
        label_columns = [c for c in wanted if c not in BASE_COLUMNS]
        if not self._wait_for_done(chosen, backoff, timeout):
            return False

        from .reader import read  # the native reader; imported late so this module loads without it

        for base, metas in chosen.items():
            table = read(base, stream_ids=sorted(metas))
            table = self._with_labels(table, metas, label_columns)
            table = self._conform(table, schema) if schema is not None else (
                table.replace_schema_metadata(None))
            for batch in table.to_batches(max_chunksize=self._batch_rows):
                if batch.num_rows:
                    writer.write_batch(batch)
        return True

    def cleanup(self, keep_meta: bool = True, wait_for_done: bool = True, backoff: int = 100,
                timeout: int | None = 60_000) -> bool:
        """Delete the segment files of every directory (and ``streams/`` unless ``keep_meta``).

        With ``wait_for_done`` nothing is deleted until every directory has its ``_DONE``
        marker; returns False, having deleted nothing, if that takes longer than ``timeout`` ms.
        """
        if wait_for_done and not self._wait_for_done(self._paths, backoff, timeout):
            return False
        for base in self._paths:
            for segment in base.glob(SEGMENT_GLOB):
                segment.unlink(missing_ok=True)
            if not keep_meta:
                shutil.rmtree(base / STREAMS_DIR, ignore_errors=True)
        return True

    @staticmethod
    def _wait_for_done(paths: Iterable[Path], backoff: int, timeout: int | None) -> bool:
        pending = {Path(p) for p in paths}
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0) / 1000.0
        while True:
            pending = {p for p in pending if not (p / DONE_MARKER).exists()}
            if not pending:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = max(backoff, 0) / 1000.0
            if deadline is not None:
                pause = min(pause, max(deadline - time.monotonic(), 0.0))
            time.sleep(pause)

    @staticmethod
    def _with_labels(table: Any, metas: dict[int, dict[str, Any]],
                     label_columns: Sequence[str]) -> Any:
        """Append one column per label: a per-stream value array taken by each row's stream
        (typed by :func:`disco_data_logger.labels.label_array`)."""
        import pyarrow as pa

        if not label_columns:
            return table
        keys = np.array(sorted(metas), dtype=np.int64)
        sids = np.asarray(table.column("stream_id"), dtype=np.int64)
        rows = pa.array(np.searchsorted(keys, sids), type=pa.int64())
        for name in label_columns:
            per_stream = label_array([metas[int(k)].get(name) for k in keys])
            table = table.append_column(name, per_stream.take(rows))
        return table

    @staticmethod
    def _conform(table: Any, schema: Any) -> Any:
        """The table with exactly the writer's columns, order and types."""
        import pyarrow as pa

        arrays = []
        for field in schema:
            if field.name not in table.column_names:
                raise ValueError(f"the writer's schema has a column {field.name!r} that is "
                                 "neither a record column nor a label")
            arrays.append(table.column(field.name).cast(field.type))
        return pa.Table.from_arrays(arrays, schema=schema)

