"""Label values as Arrow columns: one rule, used wherever labels become columns.

Labels are JSON values (what a stream was registered with). Turning the values of one label key
over many streams into one Arrow column follows this rule, decided by the kinds of the values
present (missing labels and ``None`` are nulls and do not count):

=====================================  =========================================================
values present                         column
=====================================  =========================================================
none (every value missing)             ``null``
only booleans                          ``bool`` (booleans stay booleans)
only integers, all within int64        ``int64``
integers and floats, integers within   ``float64``
:math:`\\pm 2^{53}` (exact as floats)
only strings                           ``string``
anything else (mixed kinds, lists,     ``string`` holding **text**: a string as it is, any other
objects, huge integers)                value as its compact JSON text (``true``, ``3``, ``2.5``,
                                       ``[1,2]``, ``{"a":1}``)
=====================================  =========================================================

Text is how selectors read a value too (:mod:`disco_data_logger.selector`): ``true`` for a boolean,
``3`` for an integer. The rule depends only on the *set* of kinds present, so columns built from
parts of the values (for example one index part per merge) and combined with :func:`unify` are
the same as the column built from all values at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["label_array", "label_arrays", "label_columns", "unify", "text", "column_kinds",
           "column_type", "convert"]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT_EXACT = 1 << 53

_BOOL, _INT, _FLOAT, _STR, _JSON, _BIG = "bool", "int", "float", "str", "json", "big"


def text(value: Any) -> str:
    """How a label value reads as text: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT if _INT64_MIN <= value <= _INT64_MAX else _BIG
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STR
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        return _kind(value.item())  # numpy scalars
    return _JSON


def column_type(kinds: set[str], max_abs_int: int) -> pa.DataType | None:
    """The Arrow type of a column whose values have these kinds (see :func:`column_kinds`);
    None means text."""
    if not kinds:
        return pa.null()
    if kinds == {_BOOL}:
        return pa.bool_()
    if kinds == {_INT}:
        return pa.int64()
    if kinds <= {_INT, _FLOAT} and max_abs_int <= _FLOAT_EXACT:
        return pa.float64()
    if kinds == {_STR}:
        return pa.string()
    return None


def label_arrays(*value_lists: Sequence[Any]) -> list[pa.Array]:
    """One column type decided over all ``value_lists`` together; one array per list."""
    kinds: set[str] = set()
    max_abs_int = 0
    for values in value_lists:
        for v in values:
            if v is None:
                continue
            k = _kind(v)
            kinds.add(k)
            if k == _INT:
                max_abs_int = max(max_abs_int, abs(int(v)))
    typ = column_type(kinds, max_abs_int)
    if typ is None:
        return [pa.array([None if v is None else text(v) for v in values], type=pa.string())
                for values in value_lists]
    if typ == pa.float64():
        return [pa.array([None if v is None else float(v) for v in values], type=typ)
                for values in value_lists]
    return [pa.array(list(values), type=typ) for values in value_lists]


def label_array(values: Sequence[Any]) -> pa.Array:
    """The column of one label key over many streams (``None`` where a stream lacks it)."""
    return label_arrays(values)[0]


def label_columns(labels: Iterable[Mapping[str, Any]], *,
                  skip: Iterable[str] = ()) -> dict[str, pa.Array]:
    """Columns of every label key of ``labels`` (one mapping per stream), in first-seen order.

    Keys in ``skip`` (names the caller's table already uses for other columns) are left out.
    """
    rows = list(labels)
    skipped = set(skip)
    keys: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in skipped:
                keys.setdefault(key)
    return {key: label_array([row.get(key) for row in rows]) for key in keys}


def column_kinds(array: pa.Array | pa.ChunkedArray) -> tuple[set[str], int]:
    """The kinds of the values of a label column, and its largest integer magnitude."""
    typ = array.type
    if pa.types.is_null(typ) or array.null_count == len(array):
        return set(), 0
    if pa.types.is_boolean(typ):
        return {_BOOL}, 0
    if pa.types.is_integer(typ):
        biggest = pc.max(pc.abs_checked(pc.cast(array, pa.float64()))).as_py() or 0
        return {_INT}, int(biggest)
    if pa.types.is_floating(typ):
        return {_FLOAT}, 0
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return {_STR}, 0
    if pa.types.is_dictionary(typ):
        return column_kinds(pc.cast(array, typ.value_type))
    return {_JSON}, 0


def _as_text(array: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    typ = array.type
    if pa.types.is_dictionary(typ):
        array = pc.cast(array, typ.value_type)
        typ = array.type
    if pa.types.is_string(typ):
        return array
    if pa.types.is_null(typ):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_boolean(typ) or pa.types.is_integer(typ):
        return pc.cast(array, pa.string())  # "true"/"false" and decimal digits: their JSON text
    # Floats: Arrow prints 1.0 as "1", JSON as "1.0"; convert the distinct values in Python.
    encoded = pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    words = pa.array([text(v) for v in encoded.dictionary.to_pylist()], type=pa.string())
    return words.take(encoded.indices)


def unify(arrays: Sequence[pa.Array | pa.ChunkedArray]) -> list[pa.Array | pa.ChunkedArray]:
    """Columns of one label key from several tables, converted to the type the rule gives for
    all their values together (so they can be concatenated)."""
    kinds: set[str] = set()
    max_abs_int = 0
    for array in arrays:
        k, m = column_kinds(array)
        kinds |= k
        max_abs_int = max(max_abs_int, m)
    typ = column_type(kinds, max_abs_int)
    return [convert(a, typ) for a in arrays]


def convert(array: pa.Array | pa.ChunkedArray,
            typ: pa.DataType | None) -> pa.Array | pa.ChunkedArray:
    """A label column as type ``typ`` (from :func:`column_type`; None: text)."""
    if typ is None:
        return _as_text(array)
    if pa.types.is_dictionary(array.type):
        array = pc.cast(array, array.type.value_type)
    if pa.types.is_null(typ):
        return pa.nulls(len(array))
    return array if array.type == typ else pc.cast(array, typ)
