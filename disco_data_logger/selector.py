"""Label selectors: which streams a query or a collector takes (the ``rule`` argument).

A rule is one of

* ``None`` or ``""``: every stream;
* a mapping ``label -> value`` or ``label -> list/tuple/set/frozenset of values``: every entry must
  match (the label present and equal to the value, or to one of the values);
* a string in the style of Kubernetes label selectors, requirements separated by commas, all of
  which must hold::

      measure=stock, entity in (a, b), replication!=3, kind notin (state), organisation, !debug

  ``=`` and ``==`` are equality, ``!=`` and ``notin`` also match streams without the label, a bare
  ``key`` requires the label and ``!key`` forbids it. Values may be quoted (``'a b'`` or ``"a,b"``)
  to hold spaces, commas or parentheses;
* a callable taking the labels dict and returning a truth value;
* a rule of disco-tools' label selector (``tools.label_selector.Rule``, e.g.
  ``(Label("entity") == "A") | Label("measure").isin(["stock"])``): it matches exactly what
  disco-tools' own compiler matches, because that compiler is used. disco-tools is imported only
  when such a rule is passed.

Label values in sidecars are JSON values, selector text is a string: a non-string label value is
compared through its text (``replication=3`` matches the int ``3``, ``flag=true`` the bool
``True``),
so a selector means the same whether a label was stored as text or as a number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from tools.label_selector import Rule as LabelSelectorRule
else:
    LabelSelectorRule = Any

__all__ = ["Rule", "compile_rule", "requirements", "select", "values_match"]

Predicate = Callable[[Mapping[str, Any]], bool]
Rule: TypeAlias = "None | str | Mapping[str, Any] | Predicate | LabelSelectorRule"

_COLLECTIONS = (list, tuple, set, frozenset)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")
_VALUE_STOP = frozenset(",()=!\"' \t\r\n")


def _text(value: Any) -> str:
    """How a label value reads in selector text: JSON-like for bools and None, else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _equal(label_value: Any, wanted: Any) -> bool:
    if type(label_value) is type(wanted) and label_value == wanted:
        return True
    numbers = (int, float)
    if (isinstance(label_value, numbers) and isinstance(wanted, numbers)
            and not isinstance(label_value, bool) and not isinstance(wanted, bool)):
        return label_value == wanted
    if isinstance(label_value, bool) and isinstance(wanted, str):
        return wanted in (_text(label_value), str(label_value))
    return _text(label_value) == _text(wanted)


