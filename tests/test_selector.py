"""Label selectors: the mapping, string and callable forms of ``rule``."""

from __future__ import annotations

import pytest

from disco_data_logger.selector import compile_rule, select

STREAMS = [
    {"stream_id": 1, "entity": "a", "measure": "stock", "replication": 0},
    {"stream_id": 2, "entity": "b", "measure": "stock", "replication": 1},
    {"stream_id": 3, "entity": "c", "measure": "demand", "replication": 1, "debug": True},
    {"stream_id": 4, "entity": "a b", "measure": "demand", "replication": "3"},
    {"stream_id": 5, "measure": "cost", "replication": 3.5},
]


def ids(rule) -> list[int]:
    return [s["stream_id"] for s in select(STREAMS, rule)]


@pytest.mark.parametrize(("rule", "expected"), [
    (None, [1, 2, 3, 4, 5]),
    ("", [1, 2, 3, 4, 5]),
    ("   ", [1, 2, 3, 4, 5]),
    ("measure=stock", [1, 2]),
    ("measure == stock", [1, 2]),
    ("measure!=stock", [3, 4, 5]),
    ("measure=stock,entity in (a,b)", [1, 2]),
    ("measure=stock, entity in ( b , c )", [2]),
    ("entity notin (a, b)", [3, 4, 5]),  # notin also matches streams without the label
    ("entity!=a", [2, 3, 4, 5]),
    ("entity", [1, 2, 3, 4]),
    ("!entity", [5]),
    ("debug", [3]),
    ("!debug", [1, 2, 4, 5]),
    ("entity='a b'", [4]),
    ('entity in ("a b", c)', [3, 4]),
    ("replication=3", [4]),  # the string "3"
    ("replication=1", [2, 3]),  # ints compare through their text
    ("replication in (0, 3.5)", [1, 5]),
    ("debug=true", [3]),
    ("debug=True", [3]),
    ("stream_id in (1,5)", [1, 5]),
    ("measure=nothing", []),
])
def test_string_rules(rule, expected):
    assert ids(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), [
    ({}, [1, 2, 3, 4, 5]),
    ({"measure": "stock"}, [1, 2]),
    ({"measure": ["stock", "cost"]}, [1, 2, 5]),
    ({"measure": ("demand",), "entity": {"c", "a b"}}, [3, 4]),
    ({"measure": frozenset({"cost"})}, [5]),
    ({"replication": 1}, [2, 3]),
    ({"replication": 3}, [4]),  # int 3 matches the string "3" (and not 3.5)
    ({"replication": "0"}, [1]),
    ({"replication": 3.5}, [5]),
    ({"debug": True}, [3]),
    ({"entity": []}, []),
    ({"missing": "x"}, []),
])
def test_mapping_rules(rule, expected):
    assert ids(rule) == expected


def test_numbers_compare_by_value_across_types():
    assert compile_rule({"x": 1})({"x": 1.0})
    assert not compile_rule({"x": 1})({"x": True})  # a bool is not a number here
    assert compile_rule("x=1.0")({"x": 1.0})
    assert not compile_rule("x=1")({"x": 1.0})  # text "1" is not the text of 1.0


def test_callable_rule():
    assert ids(lambda labels: labels.get("replication") == 1) == [2, 3]
    assert ids(lambda labels: 1 if labels["measure"] == "cost" else 0) == [5]
    predicate = compile_rule(lambda labels: "debug" in labels)
    assert predicate(STREAMS[2]) is True
    assert predicate(STREAMS[0]) is False


def test_compiled_rule_is_reusable_and_returns_bools():
    predicate = compile_rule("measure in (stock), replication!=0")
    assert [predicate(s) for s in STREAMS] == [False, True, False, False, False]


def test_select_keeps_order_and_objects():
    chosen = select(STREAMS, "measure=demand")
    assert chosen[0] is STREAMS[2] and chosen[1] is STREAMS[3]
    assert select(iter(STREAMS), {"entity": "a"}) == [STREAMS[0]]


def test_empty_value_is_allowed():
    assert compile_rule("x=")({"x": ""})
    assert not compile_rule("x=")({"x": "y"})


@pytest.mark.parametrize(("rule", "position"), [
    ("entity in (a,b", 14),
    ("entity in a", 10),
    ("a b", 2),
    ("=x", 0),
    ("a,", 2),
    ("a,,b", 2),
    ("!", 1),
    ("a='x", 2),
    ("measure=stock entity=a", 14),
    ("a in ()", 6),
    ("a >= 3", 2),
])
def test_bad_syntax_names_the_position(rule, position):
    with pytest.raises(ValueError, match=rf"position {position}\b") as info:
        compile_rule(rule)
    assert repr(rule) in str(info.value)


def test_bad_rule_types():
    with pytest.raises(TypeError, match="mapping, a string or a callable"):
        compile_rule(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must be strings"):
        compile_rule({1: "a"})  # type: ignore[dict-item]
