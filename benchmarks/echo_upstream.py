"""A minimal, fast Streamable HTTP MCP server for ``make bench`` (not the SDK).

A raw asyncio protocol on uvloop with the httptools parser: no ASGI, no framework,
keep-alive connections, one JSON answer per POST. It speaks just enough MCP
(2025-11-25 basic/transports, handshake era) for Bastion's HTTP route and for wrk:

- ``initialize`` -> result with ``Mcp-Session-Id`` (a new random id);
- ``notifications/*`` and client responses -> ``202 Accepted``;
- ``tools/list`` -> one tool ``echo`` (inputSchema, ``readOnlyHint: true``);
- ``tools/call`` of ``echo`` -> ``{"content": [{"type": "text", "text": <message>}]}``;
- ``ping`` -> ``{}``; any other method -> JSON-RPC -32601;
- every message after ``initialize`` must carry a known ``Mcp-Session-Id`` (else 404);
- ``DELETE`` ends the session; ``GET`` is 405 (no server-to-client stream);
- ``GET /healthz`` -> 200 (readiness probe of ``benchmarks/run.py``).

Run: ``python benchmarks/echo_upstream.py --port 9100`` (endpoint ``/mcp``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
from typing import Any

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None  # type: ignore[assignment]

PROTOCOL_VERSION = "2025-11-25"
SERVER_INFO = {"name": "bench-echo", "version": "1.0.0"}
ECHO_TOOL = {
    "name": "echo",
    "title": "Echo",
    "description": "Return the message unchanged.",
    "inputSchema": {
        "type": "object",
        "properties": {"message": {"type": "string", "description": "Text to echo back."}},
        "required": ["message"],
        "additionalProperties": False,
    },
    "annotations": {"title": "Echo", "readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
}

_STATUS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}
_SESSIONS: set[str] = set()


def _dumps(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _response(status: int, body: bytes = b"", extra: bytes = b"", keep_alive: bool = True) -> bytes:
    head = b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, _STATUS.get(status, b"Error"), len(body))
    if body:
        head += b"content-type: application/json\r\n"
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + extra + b"\r\n" + body


def _error(rpc_id: Any, code: int, message: str) -> bytes:
    return _dumps({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}})


def handle_post(session_id: bytes | None, body: bytes) -> tuple[int, bytes, bytes]:
    """``(status, body, extra header lines)`` for one POSTed JSON-RPC message."""
    try:
        message = json.loads(body)
    except ValueError:
        return 400, _error(None, -32700, "Parse error"), b""
    if not isinstance(message, dict):
        return 400, _error(None, -32600, "Invalid Request"), b""
    method = message.get("method")
    rpc_id = message.get("id")
    if method == "initialize":
        sid = secrets.token_hex(16)
        _SESSIONS.add(sid)
        requested = (message.get("params") or {}).get("protocolVersion") or PROTOCOL_VERSION
        result = {
            "protocolVersion": requested if requested <= PROTOCOL_VERSION else PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
        }
        return (
            200,
            _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}),
            b"mcp-session-id: %s\r\n" % (sid.encode()),
        )
    if session_id is None:
        return 400, _error(rpc_id, -32600, "Bad Request: Mcp-Session-Id header is required"), b""
    if session_id.decode("latin-1") not in _SESSIONS:
        return 404, _error(rpc_id, -32001, "Session not found"), b""
    if method is None or rpc_id is None:  # a notification or a client response
        return 202, b"", b""
    if method == "tools/call":
        params = message.get("params") or {}
        if params.get("name") != "echo":
            return 200, _error(rpc_id, -32602, f"Unknown tool: {params.get('name')!r}"), b""
        text = str((params.get("arguments") or {}).get("message", ""))
        called: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": False}
        return 200, _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": called}), b""
    if method == "tools/list":
        return 200, _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": {"tools": [ECHO_TOOL]}}), b""
    if method == "ping":
        return 200, _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": {}}), b""
    return 200, _error(rpc_id, -32601, f"Method not found: {method}"), b""


class HttpProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, parsed by httptools."""

    __slots__ = ("_body", "_parser", "_session", "_transport", "_url")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._session: bytes | None = None
        self._url = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_response(400, keep_alive=False))
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []
        self._session = None

    def on_url(self, url: bytes) -> None:
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 14 and name.lower() == b"mcp-session-id":
            self._session = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        method = self._parser.get_method()
        keep_alive = self._parser.should_keep_alive()
        if method == b"POST":
            status, body, extra = handle_post(self._session, b"".join(self._body))
            out = _response(status, body, extra, keep_alive)
        elif method == b"GET" and self._url.startswith(b"/healthz"):
            out = _response(200, b'{"status":"ok"}', b"", keep_alive)
        elif method == b"DELETE":
            if self._session is not None:
                _SESSIONS.discard(self._session.decode("latin-1"))
            out = _response(200, b"", b"", keep_alive)
        else:
            out = _response(405, b"", b"allow: POST, DELETE\r\n", keep_alive)
        transport.write(out)
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if uvloop is not None:
            uvloop.run(serve(args.host, args.port))
        else:
            asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
