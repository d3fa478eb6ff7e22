"""``PolicyEngine.may_permit``: whether any principal could be permitted to call a tool (inventories)."""

from __future__ import annotations

from collections.abc import Callable

from policy_helpers import ENGINE_POLICIES

from bastion.policy import PolicyEngine, ResourceRef, ToolFacts, ToolInventory

RISK_POLICIES = """
@id("anyone-reads")
permit (principal, action == Action::"tools/call", resource is Tool)
when { resource.risk == "read" };

@id("no-restricted")
forbid (principal, action, resource is Tool)
when { resource.classification == "restricted" };

@id("after-hours")
forbid (principal, action, resource is Tool)
when { context.time > 2000000000 };

@id("prompts-only")
permit (principal, action == Action::"prompts/get", resource);
"""

INVENTORY = ToolInventory(
    "demo",
    tools={
        "lookup": ToolFacts("read"),
        "secret_lookup": ToolFacts("read", classification="restricted"),
        "drop": ToolFacts("destructive"),
    },
)


def _ref(name: str) -> ResourceRef:
    return INVENTORY.unlisted(name)


def test_conditions_on_the_resource_decide(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(RISK_POLICIES)
    assert engine.may_permit(_ref("lookup")) is True
    # The only permit for tools/call needs risk read; the other permit names another action.
    assert engine.may_permit(_ref("drop")) is False
    # A forbid that applies whoever asks and whatever the context: never permitted.
    assert engine.may_permit(_ref("secret_lookup")) is False


def test_principal_scopes_do_not_reach_other_resources(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(ENGINE_POLICIES)
    # ops may call anything on route demo (whatever its risk): some principal can.
    assert engine.may_permit(_ref("drop")) is True
    # Another route: "in Server::demo" excludes it. Cedar alone keeps "unknown principal in Group &&
    # false" as a residual (a "may"); the slice by resource scope leaves that permit out.
    other = ToolInventory("elsewhere").unlisted("drop")
    assert engine.may_permit(other) is False


def test_no_permit_for_the_action_means_no(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for('@id("prompts") permit (principal, action == Action::"prompts/get", resource);')
    assert engine.may_permit(_ref("lookup")) is False
    engine = engine_for('@id("all") permit (principal, action, resource);')
    assert engine.may_permit(_ref("drop")) is True
