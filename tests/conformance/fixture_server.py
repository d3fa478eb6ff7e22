"""Conformance fixture MCP server: implements what the MCP conformance suite's server scenarios call.

Written with the official ``mcp`` Python SDK (``MCPServer``) and served over Streamable HTTP:

    python tests/conformance/fixture_server.py --port 8931          # http://127.0.0.1:8931/mcp
    python tests/conformance/fixture_server.py --port 0             # any free port

Once listening it prints one line to stdout, ``READY http://127.0.0.1:<port>/mcp``, which
lets a test start it with ``--port 0`` and read the URL.

The names, arguments and payloads are the ones the scenarios of
``@modelcontextprotocol/conformance`` (see docs/conformance.md; 0.1.16 and 0.2.0) look for.
One endpoint serves both protocol eras, as the SDK does: 2025-era clients get stateful sessions
(``initialize``, ``Mcp-Session-Id``), 2026-07-28 clients stateless single-exchange POSTs.

``build_server()`` puts together, in this order (the order ``tools/list`` shows):

* ``fixture_tools.py``: tools ``test_*`` and ``json_schema_2020_12_tool``, progress, logging
  (and ``logging/setLevel``), sampling and elicitation (server -> client requests on the POST's
  SSE stream, 2025 era);
* ``fixture_custom_headers.py``: SEP-2243 custom headers (``Mcp-Param-*``);
* here, the tools that probe the server and its transport:

  * SEP-2575 (stateless) diagnostics: ``test_missing_capability`` (needs ``sampling``; without it
    the SDK answers -32021 MissingRequiredClientCapability, HTTP 400), ``test_streaming_elicitation``,
    ``test_logging_tool`` (the SDK drops its log notifications unless the request's ``_meta`` sets
    a logLevel), ``test_trigger_tool_change`` / ``test_trigger_prompt_change`` (publish
    ``list_changed`` on ``subscriptions/listen`` streams through the SDK's subscription bus).
    ``server/discover``, ``_meta`` validation, version and header checks are the SDK's.
  * SSE polling (SEP-1699): ``test_reconnection`` closes its SSE stream mid-call; the in-memory
    event store below replays the result when the client reconnects with ``Last-Event-ID``.

* ``fixture_resources.py``: resources ``test://...``, ``resources/(un)subscribe``;
* ``fixture_prompts.py``: prompts ``test_*``, completions;
* ``fixture_input_required.py``: SEP-2322 multi round-trip requests;
* ``fixture_tasks.py``: the SEP-2663 tasks extension (its tools come first in ``tools/list``).

By hand here, because the SDK ships only the interface: the event store. (What the other
modules do by hand, each one's docstring says; ``fixture_content.py`` holds the literal payloads.)

DNS-rebinding protection is the SDK's default for a server bound to 127.0.0.1/localhost: requests
whose ``Host``/``Origin`` are not loopback get HTTP 4xx. ``--allow-host`` adds Host values (for
a proxy in front that forwards another Host), ``--no-dns-rebinding-protection`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import socket
import sys
import warnings
from collections import OrderedDict
from typing import Annotated, Any

import mcp.types as types
from fixture_custom_headers import install_custom_header_tools
from fixture_input_required import Name, ask_name, install_input_required
from fixture_prompts import install_prompts
from fixture_resources import install_resources
from fixture_tasks import tasks_extension
from fixture_tools import install_tools
from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, MCPServer, Resolve, Sample
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings

# The SDK marks logging/sampling as deprecated as of protocol 2026-07-28; the conformance suite
# still exercises them on 2025-06-18/2025-11-25, so they are used on purpose here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


def ask_sampling_probe() -> Sample:
    """Resolver of ``test_missing_capability``: one sampling request (needs ``sampling``)."""
    return Sample(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text="Say hello"))],
        max_tokens=20,
    )


class InMemoryEventStore(EventStore):
    """Bounded in-memory event store so SSE streams can be resumed with ``Last-Event-ID``."""

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: OrderedDict[str, tuple[str, types.JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)
        self._max_events = max_events

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._max_events:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        entry = self._events.get(last_event_id)
        if entry is None:
            return None
        stream_id = entry[0]
        found = False
        for event_id, (sid, message) in list(self._events.items()):
            if event_id == last_event_id:
                found = True
                continue
            if found and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def build_server() -> MCPServer[Any]:
    """The fixture server: every tool, resource, prompt and handler the scenarios call (see above)."""
    mcp: MCPServer[Any] = MCPServer(
        name="bastion-conformance-fixture",
        version="1.0.0",
        instructions="Fixture server for the MCP conformance suite (Bastion tests).",
        extensions=[tasks_extension()],
    )
    install_tools(mcp)

    # ----------------------------------------------- SEP-2243 custom headers
    install_custom_header_tools(mcp)

    # ------------------------------------------------ SEP-2575 diagnostics
    # Defined here rather than in a module of their own: the input key the SDK gives
    # test_missing_capability's sampling request is its resolver's `module:qualname`
    # (`__main__:ask_sampling_probe` when this file runs as a script).
    @mcp.tool(description="Needs the client's sampling capability; -32021 when it was not declared (SEP-2575)")
    def test_missing_capability(
        reply: Annotated[types.CreateMessageResult, Resolve(ask_sampling_probe)],
    ) -> str:
        content = reply.content
        return f"Sampled: {content.text if isinstance(content, types.TextContent) else content.type}"

    @mcp.tool(description="Elicits the user's name: input_required on 2026-07-28, elicitation/create before")
    def test_streaming_elicitation(name: Annotated[Name, Resolve(ask_name)]) -> str:
        return f"Hello, {name.name}!"

    @mcp.tool(description="Logs twice; sent only when the request's _meta sets a logLevel (2026-07-28)")
    async def test_logging_tool(ctx: Context) -> str:
        await ctx.info("Logging tool started")
        await ctx.info("Logging tool finished")
        return "Logging tool executed"

    @mcp.tool(description="Publishes notifications/tools/list_changed to subscriptions/listen streams")
    async def test_trigger_tool_change(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "tools/list_changed published"

    @mcp.tool(description="Publishes notifications/prompts/list_changed to subscriptions/listen streams")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        await ctx.notify_prompts_changed()
        return "prompts/list_changed published"

    @mcp.tool(description="Closes its SSE stream mid-call; the result is replayed on reconnect (SEP-1699)")
    async def test_reconnection(ctx: Context) -> str:
        await asyncio.sleep(0.1)
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        return "Reconnection test completed successfully"

    # ------------------------------------------------ resources and prompts
    install_resources(mcp)
    install_prompts(mcp)

    # ------------------------------------------- SEP-2322 multi round-trip
    install_input_required(mcp)

    return mcp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8931, help="0 picks a free port (printed on the READY line)")
    parser.add_argument("--path", default="/mcp")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT|:*]",
        help="extra Host header value to accept (repeatable); Origin http://HOST... is allowed too",
    )
    parser.add_argument("--no-dns-rebinding-protection", action="store_true")
    parser.add_argument("--retry-ms", type=int, default=500, help="SSE retry field sent in priming events")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)

    loopback_hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=not args.no_dns_rebinding_protection,
        allowed_hosts=loopback_hosts + list(args.allow_host),
        allowed_origins=[f"http://{h}" for h in loopback_hosts + list(args.allow_host)],
    )

    mcp = build_server()
    app = mcp.streamable_http_app(
        streamable_http_path=args.path,
        event_store=InMemoryEventStore(),
        retry_interval=args.retry_ms,
        transport_security=security,
        host=args.host,
    )

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    host_for_url = f"[{args.host}]" if ":" in args.host else args.host

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(f"READY http://{host_for_url}:{port}{args.path}", flush=True)

    config = uvicorn.Config(app, log_level=args.log_level.lower(), lifespan="on")
    asyncio.run(_Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
