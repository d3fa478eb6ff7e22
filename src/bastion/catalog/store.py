"""Where a route's tool catalogs live: one per route, or one per user on per-user-credential routes.

The decision (docs/architecture.md, "The tool catalog"): a route whose upstream
credential is the caller's own (per-user OAuth tokens or RFC 8693 token
exchange) may show each user a different tool list, so it keeps one catalog per
principal (``Principal.key``); a route with one upstream identity (static
headers or none, stdio) keeps one catalog for everyone. Catalogs are a per-process
cache of what the upstream said, never shared between replicas: each replica
learns from the upstream itself, and every list change marks every catalog of
the route stale, since the upstream's announcement on one user's stream says
nothing about whom else the change concerns.

``CatalogStore`` is the protocol; ``MemoryCatalogStore`` the embedded backend,
bounded (least recently used users are forgotten past ``max_users``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from bastion.catalog.definitions import ToolCatalog

__all__ = ["CatalogStore", "MemoryCatalogStore"]


class CatalogStore(Protocol):
    """One route's catalogs."""

    @property
    def per_user(self) -> bool:
        """Whether each principal has a catalog of its own."""
        ...

    def catalog(self, principal_key: str | None) -> ToolCatalog:
        """The catalog ``principal_key`` sees (created empty and stale on first use)."""
        ...

    def mark_stale(self) -> None:
        """Mark every catalog of the route stale (the upstream announced a list change)."""
        ...


class MemoryCatalogStore:
    """In-process catalogs of one route; ``per_user`` keeps one per principal, at most ``max_users``."""

    def __init__(self, *, per_user: bool = False, max_users: int = 10_000) -> None:
        self._per_user = per_user
        self._max = max_users
        self._shared = ToolCatalog()
        self._by_user: OrderedDict[str, ToolCatalog] = OrderedDict()

    @property
    def per_user(self) -> bool:
        """Whether each principal has a catalog of its own."""
        return self._per_user

    def catalog(self, principal_key: str | None) -> ToolCatalog:
        """The shared catalog, or ``principal_key``'s own on a per-user route (``None``: a fresh,
        stale catalog that is never kept, so nothing is learnt or judged without a principal)."""
        if not self._per_user:
            return self._shared
        if principal_key is None:
            return ToolCatalog()
        catalog = self._by_user.get(principal_key)
        if catalog is None:
            catalog = self._by_user[principal_key] = ToolCatalog()
            while len(self._by_user) > self._max:
                self._by_user.popitem(last=False)
        else:
            self._by_user.move_to_end(principal_key)
        return catalog

    def mark_stale(self) -> None:
        """Mark every catalog stale."""
        self._shared.stale = True
        for catalog in self._by_user.values():
            catalog.stale = True
