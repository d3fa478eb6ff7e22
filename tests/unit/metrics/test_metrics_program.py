"""The zero-trust program gauges (``bastion.metrics.program``), computed from a real configuration and a
real Cedar policy set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import BastionConfig, RouteSettings, parse_config
from bastion.metrics import BastionMetrics, record_program, route_credentials
from bastion.metrics.program import ProgramGauges
from bastion.policy import PolicyEngine

POLICY = """
@id("read-tools")
permit (principal, action == Action::"tools/call", resource) when { resource.risk == "read" };

@id("delete-with-review")
@approval("review")
permit (principal, action == Action::"tools/call", resource == Tool::"notes/delete_note");

@id("deploy-for-ops")
permit (principal in Group::"ops", action == Action::"tools/call", resource == Tool::"notes/deploy");
"""
HTTP = {"url": "https://upstream.example/mcp"}
EXCHANGE = {"token_endpoint": "https://sts.example/token", "client_id": "bastion", "audience": "upstream"}


@pytest.mark.parametrize(
    ("route", "kind"),
    [
        ({"http": HTTP}, "none"),
        ({"http": {**HTTP, "headers": {"X-Team": "blue"}}}, "none"),  # a literal header is no secret
        ({"http": {**HTTP, "headers": {"Authorization": {"env": "UPSTREAM_TOKEN"}}}}, "static_secret"),
        ({"stdio": {"command": "srv", "env": {"API_KEY": {"file": "/run/key"}}}}, "static_secret"),
        ({"http": HTTP, "credentials": {"token_exchange": EXCHANGE}}, "token_exchange"),
        ({"http": HTTP, "credentials": {"oauth": {"issuer": "https://idp.example"}}}, "user_oauth"),
    ],
)
def test_route_credentials(route: dict[str, Any], kind: str) -> None:
    assert route_credentials(RouteSettings.model_validate({"name": "r", **route})) == kind


def test_the_program_gauges_count_routes_and_the_configured_tools(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(POLICY)
    tools = {
        "search": {"risk": "read"},
        "delete_note": {"risk": "destructive"},
        "wipe": {},
        "deploy": {"risk": "write"},
    }
    config = parse_config({
        "data_dir": str(tmp_path / "data"), "policy": {"files": ["p.cedar"]},
        "routes": [
            {"name": "notes", "http": HTTP, "tools": tools, "credentials": {"token_exchange": EXCHANGE}},
            {"name": "git", "stdio": {"command": "git-mcp", "env": {"GIT_TOKEN": {"env": "GIT_TOKEN"}}}},
            {"name": "time", "stdio": {"command": "time-mcp"}},
        ],
    }, base_dir=tmp_path)  # fmt: skip
    engine = PolicyEngine.load(config.policy.files)
    metrics = BastionMetrics()
    record_program(metrics, config, engine)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert {kind: value("bastion_routes", credentials=kind)
            for kind in ("token_exchange", "user_oauth", "static_secret", "none")} == {
        "token_exchange": 1, "user_oauth": 0, "static_secret": 1, "none": 1,
    }  # fmt: skip
    assert value("bastion_policies") == 3
    assert value("bastion_tools_configured", route="notes") == 4
    # search (read-tools), delete_note (its own permit), deploy (ops): wipe is denied by default
    assert value("bastion_tools_permitted", route="notes") == 3
    # delete_note and wipe (no configured risk: destructive); only delete_note needs an approval
    assert value("bastion_tools_high_risk", route="notes") == 2
    assert value("bastion_tools_high_risk_approval", route="notes") == 1
    assert value("bastion_tools_configured", route="git") == 0


def test_a_reload_of_the_routes_recomputes_the_gauges_and_drops_a_removed_routes_series(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(POLICY)

    def config(*routes: dict[str, Any]) -> BastionConfig:
        return parse_config({"data_dir": str(tmp_path / "data"), "policy": {"files": ["p.cedar"]},
                             "routes": list(routes)}, base_dir=tmp_path)  # fmt: skip

    notes = {"name": "notes", "http": HTTP, "tools": {"wipe": {}}, "credentials": {"token_exchange": EXCHANGE}}
    first = config(notes, {"name": "git", "stdio": {"command": "git-mcp"}})
    metrics = BastionMetrics()
    program = ProgramGauges(metrics, first, PolicyEngine.load(first.policy.files))
    program.record()

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("bastion_tools_configured", route="notes") == 1
    assert value("bastion_routes", credentials="token_exchange") == 1
    program.use(config({"name": "git", "stdio": {"command": "git-mcp"}},
                       {"name": "time", "stdio": {"command": "time-mcp", "env": {"T": {"env": "T"}}}}))  # fmt: skip
    assert value("bastion_tools_configured", route="notes") is None  # gone, not left at 1
    assert value("bastion_tools_high_risk", route="notes") is None
    assert value("bastion_tools_configured", route="time") == 0
    kinds = ("token_exchange", "static_secret", "none")
    assert {kind: value("bastion_routes", credentials=kind) for kind in kinds} == {
        "token_exchange": 0, "static_secret": 1, "none": 1,
    }  # fmt: skip
