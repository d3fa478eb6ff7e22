"""Stage 4, classify: which Cedar action and resource a message is about.

``tools/call``, ``resources/read`` and ``prompts/get`` (and the methods that
act on the same objects: ``resources/subscribe``/``unsubscribe`` read a
resource, ``completion/complete`` reads the prompt or resource it completes)
get a Cedar action and resource. Session plumbing that touches no tool
(``initialize``, ``ping``, lists, which are filtered item by item later)
needs no decision beyond authentication: ``SESSION_METHODS``.

A request for a method its protocol version does not have (``known_methods``:
the SDK's table of client requests and notifications per version, plus the
tasks extension's requests on 2026-07-28) is answered ``MethodNotFound``
(-32601; HTTP 404 on 2026-07-28) and never forwarded: an unknown method, and the
ones 2026-07-28 removed (``initialize``, ``ping``, ``logging/setLevel``,
``resources/subscribe``/``unsubscribe``, and ``tasks/result``/``tasks/list``,
which the tasks extension removed). Any other method Bastion does not classify
is denied by default.

A 2026-07-28 ``tools/call``'s ``Mcp-Param-*`` headers are checked against its
arguments here, where the tool's schema is known
(``bastion.transport.checks.check_param_headers``). The tasks extension's
requests keep their method as action here (a deny) until the continuation stage
classifies them as the call of the task they name.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types.methods import CLIENT_NOTIFICATIONS, CLIENT_REQUESTS

from bastion.errors import MethodNotFound, TransportError, clip
from bastion.pipeline.context import Exchange
from bastion.policy import ResourceRef
from bastion.transport.checks import check_param_headers, has_param_header

__all__ = ["MAX_UNLISTED_NAME", "SESSION_METHODS", "TASK_METHODS", "ClassifyStage", "known_methods", "string_param"]

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

TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
"""The requests of the tasks extension (SEP-2663); it removed ``tasks/result`` and ``tasks/list``."""
_CLIENT_METHODS = tuple((*CLIENT_REQUESTS, *CLIENT_NOTIFICATIONS))


@functools.cache
def known_methods(era: str, version: str) -> frozenset[str]:
    """The client-to-server methods of a request of ``era`` and protocol ``version``.

    2026-07-28 (``era == "modern"``): the methods that version has (``mcp_types.methods``)
    and the tasks extension's requests (SEP-2663). Handshake era: every method of the
    versions before it, whatever the negotiated one (Bastion never refused those; the
    upstream answers what its version lacks).
    """
    if era == "modern":
        return frozenset(method for method, in_version in _CLIENT_METHODS if in_version == version) | TASK_METHODS
    return frozenset(method for method, in_version in _CLIENT_METHODS if in_version < "2026") | SESSION_METHODS


MAX_UNLISTED_NAME = 128
"""The longest tool name Bastion forwards a call for when the upstream has not listed it."""

CatalogLoader = Callable[[Exchange], Awaitable[None]]


def string_param(params: dict[str, Any], key: str, method: str) -> str:
    """``params[key]`` when it is a non-empty string, else ``TransportError`` (-32602, "Invalid params")."""
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise TransportError(f"Invalid params: {method} needs a string {key!r}", jsonrpc_code=-32602)
    return value


class ClassifyStage:
    """Set ``action``, ``target`` and ``resource`` on the exchange.

    ``load_catalog`` is called when a ``tools/call`` names a tool the route's
    catalog does not hold yet, so the tool's definition is known before the
    policy decides; its Cedar resource comes from the route's tool inventory
    (``bastion.policy.inventory``), so a tool the upstream does not list is
    ``destructive`` unless the route's ``tools:`` map gives it a risk.
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
        if exchange.kind == "request" and method not in known_methods(exchange.era, exchange.protocol_version or ""):
            exchange.target = clip(method, MAX_UNLISTED_NAME)
            raise MethodNotFound(f"Method not found: {clip(method)}")
        if method == "tools/call":
            name = string_param(params, "name", method)
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
            exchange.resource = ref or exchange.route.inventory.unlisted(name)
            http = exchange.http
            if exchange.era == "modern" and (catalog.promotes_headers(name) or has_param_header(http.raw_headers)):
                check_param_headers(catalog.get(name), params.get("arguments"), http.headers, http.raw_headers)
        elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = string_param(params, "uri", method)
            exchange.action, exchange.target = "resources/read", uri
            exchange.resource = ResourceRef(kind="Resource", route=route, name=uri, attrs={"uri": uri})
        elif method == "prompts/get":
            name = string_param(params, "name", method)
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
            name = string_param(ref, "name", "completion/complete")
            exchange.action, exchange.target = "prompts/get", name
            exchange.resource = ResourceRef(kind="Prompt", route=route, name=name, attrs={"name": name})
        elif ref.get("type") == "ref/resource":
            uri = string_param(ref, "uri", "completion/complete")
            exchange.action, exchange.target = "resources/read", uri
            exchange.resource = ResourceRef(kind="Resource", route=route, name=uri, attrs={"uri": uri})
        else:
            raise TransportError("Invalid params: unknown completion ref type", jsonrpc_code=-32602)
