"""PolicyEngine.filter_listable: an item is listed when some arguments would permit the call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from cedarpy import pst
from policy_helpers import tool, user

import bastion.demo
from bastion.policy import PolicyEngine, ResourceRef
from bastion.policy.engine import _uid_text
from bastion.principal import Principal

READ = {"readOnlyHint": True}
DESTRUCTIVE = {"destructiveHint": True}
DEMO_POLICY = Path(bastion.demo.__file__).parent / "demo.cedar"
EXAMPLE_POLICY = Path(__file__).parents[3] / "examples" / "policies" / "demo.cedar"


def listable(engine: PolicyEngine, principal: Principal, *tools: ResourceRef, **context: Any) -> list[bool]:
    return engine.filter_listable(principal, "tools/call", list(tools), context)


def allowed(engine: PolicyEngine, principal: Principal, resource: ResourceRef, **arguments: Any) -> bool:
    return engine.decide(principal, "tools/call", resource, {"arguments": arguments}).allowed


def notes(name: str, **annotations: object) -> ResourceRef:
    return ResourceRef.from_tool("notes", {"name": name, "annotations": annotations}, trust_annotations=True)


def test_demo_read_logs_is_listed_for_support_and_callable_only_with_env_dev() -> None:
    engine = PolicyEngine.load([DEMO_POLICY])
    bob, alice = user("support", sub="bob"), user("engineering", sub="alice")
    tools = [notes("read_logs", **READ), notes("search_notes", **READ), notes("delete_note", **DESTRUCTIVE)]
    assert engine.filter_listable(bob, "tools/call", tools, {}) == [True, True, False]
    assert engine.filter_listable(alice, "tools/call", tools, {}) == [True, True, True]
    assert engine.filter_listable(user(), "tools/call", tools, {}) == [False, False, False]
    # the call itself is decided on the real arguments, and listing changed nothing there
    assert allowed(engine, bob, tools[0], env="dev")
    assert not allowed(engine, bob, tools[0], env="prod")
    assert not allowed(engine, bob, tools[0])
    assert engine.filter_allowed(bob, "tools/call", tools, {}) == [False, True, False]
    assert not allowed(engine, bob, tools[2], env="dev")


def test_example_policy_listing() -> None:
    engine = PolicyEngine.load([EXAMPLE_POLICY])
    names = ["read_logs", "search_docs", "create_ticket", "restart_service", "delete_index"]
    risks = [READ, READ, {"destructiveHint": False}, DESTRUCTIVE, DESTRUCTIVE]
    tools = [tool(name, **risk) for name, risk in zip(names, risks, strict=True)]
    support = engine.filter_listable(user("support"), "tools/call", tools, {})
    assert support == [True, True, True, False, False]
    assert engine.filter_listable(user("engineering"), "tools/call", tools, {}) == [True] * 5
    ci = Principal(
        kind="ServiceAccount", sub="ci-bot", issuer="https://idp.example.test", auth_method="bastion_jwt", expires_at=0
    )
    assert engine.filter_listable(ci, "tools/call", tools, {"client_id": "ci"}) == [False, True, False, False, False]
    assert engine.filter_listable(ci, "tools/call", tools, {}) == [False] * 5


def test_a_permit_that_depends_only_on_arguments_lists(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("safe-mode") permit (principal in Group::"g", action == Action::"tools/call", resource)
        when { context.arguments has mode && context.arguments.mode == "safe" && context.arguments has n
               && context.arguments.n < 10 };
        """
    )
    assert listable(engine, user("g"), tool("t"), tool("u", **READ)) == [True, True]
    assert listable(engine, user("other"), tool("t")) == [False]
    assert allowed(engine, user("g"), tool("t"), mode="safe", n=3)
    assert not allowed(engine, user("g"), tool("t"), mode="safe")


def test_an_argument_independent_forbid_hides(engine_for: Callable[[str], PolicyEngine]) -> None:
    """Arguments could satisfy the permit, but a forbid applies whatever they are."""
    engine = engine_for(
        """
        @id("args") permit (principal, action, resource) when { context.arguments has ok };
        @id("no-destructive") forbid (principal in Group::"c", action, resource is Tool)
        when { resource.risk == "destructive" };
        @id("banned") forbid (principal in Group::"banned", action, resource);
        """
    )
    assert listable(engine, user("c"), tool("drop", **DESTRUCTIVE), tool("look", **READ)) == [False, True]
    assert listable(engine, user("banned"), tool("look", **READ)) == [False]
    assert not allowed(engine, user("c"), tool("drop", **DESTRUCTIVE), ok=True)


