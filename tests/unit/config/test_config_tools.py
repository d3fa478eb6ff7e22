"""A route's tool inventory in the configuration: ``tools`` (risk, owner, classification, labels)
and ``trust_annotations``; every mistake is refused naming its dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError


def _config(policy: Path, **route: Any) -> dict[str, Any]:
    return {
        "policy": {"files": [str(policy)]},
        "routes": [{"name": "notes", "http": {"url": "https://notes.example/mcp"}, **route}],
    }


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.cedar"
    path.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    return path


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="bastion.yaml")
    return caught.value.message


def test_a_route_trusts_no_annotations_and_configures_no_tool_by_default(policy: Path) -> None:
    route = parse_config(_config(policy)).route("notes")
    assert route.trust_annotations is False
    assert route.tools == {}


def test_tools_are_read_with_their_risk_owner_classification_and_labels(policy: Path) -> None:
    tools = {
        "delete_note": {"risk": "destructive", "owner": "sre", "classification": "internal", "labels": ["prod"]},
        "search_notes": {"owner": "sre"},
    }
    route = parse_config(_config(policy, trust_annotations=True, tools=tools)).route("notes")
    assert route.trust_annotations is True
    delete = route.tools["delete_note"]
    assert (delete.risk, delete.owner, delete.classification, delete.labels) == (
        "destructive", "sre", "internal", ("prod",)
    )  # fmt: skip
    search = route.tools["search_notes"]
    assert (search.risk, search.owner, search.classification, search.labels) == (None, "sre", None, ())


@pytest.mark.parametrize(
    ("tool", "place"),
    [
        ({"risk": "harmless"}, "routes.0.tools.t.risk"),
        ({"risk": "READ"}, "routes.0.tools.t.risk"),
        ({"egress": "internal-only"}, "routes.0.tools.t.egress"),  # no egress profiles (yet): unknown
        ({"owners": "sre"}, "routes.0.tools.t.owners"),
        ({"owner": ""}, "routes.0.tools.t.owner"),
        ({"classification": ""}, "routes.0.tools.t.classification"),
        ({"labels": "pii"}, "routes.0.tools.t.labels"),
        ({"labels": ["pii", 3]}, "routes.0.tools.t.labels.1"),
        ({"labels": [""]}, "routes.0.tools.t.labels.0"),
    ],
)
def test_a_bad_tool_entry_is_refused_naming_the_key(policy: Path, tool: dict[str, Any], place: str) -> None:
    message = _error(_config(policy, tools={"t": tool}))
    assert message.startswith(f"bastion.yaml: {place}"), message


def test_bad_tools_maps_and_trust_values_are_refused(policy: Path) -> None:
    assert "routes.0.tools" in _error(_config(policy, tools=["delete_note"]))
    assert "routes.0.tools.delete_note" in _error(_config(policy, tools={"delete_note": "destructive"}))
    assert "routes.0.trust_annotations" in _error(_config(policy, trust_annotations="sometimes"))
