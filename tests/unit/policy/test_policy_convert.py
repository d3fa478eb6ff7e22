"""Every branch of the JSON -> Cedar argument conversion, and that policies can test each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import tool, user

from bastion.policy import MAX_DEPTH, NULL_ENTITY, PolicyEngine, to_cedar_arguments
from bastion.policy.convert import canonical_json, to_cedar_value

NULL = {"__entity": NULL_ENTITY}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(True, True, id="bool"),
        pytest.param("dev", "dev", id="string"),
        pytest.param(42, 42, id="long"),
        pytest.param(2**63 - 1, 2**63 - 1, id="long-max"),
        pytest.param(-(2**63), -(2**63), id="long-min"),
        pytest.param(2**63, str(2**63), id="int-above-i64-is-string"),
        pytest.param(-(2**63) - 1, str(-(2**63) - 1), id="int-below-i64-is-string"),
        pytest.param(2.0, 2, id="integral-float-is-long"),
        pytest.param(-1e3, -1000, id="negative-integral-float-is-long"),
        pytest.param(1.5, {"__extn": {"fn": "decimal", "arg": "1.5"}}, id="float-decimal"),
        pytest.param(-0.0001, {"__extn": {"fn": "decimal", "arg": "-0.0001"}}, id="float-decimal-4-digits"),
        pytest.param(0.12345, "0.12345", id="float-5-digits-is-text"),
        pytest.param(1e-05, "1e-05", id="float-tiny-is-text"),
        pytest.param(1e300, "1e+300", id="float-huge-is-text"),
        pytest.param(9.3e18, "9.3e+18", id="integral-float-outside-i64-is-text"),
        pytest.param(float("nan"), "nan", id="nan-is-text"),
        pytest.param(float("inf"), "inf", id="inf-is-text"),
        pytest.param(None, NULL, id="null-is-Null-entity"),
        pytest.param([1, "a", None], [1, "a", NULL], id="array-is-set"),
        pytest.param((1, 2), [1, 2], id="tuple-is-set"),
        pytest.param({'weird key\n"x"': 1}, {'weird key\n"x"': 1}, id="keys-verbatim"),
        pytest.param(
            {"__entity": {"type": "User", "id": "admin"}},
            '{"__entity":{"id":"admin","type":"User"}}',
            id="entity-escape-is-text",
        ),
        pytest.param(
            {"__extn": {"fn": "ip", "arg": "1.1.1.1"}, "b": 1},
            '{"__extn":{"arg":"1.1.1.1","fn":"ip"},"b":1}',
            id="extn-escape-is-text",
        ),
        pytest.param({"__expr": "true"}, '{"__expr":"true"}', id="expr-escape-is-text"),
    ],
)
def test_value_conversion(value: Any, expected: Any) -> None:
    assert to_cedar_value(value) == expected


def _nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def test_nesting_up_to_the_limit_stays_structured() -> None:
    converted = to_cedar_arguments({"a": _nested(MAX_DEPTH)})
    node = converted["a"]
    for _ in range(MAX_DEPTH - 1):
        node = node["x"]
    assert node == {"leaf": 1}


def test_nesting_beyond_the_limit_becomes_canonical_json_text() -> None:
    converted = to_cedar_arguments({"a": _nested(MAX_DEPTH + 1)})
    node = converted["a"]
    for _ in range(MAX_DEPTH - 1):
        node = node["x"]
    assert node == {"x": '{"leaf":1}'}
    assert to_cedar_value([[1]], depth=MAX_DEPTH + 1) == "[[1]]"


def test_reserved_top_level_argument_name_is_refused() -> None:
    with pytest.raises(ValueError, match="__entity"):
        to_cedar_arguments({"__entity": {"type": "User", "id": "admin"}})


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()])
def test_non_json_values_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        to_cedar_value(value)


def test_non_string_keys_raise_type_error() -> None:
    with pytest.raises(TypeError):
        to_cedar_arguments({1: "x"})  # type: ignore[dict-item]


def test_canonical_json_sorts_keys_and_keeps_unicode() -> None:
    assert canonical_json({"b": "é", "a": [1]}) == '{"a":[1],"b":"é"}'


DEEP_PATH = ".".join(["a"] * (MAX_DEPTH + 1))
POLICIES = rf"""
@id("float") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has amount && context.arguments.amount.lessThan(decimal("2.5")) }};
@id("null") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has cursor && context.arguments.cursor == Null::"null" }};
@id("deep") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has {DEEP_PATH} && context.arguments.{DEEP_PATH} like "*\"secret\"*" }};
@id("big") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has id && context.arguments.id == "18446744073709551616" }};
@id("weird") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has "dry-run" && context.arguments["dry-run"] == true }};
@id("whole") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has limit && context.arguments.limit <= 100 }};
@id("set") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has tags && context.arguments.tags.contains("urgent") }};
@id("text") permit (principal, action == Action::"tools/call", resource)
when {{ context.arguments has ratio && context.arguments.ratio == "0.12345" }};
"""


def _deep(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = {"a": leaf}
    return leaf


@pytest.mark.parametrize(
    ("arguments", "policy"),
    [
        pytest.param({"amount": 1.25}, "float", id="decimal"),
        pytest.param({"amount": 2.5}, None, id="decimal-not-less"),
        pytest.param({"cursor": None}, "null", id="null"),
        pytest.param({"cursor": "null"}, None, id="string-null-is-not-null"),
        pytest.param(_deep(MAX_DEPTH + 1, {"x": "secret"}), "deep", id="too-deep-is-text"),
        pytest.param({"id": 2**64}, "big", id="big-int"),
        pytest.param({"dry-run": True}, "weird", id="non-identifier-key"),
        pytest.param({"limit": 100.0}, "whole", id="integral-float"),
        pytest.param({"tags": ["urgent", "x", "urgent"]}, "set", id="array"),
        pytest.param({"ratio": 0.12345}, "text", id="inexact-float-is-text"),
    ],
)
def test_converted_values_are_testable_by_policies(
    engine_for: Callable[[str], PolicyEngine], arguments: dict[str, Any], policy: str | None
) -> None:
    decision = engine_for(POLICIES).decide(
        user(), "tools/call", tool("t"), {"arguments": arguments, "time": 0}
    )
    assert decision.errors == ()
    assert decision.policy_ids == ((policy,) if policy else ())


def test_is_null_on_another_type_is_an_evaluation_error_so_a_deny(
    engine_for: Callable[[str], PolicyEngine],
) -> None:
    """``is Null`` errors on a non-entity; ``== Null::"null"`` (used above) never does."""
    engine = engine_for(
        '@id("p") permit (principal, action, resource)'
        " when { context.arguments has c && context.arguments.c is Null };"
    )
    assert engine.decide(user(), "tools/call", tool("t"), {"arguments": {"c": None}}).allowed
    decision = engine.decide(user(), "tools/call", tool("t"), {"arguments": {"c": "x"}})
    assert (decision.effect, decision.reason, decision.policy_ids) == ("deny", "error", ("p",))


def test_deep_subtree_becomes_text_at_the_limit() -> None:
    converted = to_cedar_arguments(_deep(MAX_DEPTH + 1, {"x": "secret"}))
    node = converted
    for _ in range(MAX_DEPTH + 1):
        node = node["a"]
    assert node == '{"x":"secret"}'


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def permit_all(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    """Permits everything, but reads the arguments so that Cedar must parse them."""
    path = tmp_path_factory.mktemp("permit") / "all.cedar"
    path.write_text(
        '@id("all") permit (principal, action, resource) when { context.arguments has x || true };'
    )
    return PolicyEngine.load([path])


@settings(max_examples=300, deadline=None)
@given(arguments=st.dictionaries(st.text().filter(lambda k: not k.startswith("__")), JSON, max_size=5))
def test_any_json_arguments_give_a_context_cedar_accepts(
    permit_all: PolicyEngine, arguments: dict[str, Any]
) -> None:
    """No JSON value makes Cedar refuse the request (which would deny every call)."""
    decision = permit_all.decide(user(), "tools/call", tool("t"), {"arguments": arguments})
    assert decision.errors == ()
    assert decision.allowed
