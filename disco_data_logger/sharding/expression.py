"""Arithmetic on metric names: the ``expr:`` of a derived metric, parsed safely.

``"1 - shortage / demand"`` is parsed with :mod:`ast` and accepted only if every node is a number,
a name, a unary ``+``/``-`` or a binary ``+ - * / **`` (parentheses are just grouping). Nothing is
ever passed to ``eval``: :meth:`Expression.evaluate` walks the checked tree itself over numpy
arrays, one value per replication, so ``x / 0`` gives ``inf`` or NaN (a missing value), never an
exception halfway through a table.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Mapping

import numpy as np

__all__ = ["Expression", "ExpressionError", "NAME_RE", "check_name", "MAX_EXPRESSION_LENGTH"]

MAX_EXPRESSION_LENGTH = 1000
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_BINARY = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_UNARY = {ast.UAdd: np.positive, ast.USub: np.negative}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


class ExpressionError(ValueError):
    """An expression that is not arithmetic on names and numbers (the message says why)."""


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a metric name (an identifier, not a Python keyword), or None."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return "must be an identifier (letters, digits and _, not starting with a digit)"
    if keyword.iskeyword(name):
        return "must not be a Python keyword (it could not be used in an expression)"
    return None


class Expression:
    """A checked arithmetic expression over named per-replication values."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("is empty: write arithmetic on metric names, e.g. 'a / b'")
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ExpressionError(
                f"is {len(text)} characters long; at most {MAX_EXPRESSION_LENGTH} are allowed")
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"is not valid arithmetic ({exc.msg})") from None
        except (RecursionError, MemoryError, ValueError):
            raise ExpressionError("is nested too deeply") from None
        names: list[str] = []
        self._check(tree.body, names)
        self._tree = tree.body
        self.names: tuple[str, ...] = tuple(dict.fromkeys(names))
        """The metric names the expression uses, in first-use order."""

    def _check(self, node: ast.AST, names: list[str], depth: int = 0) -> None:
        if depth > 100:
            raise ExpressionError("is nested too deeply")
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise ExpressionError(
                    f"uses an operator that is not allowed ({type(node.op).__name__}); "
                    "allowed: + - * / ** and parentheses")
            self._check(node.left, names, depth + 1)
            self._check(node.right, names, depth + 1)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise ExpressionError(
                    f"uses an operator that is not allowed ({type(node.op).__name__}); "
                    "allowed: + - * / ** and parentheses")
            self._check(node.operand, names, depth + 1)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExpressionError(f"contains {node.value!r}; only numbers are allowed")
            try:
                float(node.value)
            except OverflowError:
                raise ExpressionError("contains a number too large for a float") from None
        elif isinstance(node, ast.Name):
            names.append(node.id)
        else:
            what = {ast.Call: "a function call", ast.Attribute: "an attribute",
                    ast.Subscript: "an index", ast.Compare: "a comparison",
                    ast.BoolOp: "a boolean operator", ast.Lambda: "a lambda",
                    ast.IfExp: "a conditional"}.get(type(node), type(node).__name__)
            raise ExpressionError(
                f"contains {what}; only numbers, metric names, + - * / ** and parentheses "
                "are allowed")

    def evaluate(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """The expression over arrays of equal length (float64); missing names raise KeyError."""
        with np.errstate(all="ignore"):
            result = self._eval(self._tree, values)
        return np.asarray(result, dtype=np.float64)

    def _eval(self, node: ast.AST, values: Mapping[str, np.ndarray]) -> np.ndarray:
        if isinstance(node, ast.BinOp):
            op = _BINARY[type(node.op)]
            return op(self._eval(node.left, values), self._eval(node.right, values))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, values))
        if isinstance(node, ast.Constant):
            # float64, so 10 ** 10 ** 10 overflows to inf instead of building a huge int
            return np.asarray(float(node.value), dtype=np.float64)  # type: ignore[arg-type]
        assert isinstance(node, ast.Name)
        return np.asarray(values[node.id], dtype=np.float64)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"
