"""An upstream MCP server whose event streams can be resumed with ``Last-Event-ID``: the witness of
the replica tests.

Run as a child process (plain HTTP on 127.0.0.1), written with the official ``mcp`` SDK::

    python -m tests.support.resumable_server --port N

- Its MCP endpoint (Streamable HTTP, SSE answers) is ``http://127.0.0.1:N/mcp``; no authentication.
  Every event it sends is kept in an in-memory event store, so a client (here: Bastion, for its
  client) that reconnects with ``Last-Event-ID`` is sent what it missed, then the stream goes on
  (MCP 2025-11-25 basic/transports, "Resumability and Redelivery").
- Tool ``echo(text)``: answers ``text``.
- Tool ``slow(text, delay_s)``: sends one ``notifications/message`` (``working``) on the call's
  own stream, waits ``delay_s`` seconds, then answers ``text`` (recorded once answered).
- Tool ``announce(tag, count)``: sends ``count`` ``notifications/message`` notifications with the
  data ``{"tag": tag, "seq": n}`` on the session's GET stream (not tied to the call; stored while
  no GET stream is open), then answers ``announced <count>``.
- ``GET /debug/calls``: the tool calls carried out, oldest first.

``resumable_server()`` starts it and yields ``(mcp_url, calls)`` where ``calls()`` fetches the list.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from starlette.types import ASGIApp

from tests.support.mcp_http_server import debug_list, serve_main, server_process, with_debug_list

__all__ = ["MemoryEventStore", "resumable_server"]


class MemoryEventStore(EventStore):
    """Every event the server sent (the last ``size``), by id, in order."""

    def __init__(self, size: int = 10_000) -> None:
        self._events: OrderedDict[EventId, tuple[StreamId, types.JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)
        self._size = size

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._size:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if last_event_id not in self._events:
            return None
        stream_id = self._events[last_event_id][0]
        after = itertools.dropwhile(lambda item: item[0] != last_event_id, list(self._events.items()))
        next(after)  # the event the client already has
        for event_id, (stream, message) in after:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _app() -> ASGIApp:
    server = MCPServer("resumable")
    calls: list[dict[str, Any]] = []

    @server.tool()
    def echo(text: str) -> str:
        """Answer TEXT."""
        calls.append({"tool": "echo", "text": text})
        return text

    @server.tool()
    async def slow(text: str, delay_s: float, ctx: Context) -> str:
        """Log ``working`` on this call's stream, wait DELAY_S seconds, answer TEXT."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await ctx.log("info", "working", logger_name="slow")
        await anyio.sleep(delay_s)
        calls.append({"tool": "slow", "text": text})
        return text

    @server.tool()
    async def announce(tag: str, count: int, ctx: Context) -> str:
        """Send COUNT log notifications tagged TAG on the session's GET stream."""
        calls.append({"tool": "announce", "tag": tag, "count": count})
        with warnings.catch_warnings():  # logging is deprecated from 2026-07-28; these sessions speak 2025-11-25
            warnings.simplefilter("ignore")
            for seq in range(count):
                await ctx.session.send_log_message("info", {"tag": tag, "seq": seq}, logger="announce")
        return f"announced {count}"

    app = server.streamable_http_app(event_store=MemoryEventStore())
    return with_debug_list(app, "/debug/calls", calls)


@contextlib.contextmanager
def resumable_server() -> Iterator[tuple[str, Callable[[], list[dict[str, Any]]]]]:
    """Start the server; yield its MCP URL and a function returning the calls it carried out."""
    with server_process("tests.support.resumable_server", ready="/debug/calls") as base:
        yield f"{base}/mcp", debug_list(base, "/debug/calls")


def main() -> None:
    """Serve on 127.0.0.1:--port."""
    serve_main(__doc__, lambda _: _app())


if __name__ == "__main__":
    main()
