"""Prompts of the conformance fixture and the completion of their arguments: what the
``prompts-*`` and ``completion-complete`` scenarios of the conformance suite (0.1.16 and 0.2.0) call.

* ``test_simple_prompt``, ``test_prompt_with_arguments`` (``arg1``, ``arg2``),
  ``test_prompt_with_embedded_resource`` (``resourceUri``), ``test_prompt_with_image``;
* ``completion/complete``: candidates from a fixed list that start with the typed value, for any
  prompt or resource-template argument.

All with the official ``mcp`` SDK (``MCPServer.prompt``, ``MCPServer.completion``); nothing by hand.

Usage: ``install_prompts(mcp)`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
from fixture_content import RED_PIXEL_PNG_B64
from mcp.server.mcpserver import MCPServer, UserMessage

__all__ = ["install_prompts"]


def install_prompts(mcp: MCPServer[Any]) -> None:
    """Register the prompts and the ``completion/complete`` handler on ``mcp``."""

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
