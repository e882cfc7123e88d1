"""record_vector with every kind of sparse vector (disco_data_logger/vectors.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import graphblas as gb
import numpy as np
import pytest
import scipy.sparse as sp
from sparse_array import Vector as SparseArrayVector

from disco_data_logger import DataLogger, InvalidRecordError
from disco_data_logger.vectors import vector_parts
from tests.common import decode_native, decode_python

IDX = [7, 2, 40]
VALS = [1.5, -2.0, 0.25]
SORTED = ([2, 7, 40], [-2.0, 1.5, 0.25])


def _kinds() -> dict[str, object]:
    return {
        "sparse_array": SparseArrayVector(np.array(SORTED[0], dtype=np.uint32),
                                          np.array(SORTED[1])),
        "graphblas": gb.Vector.from_coo(IDX, VALS, size=64),
        "scipy coo_array 1-D": sp.coo_array((np.array(VALS), (np.array(IDX),)), shape=(64,)),
        "scipy csr_array 1 row": sp.csr_array(
            (np.array(VALS), (np.zeros(3, dtype=int), np.array(IDX))), shape=(1, 64)),
        "scipy csr_matrix 1 row": sp.csr_matrix(
            (np.array(VALS), (np.zeros(3, dtype=int), np.array(IDX))), shape=(1, 64)),
        "scipy dok_array 1-D": sp.dok_array(
            sp.coo_array((np.array(VALS), (np.array(IDX),)), shape=(64,))),
        "scipy row of a matrix": sp.csr_array(
            (np.array([9.0, *VALS]), (np.array([0, 1, 1, 1]), np.array([3, *IDX]))),
            shape=(2, 64))[[1]],
    }


@pytest.mark.parametrize("kind", list(_kinds()))
def test_every_kind_records_the_same_vector(tmp_path: Path, kind: str) -> None:
    vec = _kinds()[kind]
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"v": kind}, value_scale=None)
        ps = dl.register_periodic_stream({"v": "acc"}, value_scale=None, kind="accumulator")
        dl.record_vector(sid, 0.5, vec)
        ps.record_vector(0.5, vec)
        ps.record_vector(0.7, vec)
        ps.close(1.0)
    for decode in (decode_native, decode_python):
        recs = decode(tmp_path / "l").records()
        assert [(s, e, i.tolist(), v.tolist()) for s, e, i, v in recs] == [
            (0, 0.5, SORTED[0], SORTED[1]),
            (1, 0.0, SORTED[0], [2 * v for v in SORTED[1]]),
        ]


def test_scipy_duplicates_are_summed_without_touching_the_callers_matrix() -> None:
    coo = sp.coo_array((np.array([1.0, 2.0, 4.0]), (np.array([0, 0, 0]), np.array([5, 1, 5]))),
                       shape=(1, 8))
    idx, vals = vector_parts(coo)
    assert idx.tolist() == [1, 5] and vals.tolist() == [2.0, 5.0]
    assert coo.nnz == 3 and not coo.has_canonical_format  # the caller's object is unchanged


def test_graphblas_explicit_zeros_and_empty_vectors_are_kept(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"v": "g"}, value_scale=None)
        dl.record_vector(sid, 0.0, gb.Vector.from_coo([3], [0.0], size=5))
        dl.record_vector(sid, 1.0, gb.Vector(float, size=5))
    recs = decode_native(tmp_path / "l").records()
    assert [(i.tolist(), v.tolist()) for _, _, i, v in recs] == [([3], [0.0]), ([], [])]


def test_mutating_the_vector_after_recording_changes_nothing(tmp_path: Path) -> None:
    g = gb.Vector.from_coo([1, 2], [1.0, 2.0], size=4)
    s = sp.coo_array((np.array([1.0, 2.0]), (np.array([1, 2]),)), shape=(4,))
    with DataLogger(tmp_path / "l") as dl:
        ps = dl.register_periodic_stream({"v": "s"}, value_scale=None)
        sid = dl.register_stream({"v": "p"}, value_scale=None)
        ps.record_vector(0.0, g)
        dl.record_vector(sid, 0.0, s)
        g[1] << 99.0
        s.data[:] = -1.0
        ps.close(1.0)
    recs = decode_native(tmp_path / "l").records()
    assert all(v.tolist() == [1.0, 2.0] for _, _, _, v in recs) and len(recs) == 3


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ([1.0, 2.0], "builtins.list"),
        (np.array([0.0, 1.0]), "numpy.ndarray"),
        (gb.Matrix.from_coo([0], [1], [1.0]), "graphblas.core.matrix.Matrix"),
        ({1: 2.0}, "builtins.dict"),
    ],
)
def test_other_objects_are_refused_naming_their_type(tmp_path: Path, value, named) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"v": "x"}, value_scale=None)
        ps = dl.register_periodic_stream({"v": "p"}, value_scale=None)
        with pytest.raises(TypeError, match=rf"not {named}; use record\("):
            dl.record_vector(sid, 0.0, value)
        with pytest.raises(TypeError, match=named):
            ps.record_vector(0.0, value)
        ps.close(0.0)
        assert dl.stream_stats()[sid][0] == 0


def test_a_matrix_with_several_rows_is_refused(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"v": "x"}, value_scale=None)
        with pytest.raises(InvalidRecordError, match=r"shape \(2, 3\) is not a vector"):
            dl.record_vector(sid, 0.0, sp.csr_array(np.ones((2, 3))))


def test_optional_packages_are_imported_only_when_passed(tmp_path: Path) -> None:
    code = f"""
import sys
import numpy as np
from sparse_array import Vector
from disco_data_logger import DataLogger
with DataLogger({str(tmp_path / 'l')!r}) as dl:
    sid = dl.register_stream({{"v": "x"}}, value_scale=None)
    dl.record_vector(sid, 0.0, Vector(np.array([1], dtype=np.uint32), np.array([1.0])))
    try:
        dl.record_vector(sid, 1.0, [1.0])
    except TypeError:
        pass
print(sorted(m for m in ("graphblas", "scipy", "tools") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
