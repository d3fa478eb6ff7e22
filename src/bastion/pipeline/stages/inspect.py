"""Stage 12, inspect: filter list results with the same policy as calls.

A ``tools/list`` / ``resources/list`` / ``prompts/list`` result keeps an item
exactly when the caller may call it (``tools/call`` on that tool, ...), if
need be after a scope step-up (a ``@scope`` forbid answers the call with 403
``insufficient_scope``, so the client can ask for more), page by page, so a
paginated list is filtered too (``nextCursor`` is kept). Tool
definitions seen here refresh the route's catalog. A filtered 2026-07-28
result is marked ``cacheScope: "private"``: it is specific to this principal.
The decision for all items is one batched Cedar call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bastion.pipeline.context import Exchange, JsonReply, SseEvent, SseReply
from bastion.pipeline.stages.authorize import policy_context
from bastion.policy import PolicyEngine, ResourceRef

__all__ = ["InspectStage"]

_LISTS = {
    "tools/list": ("tools", "tools/call", "Tool"),
    "resources/list": ("resources", "resources/read", "Resource"),
    "prompts/list": ("prompts", "prompts/get", "Prompt"),
}


class InspectStage:
    """Filter list results in JSON and SSE replies."""

    name = "inspect"

    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine

    async def run(self, exchange: Exchange) -> None:
        """Wrap or rewrite ``exchange.reply`` so list results carry only permitted items."""
        if exchange.method not in _LISTS or exchange.principal is None:
            return
        reply = exchange.reply
        if isinstance(reply, JsonReply) and isinstance(reply.message, dict):
            reply.message = self.filter_message(exchange, reply.message)
            reply.raw = None
        elif isinstance(reply, SseReply):
            reply.events = self._filter_events(exchange, reply.events)

    async def _filter_events(self, exchange: Exchange, events: AsyncIterator[SseEvent]) -> AsyncIterator[SseEvent]:
        async for event in events:
            if isinstance(event.message, dict):
                event.message = self.filter_message(exchange, event.message)
            yield event

    def filter_message(self, exchange: Exchange, message: dict[str, Any]) -> dict[str, Any]:
        """Return ``message`` with its list filtered when it answers this exchange's list request."""
        method = exchange.method or ""
        if method not in _LISTS or message.get("id") != exchange.rpc_id:
            return message
        result = message.get("result")
        key, action, kind = _LISTS[method]
        if not isinstance(result, dict) or not isinstance(result.get(key), list):
            return message
        items = [item for item in result[key] if isinstance(item, dict)]
        if method == "tools/list":
            first_page = "cursor" not in exchange.params
            exchange.route.catalog.merge(items, complete=first_page and not result.get("nextCursor"))
        refs = [self._ref(exchange, kind, item) for item in items]
        principal = exchange.principal
        if principal is None:
            allowed = [False] * len(refs)
        else:
            context = policy_context(exchange)
            # Listed when callable, possibly after a step-up: as if the token had every scope
            # the route can be granted (a @scope forbid then answers the call with a 403).
            context["scopes"] = sorted({*context["scopes"], *exchange.route.scopes_supported})
            allowed = self._engine.filter_listable(principal, action, refs, context)
        kept = [item for item, ok in zip(items, allowed, strict=True) if ok]
        exchange.notes["listed"] = len(items)
        exchange.notes["filtered_out"] = len(items) - len(kept)
        filtered = {**result, key: kept}
        if exchange.era == "modern":
            filtered["cacheScope"] = "private"
        return {**message, "result": filtered}

    @staticmethod
    def _ref(exchange: Exchange, kind: str, item: dict[str, Any]) -> ResourceRef:
        route = exchange.route.name
        if kind == "Tool":
            return ResourceRef.from_tool(route, item)
        if kind == "Resource":
            uri = str(item.get("uri"))
            return ResourceRef(kind="Resource", route=route, name=uri, attrs={"uri": uri})
        name = str(item.get("name"))
        return ResourceRef(kind="Prompt", route=route, name=name, attrs={"name": name})
