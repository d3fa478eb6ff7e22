"""SEP-2243 custom headers in the conformance fixture: the tools whose parameters clients mirror
into ``Mcp-Param-<name>`` headers, probed by the scenario ``http-custom-header-server-validation``.

``test_custom_headers`` and ``test_custom_headers_null`` carry ``x-mcp-header`` annotations on
their parameters (``mcp_header``); the SDK checks the ``Mcp-Param-*`` headers against the body
(Base64 sentinel decoding included) and refuses a mismatch with -32020, HTTP 400.

With the official ``mcp`` SDK (``MCPServer.tool``, pydantic ``WithJsonSchema``); the only thing by
hand is each annotated parameter's schema, given whole (see ``mcp_header``).

Usage: ``install_custom_header_tools(mcp)`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field, WithJsonSchema

__all__ = ["install_custom_header_tools", "mcp_header"]


def mcp_header(token: str, json_type: str, description: str) -> WithJsonSchema:
    """Schema of a tool parameter that clients mirror into the ``Mcp-Param-<token>`` header.

    SEP-2243: ``x-mcp-header`` is allowed only on a property whose ``type`` is one string
    (integer, string or boolean), so an optional parameter's ``T | None`` must not render as
    ``anyOf``; the schema is given whole.
    """
    return WithJsonSchema({"type": json_type, "description": description, "x-mcp-header": token})


def install_custom_header_tools(mcp: MCPServer[Any]) -> None:
    """Register ``test_custom_headers`` then ``test_custom_headers_null`` on ``mcp``."""

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
