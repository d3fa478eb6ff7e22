"""One catalog of tool definitions: what an upstream listed, with the hash of each definition.

Filled from every ``tools/list`` result that passes through Bastion (the list
filter) and by the classify stage when a call names a tool it has not seen.
``stale`` is set when the upstream announces ``notifications/tools/list_changed``
(on any transport); a stale catalog answers no tool, so the next call reloads
it first and a changed tool is never judged by its old annotations.

Each definition's ``hashes`` entry is the SHA-256 of its canonical JSON (RFC
8785, ``bastion.audit.canonical``): the identity that pinning and definition
scanning will compare (docs/architecture.md, "The tool catalog").

A tool's Cedar resource is built by the route's ``ToolInventory``
(``bastion.policy.inventory``), which merges the definition with the route's
configuration; ``RouteRuntime.catalog_for`` hands each catalog its route's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.shared.inbound import x_mcp_header_map

from bastion.audit.canonical import NotCanonicalizable, canonical
from bastion.errors import UpstreamError
from bastion.policy import ResourceRef, ToolInventory

__all__ = ["MAX_CATALOG_PAGES", "PageFetcher", "ToolCatalog", "definition_sha256"]

logger = logging.getLogger(__name__)

MAX_CATALOG_PAGES = 20
PageFetcher = Callable[[str | None], Awaitable[dict[str, Any]]]
"""Fetches one ``tools/list`` page: takes the cursor (``None`` first), returns the result object."""


def definition_sha256(definition: dict[str, Any]) -> str:
    """Lower-case hex SHA-256 of the canonical JSON of an MCP ``Tool`` definition (RFC 8785).

    A definition that is not a JSON value (it cannot be, coming from JSON) hashes its ``repr``.
    """
    try:
        data = canonical(definition)
    except NotCanonicalizable:
        data = repr(definition).encode()
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class ToolCatalog:
    """The upstream's tool definitions by name, as last listed (MCP 2025-11-25 server/tools ``Tool``).

    ``tools`` maps a name to its definition, ``hashes`` a name to ``definition_sha256``;
    ``stale`` is true until the first complete listing and after a list change.
    ``inventory`` builds the refs (``None``, until ``use``: the route's name and nothing
    configured, so a tool with no configured risk is ``destructive``).
    """

    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    stale: bool = True
    inventory: ToolInventory | None = None
    _refs: dict[str, ResourceRef] = field(default_factory=dict)
    _promotes: dict[str, bool] = field(default_factory=dict)

    def merge(self, tools: list[Any], *, complete: bool = False) -> None:
        """Record tool definitions from one ``tools/list`` page; ``complete`` replaces the catalog."""
        found = {t["name"]: t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)}
        if complete:
            self.tools, self.hashes = found, {}
        else:
            self.tools.update(found)
        for name, definition in found.items():
            self.hashes[name] = definition_sha256(definition)
        self._refs, self._promotes = {}, {}
        self.stale = False

    async def reload(self, fetch_page: PageFetcher) -> bool:
        """Replace the catalog with every page ``fetch_page`` returns (at most ``MAX_CATALOG_PAGES``).

        Best effort: on ``UpstreamError`` the catalog stays as it was and ``False`` is
        returned, so an unknown tool stays unknown (and is judged as the most dangerous).
        """
        tools: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_CATALOG_PAGES):
            try:
                result = await fetch_page(cursor)
            except UpstreamError as exc:
                logger.warning("tools/list for the catalog failed: %s", exc)
                return False
            page = result.get("tools")
            tools.extend(page if isinstance(page, list) else [])
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        self.merge(tools, complete=True)
        return True

    def use(self, inventory: ToolInventory) -> None:
        """Build refs with ``inventory`` from now on (a no-op when it already does)."""
        if self.inventory is not inventory:
            self.inventory, self._refs = inventory, {}

    def ref(self, route: str, name: str) -> ResourceRef | None:
        """The Cedar resource of tool ``name`` on ``route`` (built once per catalog version by the
        inventory), or ``None`` if unlisted.

        Raises ``ValueError`` when the upstream's definition is unusable (see ``ResourceRef.from_tool``).
        """
        if self.stale:
            return None
        ref = self._refs.get(name)
        if ref is None:
            tool = self.tools.get(name)
            if tool is None:
                return None
            inventory = self.inventory if self.inventory is not None else ToolInventory(route)
            ref = self._refs[name] = inventory.ref(tool)
        return ref

    def promotes_headers(self, name: str) -> bool:
        """Whether tool ``name``'s ``inputSchema`` promotes an argument to an ``Mcp-Param-*`` header
        (an ``x-mcp-header`` annotation, MCP 2026-07-28 SEP-2243); worked out once per catalog
        version. ``False`` for a tool the catalog does not hold."""
        promotes = self._promotes.get(name)
        if promotes is None:
            tool = self.get(name)
            schema = tool.get("inputSchema") if tool is not None else None
            promotes = self._promotes[name] = bool(schema) and bool(x_mcp_header_map(schema))
        return promotes

    def get(self, name: str) -> dict[str, Any] | None:
        """The definition of tool ``name``, or ``None`` if it is not known (or the catalog is stale)."""
        return None if self.stale else self.tools.get(name)
