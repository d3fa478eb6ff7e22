"""A tiny stdio MCP server for the end-to-end tests of Bastion's stdio ownership.

Run as ``python tests/support/e2e_env_server.py``. Tools:

- ``environment``: the process's whole environment (``dict(os.environ)``);
- ``whoami``: the process id;
- ``shout(text)``: writes ``text`` to stderr (Bastion must put it in its log).

At start it writes one marker line to stderr as well.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

STARTUP_MARKER = "e2e-env-server: started"

server = MCPServer("e2e-env")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def environment() -> dict[str, str]:
    """The environment variables this process was started with."""
    return dict(os.environ)


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def whoami() -> int:
    """This process's id."""
    return os.getpid()


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def shout(text: str) -> str:
    """Write TEXT to stderr."""
    print(text, file=sys.stderr, flush=True)
    return "ok"


if __name__ == "__main__":
    print(f"{STARTUP_MARKER} pid={os.getpid()}", file=sys.stderr, flush=True)
    server.run("stdio")
