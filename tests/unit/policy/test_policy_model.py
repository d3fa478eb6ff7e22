"""The entity model: tool risk, ResourceRef, and that built entities and context fit the schema."""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from policy_helpers import user

from bastion.policy import ResourceRef, tool_risk
from bastion.policy.engine import build_context
from bastion.policy.loader import builtin_schema_text
from bastion.policy.model import principal_entity
from bastion.principal import Principal


@pytest.mark.parametrize(
    ("annotations", "risk"),
    [
        ({"readOnlyHint": True}, "read"),
        ({"readOnlyHint": True, "destructiveHint": False}, "read"),
        ({"readOnlyHint": True, "destructiveHint": True}, "destructive"),
        ({"readOnlyHint": False, "destructiveHint": False}, "write"),
        ({"destructiveHint": False}, "write"),
        ({"readOnlyHint": False}, "destructive"),
        ({"destructiveHint": True}, "destructive"),
        ({}, "destructive"),
        ({"readOnlyHint": "true"}, "destructive"),
        ({"readOnlyHint": 1, "destructiveHint": "false"}, "destructive"),
    ],
)
def test_tool_risk_over_classifies(annotations: dict[str, Any], risk: str) -> None:
    assert tool_risk(annotations) == risk


def test_from_tool_derives_risk_and_clean_annotations() -> None:
    ref = ResourceRef.from_tool(
        "demo",
        {
            "name": "drop_table",
            "annotations": {"title": "Drop", "readOnlyHint": False, "openWorldHint": "yes", "extra": 1},
        },
        trust_annotations=True,
        owner="data-team",
        classification="restricted",
        labels=["pii", "customer-data", "pii"],
    )
    assert ref.uid == {"type": "Tool", "id": "demo/drop_table"}
    assert ref.entity() == {
        "uid": {"type": "Tool", "id": "demo/drop_table"},
        "attrs": {
            "name": "drop_table",
            "route": "demo",
            "owner": "data-team",
            "classification": "restricted",
            "risk": "destructive",
            "annotations": {"readOnlyHint": False, "title": "Drop"},
            "labels": ["customer-data", "pii"],
        },
        "parents": [{"type": "Server", "id": "demo"}],
    }
    assert ref.attrs["risk_source"] == "annotations"


READ_ONLY = {"name": "t", "annotations": {"readOnlyHint": True}}


@pytest.mark.parametrize(
    ("options", "risk", "source"),
    [
        ({}, "destructive", "default"),  # annotations are hints from an untrusted server
        ({"trust_annotations": True}, "read", "annotations"),
        ({"risk": "write"}, "write", "config"),
        ({"risk": "destructive", "trust_annotations": True}, "destructive", "config"),  # configured risk wins
    ],
)
def test_from_tool_risk_is_configured_then_trusted_annotations_then_destructive(
    options: dict[str, Any], risk: str, source: str
) -> None:
    ref = ResourceRef.from_tool("demo", READ_ONLY, **options)
    assert (ref.attrs["risk"], ref.attrs["risk_source"]) == (risk, source)
    assert ref.entity()["attrs"]["risk"] == risk
    assert ref.entity()["attrs"]["annotations"] == {"readOnlyHint": True}  # shown to Cedar either way
    assert ref.entity()["attrs"]["labels"] == []


def test_from_tool_refuses_a_risk_outside_the_three() -> None:
    with pytest.raises(ValueError, match="risk"):
        ResourceRef.from_tool("demo", READ_ONLY, risk="harmless")  # type: ignore[arg-type]


@pytest.mark.parametrize("tool", [{}, {"name": ""}, {"name": 3}])
def test_from_tool_needs_a_name(tool: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="name"):
        ResourceRef.from_tool("demo", tool)


def test_from_tool_ignores_malformed_annotations() -> None:
    ref = ResourceRef.from_tool("demo", {"name": "t", "annotations": ["readOnlyHint"]})
    assert ref.attrs["risk"] == "destructive"
    assert ref.attrs["annotations"] == {}


def test_resource_ref_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        ResourceRef("Widget", "demo", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="risk"):
        ResourceRef("Tool", "demo", "x", {"risk": "harmless"})
    with pytest.raises(TypeError, match="owner"):
        ResourceRef("Prompt", "demo", "x", {"owner": 3}).entity()
    with pytest.raises(TypeError, match="labels"):
        ResourceRef("Tool", "demo", "x", {"labels": "pii"}).entity()  # a string is not a set of labels
    with pytest.raises(TypeError, match="labels"):
        ResourceRef("Tool", "demo", "x", {"labels": ["pii", 3]}).entity()


def test_extra_attrs_stay_on_the_ref_but_not_in_the_entity() -> None:
    ref = ResourceRef("Resource", "docs", "file:///a.md", {"uri": "file:///a.md"})
    assert ref.attrs["uri"] == "file:///a.md"
    assert "uri" not in ref.entity()["attrs"]


def test_principal_entities() -> None:
    alice = user("dev", "ops", email="a@example.com", name="Alice")
    assert principal_entity(alice) == {
        "uid": {"type": "User", "id": "alice"},
        "attrs": {
            "idp": "https://idp.example.test",
            "issuer": "https://idp.example.test",
            "auth": "bastion_jwt",
            "name": "Alice",
            "email": "a@example.com",
        },
        "parents": [{"type": "Group", "id": "dev"}, {"type": "Group", "id": "ops"}],
    }
    bot = Principal("ServiceAccount", "ci", "https://idp", "external_jwt", 0, email="ci@x")
    assert principal_entity(bot)["attrs"] == {"idp": "https://idp", "issuer": "https://idp", "auth": "external_jwt"}


RESOURCES = {
    "tools/call": ResourceRef.from_tool(
        "demo", {"name": "t", "annotations": {"title": "T", "readOnlyHint": True}}, labels=["pii", "billing"]
    ),
    "resources/read": ResourceRef("Resource", "demo", "file:///x"),
    "prompts/get": ResourceRef("Prompt", "demo", "p", {"owner": "o"}),
    "sampling/createMessage": ResourceRef.server("demo"),
    "elicitation/create": ResourceRef.server("demo"),
}
PRINCIPALS = [
    user("dev", email="a@example.com", name="A"),
    user(),
    Principal("ServiceAccount", "ci", "https://idp", "external_jwt", 0, name="CI", groups=("bots",)),
]


@pytest.mark.parametrize("action", sorted(RESOURCES))
@pytest.mark.parametrize("principal", PRINCIPALS, ids=["user-full", "user-bare", "service-account"])
def test_entities_and_context_conform_to_the_builtin_schema(action: str, principal: Principal) -> None:
    """Cedar checks the request against the schema when given one: no error means it conforms."""
    schema = cedarpy.Schema.from_str(builtin_schema_text() + "\ntype Arguments = {};\n")
    resource = RESOURCES[action]
    entities = json.dumps([principal_entity(principal), resource.entity()])
    cedarpy.Entities.from_json_str(entities, schema)
    for context in ({}, {"client_id": "c", "session": "s", "ip": "10.0.0.1", "time": 5, "approved": True}):
        request = {
            "principal": {"type": principal.kind, "id": principal.sub},
            "action": {"type": "Action", "id": action},
            "resource": resource.uid,
            "context": build_context(context),
        }
        result = cedarpy.is_authorized(
            request, '@id("a") permit (principal, action, resource);', entities, schema
        )
        assert result.diagnostics.errors == []
        assert result.allowed
