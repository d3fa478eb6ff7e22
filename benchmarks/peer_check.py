"""The check every target of ``make bench-peers`` passes before it is measured: a session of the
official MCP SDK client (initialize, list the tools, call the echo tool)."""

from __future__ import annotations

import asyncio

from load import Endpoint

from bastion.demo.script import connect

PROBE = "hello from the MCP SDK"
CHECK_TIMEOUT_S = 60.0


def check(endpoint: Endpoint) -> str | None:
    """Initialize, list the tools and call the echo tool with the MCP SDK client (2025-11-25 sessions).
    Returns None when the echo came back, else what went wrong (one line)."""

    async def session() -> None:
        async with connect(endpoint.url, endpoint.token) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            if endpoint.tool not in names:
                raise LookupError(f"tools/list has no {endpoint.tool!r}: {names}")
            result = await client.call_tool(endpoint.tool, {"message": PROBE})
            texts = [getattr(block, "text", None) for block in result.content]
            if result.is_error or texts != [PROBE]:
                raise ValueError(f"tools/call answered is_error={result.is_error}, content {texts}")

    try:
        asyncio.run(asyncio.wait_for(session(), CHECK_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - whatever fails, the target is reported failed with it
        return describe(exc)
    return None


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, of its innermost exceptions for an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")
