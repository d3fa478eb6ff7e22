"""A tiny MCP server for the end-to-end tests of Bastion's stdio ownership and upstream TLS.

Run as ``python tests/support/e2e_env_server.py`` (stdio), or with ``--port P --cert C --key K``
as a Streamable HTTP server over HTTPS on 127.0.0.1 (``/mcp``) with that certificate. Tools:

- ``environment``: the process's whole environment (``dict(os.environ)``);
- ``whoami``: the process id;
- ``shout(text)``: writes ``text`` to stderr (Bastion must put it in its log).

At start it writes one marker line to stderr as well.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
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


def main() -> None:
    """stdio by default; HTTPS on 127.0.0.1 with ``--port``, ``--cert`` and ``--key``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    print(f"{STARTUP_MARKER} pid={os.getpid()}", file=sys.stderr, flush=True)
    if args.port is None:
        server.run("stdio")
        return
    uvicorn.run(
        server.streamable_http_app(host="127.0.0.1"),
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
