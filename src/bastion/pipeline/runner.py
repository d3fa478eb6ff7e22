"""The runner: runs one request's stages in the order ``bastion.pipeline.plan`` declares.

    checks (transport → authenticate → session → classify → … → authorize → …)
    → the decision gate → audit (before) → forward → message filters → audit (after)

Bastion fails closed: a ``BastionError`` raised by any stage becomes that
error's answer, any other exception a 500-class deny, and either way the
request is recorded in the audit log. Nothing is forwarded unless a stage
allowed it explicitly (``exchange.decision``) and the "before" audit record was
committed durably. Every upstream-to-client message of the reply, JSON or SSE,
passes the route's message filters (``MessageInspector``); an upstream that fails
in the middle of a stream ends it with a JSON-RPC error for the pending request
and a truthful outcome record. POST, GET and DELETE each have a runner of
their own (see docs/architecture.md, "The request path").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from bastion.errors import (
    AuthenticationError,
    BastionError,
    InsufficientScope,
    PolicyDenied,
    RateLimited,
    UpstreamUnavailable,
    http_status,
)
from bastion.pipeline.context import EmptyReply, Exchange, JsonReply, SseEvent, SseReply
from bastion.pipeline.filters import MessageInspector, StreamKind, sent_request
from bastion.pipeline.observer import NO_OBSERVER, StepObserver
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.base import Stage
from bastion.stores.sessions import rpc_key

__all__ = ["AfterHook", "Pipeline", "answers", "error_reply", "tool_error_result"]

AfterHook = Callable[[Exchange], Awaitable[None]]
"""Called with a forwarded exchange once its reply was sent and its outcome recorded."""

logger = logging.getLogger(__name__)


def error_reply(exchange: Exchange, error: BastionError) -> JsonReply:
    """The answer for ``error``: its HTTP status for the request's era (``errors.http_status``) and
    a JSON-RPC error body; its ``result`` instead when it carries one, a tool execution error when
    it asks for one (``as_tool_result``).

    A 401 carries ``WWW-Authenticate: Bearer`` with the route's protected
    resource metadata URL (RFC 9728 section 5.1; RFC 6750 section 3).
    """
    rpc_id = exchange.rpc_id if exchange.kind == "request" else None
    if error.result is not None and exchange.kind == "request":
        return JsonReply(200, {"jsonrpc": "2.0", "id": rpc_id, "result": error.result})
    if error.as_tool_result and exchange.kind == "request" and exchange.method == "tools/call":
        return JsonReply(200, {"jsonrpc": "2.0", "id": rpc_id, "result": tool_error_result(exchange, error)})
    body: dict[str, object] = {"code": error.jsonrpc_code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        headers["retry-after"] = str(error.retry_after_s)
    if isinstance(error, InsufficientScope):
        headers["www-authenticate"] = (
            f'Bearer error="insufficient_scope", scope="{error.scope}", '
            f'resource_metadata="{exchange.route.metadata_url}"'
        )
    if isinstance(error, AuthenticationError):
        challenge = f'Bearer resource_metadata="{exchange.route.metadata_url}"'
        if exchange.route.scopes:
            challenge += f', scope="{" ".join(exchange.route.scopes)}"'
        if error.reason != "missing_token":
            challenge += ', error="invalid_token"'
        headers["www-authenticate"] = challenge
    return JsonReply(http_status(error, exchange.era), {"jsonrpc": "2.0", "id": rpc_id, "error": body}, headers)


def tool_error_result(exchange: Exchange, error: BastionError) -> dict[str, Any]:
    """A ``CallToolResult`` that reports ``error`` to the model (MCP 2025-11-25 server/tools,
    "Error Handling": ``isError: true``): the message as text; ``structuredContent`` holds the
    JSON-RPC code, the stable audit code and ``data`` (e.g. the deciding policy ids)."""
    structured: dict[str, Any] = {"error": {"code": error.jsonrpc_code, "reason": error.code}}
    if isinstance(error.data, dict):
        structured["error"].update(error.data)
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": error.message}],
        "structuredContent": structured,
        "isError": True,
    }
    if exchange.era == "modern":
        result["resultType"] = "complete"
    return result


class Pipeline:
    """Runs the stages of one kind of request (POST, GET or DELETE) in order.

    ``checks`` are the stages up to the decision (their order is declared in
    ``bastion.pipeline.plan``); ``audit`` writes the records; ``forward``
    produces the reply, which ``inspector`` filters message by message as a
    ``stream`` of kind ``"reply"`` (the answer to a POST) or ``"stream"`` (a GET
    stream). ``observer`` sees every stage start and end; ``after`` hooks run once a forwarded
    request's reply was sent and its outcome recorded (the session caps count its bytes).
    """

    def __init__(
        self,
        checks: Sequence[Stage],
        *,
        audit: AuditStage,
        forward: Stage,
        inspector: MessageInspector,
        stream: StreamKind = "reply",
        observer: StepObserver = NO_OBSERVER,
        after: Sequence[AfterHook] = (),
    ) -> None:
        self.checks = tuple(checks)
        self._after = tuple(after)
        self.audit = audit
        self.forward = forward
        self.inspector = inspector
        self._inspection = _Inspection(inspector, stream)
        self._observer = observer
        self._observed = observer is not NO_OBSERVER  # the default costs no call per stage

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The names of the stages in the order they run (for docs, tests and logs)."""
        return (*(s.name for s in self.checks), self.audit.name, self.forward.name, "inspect", "outcome")

    async def _step(self, stage: Stage, exchange: Exchange) -> bool:
        """Run one stage; return False when the request has ended (reply set or error)."""
        observed = self._observed
        if observed:
            self._notify_start(exchange, stage.name)
            started = time.perf_counter()
        error: BastionError | None = None
        try:
            await stage.run(exchange)
        except BastionError as exc:
            error = exc
        except Exception as exc:
            logger.exception("stage %s failed; denying", stage.name)
            error = BastionError(f"Internal error in {stage.name}")
            error.__cause__ = exc
        if observed:
            self._notify_end(exchange, stage.name, time.perf_counter() - started, error)
        if error is not None:
            # The traceback's frames hold the exchange, which will hold the error: a cycle that keeps
            # the request (its parsed body too) alive until a full garbage collection. Logged above.
            error.__traceback__ = None
            if error.__cause__ is not None:
                error.__cause__.__traceback__ = None
            await self._fail(exchange, stage.name, error)
            return False
        return exchange.reply is None

    def _notify_start(self, exchange: Exchange, name: str) -> None:
        try:
            self._observer.stage_started(exchange, name)
        except Exception:
            logger.exception("the step observer failed; ignored")

    def _notify_end(self, exchange: Exchange, name: str, duration_s: float, error: BastionError | None) -> None:
        try:
            self._observer.stage_ended(exchange, name, duration_s, error)
        except Exception:
            logger.exception("the step observer failed; ignored")

    @staticmethod
    async def _fail(exchange: Exchange, stage: str, error: BastionError) -> None:
        """Replace whatever reply there was by ``error``'s, releasing an upstream stream it held."""
        replaced = exchange.reply
        if isinstance(replaced, SseReply):
            aclose = getattr(replaced.events, "aclose", None)
            if aclose is not None:
                await aclose()
        exchange.error = error
        exchange.reply = error_reply(exchange, error)
        exchange.notes["failed_stage"] = stage

    async def handle(self, exchange: Exchange) -> None:
        """Run the whole path; on return ``exchange.reply`` is set.

        The caller sends the reply, then calls ``finish`` for the outcome record.
        """
        for stage in self.checks:
            if not await self._step(stage, exchange):
                await self.audit.record_denied(exchange)
                return
        hold = exchange.notes.pop("hold", None)
        if hold is not None:  # waiting for a person's approval, with progress on an SSE stream
            exchange.reply = SseReply(200, self._held(exchange, hold))
            return
        await self._proceed(exchange)

    async def _proceed(self, exchange: Exchange) -> None:
        """After the checks: the decision gate, the decision record, forward, inspect."""
        if exchange.decision is None or exchange.decision.effect != "allow":
            # No stage allowed this request explicitly: never forward it (fail closed).
            denied = PolicyDenied("Denied: no decision allowed this request", data={"policies": []})
            exchange.error, exchange.reply = denied, error_reply(exchange, denied)
            await self.audit.record_denied(exchange)
            return
        if not await self._step(self.audit, exchange):
            return
        if exchange.session is not None and exchange.kind == "request":
            exchange.session.requests.remember(sent_request(exchange))  # kept on the exchange too
        if not await self._step(self.forward, exchange) and exchange.error is not None:
            exchange.result_error = True  # the forward stage failed: the reply is its error
            return
        await self._inspect(exchange)

    async def _held(self, exchange: Exchange, hold: Any) -> AsyncIterator[SseEvent]:
        """The SSE reply of a call held for approval (``bastion.pipeline.stages.approve.Hold``):
        progress notifications while it waits, then the rest of the path (``_proceed``) and its
        reply as events; a refusal (pending, denied, expired) is recorded and sent as the answer."""
        exchange.reply = None  # the reply being sent is this stream; the rest of the path sets its own
        error: BastionError | None = None
        try:
            async for note in hold.progress():
                yield SseEvent(message=note)
        except BastionError as exc:
            error = exc
        except Exception as exc:
            logger.exception("holding a call for approval failed; denying")
            error = BastionError("Internal error in approve")
            error.__cause__ = exc
        if error is not None:
            error.__traceback__ = None
            await self._fail(exchange, "approve", error)
            await self.audit.record_denied(exchange)
        else:
            await self._proceed(exchange)
        reply = exchange.reply
        if isinstance(reply, JsonReply) and reply.message is not None:
            yield SseEvent(message=reply.message)
        elif isinstance(reply, SseReply):
            async for event in reply.events:
                yield event

    async def _inspect(self, exchange: Exchange) -> None:
        """The message filters on the reply (a step like the stages: observed, failing closed),
        then a watch on it for the outcome record."""
        if exchange.reply is None:
            exchange.reply = EmptyReply(202)
        await self._step(self._inspection, exchange)
        reply = exchange.reply
        if isinstance(reply, SseReply):
            reply.events = self._watch_stream(exchange, reply.events)
        elif isinstance(reply, JsonReply):
            self._note_result(exchange, reply)

    async def record_refused(self, exchange: Exchange) -> None:
        """Record a request refused before its runner could start (a body over the limit, a
        request that could not be read)."""
        await self.audit.record_denied(exchange)

    async def finish(self, exchange: Exchange) -> None:
        """Record the outcome once the reply has been sent (for SSE: once the stream ended), then
        run the ``after`` hooks (a hook that fails is logged: the answer is already sent).

        Observed as the step ``outcome`` for every request, refused ones too (nothing is recorded
        for those here): its end is where an observer learns that the request is over."""
        observed = self._observed
        if observed:
            self._notify_start(exchange, "outcome")
            started = time.perf_counter()
        if exchange.notes.get("audit_event") is not None:
            await self.audit.record_outcome(exchange)
            for hook in self._after:
                try:
                    await hook(exchange)
                except Exception:
                    logger.exception("an after-reply hook failed")
        if observed:
            self._notify_end(exchange, "outcome", time.perf_counter() - started, None)

    @staticmethod
    async def _watch_stream(exchange: Exchange, events: AsyncIterator[SseEvent]) -> AsyncIterator[SseEvent]:
        """Relay ``events``, noting the result; an upstream failure mid-stream ends the stream with
        a JSON-RPC error for the exchange's request (if it was not answered yet) and is recorded
        as the outcome's error."""
        answered = False
        try:
            async for event in events:
                message = event.message
                if answers(exchange, message):
                    answered = True
                    exchange.result_error = "error" in message or _is_tool_error(message)
                yield event
        except Exception as exc:  # noqa: BLE001 - any failure mid-stream is an error outcome, never a pass
            error = (
                exc
                if isinstance(exc, BastionError)
                else UpstreamUnavailable(f"upstream failed mid-stream: {type(exc).__name__}")
            )
            if not isinstance(exc, BastionError):
                logger.info("an upstream stream failed: %r", exc)
            exchange.error = error
            exchange.result_error = True
            if exchange.kind == "request" and not answered:
                body = {"code": error.jsonrpc_code, "message": error.message}
                yield SseEvent(message={"jsonrpc": "2.0", "id": exchange.rpc_id, "error": body})
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    def _note_result(exchange: Exchange, reply: JsonReply) -> None:
        message = reply.message
        exchange.result_error = reply.status >= 400 or (
            isinstance(message, dict) and ("error" in message or _is_tool_error(message))
        )


class _Inspection:
    """The runner's inspect step: ``inspector`` applied to the reply (JSON now, SSE as it streams)."""

    name = "inspect"

    def __init__(self, inspector: MessageInspector, stream: StreamKind) -> None:
        self._inspector = inspector
        self._stream: StreamKind = stream

    async def run(self, exchange: Exchange) -> None:
        """Filter a JSON reply; make an SSE reply filter each event as it is relayed."""
        if isinstance(exchange.reply, JsonReply):
            await self._inspector.inspect_reply(exchange)
        else:
            self._inspector.wrap(exchange, self._stream)


def answers(exchange: Exchange, message: object) -> bool:
    """Whether ``message`` (a JSON-RPC message relayed to the client) is the response to
    ``exchange``'s request: same id, no ``method`` (JSON-RPC 2.0 section 5). Always ``False``
    for a notification's exchange."""
    return (
        exchange.kind == "request"
        and isinstance(message, dict)
        and "method" not in message
        and rpc_key(message.get("id")) == rpc_key(exchange.rpc_id)
    )


def _is_tool_error(message: dict[str, object]) -> bool:
    result = message.get("result")
    return isinstance(result, dict) and result.get("isError") is True
