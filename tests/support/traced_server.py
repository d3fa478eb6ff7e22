"""An upstream MCP server that keeps the W3C ``traceparent`` of every request it gets: the witness of the
tracing tests.

Run as a child process (plain HTTP on 127.0.0.1), written with the official ``mcp`` SDK::

    python -m tests.support.traced_server --port N

- Its MCP endpoint (Streamable HTTP, JSON replies) is ``http://127.0.0.1:N/mcp``; no authentication.
- Tool ``deploy(service)``: answers ``deployed <service>``.
- ``GET /debug/traceparents``: ``[{"method": ..., "traceparent": ... or null}, ...]``, one per HTTP
  request to ``/mcp``, oldest first.

``traced_server()`` starts it and yields ``(mcp_url, traceparents)`` where ``traceparents()`` fetches the list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.mcp_http_server import debug_list, serve_main, server_process, with_debug_list

__all__ = ["traced_server"]


def _app() -> ASGIApp:
    server = MCPServer("traced")
    seen: list[dict[str, Any]] = []

    @server.tool()
    def deploy(service: str) -> str:
        """Deploy SERVICE."""
        return f"deployed {service}"

    inner = server.streamable_http_app(json_response=True)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            headers = dict(scope["headers"])
            parent = headers.get(b"traceparent")
            seen.append({"method": scope["method"], "traceparent": parent.decode() if parent else None})
        await inner(scope, receive, send)

    return with_debug_list(app, "/debug/traceparents", seen)


@contextlib.contextmanager
def traced_server() -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    """Start the server; yield its MCP URL and a function returning what it saw."""
    with server_process("tests.support.traced_server", ready="/debug/traceparents") as base:
        yield f"{base}/mcp", debug_list(base, "/debug/traceparents")


def main() -> None:
    """Serve on 127.0.0.1:--port."""
    serve_main(__doc__, lambda _: _app())


if __name__ == "__main__":
    main()
