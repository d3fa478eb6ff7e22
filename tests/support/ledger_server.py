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

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.bastion_process import free_port, stop, wait_http

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

    inner = server.streamable_http_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/debug/ledger":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": json.dumps(ledger).encode()})
            return
        await inner(scope, receive, send)

    return app


@contextlib.contextmanager
def ledger_server() -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    """Start the ledger server; yield its MCP URL and a function returning the ledger."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ledger_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def ledger() -> list[dict[str, Any]]:
        return list(httpx2.get(f"{base}/debug/ledger", timeout=10).json())

    try:
        wait_http(f"{base}/debug/ledger", proc=proc)
        yield f"{base}/mcp", ledger
    finally:
        stop(proc)


def main() -> None:
    """Serve the ledger on 127.0.0.1:--port."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(_app(), host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
