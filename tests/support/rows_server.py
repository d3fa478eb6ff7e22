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

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from tests.support.bastion_process import free_port, stop, wait_http

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
    port = free_port()
    args = [sys.executable, "-m", "tests.support.rows_server", "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "--json"] if json_response else args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/mcp", proc=proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def main() -> None:
    """Serve on 127.0.0.1:--port."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json", action="store_true", help="answer POSTs with JSON bodies, not SSE")
    args = parser.parse_args()
    app = _server().streamable_http_app(json_response=args.json)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
