"""Routes at run time: the configured route plus its live upstream and tool catalog."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.config import RouteSettings
from bastion.errors import UpstreamError
from bastion.policy import ResourceRef
from bastion.upstream.http import HttpUpstream
from bastion.upstream.stdio import StdioServer

if TYPE_CHECKING:
    from bastion.credentials.broker import CredentialSource

__all__ = ["MAX_CATALOG_PAGES", "PageFetcher", "RouteRuntime", "ToolCatalog"]

logger = logging.getLogger(__name__)

MAX_CATALOG_PAGES = 20
PageFetcher = Callable[[str | None], Awaitable[dict[str, Any]]]
"""Fetches one ``tools/list`` page: takes the cursor (``None`` first), returns the result object."""


@dataclass(slots=True)
class ToolCatalog:
    """The upstream's tool definitions by name, as last listed (MCP ``Tool`` objects).

    Filled from every ``tools/list`` result that passes through the gateway
    and by the classify stage when it meets a tool it has not seen. ``stale``
    is set when the upstream announces ``notifications/tools/list_changed``;
    a stale catalog answers no tool, so the next call reloads it first and a
    changed tool is never judged by its old annotations.
    """

    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: bool = True
    _refs: dict[str, ResourceRef] = field(default_factory=dict)

    def merge(self, tools: list[Any], *, complete: bool = False) -> None:
        """Record tool definitions from one ``tools/list`` page; ``complete`` replaces the catalog."""
        found = {t["name"]: t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)}
        if complete:
            self.tools = found
        else:
            self.tools.update(found)
        self._refs = {}
        self.stale = False

    async def reload(self, fetch_page: PageFetcher) -> bool:
        """Replace the catalog with every page ``fetch_page`` returns (at most ``MAX_CATALOG_PAGES``).

        Best effort: on ``UpstreamError`` the catalog stays as it was and
        ``False`` is returned, so an unknown tool stays classified as unlisted.
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

    def ref(self, route: str, name: str) -> ResourceRef | None:
        """The Cedar resource of tool ``name`` (built once per catalog version), or ``None`` if unlisted.

        Raises ``ValueError`` when the upstream's definition is unusable (see ``ResourceRef.from_tool``).
        """
        if self.stale:
            return None
        ref = self._refs.get(name)
        if ref is None:
            tool = self.tools.get(name)
            if tool is None:
                return None
            ref = self._refs[name] = ResourceRef.from_tool(route, tool)
        return ref

    def get(self, name: str) -> dict[str, Any] | None:
        """The definition of tool ``name``, or ``None`` if the upstream never listed it."""
        return self.tools.get(name)


@dataclass(slots=True)
class RouteRuntime:
    """A route as the gateway serves it.

    ``resource_uri`` is the route's RFC 8707 resource indicator (the audience
    of its tokens); ``metadata_url`` its RFC 9728 protected resource metadata;
    ``scopes`` the scopes a client asks for to use it (the 401 challenge's
    ``scope``, MCP 2025-11-25 basic/authorization "Scope Selection Strategy") and
    ``scopes_supported`` all it may be granted (the metadata's).
    Exactly one of ``http`` / ``stdio`` is set. ``credentials`` is where each caller's
    upstream credential comes from (``None``: the route's static headers, if any).
    """

    settings: RouteSettings
    resource_uri: str
    metadata_url: str
    scopes: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    http: HttpUpstream | None = None
    stdio: StdioServer | None = None
    credentials: CredentialSource | None = None
    catalog: ToolCatalog = field(default_factory=ToolCatalog)

    @property
    def name(self) -> str:
        """The route name, as used in Cedar ids (``Server::"<name>"``)."""
        return self.settings.name

    @property
    def path(self) -> str:
        """The public path of the route's MCP endpoint."""
        return self.settings.public_path
