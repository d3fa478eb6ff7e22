"""The 2025-era tools of the conformance fixture: what the ``tools-call-*``, ``elicitation-sep*``
and ``json-schema-2020-12`` scenarios of the conformance suite (0.1.16 and 0.2.0) call, with the
``logging/setLevel`` handler (scenario ``logging-set-level``) that goes with their log notifications.

* content: ``test_simple_text``, ``test_image_content``, ``test_audio_content``,
  ``test_embedded_resource``, ``test_multiple_content_types``, ``test_error_handling`` (isError);
* notifications during a call: ``test_tool_with_logging`` (three info logs),
  ``test_tool_with_progress`` (0/100, 50/100, 100/100);
* server -> client requests on the POST's SSE stream: ``test_sampling`` (``sampling/createMessage``),
  ``test_elicitation``, ``test_elicitation_sep1034_defaults``, ``test_elicitation_sep1330_enums``
  (``elicitation/create``);
* ``json_schema_2020_12_tool``.

With the official ``mcp`` SDK (``MCPServer.tool``, ``Context``). By hand, because the SDK has no
way to express them: the ``logging/setLevel`` handler (``MCPServer`` registers none), and the
literal inputSchema of ``json_schema_2020_12_tool`` (``$schema``, ``$defs`` with ``$anchor``,
``allOf``/``anyOf``, ``if``/``then``/``else``, ``additionalProperties``), which a function signature
cannot produce.

Usage: ``install_tools(mcp)`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import mcp.types as types
from fixture_content import JSON_SCHEMA_2020_12_TOOL_SCHEMA, RED_PIXEL_PNG_B64, TINY_WAV_B64
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["install_tools"]

logger = logging.getLogger("conformance-fixture")


def install_tools(mcp: MCPServer[Any]) -> None:
    """Register the 2025-era tools on ``mcp`` (in this order: ``tools/list`` shows them so) and
    the ``logging/setLevel`` handler."""

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
            messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = (
            content.text
            if isinstance(content, types.TextContent)
            else json.dumps(
                content.model_dump(mode="json", by_alias=True) if hasattr(content, "model_dump") else str(content)
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

    # -------------------------------------------------------------- logging
    async def on_set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        logger.info("client set log level to %s", params.level)
        return types.EmptyResult()

    mcp._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)
