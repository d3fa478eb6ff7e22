"""``bastion scan --connect``: start or reach each configured server with the official ``mcp`` SDK
client and list what it offers (tools, and prompts and resources when it has them).

A stdio server is started as the client would start it (its ``command``, ``args``, ``cwd`` and
``env`` on top of the SDK's default environment; ``${env:NAME}`` and ``${NAME}`` references in
``env`` are resolved from this process's environment); an HTTP server is reached with Streamable
HTTP (``sse`` entries with the legacy SSE transport) and its configured headers. Each server has
a time limit; a server that fails, hangs or answers nonsense gives ``Listing.error`` (one line),
never an exception.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import httpx2
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from bastion.scan.clients import ServerEntry
from bastion.scan.findings import DefinitionKind

__all__ = ["DEFAULT_TIMEOUT_S", "Listing", "list_definitions"]

DEFAULT_TIMEOUT_S = 30.0
MAX_PAGES = 20
_REFERENCE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Listing:
    """What one server listed: (kind, definition as JSON) pairs, or ``error``."""

    entry: ServerEntry
    definitions: tuple[tuple[DefinitionKind, dict[str, Any]], ...] = ()
    error: str | None = None
    server_name: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def _resolve(env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    return {k: _REFERENCE.sub(lambda m: environ.get(m.group(1), ""), v) for k, v in env.items()}


def _transport(entry: ServerEntry, errlog: TextIO, http: httpx2.AsyncClient | None) -> Any:
    if entry.transport == "stdio":
        params = StdioServerParameters(command=entry.command or "", args=list(entry.args),
                                       env=_resolve(entry.env, os.environ) or None, cwd=entry.cwd)  # fmt: skip
        return stdio_client(params, errlog=errlog)
    headers = _resolve(entry.headers, os.environ)
    if entry.transport == "sse":
        return sse_client(entry.url or "", headers=headers)
    return streamable_http_client(entry.url or "", http_client=http)


async def _pages(fetch: Any, attribute: str) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await fetch(cursor=cursor)
        items.extend(getattr(page, attribute))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


def _json(item: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = item.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dumped


async def _list(entry: ServerEntry, errlog: TextIO) -> Listing:
    headers = _resolve(entry.headers, os.environ) if entry.transport == "http" else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        Client(_transport(entry, errlog, http), mode="legacy") as client,
    ):
        capabilities = client.server_capabilities
        definitions: list[tuple[DefinitionKind, dict[str, Any]]] = []
        if capabilities.tools is not None:
            definitions += [("tool", _json(t)) for t in await _pages(client.list_tools, "tools")]
        if capabilities.prompts is not None:
            definitions += [("prompt", _json(p)) for p in await _pages(client.list_prompts, "prompts")]
        if capabilities.resources is not None:
            definitions += [("resource", _json(r)) for r in await _pages(client.list_resources, "resources")]
            templates = await _pages(client.list_resource_templates, "resource_templates")
            definitions += [("resource_template", _json(t)) for t in templates]
        info = client.server_info
        return Listing(entry, tuple(definitions), server_name=info.name if info else "")


def _reason(exc: BaseException) -> str:
    """One line for a failure, looking inside exception groups for the cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def list_definitions(entry: ServerEntry, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                           errlog: TextIO | None = None) -> Listing:  # fmt: skip
    """Connect to (or start) ``entry``'s server and list its definitions within ``timeout_s``
    seconds. Never raises (except cancellation of the caller): failures are ``Listing.error``."""
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
        try:
            with anyio.fail_after(timeout_s):
                return await _list(entry, errlog or devnull)
        except TimeoutError:
            return Listing(entry, error=f"no answer within {timeout_s:g} s")
        except anyio.get_cancelled_exc_class():
            raise
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - any failure of a server is reported
            return Listing(entry, error=_reason(exc))
