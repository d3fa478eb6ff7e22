"""``bastion check`` warns, without failing, about a route's weak tool inventory: tools judged
destructive because the route does not trust annotations, and configured tools without an owner
or a classification."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bastion.cli.checking import check_config, inventory_warnings
from bastion.config import load_config, parse_config


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.cedar"
    path.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    return path


def _check(policy: Path, *routes: dict[str, Any]) -> str:
    config = parse_config({"policy": {"files": [str(policy)]}, "routes": list(routes)})
    out = io.StringIO()
    check_config(config, Console(file=out, width=400, color_system=None))
    return out.getvalue()


def _route(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": f"https://{name}.example/mcp"}, **fields}


def test_a_route_without_trusted_annotations_or_complete_tools_is_warned_about(policy: Path) -> None:
    tools = {
        "search": {"risk": "read", "owner": "docs", "classification": "public"},
        "export": {"risk": "write", "owner": "data"},
        "purge": {"labels": ["[bold]x[/]"]},
        "[red]odd[/]": {"risk": "read", "classification": "internal"},
    }
    trusted = _route("trusted", trust_annotations=True)
    output = _check(policy, _route("untrusted"), _route("partly", tools=tools), trusted)
    lines = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert lines == [
        "warning: route untrusted: the upstream's tool annotations are not trusted, so every tool is treated as "
        "destructive; give tools a risk in routes.untrusted.tools, or set routes.untrusted.trust_annotations: true "
        "if the upstream is trusted to describe its tools",
        "warning: route partly: the upstream's tool annotations are not trusted, so every tool but the 3 given a risk "
        "in routes.partly.tools is treated as destructive; give tools a risk in routes.partly.tools, or set "
        "routes.partly.trust_annotations: true if the upstream is trusted to describe its tools",
        "warning: route partly: tool 'export' has no classification (routes.partly.tools)",
        "warning: route partly: tool 'purge' has no owner and no classification (routes.partly.tools)",
        "warning: route partly: tool '[red]odd[/]' has no owner (routes.partly.tools)",  # printed as written
    ]
    assert output.rstrip().endswith("OK (5 warnings)")  # warnings never fail the check


def test_a_route_that_trusts_annotations_with_complete_tools_gets_no_warning(policy: Path) -> None:
    tools = {"search": {"owner": "docs", "classification": "public"}}
    output = _check(policy, _route("trusted", trust_annotations=True, tools=tools))
    assert "warning" not in output
    assert output.rstrip().endswith("OK")


def test_one_warning_is_counted_as_one(policy: Path) -> None:
    route = _route("r", trust_annotations=True, tools={"t": {"owner": "o"}})
    config = parse_config({"policy": {"files": [str(policy)]}, "routes": [route]})
    assert inventory_warnings(config.routes[0]) == ["route r: tool 't' has no classification (routes.r.tools)"]
    assert _check(policy, route).rstrip().endswith("OK (1 warning)")


def test_the_example_configuration_passes_with_only_the_trust_warning() -> None:
    config = load_config(Path(__file__).parents[3] / "examples" / "bastion.yaml")
    out = io.StringIO()
    check_config(config, Console(file=out, width=400, color_system=None))
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1  # every tool has an owner and a classification
    assert "every tool but the 5 given a risk in routes.demo.tools" in warnings[0]
