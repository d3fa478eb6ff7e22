"""PolicyEngine.decide and filter_allowed: Cedar semantics, fail closed, ids and obligations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cedarpy
import pytest
from policy_helpers import tool, user

from bastion.policy import DEFAULT_DENY, Decision, PolicyEngine, ResourceRef
from bastion.principal import Principal

READ = {"readOnlyHint": True}
DESTRUCTIVE = {"destructiveHint": True}


def decide(engine: PolicyEngine, principal: Principal, resource: ResourceRef, **context: Any) -> Decision:
    return engine.decide(principal, "tools/call", resource, context)


def test_deny_by_default(engine: PolicyEngine) -> None:
    decision = decide(engine, user("nobody"), tool("search", **READ))
    assert decision == Decision("deny", (), {}, ())
    assert decision.reason == DEFAULT_DENY
    assert not decision.allowed


def test_permit_names_the_deciding_policy(engine: PolicyEngine) -> None:
    decision = decide(engine, user("dev"), tool("search", **READ))
    assert (decision.effect, decision.policy_ids, decision.reason) == ("allow", ("dev-read-tools",), "permit")


def test_forbid_beats_permit_and_carries_its_annotations(engine: PolicyEngine) -> None:
    assert decide(engine, user("ops"), tool("drop", **DESTRUCTIVE)).allowed
    decision = decide(engine, user("ops", "contractors"), tool("drop", **DESTRUCTIVE))
    assert decision.effect == "deny"
    assert decision.reason == "forbid"
    assert decision.policy_ids == ("contractors-no-destructive",)
    assert decision.obligations == {"reason": "contractors never change production"}


@pytest.mark.parametrize(
    ("arguments", "allowed"),
    [
        ({"env": "dev"}, True),
        ({"env": "prod"}, False),
        ({}, False),
        ({"env": 1}, False),
        ({"env": None}, False),
    ],
)
def test_argument_level_rule(engine: PolicyEngine, arguments: dict[str, Any], allowed: bool) -> None:
    decision = decide(engine, user("dev"), tool("read_logs", **READ), arguments=arguments)
    assert decision.allowed is allowed
    assert decision.errors == ()


def test_obligations_come_from_the_determining_permits(engine: PolicyEngine) -> None:
    decision = decide(engine, user("ops"), tool("drop", **DESTRUCTIVE))
    assert (decision.policy_ids, decision.obligations) == (("ops-all-tools",), {"approval": "review"})


def test_obligations_union_and_conflict(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("a") @approval("review") permit (principal in Group::"x", action, resource);
        @id("b") @redact("pii") permit (principal in Group::"x", action, resource);
        @id("c") @approval("confirm") permit (principal in Group::"y", action, resource);
        """
    )
    both = decide(engine, user("x"), tool("t"))
    assert both.allowed
    assert both.policy_ids == ("a", "b")
    assert both.obligations == {"approval": "review", "redact": "pii"}
    conflict = decide(engine, user("x", "y"), tool("t"))
    assert (conflict.effect, conflict.reason, conflict.policy_ids) == ("deny", "error", ("a", "b", "c"))
    assert "conflicting obligation @approval" in conflict.errors[0]


def test_evaluation_error_never_allows(engine_for: Callable[[str], PolicyEngine]) -> None:
    """The erroring forbid is skipped by Cedar, which then allows; Bastion denies."""
    engine = engine_for(
        """
        @id("all") permit (principal, action, resource);
        @id("cap") forbid (principal, action, resource)
        when { context.arguments has limit && context.arguments.limit > 100 };
        """
    )
    assert decide(engine, user(), tool("t"), arguments={"limit": 5}).allowed
    assert decide(engine, user(), tool("t"), arguments={"limit": 500}).policy_ids == ("cap",)
    decision = decide(engine, user(), tool("t"), arguments={"limit": "500"})
    assert (decision.effect, decision.reason, decision.policy_ids) == ("deny", "error", ("cap",))
    assert "`cap`" in decision.errors[0]
    assert "policy0" not in decision.errors[0]
    assert "policy1" not in decision.errors[0]


@pytest.mark.parametrize(
    ("action", "context", "message"),
    [
        ("tools/list", {}, "unknown action"),
        ("tools/call", {"colour": "red"}, "unknown context key"),
        ("tools/call", {"arguments": ["not", "an", "object"]}, "JSON object"),
        ("tools/call", {"arguments": {"__entity": {"type": "User", "id": "x"}}}, "reserved"),
        ("tools/call", {"ip": "not-an-ip"}, "does not appear to be an IPv4 or IPv6 address"),
        ("tools/call", {"time": "yesterday"}, "time must be a number"),
        ("tools/call", {"approved": "yes"}, "approved a bool"),
        ("tools/call", {"session": 7}, "session must be a string"),
    ],
)
def test_bad_requests_fail_closed(
    engine_for: Callable[[str], PolicyEngine], action: str, context: dict[str, Any], message: str
) -> None:
    engine = engine_for('@id("all") permit (principal, action, resource);')
    decision = engine.decide(user(), action, tool("t"), context)
    assert (decision.effect, decision.reason) == ("deny", "error")
    assert message in decision.errors[0]
    assert engine.filter_allowed(user(), action, [tool("t"), tool("u")], context) == [False, False]


