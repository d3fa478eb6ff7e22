"""Resources of the conformance fixture: what the ``resources-*`` scenarios of the conformance
suite (0.1.16 and 0.2.0) list, read and subscribe to.

* ``test://static-text`` (text), ``test://static-binary`` (a PNG), ``test://watched-resource``
  (the one clients subscribe to) and the template ``test://template/{id}/data`` (JSON);
* ``resources/subscribe`` and ``resources/unsubscribe``: the subscribed URIs are remembered, no
  update is ever sent.

The resources are the official ``mcp`` SDK's (``MCPServer.resource``). By hand, because the SDK's
``MCPServer`` registers no handler for them: ``resources/subscribe`` and ``resources/unsubscribe``,
added on its low-level server.

Usage: ``install_resources(mcp)`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types
from fixture_content import RED_PIXEL_PNG
from mcp.server.mcpserver import MCPServer

__all__ = ["install_resources"]


def install_resources(mcp: MCPServer[Any]) -> None:
    """Register the resources, the template and the subscribe/unsubscribe handlers on ``mcp``."""

    @mcp.resource(
        "test://static-text", name="static-text", description="A static text resource", mime_type="text/plain"
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource(
        "test://static-binary",
        name="static-binary",
        description="A static binary resource (PNG)",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return RED_PIXEL_PNG

    @mcp.resource(
        "test://watched-resource",
        name="watched-resource",
        description="A resource clients can subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content."

    @mcp.resource(
        "test://template/{id}/data",
        name="template-data",
        description="A resource template with an {id} parameter",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    subscriptions: set[str] = set()

    async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def on_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    lowlevel = mcp._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)