class _Requirement:
    """One requirement of a selector: ``key op values``."""

    __slots__ = ("key", "op", "values")

    def __init__(self, key: str, op: str, values: tuple[Any, ...] = ()) -> None:
        self.key, self.op, self.values = key, op, values

    def __call__(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        hit = present and any(_equal(labels[self.key], v) for v in self.values)
        return hit if self.op == "in" else not hit

    def __repr__(self) -> str:
        return f"_Requirement({self.key!r}, {self.op!r}, {self.values!r})"


class _All:
    """A conjunction of requirements; the compiled form of a mapping or string rule."""

    __slots__ = ("requirements", "source")

    def __init__(self, requirements: list[_Requirement], source: Any) -> None:
        self.requirements, self.source = requirements, source

    def __call__(self, labels: Mapping[str, Any]) -> bool:
        return all(r(labels) for r in self.requirements)

    def __repr__(self) -> str:
        return f"<label selector {self.source!r}>"


class _Parser:
    """Recursive-descent parser of the string form; errors name the 0-based position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of text"
        return ValueError(f"invalid label selector {self.text!r}: expected {what} at position "
                          f"{self.pos}, found {found}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def word(self, what: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _KEY_CHARS:
            self.pos += 1
        if self.pos == start:
            raise self.fail(what)
        return self.text[start:self.pos]

    def value(self) -> str:
        self.skip_space()
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            quote = self.text[self.pos]
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.fail(f"closing {quote}")
            out = self.text[self.pos + 1:end]
            self.pos = end + 1
            return out
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _VALUE_STOP:
            self.pos += 1
        return self.text[start:self.pos]  # an empty value is allowed, as in Kubernetes

    def value_list(self) -> tuple[str, ...]:
        self.skip_space()
        if not self.peek("("):
            raise self.fail("'(' opening the value list")
        self.pos += 1
        values = []
        while True:
            self.skip_space()
            start = self.pos
            v = self.value()
            if not v and self.pos == start:
                raise self.fail("a value")
            values.append(v)
            self.skip_space()
            if self.peek(","):
                self.pos += 1
                continue
            if self.peek(")"):
                self.pos += 1
                return tuple(values)
            raise self.fail("',' or ')'")

    def requirement(self) -> _Requirement:
        self.skip_space()
        if self.peek("!"):
            self.pos += 1
            self.skip_space()
            return _Requirement(self.word("a label key after '!'"), "!exists")
        key = self.word("a label key")
        self.skip_space()
        for token, op in (("==", "in"), ("!=", "notin"), ("=", "in")):
            if self.peek(token):
                self.pos += len(token)
                return _Requirement(key, op, (self.value(),))
        if self.pos == len(self.text) or self.peek(","):
            return _Requirement(key, "exists")
        start = self.pos
        word = self.word("an operator (=, ==, !=, in, notin)")
        if word in ("in", "notin"):
            return _Requirement(key, word, self.value_list())
        self.pos = start
        raise self.fail("an operator (=, ==, !=, in, notin)")

    def parse(self) -> list[_Requirement]:
        self.skip_space()
        if self.pos == len(self.text):
            return []
        requirements = [self.requirement()]
        while True:
            self.skip_space()
            if self.pos == len(self.text):
                return requirements
            if not self.peek(","):
                raise self.fail("',' between requirements")
            self.pos += 1
            requirements.append(self.requirement())


def _from_mapping(rule: Mapping[str, Any]) -> list[_Requirement]:
    requirements = []
    for key, wanted in rule.items():
        if not isinstance(key, str):
            raise TypeError(f"label selector keys must be strings, got {key!r}")
        values = tuple(wanted) if isinstance(wanted, _COLLECTIONS) else (wanted,)
        requirements.append(_Requirement(key, "in", values))
    return requirements


def values_match(label_value: Any, wanted: Any) -> bool:
    """Whether a label value matches a selector value (the comparison every rule uses)."""
    return _equal(label_value, wanted)


def requirements(rule: Rule) -> list[tuple[str, str, tuple[Any, ...]]] | None:
    """The requirements of a mapping or string rule as ``(key, op, values)``, ``op`` one of
    ``in``, ``notin``, ``exists``, ``!exists`` (all must hold); None for a callable rule or a
    disco-tools rule object, which are evaluated as predicates instead.

    For evaluating a rule column by column (the experiment index) instead of stream by stream.
    """
    if rule is None:
        return []
    if isinstance(rule, str):
        reqs = _Parser(rule).parse()
    elif isinstance(rule, Mapping):
        reqs = _from_mapping(rule)
    else:
        # A callable or a disco-tools rule: evaluated by compile_rule, once per label set
        # (compile_rule also says what is wrong with anything else).
        compile_rule(rule)
        return None
    return [(r.key, r.op, r.values) for r in reqs]


def compile_rule(rule: Rule) -> Predicate:
    """Turn a rule (see the module docstring) into a predicate over a labels mapping.

    Compiling once and calling the predicate per stream keeps parsing out of the loop; syntax
    errors surface here as ``ValueError`` naming the position.
    """
    if rule is None:
        return _All([], None)
    if isinstance(rule, str):
        return _All(_Parser(rule).parse(), rule)
    if isinstance(rule, Mapping):
        return _All(_from_mapping(rule), dict(rule))
    if callable(rule):
        user = rule
        return lambda labels: bool(user(labels))
    if type(rule).__module__.startswith("tools.label_selector"):
        return _label_selector_rule(rule)
    raise TypeError(f"a label selector is a mapping, a string, a callable or a "
                    f"tools.label_selector.Rule, not {type(rule).__module__}."
                    f"{type(rule).__qualname__}")


def _label_selector_rule(rule: Any) -> Predicate:
    """A disco-tools rule, compiled by disco-tools so that it matches exactly as there."""
    from tools.label_selector import Label
    from tools.label_selector import Rule as ToolsRule

    if isinstance(rule, ToolsRule):
        tools_predicate = rule.compile()
        return lambda labels: bool(tools_predicate(labels))
    if isinstance(rule, Label):
        raise TypeError(f"{rule!r} is a label, not a rule: compare it to make one, e.g. "
                        f"Label({rule.key!r}) == value or Label({rule.key!r}).exists()")
    raise TypeError(f"a {type(rule).__qualname__} from tools.label_selector is not a rule")


def select(streams: Iterable[Mapping[str, Any]], rule: Rule) -> list[Mapping[str, Any]]:
    """The streams (label mappings, e.g. sidecar dicts) that ``rule`` selects, in order."""
    matches = compile_rule(rule)
    return [s for s in streams if matches(s)]
