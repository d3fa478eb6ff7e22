"""``server.argument_limits``: the measurement of a call's arguments, each limit at and just above."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bastion.config.limits import ArgumentLimits
from bastion.errors import ArgumentsTooLarge
from bastion.transport.sizes import check_arguments, measure_arguments

SMALL = ArgumentLimits(max_depth=4, max_members=5, max_elements=6, max_string_chars=10, max_nodes=20)


def _nested(levels: int) -> Any:
    """``levels`` objects nested in each other (built without recursion)."""
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _case(limit: str, at: bool) -> Any:
    """Arguments exactly at ``limit`` of ``SMALL`` (``at``) or one past it, within every other limit."""
    extra = 0 if at else 1
    return {
        "max_depth": _nested(4 + extra),
        "max_members": {f"k{i}": i for i in range(5 + extra)},
        "max_elements": {"a": list(range(6 + extra))},
        "max_string_chars": {"a": "x" * (10 + extra)},
        "max_nodes": {"a": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4]] + ([[]] if at else [[0]])},
    }[limit]


LIMITS = ("max_depth", "max_members", "max_elements", "max_string_chars", "max_nodes")


@pytest.mark.parametrize("limit", LIMITS)
def test_exactly_at_a_limit_passes(limit: str) -> None:
    sizes = check_arguments(_case(limit, at=True), SMALL)
    assert sizes.exceeded is None
    assert getattr(sizes, limit.removeprefix("max_")) == getattr(SMALL, limit)


@pytest.mark.parametrize("limit", LIMITS)
def test_one_past_a_limit_is_refused_naming_it(limit: str) -> None:
    with pytest.raises(ArgumentsTooLarge) as caught:
        check_arguments(_case(limit, at=False), SMALL)
    error = caught.value
    assert (error.status, error.jsonrpc_code, error.code) == (400, -32602, "arguments_too_large")
    assert f"server.argument_limits.{limit}" in error.message
    assert error.sizes["exceeded"] == limit
    assert error.sizes["limit"] == getattr(SMALL, limit)
    json.dumps(error.sizes)  # the audit record stores it as it is


def test_what_is_counted() -> None:
    sizes = measure_arguments({"key-of-eleven": [1, {"b": "xyz"}], "c": None}, ArgumentLimits())
    assert (sizes.depth, sizes.members, sizes.elements, sizes.string_chars, sizes.nodes) == (3, 2, 2, 13, 6)
    assert measure_arguments("top-level string", ArgumentLimits()).string_chars == 16
    assert measure_arguments(7, ArgumentLimits()).depth == 0


def test_object_keys_count_as_strings() -> None:
    with pytest.raises(ArgumentsTooLarge, match="max_string_chars"):
        check_arguments({"k" * 11: 1}, SMALL)


def test_ten_thousand_levels_are_measured_without_recursion() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    unbounded = ArgumentLimits().model_copy(update={"max_depth": 20_000})  # past what the config admits
    sizes = measure_arguments({"a": deep}, unbounded)
    assert sizes.exceeded is None
    assert sizes.depth == 10_002  # the arguments object, then 10,001 arrays
    with pytest.raises(ArgumentsTooLarge, match="max_depth"):
        check_arguments({"a": deep}, ArgumentLimits())


def test_a_huge_object_is_refused_without_visiting_its_members() -> None:
    """The 150,000-member object of the issue: refused by ``len``, in far less than a millisecond per 1,000."""
    hostile = {f"k{i:06d}": i for i in range(150_000)}
    start = time.process_time()
    with pytest.raises(ArgumentsTooLarge) as caught:
        check_arguments(hostile, ArgumentLimits())
    assert time.process_time() - start < 0.01
    assert caught.value.sizes["members"] == 150_000
    assert caught.value.sizes["exceeded"] == "max_members"


def test_the_walk_stops_at_max_nodes() -> None:
    """Many small containers: counted until the total passes ``max_nodes``, the rest never visited."""
    hostile = [[i, i] for i in range(600)]
    sizes = measure_arguments({"a": hostile}, ArgumentLimits(max_nodes=1000))
    assert sizes.exceeded == "max_nodes"
    assert sizes.nodes == 1002  # 602 after the outer array, then two per inner array


def test_the_defaults_admit_what_real_tools_send() -> None:
    realistic = {
        "path": "src/app/main.py",
        "content": "print('hello')\n" * 60_000,
        "rows": [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(5_000)],
        "options": {"recursive": True, "depth": 3, "filters": {"ext": [".py", ".md"]}},
        "embedding": [0.001 * i for i in range(3072)],
    }
    assert measure_arguments(realistic, ArgumentLimits()).exceeded is None
