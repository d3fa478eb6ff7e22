"""An upstream MCP server that counts the calls it carries out: the witness of approval tests.

Run as a child process (plain HTTP on 127.0.0.1), written with the official ``mcp`` SDK::

    python -m tests.support.ledger_server --port N

- Its MCP endpoint (Streamable HTTP) is ``http://127.0.0.1:N/mcp``; no authentication.
- Tool ``deploy(service, env)``: appends ``{"service", "env"}`` to the ledger and answers
  ``deployed <service> to <env>``. Tool ``restart(service)``: appends ``{"restart"}``. Tool
  ``status()``: read-only, answers ``ok``. Tool ``post(channel, text)``: the stand-in for an
  external sink (a chat message out of the company), appends ``{"post", "text"}``.
- ``GET /debug/ledger``: the ledger as a JSON array, oldest first (every ``deploy`` that ran).

``ledger_server()`` starts it and yields ``(mcp_url, ledger)`` where ``ledger()`` fetches the list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from tests.support.mcp_http_server import debug_list, serve_main, server_process, with_debug_list

__all__ = ["ledger_server"]


def _app() -> ASGIApp:
    server = MCPServer("ledger")
    ledger: list[dict[str, str]] = []

    @server.tool()
    def deploy(service: str, env: str) -> str:
        """Deploy SERVICE to ENV (recorded in the ledger)."""
        ledger.append({"service": service, "env": env})
        return f"deployed {service} to {env}"

    @server.tool()
    def restart(service: str) -> str:
        """Restart SERVICE (recorded in the ledger)."""
        ledger.append({"restart": service})
        return f"restarted {service}"

    @server.tool()
    def post(channel: str, text: str) -> str:
        """Post TEXT to CHANNEL (recorded in the ledger)."""
        ledger.append({"post": channel, "text": text})
        return f"posted to {channel}"

    @server.tool()
    def status() -> str:
        """Whether the ledger is up."""
        return "ok"

    return with_debug_list(server.streamable_http_app(), "/debug/ledger", ledger)


@contextlib.contextmanager
def ledger_server() -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    """Start the ledger server; yield its MCP URL and a function returning the ledger."""
    with server_process("tests.support.ledger_server", ready="/debug/ledger") as base:
        yield f"{base}/mcp", debug_list(base, "/debug/ledger")


def main() -> None:
    """Serve the ledger on 127.0.0.1:--port."""
    serve_main(__doc__, lambda _: _app())


if __name__ == "__main__":
    main()
