"""``import data_logger``: what disco-data-logger 0.1.x's users rely on, on this implementation.

Each test states a 0.1.x behaviour (its signatures, sidecars, tuple shapes, Parquet columns,
graphblas vectors, disco-tools rules) and checks it against the real logger and real files.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import graphblas as gb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from sparse_array import Vector as SparseArrayVector
from tools.label_selector import Label

import data_logger
import disco_data_logger
from data_logger import Collector, DataLogger, PeriodicStream
from data_logger.collector import DEFAULT_BATCH_SIZE, DONE_MARKER
from tests.common import decode_python

SCHEMA_0_1 = pa.schema([
    pa.field("stream_id", pa.uint32()),
    pa.field("epoch", pa.float64()),
    pa.field("indices", pa.list_(pa.int64())),
    pa.field("values", pa.list_(pa.float64())),
])
"""The columns 0.1.x's ``to_parquet`` and ``Collector`` write."""


def test_the_0_1_names_import_without_warnings() -> None:
    code = ("import data_logger, data_logger.periodic, data_logger.collector, data_logger.main\n"
            "print(sorted(data_logger.__all__))\n"
            "print(data_logger.periodic.PeriodicStream.__name__,"
            " data_logger.collector.Collector.__name__, data_logger.main.DataLogger.__name__)\n")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code],
                         check=True, capture_output=True, text=True)
    assert out.stderr == ""
    assert out.stdout.split("\n")[:2] == [
        "['Collector', 'DataLogger', 'PeriodicStream', '__version__']",
        "PeriodicStream Collector DataLogger",
    ]


def test_the_classes_are_ours() -> None:
    assert issubclass(DataLogger, disco_data_logger.DataLogger)
    assert issubclass(Collector, disco_data_logger.Collector)
    assert PeriodicStream is disco_data_logger.PeriodicStream
    assert data_logger.__version__ == disco_data_logger.__version__


def test_constructor_has_0_1_defaults_and_takes_its_arguments_positionally(
    tmp_path: Path,
) -> None:
    params = inspect.signature(DataLogger).parameters
    assert list(params)[:4] == ["segments_dir", "ring_bytes", "rotate_bytes", "zstd_level"]
    assert [params[p].default for p in ("ring_bytes", "rotate_bytes", "zstd_level")] == [
        1 << 27, 256 << 20, 1
    ]
    with pytest.raises(ValueError, match="zstd_level must be an integer"):
        DataLogger(tmp_path / "bad", 1 << 20, 1 << 20, 99)  # positional, and validated
    with DataLogger(tmp_path / "a", 1 << 20, 1 << 20, 3, flush_interval=0.5) as dl:
        sid = dl.register_stream({"entity": "A"}, epoch_scale=1e-3, value_scale=1e-6)
        dl.record(sid, 0.001, np.array([1, 2], dtype=np.uint32), np.array([0.1, 0.2]))
    assert (tmp_path / "a" / DONE_MARKER).stat().st_size == 0
    assert [r[0:2] for r in dl.decode_all_segments()] == [(0, 0.001)]


