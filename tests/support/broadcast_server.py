"""A stdio MCP server, written with the official ``mcp`` SDK, for the tests of what reaches a client unasked.

Run as ``python tests/support/broadcast_server.py`` (stdio). It offers:

- tool ``flood(count, size)``: sends ``count`` ``notifications/message`` log notifications, each
  carrying ``size`` characters, then answers ``sent <count>``. On a stdio route they are not tied to
  a client's request, so Bastion broadcasts them to every open GET stream of the route;
- resource templates ``notes://{name}`` and ``secrets://{name}`` (``resources/templates/list``),
  and reading either.
"""

from __future__ import annotations

import warnings

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("broadcast")


@server.resource("notes://{name}")
def note(name: str) -> str:
    """The note called NAME."""
    return f"note {name}"


@server.resource("secrets://{name}")
def secret(name: str) -> str:
    """The secret called NAME."""
    return f"secret {name}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def flood(count: int, size: int, ctx: Context) -> str:
    """Send COUNT log notifications of SIZE characters each."""
    payload = "x" * size
    with warnings.catch_warnings():  # the logging capability is deprecated from 2026-07-28; Bastion speaks 2025-11-25
        warnings.simplefilter("ignore")
        for seq in range(count):
            await ctx.log("info", {"seq": seq, "payload": payload}, logger_name="flood")
    return f"sent {count}"


if __name__ == "__main__":
    server.run("stdio")
