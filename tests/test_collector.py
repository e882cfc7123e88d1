"""Collector: selecting streams across logger directories and writing them to Arrow writers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from disco_data_logger import Collector, DataLogger
from disco_data_logger.collector import DONE_MARKER
from disco_data_logger.labels import label_array
from tests.common import decode_python

BASE = [("stream_id", pa.uint32()), ("epoch", pa.float64()),
        ("indices", pa.list_(pa.int64())), ("values", pa.list_(pa.float64()))]


class BatchList:
    """A writer without a schema: keeps the batches it is given."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches) if self.batches else pa.table({})


def make_logger(path, replication: int, *, close: bool = True) -> DataLogger:
    """Two stock streams (entities a, b) and one demand stream, 10 records each."""
    dl = DataLogger(path)
    sids = [
        dl.register_stream({"entity": "a", "measure": "stock", "replication": replication},
                           epoch_scale=1e-3, value_scale=1e-2),
        dl.register_stream({"entity": "b", "measure": "stock", "replication": replication},
                           epoch_scale=1e-3, value_scale=None),
        dl.register_stream({"measure": "demand", "replication": replication},
                           epoch_scale=1e-3, value_scale=1.0),
    ]
    for t in range(10):
        for k, sid in enumerate(sids):
            dl.record(sid, t + 0.5 * k, np.array([k, 10 + t]), np.array([t * 1.0, -k * 2.0]))
    if close:
        dl.close()
    return dl


@pytest.fixture
def loggers(tmp_path):
    paths = [tmp_path / "rep0", tmp_path / "rep1"]
    for replication, path in enumerate(paths):
        make_logger(path, replication)
    return paths


def test_collect_everything_to_an_ipc_file(tmp_path, loggers):
    sink = tmp_path / "out.arrow"
    schema = pa.schema(BASE)
    with ipc.new_file(sink, schema) as writer:
        assert Collector(loggers).collect(writer) is True
    table = ipc.open_file(sink).read_all()
    assert table.num_rows == 2 * 30
    expected = [decode_python(p) for p in loggers]
    np.testing.assert_array_equal(
        table.column("epoch").to_numpy(), np.concatenate([d.epoch for d in expected]))
    np.testing.assert_array_equal(
        pa.concat_arrays(table.column("values").chunks).flatten().to_numpy(),
        np.concatenate([d.values for d in expected]))


def test_rule_and_label_columns(loggers):
    out = BatchList()
    assert Collector(loggers).collect(out, rule="measure=stock,entity in (b)",
                                      columns=["entity", "replication", "missing"])
    table = out.table()
    assert table.column_names == ["stream_id", "epoch", "indices", "values",
                                  "entity", "replication", "missing"]
    assert table.num_rows == 20
    assert set(table.column("entity").to_pylist()) == {"b"}
    assert table.column("replication").to_pylist() == [0] * 10 + [1] * 10
    assert table.column("missing").null_count == 20
    assert table.schema.metadata is None


@pytest.mark.parametrize("rule", [
    {"measure": "demand", "replication": 1},
    "measure=demand,replication=1",
    lambda labels: labels["measure"] == "demand" and labels["replication"] == 1,
])
def test_every_rule_form_selects_the_same(loggers, rule):
    out = BatchList()
    assert Collector(loggers).collect(out, rule=rule, columns=["_logger_path"])
    table = out.table()
    assert table.num_rows == 10
    assert set(table.column("_logger_path").to_pylist()) == {str(loggers[1])}
    assert table.column("indices").to_pylist()[3] == [2, 13]


def test_writer_schema_decides_columns_and_types(tmp_path, loggers):
    schema = pa.schema(BASE + [("replication", pa.string()), ("measure", pa.string())])
    sink = tmp_path / "out.parquet"
    with pq.ParquetWriter(sink, schema) as writer:
        assert Collector(loggers).collect(writer, rule={"measure": "demand"})
    table = pq.read_table(sink)
    assert table.schema.names == schema.names
    assert table.column("replication").to_pylist() == ["0"] * 10 + ["1"] * 10
    assert set(table.column("measure").to_pylist()) == {"demand"}


def test_batches_are_bounded(loggers):
    out = BatchList()
    assert Collector(loggers, batch_rows=7).collect(out)
    assert max(b.num_rows for b in out.batches) <= 7
    assert sum(b.num_rows for b in out.batches) == 60


