"""SEP-2322 multi round-trip fixtures: the tools and the prompt the ``input-required-result-*``
scenarios of the conformance suite (0.2.0) call.

On protocol 2026-07-28 a request that needs client input answers with an ``InputRequiredResult``
(``resultType: "input_required"``, ``inputRequests`` keyed by name, optional ``requestState``); the
client retries the same request with ``inputResponses`` (and the echoed ``requestState``).

Most tools are built with the SDK's resolvers (``mcp.server.mcpserver.resolve``): a parameter
annotated ``Annotated[T, Resolve(fn)]`` is filled by ``fn``, which may return an ``Elicit``,
``Sample`` or ``ListRoots`` marker. The SDK batches the questions, keeps the answers in
``requestState`` across rounds, checks the client's declared capabilities (-32021 otherwise) and,
on a 2025-era session, sends each question as a server-to-client request instead. The
``RequestStateBoundary`` that ``MCPServer`` installs seals every ``requestState`` (AES-GCM, bound to
method, target and arguments) and answers a tampered one with -32602.

By hand (``_answer_or_ask``), where the SDK has no support:

* ``test_input_required_result_elicitation``: the scenario requires the input key ``user_name``;
  resolver keys are always ``module:qualname`` and cannot be chosen. It is also the tool the
  extra-keys scenario answers in one shot, with no ``requestState``; resolvers accept an answer only
  for a question recorded in ``requestState``.
* ``test_input_required_result_prompt``: resolvers exist for tools only; a prompt function may
  return an ``InputRequiredResult`` itself and read ``ctx.input_responses`` on the retry.

Usage: ``install_input_required(mcp)`` in the fixture's ``build_server()``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import mcp.types as types
from mcp.server.mcpserver import Context, Elicit, ListRoots, MCPServer, Resolve, Sample, UserMessage
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY, MissingRequiredClientCapabilityErrorData
from mcp_types.version import is_version_at_least
from pydantic import BaseModel

__all__ = ["install_input_required"]

# First protocol revision that carries client input in InputRequiredResult (SEP-2322).
INPUT_REQUIRED_VERSION = "2026-07-28"

ResultT = TypeVar("ResultT", types.ElicitResult, types.CreateMessageResult, types.ListRootsResult)


# ------------------------------------------------------------------ elicitation schemas
class Name(BaseModel):
    """Elicited ``{"name": str}``."""

    name: str


class Color(BaseModel):
    """Elicited ``{"color": str}``."""

    color: str


class Confirmation(BaseModel):
    """Elicited ``{"ok": bool}``."""

    ok: bool


# ------------------------------------------------------------------ resolvers (SDK markers)
def ask_capital() -> Sample:
    """Sampling question of ``test_input_required_result_sampling``."""
    return Sample([_user_text("What is the capital of France?")], max_tokens=100)


def ask_greeting() -> Sample:
    """Sampling question of ``test_input_required_result_multiple_inputs`` and ``_capabilities``."""
    return Sample([_user_text("Generate a greeting")], max_tokens=50)


def ask_roots() -> ListRoots:
    """``roots/list`` request."""
    return ListRoots()


def ask_name() -> Elicit[Name]:
    """Elicitation ``{"name": str}``."""
    return Elicit("What is your name?", Name)


def ask_confirmation() -> Elicit[Confirmation]:
    """Elicitation ``{"ok": bool}`` (request-state and tampered-state scenarios)."""
    return Elicit("Please confirm", Confirmation)


def ask_step1() -> Elicit[Name]:
    """Round 1 of ``test_input_required_result_multi_round``."""
    return Elicit("Step 1: What is your name?", Name)


def ask_step2(name: Annotated[Name, Resolve(ask_step1)]) -> Elicit[Color]:
    """Round 2 of ``test_input_required_result_multi_round``: asked only once step 1 is answered."""
    return Elicit("Step 2: What is your favorite color?", Color)


def ask_name_if_supported(ctx: Context) -> Elicit[Name] | Name:
    """Elicit the name only when the client declared ``elicitation`` (SEP-2322: a server sends
    input requests only for capabilities the client declared); otherwise a placeholder."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return Name(name="(not asked: client declared no elicitation capability)")
    return Elicit("What is your name?", Name)


