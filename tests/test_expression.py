"""disco_data_logger.sharding.expression: arithmetic on metric names, nothing else."""

from __future__ import annotations

import math

import numpy as np
import pytest

from disco_data_logger.sharding.expression import Expression, ExpressionError, check_name

VALUES = {"a": np.array([1.0, 2.0, 0.0]), "b": np.array([4.0, 0.0, 0.0]),
          "fill_rate": np.array([0.5, 0.25, 1.0])}


@pytest.mark.parametrize(("text", "expected"), [
    ("a + b", [5.0, 2.0, 0.0]),
    ("1 - a / 4", [0.75, 0.5, 1.0]),
    ("-a ** 2", [-1.0, -4.0, -0.0]),
    ("(a + 1) * (b - 1) / 2", [3.0, -1.5, -0.5]),
    ("+fill_rate * 100", [50.0, 25.0, 100.0]),
    ("2 ** 3 ** 2", [512.0, 512.0, 512.0]),
    ("1e3 * a", [1000.0, 2000.0, 0.0]),
])
def test_arithmetic(text: str, expected: list[float]) -> None:
    got = Expression(text).evaluate(VALUES)
    np.testing.assert_allclose(np.broadcast_to(got, (3,)), expected)


def test_names_in_first_use_order() -> None:
    assert Expression("b / a + b * fill_rate").names == ("b", "a", "fill_rate")


def test_division_by_zero_gives_inf_or_nan_not_an_error() -> None:
    got = Expression("a / b").evaluate(VALUES)
    assert got[0] == 0.25 and math.isinf(got[1]) and math.isnan(got[2])
    assert math.isinf(float(Expression("10 ** 10 ** 10").evaluate({})))


@pytest.mark.parametrize(("text", "message"), [
    ("__import__('os').system('true')", "function call"),
    ("a.real", "attribute"),
    ("a[0]", "index"),
    ("a < b", "comparison"),
    ("a and b", "boolean operator"),
    ("lambda: 1", "lambda"),
    ("a if b else 1", "conditional"),
    ("[a, b]", "List"),
    ("a // b", "FloorDiv"),
    ("a % b", "Mod"),
    ("~a", "Invert"),
    ("'text'", "only numbers"),
    ("True", "only numbers"),
    ("1j", "only numbers"),
    ("a = 1", "not valid arithmetic"),
    ("(a := 1)", "NamedExpr"),
    ("f'{a}'", "JoinedStr"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("a +", "not valid arithmetic"),
    ("(" * 300 + "a" + ")" * 300, "nested too deeply|not valid arithmetic"),
    ("a" + " + a" * 400, "characters long"),
    ("9" * 400, "too large"),
])
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        Expression(text)


def test_deep_but_short_nesting_is_refused() -> None:
    with pytest.raises(ExpressionError, match="nested too deeply"):
        Expression("-" * 200 + "a")


def test_unknown_name_at_evaluation() -> None:
    with pytest.raises(KeyError):
        Expression("a + zz").evaluate(VALUES)


@pytest.mark.parametrize(("name", "ok"), [("L", True), ("fill_rate", True), ("_x2", True),
                                          ("2x", False), ("a-b", False), ("", False),
                                          ("for", False), ("lambda", False), ("é", False)])
def test_names(name: str, ok: bool) -> None:
    assert (check_name(name) is None) is ok