def test_registration_writes_0_1_sidecars(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream(labels={"entity": "A", "run": 3}, epoch_scale=1e-3,
                                 value_scale=1e-6)
        ps = dl.register_periodic_stream(labels={"entity": "B"}, epoch_scale=1.0,
                                         value_scale=0.1, periodicity=2.0, kind="accumulator")
    plain = json.loads((tmp_path / "l" / "streams" / f"{sid:08d}.json").read_text())
    periodic = json.loads((tmp_path / "l" / "streams" / f"{ps.stream_id:08d}.json").read_text())
    assert plain == {"entity": "A", "run": 3, "stream_id": 0, "epoch_scale": 1e-3,
                     "value_scale": 1e-6}
    assert periodic == {"entity": "B", "stream_id": 1, "epoch_scale": 1.0, "value_scale": 0.1,
                        "periodicity": 2.0, "kind": "accumulator"}
    assert isinstance(ps, PeriodicStream) and ps.stream_id == 1


def test_record_and_record_vector_with_every_vector_kind(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"entity": "A"}, epoch_scale=1e-3, value_scale=1e-6)
        dl.record(sid, 0.0, np.array([3, 1], dtype=np.uint32), np.array([0.3, 0.1]))
        dl.record(sid, 0.001, [2], [0.2])
        dl.record_vector(sid, 0.002, gb.Vector.from_coo([1, 2, 3], [0.1, 0.2, -0.1]))
        dl.record_vector(sid, 0.003, SparseArrayVector(np.array([4], dtype=np.uint32),
                                                       np.array([0.4])))
        dl.record_vector(sid, 0.004, sp.csr_array(np.array([[0.0, 0.5, 0.0]])))
        dl.record_vector(sid, 0.005, gb.Vector(float, size=10))
    rows = list(dl.decode_all_segments())
    for stream_id, epoch, idx, vals in rows:
        assert type(stream_id) is int and type(epoch) is float
        assert isinstance(idx, np.ndarray) and idx.dtype == np.int64
        assert isinstance(vals, np.ndarray) and vals.dtype == np.float64
    assert [(s, e, i.tolist(), pytest.approx(v.tolist(), abs=1e-6)) for s, e, i, v in rows] == [
        (0, 0.0, [1, 3], [0.1, 0.3]),
        (0, 0.001, [2], [0.2]),
        (0, 0.002, [1, 2, 3], [0.1, 0.2, -0.1]),
        (0, 0.003, [4], [0.4]),
        (0, 0.004, [1], [0.5]),
        (0, 0.005, [], []),
    ]
    # The independent pure-Python reader agrees.
    assert [(s, e, i.tolist(), v.tolist()) for s, e, i, v in rows] == [
        (s, e, i.tolist(), v.tolist()) for s, e, i, v in decode_python(tmp_path / "l").records()
    ]


def test_record_vector_refuses_what_is_not_a_sparse_vector(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"entity": "A"}, epoch_scale=1.0, value_scale=1.0)
        with pytest.raises(TypeError, match="numpy.ndarray"):
            dl.record_vector(sid, 0.0, np.array([1.0, 2.0]))


def test_periodic_streams_fed_graphblas_vectors(tmp_path: Path) -> None:
    """0.1.x's sequence: state and accumulator fed graphblas vectors, value = epoch."""
    with DataLogger(tmp_path / "l") as dl:
        state = dl.register_periodic_stream({"entity": "state"}, epoch_scale=1.0,
                                            value_scale=0.1, periodicity=1.0, kind="state")
        acc = dl.register_periodic_stream({"entity": "acc"}, epoch_scale=1.0, value_scale=0.1,
                                          periodicity=1.0, kind="accumulator")
        for t in [0.0, 0.3, 1.1, 1.4, 1.8, 3.4, 3.6, 4.1]:
            vector = gb.Vector.from_coo([0], [t], size=1)
            state.record_vector(t, vector)
            acc.record_vector(t, vector)
            vector[0] << -99.0  # what was recorded is a copy
        state.close(final_epoch=5.0)
        acc.close(final_epoch=5.0)
    rows = list(dl.decode_all_segments())
    got_state = [(e, v.tolist()) for s, e, _, v in rows if s == state.stream_id]
    got_acc = [(e, v.tolist()) for s, e, _, v in rows if s == acc.stream_id]
    assert [e for e, _ in got_state] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [v for _, v in got_state] == [[pytest.approx(x)] for x in (0, 0.3, 1.8, 1.8, 3.6, 4.1)]
    assert [e for e, _ in got_acc] == [0.0, 1.0, 2.0, 3.0, 4.0]
    sums = (0.3, 4.3, None, 7.0, 4.1)
    assert [v for _, v in got_acc] == [[] if x is None else [pytest.approx(x)] for x in sums]


