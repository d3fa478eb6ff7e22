"""Routes at run time: the configured route plus its live upstream, tool inventory and catalogs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.catalog import CatalogStore, MemoryCatalogStore, ToolCatalog
from bastion.config import RouteSettings
from bastion.policy import ToolFacts, ToolInventory
from bastion.principal import Principal
from bastion.upstream.http import HttpUpstream
from bastion.upstream.stdio import StdioServer

if TYPE_CHECKING:
    from bastion.credentials.broker import CredentialSource

__all__ = ["RouteRuntime", "tool_inventory"]


def tool_inventory(settings: RouteSettings) -> ToolInventory:
    """The route's tool inventory from its configuration (``tools``, ``trust_annotations``)."""
    tools = {
        name: ToolFacts(tool.risk, tool.owner or "", tool.classification or "", frozenset(tool.labels))
        for name, tool in settings.tools.items()
    }
    return ToolInventory(settings.name, settings.trust_annotations, tools)


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
    ``catalogs`` holds the tool catalogs (``bastion.catalog``): one for the route, or
    one per principal on a route with per-user upstream credentials. ``inventory`` (from
    ``settings``) builds every tool's Cedar resource: the catalogs' refs, the list filter's
    and an unlisted tool's, so a listing and a call judge a tool alike.
    """

    settings: RouteSettings
    resource_uri: str
    metadata_url: str
    scopes: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    http: HttpUpstream | None = None
    stdio: StdioServer | None = None
    credentials: CredentialSource | None = None
    catalogs: CatalogStore = field(default_factory=MemoryCatalogStore)
    inventory: ToolInventory = field(init=False)

    def __post_init__(self) -> None:
        self.inventory = tool_inventory(self.settings)

    def catalog_for(self, principal: Principal | None) -> ToolCatalog:
        """The tool catalog ``principal`` sees on this route (see ``bastion.catalog.store``), whose
        refs the route's ``inventory`` builds."""
        catalog = self.catalogs.catalog(principal.key if principal is not None else None)
        catalog.use(self.inventory)
        return catalog

    @property
    def name(self) -> str:
        """The route name, as used in Cedar ids (``Server::"<name>"``)."""
        return self.settings.name

    @property
    def path(self) -> str:
        """The public path of the route's MCP endpoint."""
        return self.settings.public_path
