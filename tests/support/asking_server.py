"""An MCP server whose tools ask the client things while they run (server-to-client requests).

Run as ``python tests/support/asking_server.py`` (stdio) or with ``--port P`` (Streamable HTTP on
127.0.0.1, ``/mcp``). Tools, each answering with what the client (through Bastion) said:

- ``confirm(action)``: ``elicitation/create`` asking the person to confirm; answers
  ``confirmed`` / ``declined`` / ``refused: <error message>``;
- ``summarize(text)``: ``sampling/createMessage``; answers the model's text or ``refused: ...``.
"""

from __future__ import annotations

import argparse
import warnings

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import SamplingMessage, TextContent, ToolAnnotations
from pydantic import BaseModel

server = MCPServer("asking")


class Confirmation(BaseModel):
    """What the person answers."""

    ok: bool


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def confirm(action: str, ctx: Context) -> str:
    """Ask the person to confirm ACTION."""
    try:
        answer = await ctx.elicit(f"Really {action}?", Confirmation)
    except MCPError as exc:
        return f"refused: {exc.error.message}"
    if answer.action == "accept" and answer.data is not None and answer.data.ok:
        return "confirmed"
    return "declined"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def summarize(text: str, ctx: Context) -> str:
    """Ask the client's model to summarize TEXT."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = await ctx.session.create_message(
                messages=[message], max_tokens=20, related_request_id=ctx.request_id
            )
    except MCPError as exc:
        return f"refused: {exc.error.message}"
    content = result.content
    return content.text if isinstance(content, TextContent) else "non-text"


def main() -> None:
    """stdio by default; Streamable HTTP on 127.0.0.1 with ``--port``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.port is None:
        server.run("stdio")
        return
    uvicorn.run(server.streamable_http_app(host="127.0.0.1"), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