# ------------------------------------------------------------------ hand-built flow
async def _answer_or_ask(
    ctx: Context, key: str, request: types.ElicitRequest, result_type: type[ResultT]
) -> ResultT | types.InputRequiredResult:
    """The client's answer to ``request``, or the ``InputRequiredResult`` that asks for it.

    On 2026-07-28 the answer is ``ctx.input_responses[key]`` (unknown extra keys are ignored); when
    absent the caller must return the ``InputRequiredResult`` (SEP-2322). On a 2025-era session the
    request is sent to the client mid-call instead, as the SDK's resolvers do.

    Raises:
        MCPError: -32021 (MissingRequiredClientCapability) when the client did not declare
            ``elicitation``; -32602 when the answer under ``key`` is not an elicitation result.
    """
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        required = types.ClientCapabilities(elicitation=types.ElicitationCapability())
        data = MissingRequiredClientCapabilityErrorData(required_capabilities=required)
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="Client did not declare the elicitation capability",
            data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
        )
    version = ctx.protocol_version
    if version is None or not is_version_at_least(version, INPUT_REQUIRED_VERSION):
        return await ctx.session.send_request(
            request, result_type, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
        )
    answer = (ctx.input_responses or {}).get(key)
    if answer is None:
        return types.InputRequiredResult(input_requests={key: request})
    if not isinstance(answer, result_type):
        raise MCPError(code=types.INVALID_PARAMS, message=f"inputResponses[{key!r}] is not a {result_type.__name__}")
    return answer


def _elicit_request(message: str, field: str) -> types.ElicitRequest:
    """A form ``elicitation/create`` asking for one required string ``field``."""
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def _user_text(text: str) -> types.SamplingMessage:
    return types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))


def _sampled_text(result: types.CreateMessageResult) -> str:
    content = result.content
    return content.text if isinstance(content, types.TextContent) else f"<{content.type} content>"


def _accepted_field(result: types.ElicitResult, field: str) -> str:
    """``content[field]`` of an accepted elicitation, else the action taken."""
    if result.action == "accept" and result.content and field in result.content:
        return str(result.content[field])
    return f"<{result.action}>"


# ------------------------------------------------------------------ registration
def install_input_required(mcp: MCPServer[Any]) -> None:
    """Register the SEP-2322 tools and prompt on ``mcp``."""

    @mcp.tool(description="Asks for the user's name under the input key user_name (SEP-2322)")
    async def test_input_required_result_elicitation(ctx: Context) -> str | types.InputRequiredResult:
        answer = await _answer_or_ask(
            ctx, "user_name", _elicit_request("What is your name?", "name"), types.ElicitResult
        )
        if isinstance(answer, types.InputRequiredResult):
            return answer
        return f"Hello, {_accepted_field(answer, 'name')}!"

    @mcp.tool(description="Samples the client's LLM through an InputRequiredResult (SEP-2322)")
    def test_input_required_result_sampling(
        capital: Annotated[types.CreateMessageResult, Resolve(ask_capital)],
    ) -> str:
        return f"Sampling response: {_sampled_text(capital)}"

    @mcp.tool(description="Lists the client's roots through an InputRequiredResult (SEP-2322)")
    def test_input_required_result_list_roots(
        roots: Annotated[types.ListRootsResult, Resolve(ask_roots)],
    ) -> str:
        return "Client roots: " + ", ".join(str(root.uri) for root in roots.roots)

    @mcp.tool(description="Round-trips a sealed requestState; the answer says state-ok (SEP-2322)")
    def test_input_required_result_request_state(
        confirmation: Annotated[Confirmation, Resolve(ask_confirmation)],
    ) -> str:
        return f"state-ok: requestState verified, ok={confirmation.ok}"

    @mcp.tool(description="Asks for elicitation, sampling and roots in one round (SEP-2322)")
    def test_input_required_result_multiple_inputs(
        name: Annotated[Name, Resolve(ask_name)],
        greeting: Annotated[types.CreateMessageResult, Resolve(ask_greeting)],
        roots: Annotated[types.ListRootsResult, Resolve(ask_roots)],
    ) -> str:
        return f"name={name.name}; greeting={_sampled_text(greeting)}; roots={len(roots.roots)}"

    @mcp.tool(description="Asks two questions in two rounds, the second after the first (SEP-2322)")
    def test_input_required_result_multi_round(
        name: Annotated[Name, Resolve(ask_step1)],
        color: Annotated[Color, Resolve(ask_step2)],
    ) -> str:
        return f"{name.name}'s favorite color is {color.color}"

    @mcp.tool(description="Issues a sealed requestState; a tampered one is refused with -32602 (SEP-2322)")
    def test_input_required_result_tampered_state(
        confirmation: Annotated[Confirmation, Resolve(ask_confirmation)],
    ) -> str:
        return f"requestState verified, ok={confirmation.ok}"

    @mcp.tool(description="Asks only for what the client declared: sampling, elicitation if declared (SEP-2322)")
    def test_input_required_result_capabilities(
        greeting: Annotated[types.CreateMessageResult, Resolve(ask_greeting)],
        name: Annotated[Name, Resolve(ask_name_if_supported)],
    ) -> str:
        return f"greeting={_sampled_text(greeting)}; name={name.name}"

    @mcp.prompt(description="A prompt that needs the user's context first (SEP-2322 on prompts/get)")
    async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | types.InputRequiredResult:
        answer = await _answer_or_ask(
            ctx,
            "user_context",
            _elicit_request("What context should the prompt use?", "context"),
            types.ElicitResult,
        )
        if isinstance(answer, types.InputRequiredResult):
            return answer
        return [UserMessage(f"Answer using this context: {_accepted_field(answer, 'context')}")]
