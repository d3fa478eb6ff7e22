"""Stage 4, classify: which Cedar action and resource a message is about.

``tools/call``, ``resources/read`` and ``prompts/get`` (and the methods that
act on the same objects: ``resources/subscribe``/``unsubscribe`` read a
resource, ``completion/complete`` reads the prompt or resource it completes)
get a Cedar action and resource. Session plumbing that touches no tool
(``initialize``, ``ping``, lists, which are filtered item by item later)
needs no decision beyond authentication: ``SESSION_METHODS``. Any other method
is unknown to Bastion and denied by default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bastion.errors import TransportError, clip
from bastion.pipeline.context import Exchange
from bastion.policy import ResourceRef

__all__ = ["MAX_UNLISTED_NAME", "SESSION_METHODS", "ClassifyStage"]

SESSION_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "logging/setLevel",
        "subscriptions/listen",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)
"""Methods allowed to any authenticated principal; lists are filtered by policy afterwards."""

MAX_UNLISTED_NAME = 128
"""The longest tool name Bastion forwards a call for when the upstream has not listed it."""

CatalogLoader = Callable[[Exchange], Awaitable[None]]


def _string_param(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise TransportError(f"Invalid params: {method} needs a string {key!r}", jsonrpc_code=-32602)
    return value


class ClassifyStage:
    """Set ``action``, ``target`` and ``resource`` on the exchange.

    ``load_catalog`` is called when a ``tools/call`` names a tool the route's
    catalog does not hold yet, so the tool's annotations (risk) are known
    before the policy decides; a tool the upstream does not list is classified
    with the most restrictive risk, ``destructive``.
    """

    name = "classify"

    def __init__(self, load_catalog: CatalogLoader) -> None:
        self._load_catalog = load_catalog

    async def run(self, exchange: Exchange) -> None:
        """Classify the message; raises ``TransportError`` (-32602) on malformed params."""
        if exchange.kind == "response":
            return
        method = exchange.method or ""
        params = exchange.params
        route = exchange.route.name
        if method == "tools/call":
            name = _string_param(params, "name", method)
            # Named in the record even if loading the catalog fails (a hostile length only in part).
            exchange.action, exchange.target = "tools/call", clip(name, MAX_UNLISTED_NAME)
            catalog = exchange.route.catalog_for(exchange.principal)
            ref = catalog.ref(route, name)
            if ref is None:
                await self._load_catalog(exchange)
                ref = catalog.ref(route, name)
            if ref is None and len(name) > MAX_UNLISTED_NAME:
                # MCP 2025-11-25 server/tools: names SHOULD be 1 to 128 characters. A longer name the
                # upstream does not list is refused here, so no error message echoes it back whole.
                raise TransportError(f"Invalid params: unknown tool {clip(name, 64)!r}", jsonrpc_code=-32602)
            exchange.target = name
            exchange.resource = ref or ResourceRef.from_tool(route, {"name": name, "_unlisted": True})
        elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = _string_param(params, "uri", method)
            exchange.action, exchange.target = "resources/read", uri
            exchange.resource = ResourceRef(kind="Resource", route=route, name=uri, attrs={"uri": uri})
        elif method == "prompts/get":
            name = _string_param(params, "name", method)
            exchange.action, exchange.target = "prompts/get", name
            exchange.resource = ResourceRef(kind="Prompt", route=route, name=name, attrs={"name": name})
        elif method == "completion/complete":
            self._classify_completion(exchange, params)
        elif method not in SESSION_METHODS:
            exchange.action, exchange.target = method, None

    @staticmethod
    def _classify_completion(exchange: Exchange, params: dict[str, Any]) -> None:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise TransportError("Invalid params: completion/complete needs a 'ref'", jsonrpc_code=-32602)
        route = exchange.route.name
        if ref.get("type") == "ref/prompt":
            name = _string_param(ref, "name", "completion/complete")
            exchange.action, exchange.target = "prompts/get", name
            exchange.resource = ResourceRef(kind="Prompt", route=route, name=name, attrs={"name": name})
        elif ref.get("type") == "ref/resource":
            uri = _string_param(ref, "uri", "completion/complete")
            exchange.action, exchange.target = "resources/read", uri
            exchange.resource = ResourceRef(kind="Resource", route=route, name=uri, attrs={"uri": uri})
        else:
            raise TransportError("Invalid params: unknown completion ref type", jsonrpc_code=-32602)
