"""A route's tool inventory (``routes[].tools``, ``trust_annotations``) judges a tool the same way
in a ``tools/list`` (the list filter) and in a ``tools/call`` (classify -> authorize), whether the
call's tool comes from the catalog or is unlisted.

The policy permits every tool to support, but never a destructive one or one labelled ``pii``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import PolicyDenied
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.stages.authorize import AuthorizeStage
from bastion.pipeline.stages.classify import ClassifyStage
from bastion.pipeline.stages.inspect import ListFilter
from bastion.policy import PolicyEngine
from bastion.principal import Principal
from bastion.transport.routes import RouteRuntime, tool_inventory

POLICY = """
@id("support-tools")
permit (principal in Group::"support", action == Action::"tools/call", resource);

@id("no-destructive")
forbid (principal, action == Action::"tools/call", resource) when { resource.risk == "destructive" };

@id("no-pii")
forbid (principal, action == Action::"tools/call", resource) when { resource.labels.contains("pii") };
"""
TOOLS: list[dict[str, Any]] = [
    {"name": "search", "annotations": {"readOnlyHint": True}},
    {"name": "export", "annotations": {"readOnlyHint": True}},
    {"name": "bare"},
]
SUPPORT = Principal(
    kind="User", sub="sam", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0, groups=("support",)
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    path = tmp_path_factory.mktemp("policy") / "inventory.cedar"
    path.write_text(POLICY, encoding="utf-8")
    return PolicyEngine.load([path])


def _route(**settings: Any) -> RouteRuntime:
    return RouteRuntime(
        settings=RouteSettings.model_validate(
            {"name": "notes", "http": HttpUpstream(url="http://upstream.test/mcp", allow_http=True), **settings}
        ),
        resource_uri="http://gw.test/mcp/notes",
        metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/notes",
    )


def _exchange(route: RouteRuntime, method: str, params: dict[str, Any]) -> Exchange:
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    exchange = Exchange(
        route=route, http=HttpRequest("POST", "/mcp/notes", {}, (), "127.0.0.1", json.dumps(message).encode())
    )
    exchange.message, exchange.kind, exchange.principal = message, "request", SUPPORT
    return exchange


async def _listed(engine: PolicyEngine, route: RouteRuntime) -> list[str]:
    exchange = _exchange(route, "tools/list", {})
    exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}})
    inspector = MessageInspector([ListFilter(engine)], on_drop=_ignore)
    await inspector.inspect_reply(exchange)
    inspector.wrap(exchange, "reply")
    assert isinstance(exchange.reply, JsonReply)
    return [tool["name"] for tool in exchange.reply.message["result"]["tools"]]


async def _ignore(exchange: Exchange, message: Any, reason: str) -> None:
    return None


async def _called(engine: PolicyEngine, route: RouteRuntime, name: str) -> tuple[str, tuple[str, ...]]:
    """Classify and authorize a call of ``name`` (the catalog loads ``TOOLS``): (effect, policy ids)."""

    async def load(exchange: Exchange) -> None:
        exchange.route.catalog_for(exchange.principal).merge(TOOLS, complete=True)

    exchange = _exchange(route, "tools/call", {"name": name, "arguments": {}})
    await ClassifyStage(load).run(exchange)
    with contextlib.suppress(PolicyDenied):  # a deny is raised; the decision stays on the exchange
        await AuthorizeStage(engine).run(exchange)
    assert exchange.decision is not None
    return exchange.decision.effect, exchange.decision.policy_ids


async def _judged(engine: PolicyEngine, route: RouteRuntime) -> dict[str, bool]:
    """Each tool: listed, and (asserted equal) callable."""
    listed = await _listed(engine, route)
    calls = {tool["name"]: (await _called(engine, route, tool["name"]))[0] == "allow" for tool in TOOLS}
    assert calls == {tool["name"]: tool["name"] in listed for tool in TOOLS}  # a list and a call never disagree
    return calls


async def test_without_trust_annotations_every_tool_is_destructive(engine: PolicyEngine) -> None:
    route = _route()
    assert await _judged(engine, route) == {"search": False, "export": False, "bare": False}
    assert await _called(engine, route, "search") == ("deny", ("no-destructive",))


async def test_with_trust_annotations_the_annotations_decide(engine: PolicyEngine) -> None:
    assert await _judged(engine, _route(trust_annotations=True)) == {"search": True, "export": True, "bare": False}


async def test_a_configured_risk_wins_and_labels_reach_the_policy(engine: PolicyEngine) -> None:
    route = _route(
        trust_annotations=True,
        tools={"bare": {"risk": "read"}, "export": {"labels": ["pii"]}, "search": {"risk": "destructive"}},
    )
    assert await _judged(engine, route) == {"search": False, "export": False, "bare": True}
    assert await _called(engine, route, "export") == ("deny", ("no-pii",))


async def test_an_unlisted_tool_is_destructive_unless_configured(engine: PolicyEngine) -> None:
    route = _route(trust_annotations=True, tools={"ghost": {"risk": "read", "owner": "ops"}})
    assert await _called(engine, route, "ghost") == ("allow", ("support-tools",))
    assert await _called(engine, route, "phantom") == ("deny", ("no-destructive",))
    ghost = route.inventory.unlisted("ghost")
    assert (ghost.attrs["risk"], ghost.attrs["risk_source"], ghost.attrs["owner"]) == ("read", "config", "ops")


def test_the_inventory_is_built_from_the_route_settings() -> None:
    settings = RouteSettings.model_validate(
        {
            "name": "notes",
            "http": {"url": "https://notes.example/mcp"},
            "trust_annotations": True,
            "tools": {"export": {"risk": "write", "owner": "data", "classification": "restricted", "labels": ["pii"]}},
        }
    )
    inventory = tool_inventory(settings)
    assert (inventory.route, inventory.trust_annotations) == ("notes", True)
    export = inventory.facts("export")
    assert (export.risk, export.owner, export.classification, export.labels) == ("write", "data", "restricted", {"pii"})
    assert inventory.facts("other").risk is None
    ref = inventory.ref({"name": "export", "annotations": {"readOnlyHint": True}})
    assert ref.entity()["attrs"] | {"annotations": None} == {
        "name": "export",
        "route": "notes",
        "risk": "write",
        "owner": "data",
        "classification": "restricted",
        "labels": ["pii"],
        "annotations": None,
    }
    unconfigured = RouteSettings(name="r", http=HttpUpstream(url="https://r.example/mcp"))
    assert unconfigured.trust_annotations is False
    assert tool_inventory(unconfigured).unlisted("x").attrs["risk"] == "destructive"
