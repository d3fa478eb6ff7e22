"""``ToolInventory``: the one builder of a tool's Cedar resource from what the upstream and the
route's configuration say (configured risk, else trusted annotations, else destructive)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.policy import ToolFacts, ToolInventory

READ_ONLY = {"name": "search", "annotations": {"readOnlyHint": True}}
WRITE = {"name": "search", "annotations": {"readOnlyHint": False, "destructiveHint": False}}
FACTS = ToolFacts(owner="docs", classification="public", labels=frozenset({"search", "public-data"}))


@pytest.mark.parametrize(
    ("trust", "configured", "definition", "risk", "source"),
    [
        (False, None, READ_ONLY, "destructive", "default"),
        (False, None, WRITE, "destructive", "default"),
        (True, None, READ_ONLY, "read", "annotations"),
        (True, None, WRITE, "write", "annotations"),
        (True, None, {"name": "search"}, "destructive", "annotations"),  # MCP's default for an unannotated tool
        (False, "read", WRITE, "read", "config"),
        (True, "destructive", READ_ONLY, "destructive", "config"),  # a configured risk always wins
    ],
)
def test_the_risk_is_configured_then_trusted_annotations_then_destructive(
    trust: bool, configured: Any, definition: dict[str, Any], risk: str, source: str
) -> None:
    facts = ToolFacts(configured, FACTS.owner, FACTS.classification, FACTS.labels)
    ref = ToolInventory("docs", trust, {"search": facts}).ref(definition)
    assert (ref.attrs["risk"], ref.attrs["risk_source"]) == (risk, source)
    attrs = ref.entity()["attrs"]
    assert (attrs["risk"], attrs["owner"], attrs["classification"]) == (risk, "docs", "public")
    assert attrs["labels"] == ["public-data", "search"]  # a Cedar set, in a stable order
    assert ref.uid == {"type": "Tool", "id": "docs/search"}


def test_a_tool_the_configuration_does_not_name_gets_empty_facts() -> None:
    inventory = ToolInventory("docs", True, {"search": FACTS})
    other = inventory.ref({"name": "export", "annotations": {"readOnlyHint": True}}).entity()["attrs"]
    assert (other["risk"], other["owner"], other["classification"], other["labels"]) == ("read", "", "", [])
    assert inventory.facts("export") == ToolFacts()


def test_an_unlisted_tool_is_destructive_unless_configured() -> None:
    inventory = ToolInventory("docs", True, {"search": ToolFacts("read", labels=frozenset({"x"}))})
    ghost = inventory.unlisted("ghost")
    assert (ghost.attrs["risk"], ghost.attrs["risk_source"]) == ("destructive", "default")
    search = inventory.unlisted("search")
    assert (search.attrs["risk"], search.attrs["risk_source"], search.attrs["labels"]) == ("read", "config", ("x",))
    with pytest.raises(ValueError, match="name"):
        inventory.unlisted("")


def test_a_definition_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="name"):
        ToolInventory("docs").ref({"annotations": {"readOnlyHint": True}})
