"""Properties of both readers against values computed here, independently of either reader:
``round_half_away(v/scale) * scale`` for quantised streams, the same float64 bits for exact ones,
indices sorted with their values following them.

1. Random records written by the real DataLogger: the two readers agree record for record, and
   each stream's records come back as recorded, in the order recorded (FORMAT.md section 7).
2. Random format-2 segments built byte by byte (tests/format_v2.py), with every encoding choice a
   writer has (same-index records or not, compressed registrations or not, blocks of any mix of
   streams, strings interned across frames): both readers return exactly the records in the order
   of FORMAT.md section 7.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import format_v2 as v2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco_data_logger import DataLogger, pyreader
from tests.common import assert_same_records, decode_native, decode_python, quantise

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
        # Within a block the records come stream by stream (FORMAT.md 7): each stream's records
        # come in the order recorded.
        for k, sid in enumerate(sids):
            mine = [r for r in records if r[0] == k]
            got = [r for r in py.records() if r[0] == sid]
            assert len(got) == len(mine)
            for (_, epoch, indices, values, _), (_, gepoch, gidx, gvals) in zip(mine, got,
                                                                                 strict=True):
                check_record(specs[k], epoch, indices, values, gepoch, gidx, gvals)


def check_record(spec, epoch, indices, values, gepoch, gidx, gvals) -> None:
    epoch_scale, value_scale = spec
    assert gepoch == quantise(epoch, epoch_scale)
    order = np.argsort(np.array(indices, dtype=np.int64), kind="stable")
    assert gidx.tolist() == [indices[i] for i in order]
    raw = np.array(values, dtype=np.float64)[order]
    want = raw if value_scale is None else np.array(
        [quantise(v, value_scale) for v in raw], dtype=np.float64)
    np.testing.assert_array_equal(gvals.view(np.uint64), want.view(np.uint64))


@st.composite
def built_segment(draw):
    """Streams (with labels), blocks of records and the encoding choices of a format-2 writer."""
    specs = draw(streams())
    ids = draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(specs), max_size=len(specs),
                        unique=True))
    labels = st.dictionaries(st.text(min_size=1, max_size=5),
                             st.one_of(st.none(), st.booleans(), st.integers(-9, 2**40),
                                       st.text(max_size=6), st.lists(st.integers(0, 3))),
                             max_size=3)
    streams_ = {sid: v2.Stream(sid, es, vs, draw(labels),
                               periodicity=draw(st.sampled_from([None, 1.0, 0.25])),
                               kind=draw(st.sampled_from(["state", "accumulator"])))
                for sid, (es, vs) in zip(ids, specs, strict=True)}
    _, records, _ = draw(scenario_for(specs))
    blocks, current = [], []
    for k, epoch, indices, values, flush in records:
        idx = sorted(indices)
        vals = [values[indices.index(i)] for i in idx]
        current.append((ids[k], epoch, idx, vals))
        if flush:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    frames = draw(st.integers(1, max(1, len(streams_))))  # registrations frames, strings shared
    return streams_, blocks, frames, draw(st.booleans()), draw(st.booleans())


def scenario_for(specs):
    @st.composite
    def inner(draw):
        records = []
        last: dict[int, list[int]] = {}
        for _ in range(draw(st.integers(0, 40))):
            k = draw(st.integers(0, len(specs) - 1))
            epoch = draw(st.floats(-1e6, 1e6, allow_nan=False))
            if k in last and draw(st.booleans()):
                indices = list(last[k])
            else:
                small, big = st.integers(0, 300), st.integers(0, MAX_INDEX)
                indices = draw(st.lists(st.one_of(small, small, big), max_size=8, unique=True))
            last[k] = indices
            values = [draw(value_strategy(specs[k][1])) for _ in indices]
            records.append((k, epoch, indices, values, draw(st.integers(0, 5)) == 0))
        return specs, records, 0
    return inner()


@pytest.mark.parametrize("decode", [decode_python, decode_native], ids=["python", "native"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=built_segment())
def test_built_format_2_segments_decode_to_what_was_encoded(decode, case):
    streams_, blocks, frames, same_indices, compress = case
    data = bytearray(v2.segment_header())
    strings = v2.Strings()
    order = sorted(streams_)
    for k in range(frames):  # the registrations spread over several frames
        part = [streams_[sid] for sid in order[k::frames]]
        if part:
            data += v2.registrations(part, strings, compress=compress)
    for seq, block in enumerate(blocks):
        data += v2.block(v2.block_payload(streams_, block, same_indices=same_indices), seq=seq)
    data += v2.footer(len(blocks), sum(map(len, blocks)))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "00000.seg.zst").write_bytes(bytes(data))
        got = decode(Path(tmp))
        if decode is decode_python:
            regs = pyreader.read_directory(tmp).registrations
            assert regs == {sid: s.metadata() for sid, s in streams_.items()}
    assert got.skipped == []
    want = [r for block in blocks for r in v2.spec_order(block)]
    assert len(got) == len(want)
    for (sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals) in zip(want, got.records(),
                                                                     strict=True):
        s = streams_[sid]
        assert gsid == sid
        check_record((s.epoch_scale, s.value_scale), epoch, idx, vals, gepoch, gidx, gvals)


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20,
).map(json.dumps)


@settings(max_examples=500, deadline=None)
@given(JSON_TEXT, st.integers(0, 300),
       st.sampled_from(["", "x", ",", "]", "}", "[", "{", ":", " ", '"', "\x01", "0", "-", "\\"]))
def test_the_iterative_json_check_accepts_what_json_loads_accepts(text, at, edit):
    """The reader checks JSON nested deeper than ``json.loads`` can recurse with its own
    grammar (FORMAT.md 3.3); on what ``json.loads`` can read, the two agree."""
    from disco_data_logger.pyreader import _is_json

    for candidate in (text, text[:at] + edit + text[at:], text[:at] + text[at + 1:]):
        try:
            json.loads(candidate)
            accepted = True
        except ValueError:
            accepted = False
        assert _is_json(candidate) == accepted, candidate
