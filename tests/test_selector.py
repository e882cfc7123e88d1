"""Label selectors: the mapping, string and callable forms of ``rule``, and disco-tools rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tools import label_selector
from tools.label_selector import Label, all_, any_, not_

from disco_data_logger import DataLogger, read
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
    with pytest.raises(TypeError, match="mapping, a string, a callable or a tools.label_selector"):
        compile_rule(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must be strings"):
        compile_rule({1: "a"})  # type: ignore[dict-item]


# Streams whose labels disco-tools compares without a TypeError for every rule below.
TOOLS_STREAMS = [
    {"stream_id": 1, "entity": "a", "measure": "stock", "replication": 0, "flag": True},
    {"stream_id": 2, "entity": "b", "measure": "stock", "replication": 1, "flag": False},
    {"stream_id": 3, "entity": "c", "measure": "demand", "replication": 1},
    {"stream_id": 4, "entity": "a b", "measure": "demand", "replication": 7, "flag": None},
    {"stream_id": 5, "measure": "cost", "replication": 3.5},
]

TOOLS_RULES = [
    Label("entity") == "a",
    Label("entity") != "a",
    Label("replication") == 1,
    Label("replication") == 1.0,
    Label("replication") == "1",  # disco-tools compares with ==: the text "1" matches nothing
    Label("flag") == True,  # noqa: E712 - a Label comparison builds a rule
    Label("flag") == 1,  # True == 1 in Python, so disco-tools matches stream 1
    Label("flag") == None,  # noqa: E711
    Label("replication") > 1,
    Label("replication").gte(1) & Label("measure").isin(["stock", "cost"]),
    Label("replication").between(1, 3.5, inc_high=False),
    Label("entity").notin(["a", "b"]),
    Label("flag").exists(),
    ~Label("flag").exists(),
    (Label("measure") == "stock") | (Label("entity") == "c"),
    all_(Label("measure") == "demand", not_(Label("entity") == "c")),
    any_(),
    all_(),
    label_selector.Rule({"match": {"key": "measure", "op": "ne", "value": "cost"}}),
]


@pytest.mark.parametrize("rule", TOOLS_RULES, ids=[str(r.spec) for r in TOOLS_RULES])
def test_disco_tools_rules_match_as_in_disco_tools(rule) -> None:
    expected = [s["stream_id"] for s in label_selector.select(TOOLS_STREAMS, rule)]
    assert [s["stream_id"] for s in select(TOOLS_STREAMS, rule)] == expected


def test_disco_tools_rule_errors_are_disco_tools_errors() -> None:
    rule = Label("replication") > 1  # "3" > 1 raises TypeError in disco-tools too
    with pytest.raises(TypeError):
        list(label_selector.select(STREAMS, rule))
    with pytest.raises(TypeError):
        select(STREAMS, rule)


def test_a_label_alone_is_not_a_rule() -> None:
    with pytest.raises(TypeError, match=r"label, not a rule.*Label\('entity'\) == value"):
        compile_rule(Label("entity"))  # type: ignore[arg-type]


def test_read_selects_with_a_disco_tools_rule(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        for entity in ("a", "b", "c"):
            sid = dl.register_stream({"entity": entity, "n": ord(entity)}, value_scale=None)
            dl.record(sid, 0.0, [sid], [1.0])
    table = read(tmp_path / "l", (Label("entity") == "b") | Label("n").gte(ord("c")))
    assert table["stream_id"].to_pylist() == [1, 2]


def test_disco_tools_is_imported_only_for_its_rules() -> None:
    code = ("import sys\n"
            "from disco_data_logger.selector import select\n"
            "select([{'a': 1}], 'a=1'); select([{'a': 1}], {'a': 1}); select([], lambda d: 1)\n"
            "print('tools' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