def test_a_forbid_that_arguments_can_avoid_still_lists(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("all") permit (principal, action, resource);
        @id("cap") forbid (principal, action, resource)
        when { context.arguments has limit && context.arguments.limit > 100 };
        """
    )
    assert listable(engine, user(), tool("t")) == [True]


def test_arguments_alone_never_list_without_a_permit(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("g") permit (principal in Group::"g", action, resource);
        @id("f") forbid (principal, action, resource) unless { context.arguments has x };
        """
    )
    assert listable(engine, user(), tool("t")) == [False]
    assert listable(engine, user("g"), tool("t")) == [True]


def test_evaluation_errors_hide(engine_for: Callable[[str], PolicyEngine]) -> None:
    """An error Cedar meets with arguments unknown hides the item; so does an entity it
    cannot read (here a Server, absent from a tool listing: a real call errors too)."""
    engine = engine_for(
        """
        @id("overflow") permit (principal in Group::"o", action, resource)
        when { context.time * 9223372036854775807 > 0 && context.arguments has x };
        @id("server-attr") permit (principal in Group::"s", action, resource)
        when { context.arguments has x && Server::"demo".route == "demo" };
        @id("erroring-forbid") forbid (principal in Group::"e", action, resource)
        when { context.time * 9223372036854775807 > 0 };
        @id("e-all") permit (principal in Group::"e", action, resource);
        """
    )
    for group in ("o", "s", "e"):
        assert listable(engine, user(group), tool("t"), time=1_700_000_000) == [False], group
        decision = engine.decide(user(group), "tools/call", tool("t"), {"arguments": {"x": 1}, "time": 1_700_000_000})
        assert decision.reason == "error", group


