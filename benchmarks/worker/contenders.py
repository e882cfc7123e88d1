"""The contenders behind one small interface, so every task times the same calls.

This file is imported by ``run.py`` inside the contender's own interpreter (ours: the project's
environment; seed: the anchors venv), so it imports each library lazily and nothing else from the
``benchmarks`` package.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


class Contender:
    name = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    # Writing.
    def register(self, labels: dict[str, Any], epoch_scale: float, value_scale: float) -> int:
        raise NotImplementedError

    def register_periodic(self, labels: dict[str, Any], epoch_scale: float, value_scale: float,
                          periodicity: float, kind: str) -> Any:
        raise NotImplementedError

    def recorder(self) -> Callable[[int, float, np.ndarray, np.ndarray], None]:
        raise NotImplementedError

    def record_many(self, stream_ids: np.ndarray, epochs: np.ndarray, offsets: np.ndarray,
                    indices: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # Sizes and reading back.
    def data_bytes(self) -> int:
        """Bytes of record data (segments, or the Arrow file)."""
        raise NotImplementedError

    def total_bytes(self) -> int:
        """Everything the run left in its directory, sidecars included."""
        return _dir_bytes(self.path, "*")

    def decode(self) -> Any:
        """Read the finished run back to a pyarrow.Table, as a user would."""
        raise NotImplementedError

    def decode_threads(self, threads: int) -> Any:
        """Ours only: read back with ``threads`` decoding threads (None where not supported)."""
        return None

    def select(self, labels: dict[str, Any]) -> Any:
        """Ours only: read back the streams whose labels match (None where not supported)."""
        return None


class Ours(Contender):
    name = "ours"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import disco_data_logger

        self._mod = disco_data_logger
        self._dl = disco_data_logger.DataLogger(path)

    def register(self, labels, epoch_scale, value_scale):
        return self._dl.register_stream(labels, epoch_scale=epoch_scale, value_scale=value_scale)

    def register_periodic(self, labels, epoch_scale, value_scale, periodicity, kind):
        return self._dl.register_periodic_stream(labels, epoch_scale=epoch_scale,
                                                 value_scale=value_scale,
                                                 periodicity=periodicity, kind=kind)

    def recorder(self):
        return self._dl.record

    def record_many(self, stream_ids, epochs, offsets, indices, values):
        self._dl.record_many(stream_ids, epochs, offsets, indices, values)

    def close(self):
        self._dl.close()

    def data_bytes(self):
        return _dir_bytes(self.path, "*.seg.zst")

    def decode(self):
        return self._mod.read(self.path)

    def decode_threads(self, threads):
        try:
            return self._mod.read(self.path, threads=threads)
        except TypeError:  # a version without the threads argument
            return None

    def select(self, labels):
        return self._mod.read(self.path, labels)


class Baseline(Ours):
    """Another build of ours (``--baseline PYTHON``: an interpreter where an earlier version of
    disco-data-logger is installed), run through the same calls: before/after in one run."""

    name = "baseline"


class Seed(Contender):
    """disco-data-logger 0.1.5 (import name ``data_logger``), run in the anchors venv."""

    name = "seed"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import data_logger

        self._mod = data_logger
        self._dl = data_logger.DataLogger(path)

    def register(self, labels, epoch_scale, value_scale):
        return self._dl.register_stream(labels, epoch_scale=epoch_scale, value_scale=value_scale)

    def register_periodic(self, labels, epoch_scale, value_scale, periodicity, kind):
        ps = self._dl.register_periodic_stream(labels, epoch_scale=epoch_scale,
                                               value_scale=value_scale,
                                               periodicity=periodicity, kind=kind)
        return _SeedPeriodic(ps, int(labels["universe"]))

    def recorder(self):
        return self._dl.record

    def close(self):
        self._dl.close()

    def data_bytes(self):
        return _dir_bytes(self.path, "*.seg.zst")

    def decode(self):
        # The seed's reader for a finished directory: Collector decodes every segment with the
        # scales from the sidecars and hands Arrow record batches to a writer.
        import pyarrow as pa

        batches: list[pa.RecordBatch] = []

        class _Batches:
            schema = None

            def write_batch(self, batch: pa.RecordBatch) -> None:
                batches.append(batch)

        self._mod.Collector([self.path]).collect(_Batches(), timeout=0)
        return pa.Table.from_batches(batches)


class _SeedPeriodic:
    """The seed's PeriodicStream fed as its users feed it: graphblas Vectors of a fixed size.

    (Its array entry point sizes each Vector by that record's largest index, so an accumulator
    whose records touch different entities fails with GrB_DIMENSION_MISMATCH.) Building the
    Vector from the arrays is timed: the simulation's data are arrays in every contender.
    """

    def __init__(self, stream: Any, size: int) -> None:
        from graphblas import Vector

        self._stream = stream
        self._from_coo = Vector.from_coo
        self._size = size

    def record(self, epoch: float, indices: np.ndarray, values: np.ndarray) -> None:
        self._stream.record_vector(epoch, self._from_coo(indices, values, size=self._size))

    def close(self, final_epoch: float) -> None:
        self._stream.close(final_epoch)


class _ArrowBatches(Contender):
    """What a user would write by hand instead: per record keep the arrays, and every 8,192
    records write one RecordBatch of list columns (``ListArray.from_arrays`` over the
    concatenated buffers), zstd-compressed. Subclasses say where the batches go."""

    BATCH_RECORDS = 8192

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import pyarrow as pa

        self._pa = pa
        path.mkdir(parents=True, exist_ok=True)
        self._schema = pa.schema([("stream_id", pa.uint32()), ("epoch", pa.float64()),
                                  ("indices", pa.list_(pa.int64())),
                                  ("values", pa.list_(pa.float64()))])
        self._labels: dict[int, dict[str, Any]] = {}
        self._sids: list[int] = []
        self._epochs: list[float] = []
        self._idx: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _write(self, batch: Any) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def register(self, labels, epoch_scale, value_scale):
        sid = len(self._labels)
        self._labels[sid] = dict(labels)
        return sid

    def recorder(self):
        sids, epochs, idx, vals = self._sids, self._epochs, self._idx, self._vals

        def record(sid: int, epoch: float, indices: np.ndarray, values: np.ndarray) -> None:
            sids.append(sid)
            epochs.append(epoch)
            idx.append(indices)
            vals.append(values)
            if len(sids) >= self.BATCH_RECORDS:
                self._flush()

        return record

    def _flush(self) -> None:
        pa = self._pa
        n = len(self._sids)
        if n == 0:
            return
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.fromiter(map(len, self._idx), dtype=np.int32, count=n), out=offsets[1:])
        off = pa.array(offsets)
        self._write(pa.record_batch([
            pa.array(self._sids, type=pa.uint32()),
            pa.array(self._epochs, type=pa.float64()),
            pa.ListArray.from_arrays(off, np.concatenate(self._idx)),
            pa.ListArray.from_arrays(off, np.concatenate(self._vals)),
        ], schema=self._schema))
        self._sids.clear()
        self._epochs.clear()
        self._idx.clear()
        self._vals.clear()

    def record_many(self, stream_ids, epochs, offsets, indices, values):
        pa = self._pa
        self._flush()
        off = pa.array(offsets.astype(np.int32))
        self._write(pa.record_batch([
            pa.array(stream_ids.astype(np.uint32)),
            pa.array(epochs),
            pa.ListArray.from_arrays(off, indices),
            pa.ListArray.from_arrays(off, values),
        ], schema=self._schema))

    def close(self):
        self._flush()
        self._finish()
        (self.path / "streams.json").write_text(json.dumps(self._labels))


class ArrowIpc(_ArrowBatches):
    """The batches written to a zstd-compressed Arrow IPC stream, read back with read_all."""

    name = "arrow_ipc"

    def _open(self) -> None:
        pa = self._pa
        self._file = self.path / "records.arrows"
        self._sink = pa.OSFile(str(self._file), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self._schema,
                                         options=pa.ipc.IpcWriteOptions(compression="zstd"))

    def _write(self, batch):
        self._writer.write_batch(batch)

    def _finish(self):
        self._writer.close()
        self._sink.close()

    def data_bytes(self):
        return self._file.stat().st_size

    def decode(self):
        pa = self._pa
        with pa.OSFile(str(self._file)) as source:
            return pa.ipc.open_stream(source).read_all()


class ArrowParquet(_ArrowBatches):
    """The batches written to a zstd Parquet file, read back with ``pq.read_table`` (its default
    threads)."""

    name = "arrow_parquet"

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self._pq = pq
        self._file = self.path / "records.parquet"
        self._writer = pq.ParquetWriter(str(self._file), self._schema, compression="zstd")

    def _write(self, batch):
        self._writer.write_batch(batch)

    def _finish(self):
        self._writer.close()

    def data_bytes(self):
        return self._file.stat().st_size

    def decode(self):
        return self._pq.read_table(str(self._file))


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (Ours, Baseline, Seed, ArrowIpc, ArrowParquet)}


def probe(name: str) -> dict[str, Any]:
    """Whether the contender can run here, and its version."""
    try:
        if name in ("ours", "baseline"):
            import disco_data_logger
            import disco_data_logger._core  # noqa: F401

            return {"available": True, "version": disco_data_logger.__version__}
        if name == "seed":
            from importlib.metadata import version

            import data_logger  # noqa: F401

            return {"available": True, "version": version("disco-data-logger")}
        if name in ("arrow_ipc", "arrow_parquet"):
            import pyarrow
            import pyarrow.parquet  # noqa: F401

            return {"available": True, "version": pyarrow.__version__}
    except Exception as exc:  # noqa: BLE001 - any import failure means "skipped"
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {"available": False, "reason": f"unknown contender {name}"}
