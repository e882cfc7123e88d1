"""Sparse vectors of the ecosystem as ``(indices, values)`` arrays, for ``record_vector``.

:func:`vector_parts` accepts

* ``sparse_array.Vector`` (disco-sparse-array): its ``indices`` and ``values``;
* ``graphblas.Vector`` (python-graphblas, what disco-data-logger 0.1.x took): ``to_coo()``;
* ``scipy.sparse`` arrays and matrices: a 1-D sparse array, or a 2-D one with exactly one row
  (the row's column indices). Duplicate entries are summed, as scipy defines their value.

None of those packages is imported here until an object of one of them is passed: the kind is
recognised by the top-level package of the object's class (or of a base class), and only then is
that package imported to check the type. Anything else is refused with a ``TypeError`` naming
what was passed. The arrays returned may be views of the vector's own buffers; the recording
functions copy them before returning, so mutating the vector afterwards changes nothing logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InvalidRecordError

__all__ = ["SUPPORTED", "vector_parts"]

SUPPORTED = "a sparse_array.Vector, a graphblas.Vector or a one-row scipy.sparse array/matrix"

Parts = tuple[np.ndarray, np.ndarray]


def _sparse_array_parts(vector: Any) -> Parts | None:
    from sparse_array import Vector

    if not isinstance(vector, Vector):
        return None
    return vector.indices, vector.values


def _graphblas_parts(vector: Any) -> Parts | None:
    import graphblas

    if not isinstance(vector, graphblas.Vector):
        return None
    indices, values = vector.to_coo()
    return indices, values


def _scipy_parts(vector: Any) -> Parts | None:
    import scipy.sparse

    if not scipy.sparse.issparse(vector):
        return None
    shape = vector.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
        raise InvalidRecordError(
            f"a {type(vector).__name__} of shape {shape} is not a vector: pass a 1-D sparse "
            "array or a matrix with one row (m[[i]] or m.getrow(i) for row i, m.T for a column)"
        )
    coo = vector.tocoo()
    if not coo.has_canonical_format:
        # Duplicate entries mean their sum; sum them on a copy, never on the caller's object.
        coo = coo.copy() if coo is vector else coo
        coo.sum_duplicates()
    coords = getattr(coo, "coords", None)  # scipy >= 1.13; older COO matrices have row/col
    indices = coords[-1] if coords is not None else coo.col
    return indices, coo.data


# Top-level package of a class -> its converter (None when the object is not of that kind).
_CONVERTERS: dict[str, Callable[[Any], Parts | None]] = {
    "sparse_array": _sparse_array_parts,
    "graphblas": _graphblas_parts,
    "scipy": _scipy_parts,
}


def vector_parts(vector: object) -> Parts:
    """``(indices, values)`` of a sparse vector of any supported kind (see the module doc)."""
    for cls in type(vector).__mro__:
        convert = _CONVERTERS.get(cls.__module__.partition(".")[0])
        if convert is not None:
            parts = convert(vector)
            if parts is not None:
                return np.asarray(parts[0]), np.asarray(parts[1])
    kind = type(vector)
    raise TypeError(
        f"record_vector expects {SUPPORTED}, not {kind.__module__}.{kind.__qualname__}; "
        "use record(stream, epoch, indices, values) for index and value arrays"
    )
