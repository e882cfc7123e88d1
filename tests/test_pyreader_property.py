"""Property: for random records written by the real DataLogger, the pure-Python reader and the
native reader agree record for record, and both give back exactly what FORMAT.md promises.

Expected values are computed here, independently of either reader: ``round_half_away(v/scale) *
scale`` for quantised streams, the same float64 bits for exact ones, indices sorted with their
values following them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco_data_logger import DataLogger
from tests.common import (
    assert_same_records,
    by_stream,
    decode_native,
    decode_python,
    quantise,
)

EPOCH_SCALES = [1e-6, 1e-3, 0.25, 7.0]
VALUE_SCALES = [None, None, 1e-4, 1e-2, 1.0, 3.7]  # None: exact values

MAX_INDEX = 2**63 - 1


@st.composite
def streams(draw):
    n = draw(st.integers(1, 4))
    return [(draw(st.sampled_from(EPOCH_SCALES)), draw(st.sampled_from(VALUE_SCALES)))
            for _ in range(n)]


def value_strategy(value_scale):
    if value_scale is None:  # exact: every float64, NaN payloads, -0.0 and subnormals included
        return st.floats(allow_nan=True, allow_infinity=True, width=64)
    bound = value_scale * 2.0**50
    return st.floats(-bound, bound, allow_nan=False)


@st.composite
def scenario(draw):
    specs = draw(streams())
    records = []
    last_indices: dict[int, list[int]] = {}
    for _ in range(draw(st.integers(0, 60))):
        k = draw(st.integers(0, len(specs) - 1))
        epoch_scale, value_scale = specs[k]
        epoch = draw(st.floats(-1e6, 1e6, allow_nan=False))
        if k in last_indices and draw(st.booleans()):
            indices = list(last_indices[k])  # repeated entities: the same_indices path
        else:
            small = st.integers(0, 300)
            big = st.integers(0, MAX_INDEX)
            indices = draw(st.lists(st.one_of(small, small, big), max_size=12, unique=True))
        last_indices[k] = indices
        values = [draw(value_strategy(value_scale)) for _ in indices]
        flush = draw(st.integers(0, 9)) == 0
        records.append((k, epoch, indices, values, flush))
    block_bytes = draw(st.sampled_from([256, 4096, 1 << 20]))
    return specs, records, block_bytes


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario())
def test_both_readers_agree_with_what_was_recorded(case):
    specs, records, block_bytes = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        with DataLogger(path, block_bytes=block_bytes, rotate_bytes=8192) as dl:
            sids = [dl.register_stream({"k": k}, epoch_scale=es, value_scale=vs)
                    for k, (es, vs) in enumerate(specs)]
            for k, epoch, indices, values, flush in records:
                dl.record(sids[k], epoch, np.array(indices, dtype=np.int64),
                          np.array(values, dtype=np.float64))
                if flush:
                    dl.flush()
        py, native = decode_python(path), decode_native(path)
        assert py.skipped == [] and native.skipped == []
        assert_same_records(py, native)

        assert len(py) == len(records)
        # each stream's records in the order they were recorded (FORMAT.md section 7)
        got_by = by_stream(py.records())
        want_by = by_stream([(sids[r[0]], r) for r in records])
        assert got_by.keys() == want_by.keys()
        pairs = [(want[1], got) for sid in want_by
                 for want, got in zip(want_by[sid], got_by[sid], strict=True)]
        for (k, epoch, indices, values, _), got in pairs:
            epoch_scale, value_scale = specs[k]
            sid, gepoch, gidx, gvals = got
            assert sid == sids[k]
            assert gepoch == quantise(epoch, epoch_scale)
            order = np.argsort(np.array(indices, dtype=np.int64), kind="stable")
            assert gidx.tolist() == [indices[i] for i in order]
            raw = np.array(values, dtype=np.float64)[order]
            want = raw if value_scale is None else np.array(
                [quantise(v, value_scale) for v in raw], dtype=np.float64)
            np.testing.assert_array_equal(gvals.view(np.uint64), want.view(np.uint64))