def test_periodic_stream_made_by_hand_as_in_0_1(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"entity": "s"}, epoch_scale=1.0, value_scale=1.0)
        ps = PeriodicStream(dl, sid, periodicity=2.0, kind="state")
        ps.record(1.0, np.array([5]), np.array([4.0]))
        ps.close(4.0)
    assert [(e, i.tolist()) for _, e, i, _ in dl.decode_all_segments()] == [(2.0, [5]),
                                                                           (4.0, [5])]


def _three_streams(path: Path, records_per_stream: int = 2) -> None:
    with DataLogger(path) as dl:
        for entity in ("A", "B", "C"):
            sid = dl.register_stream({"entity": entity, "n": ord(entity)}, epoch_scale=1.0,
                                     value_scale=1.0)
            for k in range(records_per_stream):
                dl.record(sid, float(k), [sid], [float(k)])


class _ListWriter:
    """A writer without a schema: 0.1.x then wrote its own column types."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)


@pytest.mark.parametrize(("rule", "expected"), [
    (Label("entity") == "B", {"B"}),
    ((Label("entity") == "B") | Label("n").gt(ord("B")), {"B", "C"}),
    (~Label("entity").isin(["A"]), {"B", "C"}),
    ({"match": {"key": "entity", "op": "in", "values": ["B", "C"]}}, {"B", "C"}),  # raw spec
    ({"any": [{"match": {"key": "entity", "op": "eq", "value": "A"}}]}, {"A"}),
    ({"entity": "B"}, {"B"}),  # the rule forms of disco_data_logger work too
    ("entity in (B, C)", {"B", "C"}),
    (None, {"A", "B", "C"}),
])
def test_collector_with_disco_tools_rules(tmp_path: Path, rule, expected) -> None:
    _three_streams(tmp_path / "l")
    schema = SCHEMA_0_1.append(pa.field("entity", pa.string()))
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, schema)
    assert Collector([tmp_path / "l"]).collect(writer, rule=rule, columns=["entity"]) is True
    writer.close()
    table = pa.ipc.open_stream(sink.getvalue()).read_all()
    assert table.schema == schema
    assert set(table["entity"].to_pylist()) == expected
    assert table.num_rows == 2 * len(expected)


def test_collector_batches_and_columns_without_a_writer_schema(tmp_path: Path) -> None:
    _three_streams(tmp_path / "l", records_per_stream=1800)
    writer = _ListWriter()
    assert Collector([tmp_path / "l"]).collect(writer, columns=["entity", "n"])
    batches = writer.batches
    assert max(b.num_rows for b in batches) == DEFAULT_BATCH_SIZE == 2048
    table = pa.Table.from_batches(batches)
    assert table.schema.names == [*SCHEMA_0_1.names, "entity", "n"]
    assert table.num_rows == 3 * 1800
    assert table.select(SCHEMA_0_1.names).schema == SCHEMA_0_1


def test_collector_waits_for_done_and_cleans_up(tmp_path: Path) -> None:
    _three_streams(tmp_path / "l")
    (tmp_path / "l" / DONE_MARKER).unlink()
    writer = _ListWriter()
    collector = Collector([tmp_path / "l"])
    assert collector.collect(writer, timeout=10, backoff=1) is False and writer.batches == []
    assert collector.cleanup(timeout=10, backoff=1) is False
    assert any((tmp_path / "l").glob("*.seg.zst"))
    assert collector.cleanup(keep_meta=False, wait_for_done=False) is True
    assert not any((tmp_path / "l").glob("*.seg.zst"))
    assert not (tmp_path / "l" / "streams").exists()


def test_to_parquet_writes_0_1_columns(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"entity": "A"}, epoch_scale=1e-3, value_scale=1e-6)
        for t in range(10):
            dl.record(sid, t * 1e-3, np.array([1, 2, 3], dtype=np.uint32),
                      np.array([0.1, 0.2, -0.1]))
    dl.to_parquet(tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.remove_metadata() == SCHEMA_0_1
    assert table["epoch"].to_pylist() == [t * 1e-3 for t in range(10)]
    assert table["indices"].to_pylist() == [[1, 2, 3]] * 10