def test_nothing_selected_writes_nothing(loggers):
    out = BatchList()
    assert Collector(loggers).collect(out, rule="measure=nothing") is True
    assert out.batches == []


def test_timeout_without_done_marker(tmp_path):
    path = tmp_path / "running"
    dl = make_logger(path, 0, close=False)
    try:
        out = BatchList()
        start = time.monotonic()
        assert Collector([path]).collect(out, backoff=10, timeout=150) is False
        assert time.monotonic() - start >= 0.15
        assert out.batches == []
    finally:
        dl.close()
    assert Collector([path]).collect(out, backoff=10, timeout=150) is True
    assert sum(b.num_rows for b in out.batches) == 30


def test_unfinished_logger_not_selected_is_not_waited_for(tmp_path, loggers):
    dl = make_logger(tmp_path / "running", 5, close=False)
    try:
        out = BatchList()
        assert Collector([*loggers, dl.path]).collect(out, rule="replication in (0, 1)",
                                                      timeout=0)
        assert sum(b.num_rows for b in out.batches) == 60
    finally:
        dl.close()


def test_collect_waits_for_done_with_backoff(tmp_path, loggers):
    (loggers[0] / DONE_MARKER).unlink()
    timer = threading.Timer(0.2, (loggers[0] / DONE_MARKER).touch)
    timer.start()
    try:
        out = BatchList()
        assert Collector(loggers).collect(out, backoff=20, timeout=10_000) is True
        assert sum(b.num_rows for b in out.batches) == 60
    finally:
        timer.cancel()


def test_cleanup(loggers):
    collector = Collector(loggers)
    assert collector.cleanup() is True
    for path in loggers:
        assert not list(path.glob("*.seg.zst"))
        assert len(list((path / "streams").glob("*.json"))) == 3
    assert collector.cleanup(keep_meta=False) is True
    assert all(not (p / "streams").exists() for p in loggers)
    assert all((p / DONE_MARKER).exists() for p in loggers)


def test_cleanup_waits_for_done(tmp_path, loggers):
    dl = make_logger(tmp_path / "running", 2, close=False)
    try:
        collector = Collector([*loggers, dl.path])
        assert collector.cleanup(backoff=10, timeout=50) is False
        assert all(list(p.glob("*.seg.zst")) for p in loggers)  # nothing deleted
        assert collector.cleanup(wait_for_done=False) is True
    finally:
        dl.close()


def test_bad_arguments(loggers):
    with pytest.raises(ValueError, match="at least one"):
        Collector([])
    with pytest.raises(ValueError, match="position"):
        Collector(loggers).collect(BatchList(), rule="measure in (a")
    assert Collector(str(loggers[0])).paths == [loggers[0]]


def test_label_columns_follow_the_projects_one_rule(tmp_path):
    """Labels become columns as in the experiment index (disco_data_logger.labels): booleans
    stay booleans, integers with floats are floats, mixed kinds are text with JSON spelling."""
    labels = [
        {"name": "x", "flag": True, "size": 1, "mixed": True, "unit": "kg"},
        {"name": "y", "flag": False, "size": 2.5, "mixed": "yes", "unit": 3},
        {"name": "z", "size": 4, "mixed": 7},
    ]
    with DataLogger(tmp_path / "l") as dl:
        for k, label in enumerate(labels):
            sid = dl.register_stream(label, value_scale=None)
            dl.record(sid, float(k), [k], [1.0])
    out = BatchList()
    names = ["flag", "size", "mixed", "unit"]
    assert Collector([tmp_path / "l"]).collect(out, columns=names)
    table = out.table().sort_by("epoch")
    assert table.schema.field("flag").type == pa.bool_()
    assert table.column("flag").to_pylist() == [True, False, None]
    assert table.schema.field("size").type == pa.float64()
    assert table.column("size").to_pylist() == [1.0, 2.5, 4.0]
    assert table.column("mixed").to_pylist() == ["true", "yes", "7"]  # not "True"
    assert table.column("unit").to_pylist() == ["kg", "3", None]
    for name in names:  # the same column the index builds from the same labels
        assert table.column(name).combine_chunks().equals(
            label_array([label.get(name) for label in labels]))
