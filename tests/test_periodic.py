"""PeriodicStream semantics on the real native aggregator (see disco_data_logger/periodic.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sparse_array import Vector

from disco_data_logger import (
    DataLogger,
    InvalidRecordError,
    InvalidStreamError,
    LoggerClosedError,
    PeriodicStream,
)
from tests.common import decode_native


def _records(path: Path) -> list[tuple[float, list[int], list[float]]]:
    return [(ep, idx.tolist(), vals.tolist()) for _, ep, idx, vals in decode_native(path).records()]


EVENTS_0_1_5 = [0.0, 0.3, 1.1, 1.4, 1.8, 3.4, 3.6, 4.1]


@pytest.mark.parametrize("epoch_scale", [1.0, 0.5, 1e-3])
def test_updates_belong_to_the_period_of_their_epoch_as_given(
    tmp_path: Path, epoch_scale: float
) -> None:
    """The sequence disco-data-logger 0.1.5 is known to log (value = epoch, closed at 5.0)."""
    with DataLogger(tmp_path / "l") as dl:
        state = dl.register_periodic_stream(
            {"m": "s"}, epoch_scale=epoch_scale, value_scale=None, periodicity=1.0, kind="state"
        )
        acc = dl.register_periodic_stream(
            {"m": "a"}, epoch_scale=epoch_scale, value_scale=None, periodicity=1.0,
            kind="accumulator",
        )
        for t in EVENTS_0_1_5:
            state.record(t, [0], [t])
            acc.record(t, [0], [t])
        state.close(5.0)
        acc.close(5.0)
    recs = decode_native(tmp_path / "l").records()
    got_state = [(ep, vals.tolist()) for sid, ep, _, vals in recs if sid == state.stream_id]
    got_acc = [(ep, vals.tolist()) for sid, ep, _, vals in recs if sid == acc.stream_id]
    # 1.8 is in period 1 even where epoch_scale=1.0 would round it to tick 2.
    assert got_state == [
        (0.0, [0.0]), (1.0, [0.3]), (2.0, [1.8]), (3.0, [1.8]), (4.0, [3.6]), (5.0, [4.1])
    ]
    assert [ep for ep, _ in got_acc] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [v for _, v in got_acc] == [
        [pytest.approx(0.3)], [pytest.approx(4.3)], [], [pytest.approx(7.0)], [4.1]
    ]


def test_boundaries_are_robust_to_representation_error(tmp_path: Path) -> None:
    """0.3 / 0.1 == 2.9999999999999996 in float64; 0.3 is still on boundary 3 of period 0.1."""
    with DataLogger(tmp_path / "l") as dl:
        acc = dl.register_periodic_stream(
            {"m": "a"}, epoch_scale=1e-3, value_scale=None, periodicity=0.1, kind="accumulator"
        )
        state = dl.register_periodic_stream(
            {"m": "s"}, epoch_scale=1e-3, value_scale=None, periodicity=0.1, kind="state"
        )
        acc.record(0.3, [1], [1.0])
        state.record(0.0, [1], [0.0])
        state.record(0.3, [1], [3.0])  # on boundary 3: the state there is this one
        t = 0.0
        for _ in range(7):
            t += 0.1  # 0.7000000000000001 after seven steps
        acc.record(t, [2], [1.0])
        acc.close(0.8)
        state.close(0.4)
    recs = decode_native(tmp_path / "l").records()
    # Epochs as ticks of 1e-3: boundary k is tick 100 * k exactly.
    got_acc = [(round(ep * 1e3), idx.tolist()) for sid, ep, idx, _ in recs if sid == acc.stream_id]
    assert got_acc == [
        (0, []), (100, []), (200, []), (300, [1]), (400, []), (500, []), (600, []), (700, [2])
    ]
    got_state = [(round(ep * 1e3), v.tolist()) for sid, ep, _, v in recs if sid == state.stream_id]
    assert got_state == [(0, [0.0]), (100, [0.0]), (200, [0.0]), (300, [3.0]), (400, [3.0])]


def test_epochs_just_off_a_boundary_stay_off_it(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        acc = dl.register_periodic_stream(
            {"m": "a"}, epoch_scale=1e-6, value_scale=None, periodicity=1.0, kind="accumulator"
        )
        acc.record(0.999999, [1], [1.0])  # a microsecond before boundary 1: period 0
        acc.record(1.0, [2], [1.0])
        acc.close(2.0)
    recs = decode_native(tmp_path / "l").records()
    assert [(ep, idx.tolist()) for _, ep, idx, _ in recs] == [(0.0, [1]), (1.0, [2])]


def test_periodicity_must_be_a_whole_number_of_ticks(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        with pytest.raises(InvalidStreamError, match="not a whole number of epoch_scale ticks"):
            dl.register_periodic_stream({"m": "s"}, epoch_scale=0.1, value_scale=None,
                                        periodicity=0.25)
        assert dl.streams == {}  # refused before anything was registered
        ps = dl.register_periodic_stream({"m": "s"}, epoch_scale=0.001, value_scale=None,
                                         periodicity=0.7)  # 700.0000000000001 ticks: fine
        # A PeriodicStream made by hand on a plain stream is checked natively the same way.
        plain = dl.register_stream({"m": "p"}, epoch_scale=0.1, value_scale=None)
        with pytest.raises(InvalidRecordError, match=r"stream 1 \(m=p\): periodicity 0.25"):
            PeriodicStream(dl, plain, periodicity=0.25)
        ps.record(0.7, [1], [1.0])
        ps.close(1.4)
    assert [round(r[0] * 1e3) for r in _records(tmp_path / "l")] == [700, 1400]


def test_state_repeats_last_vector_at_every_boundary(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream(
            {"m": "stock"}, epoch_scale=1e-3, value_scale=None, periodicity=1.0, kind="state"
        )
        ps.record(0.5, [1], [10.0])
        ps.record(0.7, [1, 2], [11.0, 5.0])  # replaces the state of 0.5
        ps.record(3.0, [2], [7.0])  # exactly on a boundary: counts for boundary 3
        ps.close(5.0)
    assert _records(tmp_path / "l") == [
        (1.0, [1, 2], [11.0, 5.0]),
        (2.0, [1, 2], [11.0, 5.0]),
        (3.0, [2], [7.0]),
        (4.0, [2], [7.0]),
        (5.0, [2], [7.0]),
    ]


def test_state_emits_nothing_before_first_update(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream({"m": "stock"}, value_scale=None, periodicity=2.0)
        ps.record(7.0, [1], [1.0])
        ps.close(9.0)
    assert [r[0] for r in _records(tmp_path / "l")] == [8.0]


def test_accumulator_sums_within_periods_and_emits_empty_periods(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream(
            {"m": "demand"}, epoch_scale=1e-3, value_scale=0.5, periodicity=1.0, kind="accumulator"
        )
        ps.record(1.2, [3], [1.0])
        ps.record(1.9, [3, 4], [2.0, 0.5])
        ps.record(3.0, [4], [1.0])  # period 3 starts at 3.0
        ps.record(3.5, [4], [-1.0])  # cancels to 0, the entry stays
        ps.close(5.0)  # periods 3 and 4 end at or before 5.0
    assert _records(tmp_path / "l") == [
        (0.0, [], []),
        (1.0, [3, 4], [3.0, 0.5]),
        (2.0, [], []),
        (3.0, [4], [0.0]),
        (4.0, [], []),
    ]


def test_accumulator_close_emits_only_complete_periods(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream(
            {"m": "d"}, value_scale=None, periodicity=1.0, kind="accumulator"
        )
        ps.record(0.5, [1], [1.0])
        ps.record(1.5, [1], [2.0])
        ps.close(1.99)  # period 1 is not complete
    assert _records(tmp_path / "l") == [(0.0, [1], [1.0])]


def test_boundaries_do_not_drift(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream(
            {"m": "s"}, epoch_scale=1e-3, value_scale=None, periodicity=0.1
        )
        ps.record(0.0, [1], [1.0])
        ps.close(1000.0)
    epochs = [r[0] for r in _records(tmp_path / "l")]
    assert len(epochs) == 10001
    assert epochs[-1] == 1000.0 and epochs[3] == 0.3  # integer ticks, no float accumulation


def test_vectors_are_copied(tmp_path: Path) -> None:
    idx, vals = np.array([1, 2]), np.array([1.0, 2.0])
    with DataLogger(tmp_path / "l") as dl:
        st = dl.register_periodic_stream({"m": "s"}, value_scale=None, periodicity=1.0)
        acc = dl.register_periodic_stream(
            {"m": "a"}, value_scale=None, periodicity=1.0, kind="accumulator"
        )
        st.record(0.0, idx, vals)
        acc.record(0.0, idx, vals)
        idx[:] = [8, 9]
        vals[:] = -1
        st.close(1.0)
        acc.close(1.0)
    got = decode_native(tmp_path / "l").records()
    assert all(r[2].tolist() == [1, 2] and r[3].tolist() == [1.0, 2.0] for r in got)


def test_record_vector_and_errors(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream({"entity": "A"}, value_scale=0.01, periodicity=1.0)
        ps.record_vector(0.0, Vector(np.array([4], dtype=np.uint32), np.array([2.0])))
        with pytest.raises(InvalidRecordError, match=r"stream 0 \(entity=A\): epoch .* earlier"):
            ps.record(-1.0, [1], [1.0])
        ps.record(0.25, [1], [1.0])
        with pytest.raises(InvalidRecordError, match="earlier"):
            ps.record(0.2, [1], [1.0])  # same tick (epoch_scale 1.0) but earlier: refused
        with pytest.raises(InvalidRecordError, match="more than once"):
            ps.record(1.0, [1, 1], [1.0, 2.0])
        with pytest.raises(InvalidRecordError, match="not finite"):
            ps.record(1.0, [1], [np.nan])
        ps.close(2.0)
        ps.close(3.0)  # idempotent: nothing more
        with pytest.raises(LoggerClosedError):
            ps.record(4.0, [1], [1.0])
    assert _records(tmp_path / "l") == [(0.0, [4], [2.0]), (1.0, [1], [1.0]), (2.0, [1], [1.0])]


def test_periodic_and_plain_streams_share_a_logger_from_threads(tmp_path: Path) -> None:
    import threading

    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream(
            {"m": "acc"}, value_scale=None, periodicity=10.0, kind="accumulator"
        )
        plain = dl.register_stream({"m": "plain"}, value_scale=None)

        def work(i: int) -> None:
            for k in range(1000):
                ps.record(5.0, [i], [1.0])  # epochs must not decrease: all threads use one
                dl.record(plain, k, [i], [1.0])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ps.close(10.0)
    recs = decode_native(tmp_path / "l").records()
    acc = [r for r in recs if r[0] == ps.stream_id]
    assert (
        len(acc) == 1 and acc[0][2].tolist() == [0, 1, 2, 3] and acc[0][3].tolist() == [1000.0] * 4
    )


def test_periodic_and_vectors_do_not_import_the_logger() -> None:
    """logger imports periodic; periodic must not import logger back (TYPE_CHECKING included)."""
    import ast

    import disco_data_logger

    package = Path(disco_data_logger.__file__).parent
    for name in ("periodic.py", "vectors.py"):
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
                imported.update(f"{node.module or ''}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        assert not {m for m in imported if m.lstrip(".").split(".")[0] == "logger"
                    or m.endswith(".logger") or ".logger." in m}, (name, imported)
