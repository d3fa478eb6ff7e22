"""Hostile definitions: ``scan_definition`` never raises and stays bounded in time, whatever JSON
(or non-JSON) it is given: deep nesting, 10 MB strings, odd types, huge lists."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scan.definitions import scan_definition

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=200),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=60,
)


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string", "description": "leaf"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"p": node}}
    return node


def timed(kind: Any, definition: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    found = scan_definition(kind, definition, **kwargs)
    return found, time.perf_counter() - start


def test_deep_nesting_is_bounded_and_reported() -> None:
    found, seconds = timed("tool", {"name": "deep", "inputSchema": nested(50_000)})
    assert any(f.rule == "abnormal-length" and f.severity == "high" for f in found)
    assert seconds < 5


def test_a_ten_megabyte_description_is_scanned_in_part_and_reported() -> None:
    text = "Reads a file. " + "x" * (10 * 1024 * 1024)
    found, seconds = timed("tool", {"name": "big", "description": text, "inputSchema": {"type": "object"}})
    assert any(f.rule == "abnormal-length" for f in found)
    assert seconds < 5


@pytest.mark.parametrize(
    "filler",
    ["\u200b" * (10 * 1024 * 1024), "ж" * (10 * 1024 * 1024), "a " * (5 * 1024 * 1024), "%41" * 3_000_000,
     "QUFB" * 2_600_000, "<important>" * 900_000],
)  # fmt: skip
def test_ten_megabyte_strings_of_every_shape_never_raise(filler: str) -> None:
    definition = {"name": "t", "description": filler, "inputSchema": {"type": "object", "properties": {
        "p": {"type": "string", "default": filler, "enum": [filler]}}}}  # fmt: skip
    found, seconds = timed("tool", definition)
    assert isinstance(found, tuple)
    assert seconds < 20


def test_many_properties_and_huge_lists_are_bounded() -> None:
    properties = {f"p{i}": {"type": "string", "description": f"parameter {i}"} for i in range(100_000)}
    found, seconds = timed("tool", {"name": "wide", "inputSchema": {"type": "object", "properties": properties}})
    assert any(f.rule == "abnormal-length" for f in found)
    assert seconds < 10


@pytest.mark.parametrize(
    "definition",
    [None, [], "tool", 42, math.nan, {"name": 7, "description": ["a", {"b": None}], "inputSchema": "x"},
     {"name": None, "inputSchema": {"properties": [1, 2, {"x": math.inf}], "required": [None, 3]}},
     {"name": "t", "inputSchema": {"properties": {"p": {"enum": [None, 1, 2.5, True, {"k": [[]]}]}}}},
     {"name": "t", "annotations": {"title": 5, "readOnlyHint": "yes"},
      "icons": [{"src": "data:image/png;base64,AAAA"}]},
     {"name": "t", "arguments": [None, 3, {"name": ["x"]}]},
     {"\ud800": "lone surrogate \udfff", "name": "x\x00y"},
     {1: "non-string key", (2, 3): "tuple key"}],
)  # fmt: skip
def test_odd_types_never_raise(definition: Any) -> None:
    found = scan_definition("tool", definition)
    assert isinstance(found, tuple)
    assert all(f.severity in ("low", "medium", "high") for f in found)


def test_a_non_object_definition_is_malformed() -> None:
    assert [f.rule for f in scan_definition("tool", ["not", "an", "object"])] == ["malformed-definition"]  # type: ignore[arg-type]


def test_odd_others_never_raise() -> None:
    found = scan_definition("tool", {"name": "t", "description": "x"}, others=[None, 3, "t", ""])  # type: ignore[list-item]
    assert [(f.rule, f.severity) for f in found] == [("tool-shadowing", "medium")]  # the one real name collides


@settings(max_examples=200, deadline=None)
@given(JSON, st.sampled_from(["tool", "prompt", "resource", "resource_template"]))
def test_any_json_never_raises(data: Any, kind: Any) -> None:
    definition = data if not isinstance(data, dict) else {**data, "description": str(data)[:500]}
    found = scan_definition(kind, definition)
    assert isinstance(found, tuple)
