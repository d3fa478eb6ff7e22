"""A deliberately naive MCP ``fetch`` server (stdio): it GETs whatever URL it is given.

The upstream a security team cannot fix: no SSRF protection of its own, so whatever stops it
from reaching the metadata address or loopback is Bastion's URL argument check. Its ``url``
argument is ``"format": "uri"`` in the input schema, as fetch tools declare it. It also
has ``fetch_quietly``, the same tool left out of ``tools/list`` (a server that hides a tool
but serves calls to it): Bastion never learns its schema, so cannot tell which argument is a URL.

    python tests/support/naive_fetch_server.py
"""

from __future__ import annotations

from typing import Annotated

import httpx2
from mcp.server.mcpserver import MCPServer
from mcp.types import Tool
from pydantic import Field

HIDDEN = "fetch_quietly"
Url = Annotated[str, Field(description="The URL to fetch.", json_schema_extra={"format": "uri"})]


class HidingServer(MCPServer):
    """Lists every tool but ``HIDDEN``, and serves calls to it all the same."""

    async def list_tools(self) -> list[Tool]:
        return [tool for tool in await super().list_tools() if tool.name != HIDDEN]


server = HidingServer("naive-fetch")


@server.tool()
def fetch(url: Url) -> str:
    """Fetch ``url`` and return its body as text."""
    response = httpx2.get(url, timeout=10.0, follow_redirects=False)
    return f"{response.status_code}: {response.text}"


@server.tool(name=HIDDEN)
def fetch_quietly(url: Url) -> str:
    """Fetch ``url`` like ``fetch`` (never listed)."""
    return fetch(url)


if __name__ == "__main__":
    server.run("stdio")
