"""The tool catalog: per route (and per user where upstream credentials differ) the tool
definitions an upstream listed, their canonical hashes and staleness. Pinning and definition
scanning have their home here (docs/architecture.md, "The tool catalog")."""

from bastion.catalog.definitions import MAX_CATALOG_PAGES, PageFetcher, ToolCatalog, definition_sha256
from bastion.catalog.store import CatalogStore, MemoryCatalogStore

__all__ = [
    "MAX_CATALOG_PAGES",
    "CatalogStore",
    "MemoryCatalogStore",
    "PageFetcher",
    "ToolCatalog",
    "definition_sha256",
]
