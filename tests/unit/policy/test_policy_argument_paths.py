"""Only the argument paths policies read are converted for Cedar, and that never changes a decision."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from policy_helpers import tool, user
from test_policy_convert import POLICIES

from bastion.policy import PolicyEngine
from bastion.policy.convert import MAX_DEPTH, to_cedar_arguments
from bastion.policy.engine import build_context

READS = """
@id("nested") permit (principal, action == Action::"tools/call", resource)
when { context.arguments has options.mode && context.arguments.options.mode == "fast" };
@id("has-only") permit (principal, action == Action::"tools/call", resource)
when { context.arguments has force };
@id("set") forbid (principal, action == Action::"tools/call", resource)
when { context.arguments has tags && context.arguments.tags.contains("prod") };
@id("record-equality") forbid (principal, action == Action::"tools/call", resource)
when { context.arguments has target && context.arguments.target == {"env": "prod"} };
"""


def test_the_paths_read_are_a_trie_with_whole_values_at_the_leaves(
    engine_for: Callable[[str], PolicyEngine],
) -> None:
    paths = engine_for(READS)._loaded.argument_paths
    assert paths == {"options": {"mode": None}, "force": {}, "tags": None, "target": None}


def test_a_policy_without_argument_reads_converts_nothing(engine_for: Callable[[str], PolicyEngine]) -> None:
    loaded = engine_for('@id("p") permit (principal, action, resource) when { context.time > 0 };')._loaded
    unconvertible = {"k": b"not JSON: converting it would raise TypeError"}
    context = {"arguments": unconvertible, "time": 5}
    assert json.loads(build_context(context, loaded.context_keys, loaded.argument_paths)) == {"time": 5}


def test_unread_members_never_reach_cedar(engine_for: Callable[[str], PolicyEngine]) -> None:
    loaded = engine_for(READS)._loaded
    arguments = {"options": {"mode": "fast", "huge": list(range(1000))}, "noise": "x" * 1000, "force": {"a": 1}}
    record = json.loads(build_context({"arguments": arguments}, loaded.context_keys, loaded.argument_paths))
    assert record["arguments"] == {"options": {"mode": "fast"}, "force": {}}  # force: only `has`


def test_a_kept_object_that_cedar_would_read_as_text_stays_text() -> None:
    """An object with a reserved key, or below ``MAX_DEPTH``, is JSON text whatever is read below it."""
    escaped = {"o": {"__entity": {"type": "User", "id": "admin"}, "mode": "fast"}}
    assert to_cedar_arguments(escaped, {"o": {"mode": None}}) == to_cedar_arguments(escaped)
    deep: Any = {"leaf": 1}
    for _ in range(MAX_DEPTH + 1):
        deep = {"a": deep}
    path: Any = None
    for _ in range(MAX_DEPTH + 2):
        path = {"a": path}
    assert to_cedar_arguments(deep, path) == to_cedar_arguments(deep)


def _variant(rng: random.Random) -> dict[str, Any]:
    """Arguments mixing what the policies read with noise, in the shapes they test."""
    choices: list[tuple[str, list[Any]]] = [
        ("options", [{"mode": "fast"}, {"mode": "slow", "x": 1}, {"mode": "fast", "y": [1]}, "fast", {}, None]),
        ("force", [True, False, None, {"a": 1}, [1]]),
        ("tags", [["prod"], ["dev", "prod"], [], "prod", {"prod": 1}]),
        ("target", [{"env": "prod"}, {"env": "prod", "x": 1}, {"env": "dev"}, "prod"]),
        ("amount", [1.25, 2.5, "1", None]),
        ("cursor", [None, "null"]),
        ("limit", [5, 100.0, 500, "5"]),
        ("dry-run", [True, "true"]),
        ("noise", [{"__extn": {"fn": "ip", "arg": "1.1.1.1"}}, [None, 1.5], "z"]),
    ]
    return {key: rng.choice(values) for key, values in choices if rng.random() < 0.6}


@pytest.mark.parametrize("policies", [READS, POLICIES], ids=["reads", "convert-cases"])
def test_decisions_with_and_without_pruning_agree(engine_for: Callable[[str], PolicyEngine], policies: str) -> None:
    pruned = engine_for(policies)
    assert pruned._loaded.argument_paths is not None
    whole = PolicyEngine(dataclasses.replace(pruned._loaded, argument_paths=None))
    rng = random.Random(11)
    for _ in range(300):
        context = {"arguments": _variant(rng), "time": 0}
        a = pruned.decide(user(), "tools/call", tool("t"), context)
        b = whole.decide(user(), "tools/call", tool("t"), context)
        assert (a.effect, a.policy_ids, len(a.errors)) == (b.effect, b.policy_ids, len(b.errors)), context
