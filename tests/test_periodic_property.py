"""Property tests: the native periodic aggregation equals a naive exact-arithmetic reference.

The reference works on :class:`fractions.Fraction`: the decimal numbers a model means (``0.3``,
``0.1``), not their float64 roundings. An update at epoch ``e`` belongs to period
``floor(e / P)``; the state at boundary ``k`` is the last update with ``e <= k * P``. The logger
is fed the float64 nearest to each decimal, so these tests check that the boundary tolerance of
``disco_data_logger.periodic`` absorbs exactly the representation error and nothing a model means.
"""

from __future__ import annotations

import math
import tempfile
from fractions import Fraction
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from disco_data_logger import DataLogger, InvalidStreamError, _core
from disco_data_logger.periodic import check_periodicity
from tests.common import decode_native, decode_python

Vec = dict[int, int]


def _decimal(digits: st.SearchStrategy[int], places: int) -> st.SearchStrategy[Fraction]:
    return st.builds(lambda m, d: Fraction(m, 10**d), digits, st.integers(0, places))


def _floor(x: Fraction) -> int:
    return math.floor(x)


def _ceil(x: Fraction) -> int:
    return math.ceil(x)


def _naive_state(
    updates: list[tuple[Fraction, Vec]], final: Fraction, period: Fraction
) -> list[tuple[int, Vec]]:
    if not updates:
        return []
    first = _ceil(updates[0][0] / period)
    # Boundaries strictly before the last update were emitted when it arrived; close adds the
    # boundaries at or before final.
    last = max(_ceil(updates[-1][0] / period) - 1, _floor(final / period))
    out = []
    for k in range(first, last + 1):
        out.append((k, [vec for e, vec in updates if e <= k * period][-1]))
    return out


def _naive_accumulator(
    updates: list[tuple[Fraction, Vec]], final: Fraction, period: Fraction
) -> list[tuple[int, Vec]]:
    sums: dict[int, Vec] = {}
    for e, vec in updates:
        acc = sums.setdefault(_floor(e / period), {})
        for i, v in vec.items():
            acc[i] = acc.get(i, 0) + v
    start = min(0, _floor(updates[0][0] / period)) if updates else 0
    end = max(_floor(updates[-1][0] / period) if updates else 0, _floor(final / period))
    return [(k, sums.get(k, {})) for k in range(start, end)]


def _well_conditioned(x: Fraction, period: Fraction) -> bool:
    """False when ``x`` is so close to a boundary without being on it that float64 cannot tell.

    The logger's tolerance is 1e-12 relative; decimal inputs farther than 1e-9 from a boundary
    (relative) are ones float64 distinguishes with a wide margin.
    """
    q = x / period
    n = round(q)
    return q == n or abs(q - n) > Fraction(1, 10**9) * max(1, abs(n))


def _run(kind, period, ticks_per_period, updates, final, value_scale=None):
    epoch_scale = float(period / ticks_per_period)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l"
        with DataLogger(path) as dl:
            ps = dl.register_periodic_stream(
                {"m": "p"},
                epoch_scale=epoch_scale,
                value_scale=value_scale,
                periodicity=float(period),
                kind=kind,
            )
            for e, vec in updates:
                ps.record(float(e), list(vec), [float(v) for v in vec.values()])
            ps.close(float(final))
        return epoch_scale, [decode(path).records() for decode in (decode_native, decode_python)]


def _check(got, naive, period, ticks_per_period, epoch_scale):
    assert len(got) == len(naive)
    for (k, vec), (_sid, ep, idx, vals) in zip(naive, got, strict=True):
        # Boundary k is the integer tick k * ticks_per_period, i.e. an exact multiple of P.
        assert round(ep / epoch_scale) == k * ticks_per_period
        assert math.isclose(ep, float(k * period), rel_tol=1e-12, abs_tol=1e-300)
        assert idx.tolist() == sorted(vec)
        assert vals.tolist() == [float(vec[i]) for i in sorted(vec)]


@given(
    kind=st.sampled_from(["state", "accumulator"]),
    period=_decimal(st.integers(1, 1000), 3),
    ticks_per_period=st.sampled_from([1, 2, 4, 5, 10, 1000]),
    start=_decimal(st.integers(-3000, 3000), 3),
    steps=st.lists(
        st.tuples(
            _decimal(st.integers(0, 2000), 3),
            st.dictionaries(st.integers(0, 20), st.integers(-1000, 1000), max_size=4),
        ),
        max_size=20,
    ),
    final_offset=_decimal(st.integers(-500, 4000), 3),
)
def test_periodic_matches_exact_reference(
    kind, period, ticks_per_period, start, steps, final_offset
) -> None:
    updates, e = [], start
    for step, vec in steps:
        e += step
        updates.append((e, vec))
    final = (updates[-1][0] if updates else start) + final_offset
    assume(all(_well_conditioned(x, period) for x, _ in updates))
    assume(_well_conditioned(final, period))
    # Keep the number of emitted periods small.
    assume(abs(final / period) < 400 and all(abs(x / period) < 400 for x, _ in updates))
    epoch_scale, decoded = _run(kind, period, ticks_per_period, updates, final)
    naive = (_naive_state if kind == "state" else _naive_accumulator)(updates, final, period)
    for got in decoded:
        _check(got, naive, period, ticks_per_period, epoch_scale)


@given(
    kind=st.sampled_from(["state", "accumulator"]),
    dt=_decimal(st.integers(1, 99), 2),
    per_period=st.integers(1, 12),
    n=st.integers(1, 200),
)
def test_epochs_computed_as_step_times_dt_land_on_the_exact_boundaries(
    kind, dt, per_period, n
) -> None:
    """A time-stepped model computes ``t = k * dt`` in float64; the reference uses exact k * dt."""
    period = dt * per_period
    updates = [(k * dt, {0: 1}) for k in range(n)]
    final = n * dt
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l"
        with DataLogger(path) as dl:
            ps = dl.register_periodic_stream(
                {"m": "p"}, epoch_scale=float(dt), value_scale=None,
                periodicity=float(dt) * per_period, kind=kind,
            )
            for k in range(n):
                ps.record(k * float(dt), [0], [1.0])
            ps.close(n * float(dt))
        got = decode_native(path).records()
    naive = (_naive_state if kind == "state" else _naive_accumulator)(updates, final, period)
    _check(got, naive, period, per_period, float(dt))


@given(
    periodicity=st.floats(1e-6, 1e6, allow_nan=False),
    epoch_scale=st.one_of(
        st.floats(1e-6, 1e6, allow_nan=False),
        st.sampled_from([1e-3, 0.1, 0.25, 1.0]),
    ),
    multiple=st.one_of(st.none(), st.integers(1, 10_000)),
)
def test_python_and_native_periodicity_checks_agree(periodicity, epoch_scale, multiple) -> None:
    """The registration check (Python) and the native aggregator accept the same settings."""
    if multiple is not None:
        periodicity = multiple * epoch_scale
    try:
        check_periodicity("p", periodicity, epoch_scale)
        python_ok = True
    except InvalidStreamError:
        python_ok = False
    with tempfile.TemporaryDirectory() as tmp:
        with DataLogger(Path(tmp) / "l") as dl:
            sid = dl.register_stream({"m": "plain"}, epoch_scale=epoch_scale, value_scale=None)
            try:
                _core.PeriodicCore(dl._core, sid, periodicity, "state")
                native_ok = True
            except ValueError:
                native_ok = False
    assert python_ok == native_ok
    if multiple is not None:
        assert python_ok
