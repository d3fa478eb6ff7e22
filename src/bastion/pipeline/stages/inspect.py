"""Stage 12, inspect: list results filtered with the same policy as calls (a message filter).

A ``tools/list`` / ``resources/list`` / ``resources/templates/list`` /
``prompts/list`` result keeps an item exactly when the caller may call it
(``tools/call`` on that tool, ``resources/read`` on that resource or template,
``prompts/get`` on that prompt), if need be after a scope step-up (a ``@scope``
forbid answers the call with 403 ``insufficient_scope``, so the client can ask
for more), page by page, so a paginated list is filtered too (``nextCursor`` is
kept). Tool definitions seen here refresh the route's catalog. A filtered
2026-07-28 result is marked ``cacheScope: "private"``: it is specific to this
principal. Each item is decided against its slice of the policies (``PolicyEngine.iter_listable``),
and the filter gives the event loop back every ``LIST_SLICE_SECONDS`` of that work, so a long list
with a large policy set never holds up other requests for long.

``ListFilter`` is a ``MessageFilter`` (``bastion.pipeline.filters``): the runner
applies it to every response on every stream, so a list answered on a POST's
SSE stream or replayed on a resumed GET stream is filtered exactly like a JSON
reply. Deny by construction: without a principal every item is dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bastion.pipeline.context import Exchange
from bastion.pipeline.stages.authorize import policy_context
from bastion.policy import PolicyEngine, ResourceRef
from bastion.stores.sessions import SentRequest

__all__ = ["LISTS", "LIST_SLICE_SECONDS", "ListFilter"]

LIST_SLICE_SECONDS = 0.002
"""The longest a list's policy work runs before the filter yields to the event loop (seconds)."""

LISTS = {
    "tools/list": ("tools", "tools/call", "Tool"),
    "resources/list": ("resources", "resources/read", "Resource"),
    "resources/templates/list": ("resourceTemplates", "resources/read", "Resource"),
    "prompts/list": ("prompts", "prompts/get", "Prompt"),
}
"""List method → (result key, the action each item is judged by, its Cedar entity type)."""


class ListFilter:
    """Filter list results in every reply and stream (see module docstring)."""

    name = "list"

    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return ``message`` with its list filtered when it answers a list request, else unchanged."""
        if answered is None or answered.method not in LISTS:
            return message
        result = message.get("result")
        key, action, kind = LISTS[answered.method]
        if not isinstance(result, dict):
            return message
        listed = result.get(key)
        if listed is None:
            return message
        items = [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []
        if answered.method == "tools/list":
            complete = answered.first_page and not result.get("nextCursor")
            exchange.route.catalog_for(exchange.principal).merge(items, complete=complete)
        refs = [self._ref(exchange, kind, item) for item in items]
        principal = exchange.principal
        if principal is None:
            allowed = [False] * len(refs)
        else:
            context = policy_context(exchange)
            # Listed when callable, possibly after a step-up: as if the token had every scope
            # the route can be granted (a @scope forbid then answers the call with a 403).
            context["scopes"] = sorted({*context["scopes"], *exchange.route.scopes_supported})
            allowed = []
            resume = time.perf_counter() + LIST_SLICE_SECONDS
            for listable in self._engine.iter_listable(principal, action, refs, context):
                allowed.append(listable)
                if time.perf_counter() > resume:
                    await asyncio.sleep(0)  # let other requests run between items
                    resume = time.perf_counter() + LIST_SLICE_SECONDS
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
            return exchange.route.inventory.ref(item)  # as the call is judged (bastion.policy.inventory)
        if kind == "Resource":
            uri = str(item.get("uri", item.get("uriTemplate")))
            return ResourceRef(kind="Resource", route=route, name=uri, attrs={"uri": uri})
        name = str(item.get("name"))
        return ResourceRef(kind="Prompt", route=route, name=name, attrs={"name": name})
