"""The demo's Streamable HTTP upstream: a small ops-notes MCP server built with the official SDK.

Run: ``python -m bastion.demo.notes_server --port 9001``. Its tools carry MCP
tool annotations (``readOnlyHint``/``destructiveHint``) that Bastion turns
into the Cedar ``risk`` attribute on a route with ``trust_annotations: true``
(without it, every tool is ``destructive`` unless configured). It records every request's headers so the
end-to-end tests can prove what reached it (``/debug/requests``, loopback only).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["build_server", "main"]

_LOGS = {
    "dev": ["12:00:01 api started", "12:00:05 GET /health 200"],
    "prod": ["12:00:01 api started", "12:03:44 payment failed for customer 4411"],
}


def build_server() -> MCPServer:
    """The notes server: ``read_logs``, ``search_notes``, ``add_note``, ``delete_note``."""
    server = MCPServer("ops-notes", instructions="Operational notes and logs for the demo.")
    notes: dict[str, str] = {"runbook": "Restart the api with `systemctl restart api`."}

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def read_logs(env: str, lines: int = 10) -> str:
        """Read the last log lines of an environment ("dev" or "prod")."""
        return "\n".join(_LOGS.get(env, [])[-lines:])

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def search_notes(query: str) -> list[str]:
        """Names of the notes whose text contains QUERY."""
        return [name for name, text in notes.items() if query.lower() in text.lower()]

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
    def add_note(name: str, text: str) -> str:
        """Add or replace a note."""
        notes[name] = text
        return f"saved {name}"

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
    def delete_note(name: str) -> str:
        """Delete a note for good."""
        return f"deleted {name}" if notes.pop(name, None) is not None else f"no note {name}"

    return server


class _RecordHeaders:
    """ASGI middleware keeping the headers (and, as ``:method``, the method) of the last 200 requests (for tests)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/debug/requests":
            body = json.dumps(self.seen).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            headers: dict[str, Any] = {k.decode(): v.decode() for k, v in scope["headers"]}
            headers[":method"] = scope["method"]
            self.seen = [*self.seen[-199:], headers]
        await self.app(scope, receive, send)


def main(argv: list[str] | None = None) -> None:
    """Serve the notes server on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = build_server()
    app = _RecordHeaders(server.streamable_http_app())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
