"""A message filter that marks the route's tool catalog stale on ``notifications/tools/list_changed``.

The upstream announces a changed tool list on any stream (MCP 2025-11-25
server/tools, "List Changed Notification"): a POST's SSE stream, a GET stream,
or a stdio process's output. Whatever the transport, the next call then reloads
the catalog before the policy judges a tool by its old definition. The
notification itself is relayed unchanged.
"""

from __future__ import annotations

from typing import Any

from bastion.pipeline.context import Exchange
from bastion.stores.sessions import SentRequest

__all__ = ["ListChangedFilter"]


class ListChangedFilter:
    """Mark the route's catalogs stale when the upstream says its tools changed."""

    name = "list_changed"

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return ``message`` unchanged."""
        if message.get("method") == "notifications/tools/list_changed":
            exchange.route.catalogs.mark_stale()
        return message