def test_cedarpy_exception_fails_closed(engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", boom)
    decision = decide(engine, user("dev"), tool("search", **READ))
    assert (decision.effect, decision.reason) == ("deny", "error")
    assert "engine exploded" in decision.errors[0]


def test_list_filtering_equals_per_item_decide(engine: PolicyEngine) -> None:
    tools = [
        tool("search", **READ),
        tool("read_logs", **READ),
        tool("drop", **DESTRUCTIVE),
        tool("write", destructiveHint=False),
        tool("unannotated"),
        ResourceRef.from_tool("other", {"name": "search", "annotations": READ}, trust_annotations=True),
    ]
    context = {"arguments": {"env": "dev"}, "time": 0}
    for principal in (user("dev"), user("ops", "contractors"), user("ops"), user()):
        expected = [engine.decide(principal, "tools/call", t, context).allowed for t in tools]
        assert engine.filter_allowed(principal, "tools/call", tools, context) == expected
    assert engine.filter_allowed(user("dev"), "tools/call", [], context) == []


def test_duplicate_refs_in_a_listing(engine: PolicyEngine) -> None:
    same = tool("search", **READ)
    assert engine.filter_allowed(user("dev"), "tools/call", [same, same], {}) == [True, True]
    clash = [same, tool("search", **DESTRUCTIVE)]
    assert engine.filter_allowed(user("dev"), "tools/call", clash, {}) == [False, False]


@pytest.mark.parametrize("sub", ['al"ice', "line\nbreak", "a/b/c", 'User::"admin"', "", "ü\u200b"])
def test_entity_ids_with_any_characters(engine_for: Callable[[str], PolicyEngine], sub: str) -> None:
    escaped = sub.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    engine = engine_for(
        f"""
        @id("exact") permit (principal == User::"{escaped}", action,
                             resource == Tool::"r/o\\"u/te/t\\nool");
        """
    )
    weird_tool = ResourceRef("Tool", 'r/o"u/te', "t\nool", {"risk": "read"})
    assert engine.decide(user(sub=sub), "tools/call", weird_tool, {}).allowed
    assert not engine.decide(user(sub=sub + "x"), "tools/call", weird_tool, {}).allowed
    assert not engine.decide(
        user(sub=sub), "tools/call", ResourceRef("Tool", "r/o", 'u"/te/t\nool'), {}
    ).allowed


def test_context_attributes(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("office") permit (principal, action, resource)
        when { context has ip && context.ip.isInRange(ip("10.0.0.0/8")) && context.time < 2000000000
               && context has client_id && context.client_id == "cli" && context has session
               && !context.approved };
        """
    )
    good = {"ip": "10.1.2.3", "time": 1_700_000_000, "client_id": "cli", "session": "s1"}
    assert engine.decide(user(), "tools/call", tool("t"), good).allowed
    for change in (
        {"ip": "192.168.0.1"},
        {"ip": ""},
        {"client_id": None},
        {"session": ""},
        {"approved": True},
    ):
        decision = engine.decide(user(), "tools/call", tool("t"), good | change)
        assert decision.reason == DEFAULT_DENY, change


def test_principal_attributes(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("corp") permit (principal is User, action, resource)
        when { principal has email && principal.email like "*@example.com"
               && principal.idp == "https://idp.example.test" && principal.auth == "bastion_jwt" };
        @id("bots") permit (principal is ServiceAccount in Group::"bots", action, resource == Server::"demo")
        when { principal.idp == "https://idp.example.test" };
        """
    )
    assert engine.decide(user(email="a@example.com"), "tools/call", tool("t"), {}).allowed
    assert not engine.decide(user(email="a@evil.test"), "tools/call", tool("t"), {}).allowed
    assert not engine.decide(user(), "tools/call", tool("t"), {}).allowed
    bot = Principal("ServiceAccount", "ci", "https://idp.example.test", "external_jwt", 0, groups=("bots",))
    assert engine.decide(bot, "sampling/createMessage", ResourceRef.server("demo"), {}).allowed
    assert not engine.decide(bot, "sampling/createMessage", ResourceRef.server("prod"), {}).allowed


def test_resource_kinds_and_attributes(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("docs") permit (principal, action == Action::"resources/read", resource in Server::"docs")
        when { resource.classification != "secret" };
        @id("prompts") permit (principal, action == Action::"prompts/get", resource)
        when { resource.owner == "team-a" && resource.route == "demo" && resource.name == "summary" };
        """
    )
    public = ResourceRef("Resource", "docs", "file:///a.md", {"uri": "file:///a.md"})
    secret = ResourceRef("Resource", "docs", "file:///b.md", {"classification": "secret"})
    assert engine.decide(user(), "resources/read", public, {}).allowed
    assert not engine.decide(user(), "resources/read", secret, {}).allowed
    prompt = ResourceRef("Prompt", "demo", "summary", {"owner": "team-a"})
    assert engine.decide(user(), "prompts/get", prompt, {}).policy_ids == ("prompts",)


def test_version_is_the_sha256_of_policies_and_schema(engine_for: Callable[[str], PolicyEngine]) -> None:
    one = engine_for('@id("a") permit (principal, action, resource);')
    same = engine_for('@id("a") permit (principal, action, resource);')
    other = engine_for('@id("a") permit (principal, action, resource);\n')
    assert len(one.version) == 64
    assert one.version == same.version != other.version
    assert one.policy_ids == ("a",)
