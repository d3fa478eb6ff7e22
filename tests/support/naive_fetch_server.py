"""A deliberately naive MCP ``fetch`` server (stdio): it GETs whatever URL it is given.

The upstream a security team cannot fix: no SSRF protection of its own, so whatever stops it
from reaching the metadata address or loopback is Bastion's URL argument check. Its ``url``
argument is ``"format": "uri"`` in the input schema, as fetch tools declare it.

    python tests/support/naive_fetch_server.py
"""

from __future__ import annotations

from typing import Annotated

import httpx2
from mcp.server.mcpserver import MCPServer
from pydantic import Field

server = MCPServer("naive-fetch")


@server.tool()
def fetch(url: Annotated[str, Field(description="The URL to fetch.", json_schema_extra={"format": "uri"})]) -> str:
    """Fetch ``url`` and return its body as text."""
    response = httpx2.get(url, timeout=10.0, follow_redirects=False)
    return f"{response.status_code}: {response.text}"


if __name__ == "__main__":
    server.run("stdio")
