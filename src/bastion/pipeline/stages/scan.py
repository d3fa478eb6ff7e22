"""The scan filter: list results keep only the definitions the route's guard serves (issue 15).

A message filter in the ``scan`` slot (``bastion.pipeline.plan.FILTER_SLOTS``), after the list
filter: for a ``tools/list``, ``prompts/list``, ``resources/list`` or
``resources/templates/list`` result, every definition is judged by the route's
``DefinitionGuard`` (``bastion.catalog.guard``: pins and the definition scanner's verdicts), and
the ones that are quarantined (new or changed since their pin) or hidden by a finding are taken
out, page by page (``nextCursor`` kept). For ``tools/list`` the guard judges the caller's whole
catalog (the list filter just merged the page into it, tools this caller may not call included),
so drift is caught and first-use pins are taken whoever lists first. A listing that was complete
(the last page; for prompts and resources, a single page nothing was filtered out of) lets a
``first_use`` route start its baseline. On a route that a finding blocks the list is answered with
``RouteBlocked``'s JSON-RPC error instead.

The guard records what it decides (``definition/...`` records); the filter itself drops nothing
whole, so it records nothing.
"""

from __future__ import annotations

from typing import Any

from bastion.catalog.definitions import definition_sha256
from bastion.catalog.guard import DefinitionGuard, Judged
from bastion.pipeline.context import Exchange
from bastion.scan.findings import DefinitionKind
from bastion.stores.sessions import SentRequest

__all__ = ["LIST_KINDS", "DefinitionFilter"]

LIST_KINDS: dict[str, tuple[str, DefinitionKind, str]] = {
    "tools/list": ("tools", "tool", "name"),
    "prompts/list": ("prompts", "prompt", "name"),
    "resources/list": ("resources", "resource", "uri"),
    "resources/templates/list": ("resourceTemplates", "resource_template", "uriTemplate"),
}
"""List method → (result key, kind of definition, the member that names it)."""


class DefinitionFilter:
    """Take quarantined and hidden definitions out of list results (see the module docstring)."""

    name = "scan"
    audits_own_drops = True

    def __init__(self, guard: DefinitionGuard) -> None:
        self._guard = guard

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return ``message`` with its list cut to the definitions served, or in its place the error
        of a blocked route; any other message unchanged."""
        guard = self._guard
        if answered is None or answered.method not in LIST_KINDS or not guard.active:
            return message
        result = message.get("result")
        key, kind, member = LIST_KINDS[answered.method]
        if type(result) is not dict or not isinstance(result.get(key), list):
            return message
        listed: list[Any] = result[key]
        last_page = not result.get("nextCursor")
        items = [item for item in listed if isinstance(item, dict) and isinstance(item.get(member), str)]
        principal = exchange.principal
        judged: list[Judged]
        if kind == "tool":
            catalog = exchange.route.catalog_for(principal)
            hashes = catalog.hashes
            if not catalog.stale:
                await guard.judge(kind, [(name, t, hashes[name]) for name, t in catalog.tools.items()],
                                  principal=principal)  # fmt: skip
            judged = [(i["name"], i, hashes[i["name"]] if catalog.tools.get(i["name"]) is i else definition_sha256(i))
                      for i in items]  # fmt: skip
            complete = last_page
        else:
            judged = [(item[member], item, definition_sha256(item)) for item in items]
            complete = answered.first_page and last_page and not exchange.notes.get("filtered_out")
        verdicts = [guard.cached(kind, name, sha256) for name, _, sha256 in judged]  # the catalog's, just judged
        if not all(verdict is not None for verdict in verdicts):
            verdicts = list(await guard.judge(kind, judged, principal=principal))
        await guard.listed(kind, complete=complete)
        if guard.blocked:
            error = guard.blocked_error()
            return {"jsonrpc": "2.0", "id": message.get("id"),
                    "error": {"code": error.jsonrpc_code, "message": error.message, "data": error.data}}  # fmt: skip
        kept = [item for item, verdict in zip(items, verdicts, strict=True) if verdict is not None and verdict.served]
        if len(kept) == len(listed):
            return message
        return {**message, "result": {**result, key: kept}}
