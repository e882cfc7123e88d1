"""Bad input gets a clear error naming the stream, raised before anything is
written, and every record logged before it is still there after close()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from disco_data_logger import (
    DataLogger,
    DataLoggerError,
    InvalidRecordError,
    InvalidStreamError,
    LoggerClosedError,
    UnknownStreamError,
)
from tests.common import by_stream, decode_native, decode_python

BAD_RECORDS = [
    ("length", [1, 2], [1.0], "differ in length"),
    ("2-D indices", np.ones((2, 2), dtype=np.int64), np.ones(4), "1-D"),
    ("0-D values", [1], np.float64(3.0), "1-D"),
    ("string values", [1, 2], np.array(["a", "b"]), "numeric dtype"),
    ("object values", [1], np.array([object()]), "numeric dtype"),
    ("complex values", [1], np.array([1 + 2j]), "numeric dtype"),
    ("float indices", np.array([1.5, 2.0]), [1.0, 2.0], "integer dtype"),
    ("bool indices", np.array([True]), [1.0], "integer dtype"),
    ("negative index", [3, -1], [1.0, 2.0], "negative"),
    ("duplicate index", [4, 2, 4], [1.0, 2.0, 3.0], "more than once"),
    ("nan value", [1, 2], [1.0, np.nan], "not finite"),
    ("inf value", [1], [np.inf], "not finite"),
    ("-inf value", [1], [-np.inf], "not finite"),
    ("value overflow", [1], [1e300], "overflows int64"),
    ("uint64 index above 2^63", np.array([2**63], dtype=np.uint64), [1.0], r"exceeds 2\^63-1"),
]


@pytest.fixture
def logger(tmp_path: Path):
    dl = DataLogger(tmp_path / "l")
    sid = dl.register_stream(
        {"entity": "A", "measure": "stock"}, epoch_scale=1e-3, value_scale=1e-2
    )
    dl.record(sid, 0.0, [1, 2], [10.0, 20.0])  # logged before the bad input
    yield dl, sid
    dl.close()


def _assert_first_record_survives(path: Path, n: int = 1) -> None:
    for decode in (decode_native, decode_python):
        got = decode(path).records()
        assert len(got) == n
        assert got[0][2].tolist() == [1, 2] and got[0][3].tolist() == [10.0, 20.0]


@pytest.mark.parametrize(
    ("case", "indices", "values", "message"), BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS]
)
def test_bad_record_is_refused_and_nothing_is_lost(logger, case, indices, values, message) -> None:
    dl, sid = logger
    with pytest.raises(InvalidRecordError, match=message) as info:
        dl.record(sid, 1.0, indices, values)
    text = str(info.value)
    assert f"stream {sid}" in text and "entity=A" in text and "measure=stock" in text
    assert isinstance(info.value, ValueError) and isinstance(info.value, DataLoggerError)
    dl.record(sid, 2.0, [5], [5.0])  # the logger keeps working
    dl.close()
    got = decode_native(dl.path).records()
    assert [r[1] for r in got] == [0.0, 2.0]
    _assert_first_record_survives(dl.path, 2)


@pytest.mark.parametrize("epoch", [np.nan, np.inf, -np.inf, 1e300])
def test_bad_epoch(logger, epoch) -> None:
    dl, sid = logger
    with pytest.raises(
        InvalidRecordError, match=r"stream 0 \(entity=A, measure=stock\): epoch"
    ) as info:
        dl.record(sid, epoch, [1], [1.0])
    assert ("not finite" in str(info.value)) or ("overflows int64" in str(info.value))
    dl.close()
    _assert_first_record_survives(dl.path)


def test_exact_stream_accepts_nan_but_not_nan_epoch(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record(s, 0, [1], [np.nan])
        with pytest.raises(InvalidRecordError, match="epoch nan is not finite"):
            dl.record(s, np.nan, [1], [1.0])
    assert np.isnan(decode_native(tmp_path / "l").values[0])


@pytest.mark.parametrize("sid", [99, -1, 2**40])
def test_unknown_stream(logger, sid) -> None:
    dl, _ = logger
    with pytest.raises(UnknownStreamError, match=f"unknown stream id {sid}") as info:
        dl.record(sid, 0.0, [1], [1.0])
    assert isinstance(info.value, KeyError)
    dl.close()
    _assert_first_record_survives(dl.path)


def test_record_after_close(logger) -> None:
    dl, sid = logger
    dl.close()
    with pytest.raises(LoggerClosedError, match="closed"):
        dl.record(sid, 1.0, [1], [1.0])
    with pytest.raises(LoggerClosedError):
        dl.flush()
    with pytest.raises(LoggerClosedError):
        dl.register_stream({"m": "late"}, value_scale=None)
    _assert_first_record_survives(dl.path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epoch_scale": 0.0, "value_scale": 1.0}, "epoch_scale must be a positive finite"),
        ({"epoch_scale": -1.0, "value_scale": 1.0}, "epoch_scale must be a positive finite"),
        ({"epoch_scale": np.inf, "value_scale": 1.0}, "epoch_scale must be a positive finite"),
        ({"epoch_scale": 1.0, "value_scale": 0}, "value_scale must be a positive finite"),
        ({"epoch_scale": 1.0, "value_scale": np.nan}, "value_scale must be a positive finite"),
        ({"epoch_scale": 1.0, "value_scale": "1"}, "value_scale must be a positive number or None"),
        ({"epoch_scale": True, "value_scale": 1.0}, "epoch_scale must be a positive number"),
    ],
)
def test_bad_scales(logger, kwargs, message) -> None:
    dl, _ = logger
    with pytest.raises(InvalidStreamError, match=message) as info:
        dl.register_stream({"entity": "Z"}, **kwargs)
    assert "entity=Z" in str(info.value)
    assert len(dl.streams) == 1 and not (dl.path / "streams" / "00000001.json").exists()
    dl.close()
    _assert_first_record_survives(dl.path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"periodicity": 0}, "periodicity must be a positive finite"),
        ({"periodicity": -2.0}, "periodicity must be a positive finite"),
        ({"periodicity": np.nan}, "periodicity must be a positive finite"),
        ({"periodicity": 1e-9}, "shorter than one epoch_scale tick"),
        ({"periodicity": 0.0015}, "not a whole number of epoch_scale ticks"),
        ({"kind": "sum"}, "kind must be 'state' or 'accumulator'"),
    ],
)
def test_bad_periodic_settings(logger, kwargs, message) -> None:
    dl, _ = logger
    with pytest.raises(InvalidStreamError, match=message):
        dl.register_periodic_stream({"entity": "P"}, epoch_scale=1e-3, value_scale=1.0, **kwargs)
    assert len(dl.streams) == 1
    dl.close()
    _assert_first_record_survives(dl.path)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"when": object()}, "JSON-serialisable"),
        ({"x": float("nan")}, "JSON-serialisable"),
        ({1: "a"}, "label names must be strings"),
        ({"stream_id": 3}, "reserved"),
        ("entity=A", "must be a mapping"),
    ],
)
def test_bad_labels(logger, labels, message) -> None:
    dl, _ = logger
    with pytest.raises(InvalidStreamError, match=message):
        dl.register_stream(labels, value_scale=None)
    dl.close()
    _assert_first_record_survives(dl.path)


def test_bad_record_in_batch_records_nothing_of_the_batch(logger) -> None:
    dl, sid = logger
    offsets = [0, 1, 2, 3]
    with pytest.raises(
        InvalidRecordError, match=r"record 1 of the batch; nothing of the batch was recorded"
    ):
        dl.record_many(sid, [1.0, 2.0, 3.0], offsets, [1, -5, 2], [1.0, 2.0, 3.0])
    with pytest.raises(InvalidRecordError, match="offsets must have len"):
        dl.record_many(sid, [1.0, 2.0], [0, 1], [1], [1.0])
    with pytest.raises(UnknownStreamError):
        dl.record_many([sid, 42], [1.0, 2.0], [0, 1, 2], [1, 2], [1.0, 2.0])
    dl.close()
    _assert_first_record_survives(dl.path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ring_bytes": 0}, "ring_bytes must be a positive integer"),
        ({"rotate_bytes": -1}, "rotate_bytes must be a positive integer"),
        ({"zstd_level": 99}, "zstd_level must be an integer"),
        ({"flush_interval": 0}, "flush_interval must be a positive number"),
    ],
)
def test_bad_logger_settings(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DataLogger(tmp_path / "l", **kwargs)


@pytest.mark.parametrize("case", [c for c in BAD_RECORDS if c[0] in (
    "negative index", "duplicate index", "nan value", "value overflow")], ids=lambda c: c[0])
def test_bad_record_late_in_a_large_batch_records_nothing_of_it(tmp_path: Path, case) -> None:
    """A batch larger than a block is encoded in one pass into blocks that are held back until
    the whole batch is accepted: a bad record near its end throws all of them away, and what was
    recorded before the batch (in the open block, and in earlier batches) stays as it was."""
    _, bad_idx, bad_vals, message = case
    rng = np.random.default_rng(4)
    with DataLogger(tmp_path / "l", block_bytes=4096, ring_bytes=1 << 20) as dl:
        a = dl.register_stream({"m": "a"}, epoch_scale=1e-3, value_scale=1e-2)
        b = dl.register_stream({"m": "b"}, epoch_scale=1e-3, value_scale=1e-2)
        dl.record(a, 0.0, [1, 2], [10.0, 20.0])  # in the open block when the batch starts
        n, nnz = 400, 32
        idx = np.tile(np.arange(nnz), n)
        vals = rng.integers(-1000, 1000, n * nnz) * 0.01
        offsets = np.arange(n + 1) * nnz
        sids = np.where(np.arange(n) % 2 == 0, a, b)
        epochs = 1.0 + np.arange(n) * 0.5
        dl.record_many(sids, epochs, offsets, idx, vals)  # accepted: larger than a block
        before = dl.stream_stats()
        bad = len(bad_idx)
        idx2 = np.concatenate([idx, np.asarray(bad_idx, dtype=np.int64)])
        vals2 = np.concatenate([vals, np.asarray(bad_vals, dtype=np.float64)])
        with pytest.raises(InvalidRecordError, match=f"{message}.*record {n} of the batch"):
            dl.record_many(np.append(sids, b), np.append(epochs + 1000.0, 5000.0),
                           np.append(offsets, offsets[-1] + bad), idx2, vals2)
        assert dl.stream_stats() == before
        assert dl.stats()["records"] == 1 + n
        dl.record(b, 9999.0, [7], [7.0])  # the logger goes on
    for decode in (decode_native, decode_python):
        got = by_stream(decode(tmp_path / "l").records())
        assert [r[1] for r in got[a]] == [0.0, *epochs[::2].tolist()]
        assert [r[1] for r in got[b]] == [*epochs[1::2].tolist(), 9999.0]