def test_conflicting_obligations_hide_only_when_certain(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("a") @approval("review") permit (principal in Group::"x", action, resource);
        @id("b") @approval("confirm") permit (principal in Group::"y", action, resource);
        @id("c") @approval("confirm") permit (principal in Group::"z", action, resource)
        when { context.arguments has fast };
        """
    )
    assert listable(engine, user("x", "y"), tool("t")) == [False]
    assert listable(engine, user("x", "z"), tool("t")) == [True]  # without `fast` there is no conflict
    assert not allowed(engine, user("x", "z"), tool("t"), fast=True)
    assert allowed(engine, user("x", "z"), tool("t"))


def test_failures_hide(engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = [tool("search", **READ), tool("read_logs", **READ)]
    assert listable(engine, user("dev"), *tools) == [True, True]
    assert listable(engine, user("dev"), *tools, colour="red") == [False, False]
    assert listable(engine, user("dev"), *tools, ip="not-an-ip") == [False, False]
    assert engine.filter_listable(user("dev"), "tools/list", tools, {}) == [False, False]
    clash = [tools[0], tool("search", **DESTRUCTIVE)]
    assert listable(engine, user("dev"), *clash) == [False, False]

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(cedarpy, "is_authorized_partial", boom)
    monkeypatch.setattr(cedarpy, "is_authorized_batch", boom)  # slices that read no arguments: full evaluation
    assert listable(engine, user("dev"), *tools) == [False, False]


def test_an_unexpected_uid_rendering_hides(engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cedarpy, "policies_from_json_str", lambda _text: "permit(principal, action, resource);")
    _uid_text.cache_clear()
    try:
        assert listable(engine, user("dev", sub="uncached"), tool("search", **READ)) == [False]
    finally:
        _uid_text.cache_clear()


def test_listing_arguments_are_ignored(engine: PolicyEngine) -> None:
    assert listable(engine, user("dev"), tool("read_logs", **READ), arguments={"env": "prod"}) == [True]


def test_other_actions_carry_no_arguments(engine_for: Callable[[str], PolicyEngine]) -> None:
    """Only tools/call requests carry arguments, so for prompts a listing is filter_allowed."""
    engine = engine_for(
        """
        @id("p") permit (principal, action == Action::"prompts/get", resource)
        when { context.arguments has x };
        @id("q") permit (principal, action == Action::"prompts/get", resource)
        when { resource.name == "open" };
        """
    )
    prompts = [ResourceRef("Prompt", "demo", "closed"), ResourceRef("Prompt", "demo", "open")]
    assert engine.filter_listable(user(), "prompts/get", prompts, {}) == [False, True]


def test_without_argument_rules_no_partial_evaluation(
    engine_for: Callable[[str], PolicyEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for('@id("r") permit (principal, action, resource is Tool) when { resource.risk == "read" };')
    monkeypatch.setattr(cedarpy, "is_authorized_partial", None)
    assert listable(engine, user(), tool("a", **READ), tool("b")) == [True, False]


def test_listing_of_nothing(engine: PolicyEngine) -> None:
    assert engine.filter_listable(user("dev"), "tools/call", [], {}) == []


ODD_IDS = [
    'al"ice',
    "back\\slash",
    "\\u{41}",
    "\\",
    "'",
    "line\nbreak\r\t",
    "nul\0bel\x07del\x7fesc\x1b",
    "",
    "café 日本 😀",
    "\u0301starts-with-a-combining-mark",
    "zero\u200bwidth\u202eRTL\u00a0nbsp\u2028ls",
    "private\ue000unassigned\U000e0080",
    'User::"admin"',
    'x", action, resource);',
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_odd_entity_ids(engine_for: Callable[[str], PolicyEngine], odd: str) -> None:
    """The uid text must name the very entities in the store (else Cedar sees them as
    unknown and hides): a listing by group and attribute works for any id."""
    engine = engine_for(
        """
        @id("g") permit (principal in Group::"g", action, resource is Tool)
        when { resource.risk == "read" && context.arguments has ok };
        """
    )
    weird = ResourceRef("Tool", odd, odd, {"risk": "read"})
    assert engine.filter_listable(user("g", sub=odd), "tools/call", [weird], {}) == [True]
    assert engine.filter_listable(user(sub=odd), "tools/call", [weird], {}) == [False]
    assert allowed(engine, user("g", sub=odd), weird, ok=1)


@pytest.mark.parametrize("odd", ODD_IDS)
def test_uid_text_parses_back_to_the_same_id(odd: str) -> None:
    text = _uid_text("User", odd)
    parsed = cedarpy.policies_to_pst(f"permit (principal == {text}, action, resource);")
    (policy,) = parsed.static_policies.values()
    assert isinstance(policy.principal, pst.ScopeEq)
    assert policy.principal.entity == pst.EntityUid(pst.EntityType("User"), odd)


def test_uid_text_is_the_normalized_form_cedar_demands(engine_for: Callable[[str], PolicyEngine]) -> None:
    assert _uid_text("User", "bob") == 'User::"bob"'
    assert _uid_text("Tool", 'a"b\\c\nd\0') == 'Tool::"a\\"b\\\\c\\nd\\0"'
    assert _uid_text("User", "A\x07") == 'User::"A\\u{7}"'
    policy_set = cedarpy.PolicySet.from_str("permit (principal, action, resource);")
    request = {"action": 'Action::"tools/call"', "resource": 'Tool::"t"', "context": {}}
    for principal, ok in (('User::"A"', True), ('User::"\\u{41}"', False), ('User :: "A"', False)):
        result = cedarpy.is_authorized_partial({**request, "principal": principal}, policy_set, "[]")
        assert (result.decision == cedarpy.Decision.Allow) is ok, principal
    with pytest.raises(TypeError):
        cedarpy.is_authorized_partial(
            {**request, "principal": {"type": "User", "id": "A"}},
            policy_set,
            "[]",
        )


def test_a_lone_surrogate_fails_closed_like_decide(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for('@id("all") permit (principal, action, resource) when { context.arguments has ok };')
    assert engine.filter_listable(user(sub="\ud800"), "tools/call", [tool("t")], {}) == [False]
    assert not allowed(engine, user(sub="\ud800"), tool("t"), ok=1)


def test_action_sets_are_known(engine_for: Callable[[str], PolicyEngine]) -> None:
    """Partial evaluation takes entities missing from the store as unknown; the action's is
    added so that ``action in [...]`` decides as in a full evaluation."""
    engine = engine_for(
        """
        @id("set") permit (principal, action in [Action::"tools/call", Action::"prompts/get"], resource)
        when { context.arguments has x };
        """
    )
    assert listable(engine, user(), tool("t")) == [True]


def test_listing_over_approximates(engine_for: Callable[[str], PolicyEngine]) -> None:
    """Residuals are not solved: an unsatisfiable argument condition still lists (the call
    itself is always decided on real arguments)."""
    engine = engine_for(
        """
        @id("never") permit (principal, action, resource)
        when { context.arguments has x && !(context.arguments has x) };
        """
    )
    assert listable(engine, user(), tool("t")) == [True]
    assert not allowed(engine, user(), tool("t"), x=1)
    assert not allowed(engine, user(), tool("t"))
