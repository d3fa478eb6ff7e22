"""Conformance fixture MCP server: implements what the MCP conformance suite's server scenarios call.

Written with the official ``mcp`` Python SDK (``MCPServer``) and served over Streamable HTTP:

    python tests/conformance/fixture_server.py --port 8931          # http://127.0.0.1:8931/mcp
    python tests/conformance/fixture_server.py --port 0             # any free port

Once listening it prints one line to stdout, ``READY http://127.0.0.1:<port>/mcp``, which
lets a test start it with ``--port 0`` and read the URL.

The names, arguments and payloads below are the ones the scenarios of
``@modelcontextprotocol/conformance`` (see docs/conformance.md; 0.1.16 and 0.2.0) look for.
One endpoint serves both protocol eras, as the SDK does: 2025-era clients get stateful sessions
(``initialize``, ``Mcp-Session-Id``), 2026-07-28 clients stateless single-exchange POSTs.

* Tools ``test_*`` and ``json_schema_2020_12_tool``, resources ``test://...``, prompts ``test_*``,
  completions, ``logging/setLevel``, ``resources/(un)subscribe``, progress, logging, sampling and
  elicitation (server -> client requests on the POST's SSE stream, 2025 era) and SSE polling
  (SEP-1699: ``test_reconnection`` closes its SSE stream mid-call; an in-memory event store
  replays the result when the client reconnects with ``Last-Event-ID``).
* SEP-2575 (stateless) diagnostics: ``test_missing_capability`` (needs ``sampling``; without it the
  SDK answers -32021 MissingRequiredClientCapability, HTTP 400), ``test_streaming_elicitation``,
  ``test_logging_tool`` (the SDK drops its log notifications unless the request's ``_meta`` sets
  a logLevel), ``test_trigger_tool_change`` / ``test_trigger_prompt_change`` (publish
  ``list_changed`` on ``subscriptions/listen`` streams through the SDK's subscription bus).
  ``server/discover``, ``_meta`` validation, version and header checks are the SDK's.
* SEP-2243 custom headers: ``test_custom_headers`` / ``test_custom_headers_null`` carry
  ``x-mcp-header`` annotations; the SDK checks the ``Mcp-Param-*`` headers against the body
  (Base64 sentinel decoding included) and refuses a mismatch with -32020, HTTP 400.
* SEP-2322 multi round-trip requests: see ``fixture_input_required.py``.

By hand, because the SDK has no way to express them: the ``resources/subscribe``,
``resources/unsubscribe`` and ``logging/setLevel`` handlers (the SDK's ``MCPServer`` registers
none), the event store (the SDK ships only the interface), and the literal inputSchema of
``json_schema_2020_12_tool`` (``$schema``, ``$defs`` with ``$anchor``, ``allOf``/``anyOf``,
``if``/``then``/``else``, ``additionalProperties``), which a function signature cannot produce.

DNS-rebinding protection is the SDK's default for a server bound to 127.0.0.1/localhost: requests
whose ``Host``/``Origin`` are not loopback get HTTP 4xx. ``--allow-host`` adds Host values (for
a proxy in front that forwards another Host), ``--no-dns-rebinding-protection`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import logging
import socket
import sys
import warnings
from collections import OrderedDict
from typing import Annotated, Any

import mcp.types as types
from fixture_input_required import Name, ask_name, install_input_required
from fixture_tasks import tasks_extension
from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, MCPServer, Resolve, Sample, UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field, WithJsonSchema

# The SDK marks logging/sampling as deprecated as of protocol 2026-07-28; the conformance suite
# still exercises them on 2025-06-18/2025-11-25, so they are used on purpose here.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

logger = logging.getLogger("conformance-fixture")

# 1x1 red pixel PNG.
RED_PIXEL_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
RED_PIXEL_PNG = base64.b64decode(RED_PIXEL_PNG_B64)


def _tiny_wav() -> bytes:
    """A valid 8 kHz mono 8-bit PCM WAV file holding 8 samples of silence."""
    samples = bytes([128] * 8)
    fmt = (
        b"fmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + (8000).to_bytes(4, "little")  # sample rate
        + (8000).to_bytes(4, "little")  # byte rate
        + (1).to_bytes(2, "little")  # block align
        + (8).to_bytes(2, "little")  # bits per sample
    )
    data = b"data" + len(samples).to_bytes(4, "little") + samples
    body = b"WAVE" + fmt + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


TINY_WAV_B64 = base64.b64encode(_tiny_wav()).decode()

JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# The inputSchema the json-schema-2020-12 scenario expects, verbatim: SEP-1613 keywords ($schema,
# $defs, additionalProperties) and the SEP-2106 vocabulary ($anchor, allOf/anyOf, if/then/else).
JSON_SCHEMA_2020_12_TOOL_SCHEMA: dict[str, Any] = {
    "$schema": JSON_SCHEMA_2020_12,
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def mcp_header(token: str, json_type: str, description: str) -> WithJsonSchema:
    """Schema of a tool parameter that clients mirror into the ``Mcp-Param-<token>`` header.

    SEP-2243: ``x-mcp-header`` is allowed only on a property whose ``type`` is one string
    (integer, string or boolean), so an optional parameter's ``T | None`` must not render as
    ``anyOf``; the schema is given whole.
    """
    return WithJsonSchema({"type": json_type, "description": description, "x-mcp-header": token})


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

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
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
    mcp: MCPServer[Any] = MCPServer(
        name="bastion-conformance-fixture",
        version="1.0.0",
        instructions="Fixture server for the MCP conformance suite (Bastion tests).",
        extensions=[tasks_extension()],
    )

    # ---------------------------------------------------------------- tools
    @mcp.tool(description="Returns a simple text response")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @mcp.tool(description="Returns a 1x1 PNG image")
    def test_image_content() -> list[types.ContentBlock]:
        return [types.ImageContent(type="image", data=RED_PIXEL_PNG_B64, mime_type="image/png")]

    @mcp.tool(description="Returns a tiny WAV audio clip")
    def test_audio_content() -> list[types.ContentBlock]:
        return [types.AudioContent(type="audio", data=TINY_WAV_B64, mime_type="audio/wav")]

    @mcp.tool(description="Returns an embedded text resource")
    def test_embedded_resource() -> list[types.ContentBlock]:
        return [
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri="test://embedded-resource",
                    mime_type="text/plain",
                    text="This is an embedded resource content.",
                ),
            )
        ]

    @mcp.tool(description="Returns text, image and resource content")
    def test_multiple_content_types() -> list[types.ContentBlock]:
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=RED_PIXEL_PNG_B64, mime_type="image/png"),
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri="test://mixed-content-resource",
                    mime_type="application/json",
                    text=json.dumps({"test": "data", "value": 123}),
                ),
            ),
        ]

    @mcp.tool(description="Sends three info log notifications while running")
    async def test_tool_with_logging(ctx: Context) -> str:
        await ctx.info("Tool execution started")
        await asyncio.sleep(0.05)
        await ctx.info("Tool processing data")
        await asyncio.sleep(0.05)
        await ctx.info("Tool execution completed")
        return "Tool with logging executed successfully"

    @mcp.tool(description="Always fails (isError: true)")
    def test_error_handling() -> str:
        raise ToolError("This tool intentionally returns an error for testing")

    @mcp.tool(description="Reports progress 0/100, 50/100, 100/100")
    async def test_tool_with_progress(ctx: Context) -> str:
        for i, value in enumerate((0, 50, 100)):
            if i:
                await asyncio.sleep(0.05)
            await ctx.report_progress(value, 100)
        return "Tool with progress executed successfully"

    @mcp.tool(description="Asks the client to sample an LLM (sampling/createMessage)")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
            ],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = (
            content.text
            if isinstance(content, types.TextContent)
            else json.dumps(
                content.model_dump(mode="json", by_alias=True)
                if hasattr(content, "model_dump")
                else str(content)
            )
        )
        return f"LLM response: {text}"

    async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)

    @mcp.tool(description="Asks the client for user input (elicitation/create)")
    async def test_elicitation(message: str, ctx: Context) -> str:
        result = await _elicit(
            ctx,
            message,
            {
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"},
                },
                "required": ["username", "email"],
            },
        )
        return f"User response: action={result.action}, content={json.dumps(result.content)}"

    @mcp.tool(description="Elicitation whose schema has defaults for every primitive type (SEP-1034)")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        result = await _elicit(
            ctx,
            "Please review and update the form fields with defaults",
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User age", "default": 30},
                    "score": {"type": "number", "description": "User score", "default": 95.5},
                    "status": {
                        "type": "string",
                        "description": "User status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active",
                    },
                    "verified": {"type": "boolean", "description": "Verification status", "default": True},
                },
                "required": [],
            },
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"

    @mcp.tool(description="Elicitation whose schema uses all five enum variants (SEP-1330)")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        result = await _elicit(
            ctx,
            "Please select options from the enum fields",
            {
                "type": "object",
                "properties": {
                    "untitledSingle": {
                        "type": "string",
                        "description": "Untitled single-select",
                        "enum": ["option1", "option2", "option3"],
                    },
                    "titledSingle": {
                        "type": "string",
                        "description": "Titled single-select",
                        "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"},
                        ],
                    },
                    "legacyEnum": {
                        "type": "string",
                        "description": "Legacy titled enum (enumNames, deprecated)",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"],
                    },
                    "untitledMulti": {
                        "type": "array",
                        "description": "Untitled multi-select",
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    },
                    "titledMulti": {
                        "type": "array",
                        "description": "Titled multi-select",
                        "items": {
                            "anyOf": [
                                {"const": "value1", "title": "First Choice"},
                                {"const": "value2", "title": "Second Choice"},
                                {"const": "value3", "title": "Third Choice"},
                            ]
                        },
                    },
                },
                "required": [],
            },
        )
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"

    @mcp.tool(name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features")
    def json_schema_2020_12_tool(
        name: str | None = None,
        address: dict[str, Any] | None = None,
        contactMethod: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> str:
        return f"Received name={name!r} address={address!r} contactMethod={contactMethod!r}"

    # By hand: the SDK derives inputSchema from the signature; advertise the literal 2020-12 schema
    # the scenario checks instead (arguments are still validated against the signature).
    _tool = mcp._tool_manager.get_tool("json_schema_2020_12_tool")
    assert _tool is not None
    _tool.parameters = JSON_SCHEMA_2020_12_TOOL_SCHEMA

    # ----------------------------------------------- SEP-2243 custom headers
    # The first tool with an x-mcp-header string parameter is the one the server scenario probes
    # (region, with priority and query as the other required arguments); the parameters mirror
    # the tools of the suite's client scenario http-custom-headers.
    @mcp.tool(description="Parameters mirrored into Mcp-Param-* headers (SEP-2243); echoes its arguments")
    def test_custom_headers(
        region: Annotated[str, mcp_header("Region", "string", "Plain ASCII string value")],
        priority: Annotated[int, mcp_header("Priority", "integer", "Integer numeric value")],
        query: Annotated[str, Field(description="No x-mcp-header annotation: not mirrored")],
        verbose: Annotated[bool | None, mcp_header("Verbose", "boolean", "Boolean value")] = None,
        debug: Annotated[bool | None, mcp_header("Debug", "boolean", "Boolean true value")] = None,
        empty_val: Annotated[str | None, mcp_header("EmptyVal", "string", "Empty string value")] = None,
        method_val: Annotated[
            str | None, mcp_header("Method", "string", "Header Mcp-Param-Method, not Mcp-Method")
        ] = None,
        float_val: Annotated[float | None, Field(description="Number: no x-mcp-header annotation")] = None,
        non_ascii_val: Annotated[
            str | None, mcp_header("NonAscii", "string", "Non-ASCII string: Base64 in the header")
        ] = None,
        whitespace_val: Annotated[
            str | None, mcp_header("Whitespace", "string", "Leading/trailing whitespace: Base64")
        ] = None,
        leading_space_val: Annotated[str | None, mcp_header("LeadingSpace", "string", "Leading space: Base64")] = None,
        trailing_space_val: Annotated[
            str | None, mcp_header("TrailingSpace", "string", "Trailing space: Base64")
        ] = None,
        internal_space_val: Annotated[
            str | None, mcp_header("InternalSpace", "string", "Internal spaces only: plain")
        ] = None,
        control_char_val: Annotated[
            str | None, mcp_header("ControlChar", "string", "Control characters: Base64")
        ] = None,
        crlf_val: Annotated[str | None, mcp_header("CrLf", "string", "CR and LF: Base64")] = None,
        tab_val: Annotated[str | None, mcp_header("Tab", "string", "Leading tab: Base64")] = None,
    ) -> str:
        received = {key: value for key, value in locals().items() if value is not None}
        return "Custom headers test completed: " + json.dumps(received, ensure_ascii=False, sort_keys=True)

    @mcp.tool(description="An x-mcp-header parameter that may be null or omitted (SEP-2243)")
    def test_custom_headers_null(
        region: Annotated[str, mcp_header("Region", "string", "Plain ASCII string value")],
        priority: Annotated[int, mcp_header("Priority", "integer", "Integer numeric value")],
        query: Annotated[str, Field(description="No x-mcp-header annotation: not mirrored")],
        verbose: Annotated[bool | None, mcp_header("Verbose", "boolean", "Null or omitted: no header")] = None,
    ) -> str:
        return f"Custom headers null test completed: verbose={json.dumps(verbose)}"

    # ------------------------------------------------ SEP-2575 diagnostics
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

    # ------------------------------------------------------------ resources
    @mcp.resource(
        "test://static-text", name="static-text", description="A static text resource", mime_type="text/plain"
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @mcp.resource(
        "test://static-binary",
        name="static-binary",
        description="A static binary resource (PNG)",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return RED_PIXEL_PNG

    @mcp.resource(
        "test://watched-resource",
        name="watched-resource",
        description="A resource clients can subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content."

    @mcp.resource(
        "test://template/{id}/data",
        name="template-data",
        description="A resource template with an {id} parameter",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    subscriptions: set[str] = set()

    async def on_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def on_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    lowlevel = mcp._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)

    # -------------------------------------------------------------- logging
    async def on_set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        logger.info("client set log level to %s", params.level)
        return types.EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)

    # -------------------------------------------------------------- prompts
    @mcp.prompt(description="A simple prompt without arguments")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @mcp.prompt(description="A prompt with two required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @mcp.prompt(description="A prompt that embeds a resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        return [
            UserMessage(
                types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                    ),
                )
            ),
            UserMessage("Please process the embedded resource above."),
        ]

    @mcp.prompt(description="A prompt with image content")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(types.ImageContent(type="image", data=RED_PIXEL_PNG_B64, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]

    # ---------------------------------------------------------- completions
    @mcp.completion()
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        candidates = ["paris", "park", "party", "test", "testing", "tested"]
        values = [c for c in candidates if c.startswith(argument.value)]
        return types.Completion(values=values, total=len(values), has_more=False)

    # ------------------------------------------- SEP-2322 multi round-trip
    install_input_required(mcp)

    return mcp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=8931, help="0 picks a free port (printed on the READY line)"
    )
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
