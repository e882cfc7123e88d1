"""Property tests: the native periodic aggregation equals a naive reference written here."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from disco_data_logger import DataLogger
from tests.common import decode_native, decode_python, round_half_away

updates_strategy = st.lists(
    st.tuples(
        st.integers(0, 30),  # epoch step in ticks of 1/4 period... scaled below
        st.dictionaries(st.integers(0, 20), st.floats(-1e3, 1e3, allow_nan=False), max_size=5),
    ),
    min_size=0,
    max_size=25,
)


def _naive_state(updates, final_tick, period):
    if not updates:
        return []
    first, last = updates[0][0], updates[-1][0]
    out = []
    k = -((-first) // period)  # ceil
    while k * period < last or k * period <= final_tick:
        b = k * period
        state = [vec for t, vec in updates if t <= b][-1]
        out.append((b, state))
        k += 1
    return out


def _naive_accumulator(updates, final_tick, period):
    sums: dict[int, dict[int, float]] = {}
    for t, vec in updates:
        acc = sums.setdefault(t // period, {})
        for i, v in vec.items():
            acc[i] = acc[i] + v if i in acc else v
    start = min(0, updates[0][0] // period) if updates else 0
    end = max(updates[-1][0] // period if updates else 0, final_tick // period)
    return [(k * period, sums.get(k, {})) for k in range(start, end)]


@given(
    kind=st.sampled_from(["state", "accumulator"]),
    epoch_scale=st.sampled_from([1e-3, 0.25, 1.0]),
    period_ticks=st.integers(1, 12),
    start_tick=st.integers(-40, 40),
    steps=updates_strategy,
    final_extra=st.integers(-10, 40),
    exact=st.booleans(),
)
def test_periodic_matches_naive_reference(
    kind, epoch_scale, period_ticks, start_tick, steps, final_extra, exact
) -> None:
    value_scale = None if exact else 0.01
    updates, tick = [], start_tick
    for step, vec in steps:
        tick += step
        updates.append((tick, dict(sorted(vec.items()))))
    final_tick = (updates[-1][0] if updates else start_tick) + final_extra
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l"
        with DataLogger(path) as dl:
            ps = dl.register_periodic_stream(
                {"m": "p"},
                epoch_scale=epoch_scale,
                value_scale=value_scale,
                periodicity=period_ticks * epoch_scale,
                kind=kind,
            )
            for t, vec in updates:
                ps.record(t * epoch_scale, list(vec.keys()), list(vec.values()))
            ps.close(final_tick * epoch_scale)
        naive = (_naive_state if kind == "state" else _naive_accumulator)(
            updates, final_tick, period_ticks
        )
        for decode in (decode_native, decode_python):
            got = decode(path).records()
            assert len(got) == len(naive)
            for (b, vec), (_sid, ep, idx, vals) in zip(naive, got, strict=True):
                assert ep == b * epoch_scale
                assert idx.tolist() == sorted(vec)
                want = [vec[i] for i in sorted(vec)]
                if not exact:
                    want = [float(round_half_away(v / 0.01)) * 0.01 for v in want]
                assert [math.copysign(1, v) * abs(v) for v in vals.tolist()] == want
