"""An upstream MCP server whose tool returns as many rows as it is asked for: the result-volume witness.

Run as a child process (plain HTTP on 127.0.0.1), written with the official ``mcp`` SDK::

    python -m tests.support.rows_server --port N [--json]

- Its MCP endpoint (Streamable HTTP) is ``http://127.0.0.1:N/mcp``; no authentication. With
  ``--json`` it answers POSTs with ``application/json`` bodies, else with SSE streams.
- Tool ``customers(count)``: ``count`` rows (``{"id", "name", "email"}``, the same for the same
  ``count``), each as a text block and all of them as ``structuredContent.rows``.

``rows_server(json_response)`` starts it and yields its MCP URL.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from tests.support.mcp_http_server import serve_main, server_process

__all__ = ["customer_rows", "rows_server"]


def customer_rows(count: int) -> list[dict[str, Any]]:
    """The rows ``customers(count)`` returns."""
    return [{"id": n, "name": f"customer-{n:05d}", "email": f"customer-{n:05d}@example.com"} for n in range(count)]


def _server() -> MCPServer:
    server = MCPServer("rows")

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def customers(count: int) -> CallToolResult:
        """Return COUNT customer rows."""
        rows = customer_rows(count)
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(row)) for row in rows],
            structured_content={"rows": rows},
        )

    return server


@contextlib.contextmanager
def rows_server(json_response: bool = False) -> Iterator[str]:
    """Start the rows server (JSON or SSE replies); yield its MCP URL."""
    with server_process("tests.support.rows_server", *(["--json"] if json_response else [])) as base:
        yield f"{base}/mcp"


def main() -> None:
    """Serve on 127.0.0.1:--port."""
    serve_main(__doc__, lambda args: _server().streamable_http_app(json_response=args.json), json_option=True)


if __name__ == "__main__":
    main()
