"""``routes[].definitions`` (pinning and what a scanner finding does) in the configuration file:
the defaults, what is accepted, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion import ConfigError, parse_config
from bastion.config.definitions import FindingActions


def _config(tmp_path: Path, definitions: Any = None) -> dict[str, Any]:
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);', encoding="utf-8")
    route: dict[str, Any] = {"name": "db", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True}}
    if definitions is not None:
        route["definitions"] = definitions
    return {"policy": {"files": ["p.cedar"]}, "routes": [route]}


def test_the_defaults_pin_by_admin_and_hide_high_findings(tmp_path: Path) -> None:
    settings = parse_config(_config(tmp_path), base_dir=tmp_path).routes[0].definitions
    assert settings.pin == "admin"
    assert (settings.on_finding.high, settings.on_finding.medium, settings.on_finding.low) == ("hide", "warn", "warn")
    assert [settings.pins(kind) for kind in ("tool", "prompt", "resource_template")] == [True, True, True]
    assert not settings.pins("resource")  # a resource list is data


def test_a_route_says_who_pins_which_kinds_and_what_findings_do(tmp_path: Path) -> None:
    definitions = {"pin": "first_use", "pinned": ["tool", "resource"], "on_finding": {"medium": "block"}}
    settings = parse_config(_config(tmp_path, definitions), base_dir=tmp_path).routes[0].definitions
    assert (settings.pin, settings.pinned) == ("first_use", ("tool", "resource"))
    assert settings.on_finding.worst(["low", "medium"]) == "block"
    assert not parse_config(_config(tmp_path, {"pin": "off"}), base_dir=tmp_path).routes[0].definitions.pins("tool")


def test_the_worst_action_of_findings_wins() -> None:
    actions = FindingActions(high="hide", medium="warn", low="block")
    assert actions.worst([]) is None
    assert actions.worst(["medium", "high"]) == "hide"
    assert actions.worst(["high", "low"]) == "block"


@pytest.mark.parametrize(
    ("definitions", "place"),
    [
        ({"pin": "always"}, "routes.0.definitions.pin"),
        ({"pinned": ["tool", "widget"]}, "routes.0.definitions.pinned"),
        ({"on_finding": {"high": "drop"}}, "routes.0.definitions.on_finding.high"),
        ({"on_finding": {"critical": "block"}}, "routes.0.definitions.on_finding.critical"),
        ({"pins": "admin"}, "routes.0.definitions.pins"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_key(tmp_path: Path, definitions: dict[str, Any], place: str) -> None:
    with pytest.raises(ConfigError, match=place.replace(".", r"\.")):
        parse_config(_config(tmp_path, definitions), base_dir=tmp_path)
