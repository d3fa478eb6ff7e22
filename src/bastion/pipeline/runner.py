"""The request path: the one place that knows the order of the stages.

    transport → authenticate → session → classify → authorize → url arguments (routes
    that mark them) → audit (before) → forward → inspect → audit (after)

Bastion fails closed: a ``BastionError`` raised by any stage becomes that
error's answer, any other exception a 500-class deny, and either way the
request is recorded in the audit log. Nothing is forwarded unless the
"before" audit record was committed durably.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from bastion.errors import AuthenticationError, BastionError, InsufficientScope, PolicyDenied
from bastion.pipeline.context import EmptyReply, Exchange, JsonReply, SseEvent, SseReply
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.authorize import SESSION_DECISION
from bastion.pipeline.stages.base import Stage

__all__ = ["Pipeline", "error_reply"]

logger = logging.getLogger(__name__)


def error_reply(exchange: Exchange, error: BastionError) -> JsonReply:
    """The answer for ``error``: its HTTP status and a JSON-RPC error body.

    A 401 carries ``WWW-Authenticate: Bearer`` with the route's protected
    resource metadata URL (RFC 9728 section 5.1; RFC 6750 section 3).
    """
    body: dict[str, object] = {"code": error.jsonrpc_code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    headers: dict[str, str] = {}
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
    rpc_id = exchange.rpc_id if exchange.kind == "request" else None
    return JsonReply(error.status, {"jsonrpc": "2.0", "id": rpc_id, "error": body}, headers)


class Pipeline:
    """Runs the stages in order for one POST.

    ``before`` are the stages up to and including authorize; ``audit`` writes
    the records; ``forward`` and ``after`` (inspect) produce the reply.
    """

    def __init__(self, before: Sequence[Stage], audit: AuditStage, forward: Stage, after: Sequence[Stage]) -> None:
        self._before = tuple(before)
        self._audit = audit
        self._forward = forward
        self._after = tuple(after)

    async def _step(self, stage: Stage, exchange: Exchange) -> bool:
        """Run one stage; return False when the request has ended (reply set or error)."""
        try:
            await stage.run(exchange)
        except BastionError as exc:
            await self._fail(exchange, stage, exc)
            return False
        except Exception as exc:
            logger.exception("stage %s failed; denying", stage.name)
            wrapped = BastionError(f"Internal error in {stage.name}")
            wrapped.__cause__ = exc
            await self._fail(exchange, stage, wrapped)
            return False
        return exchange.reply is None

    @staticmethod
    async def _fail(exchange: Exchange, stage: Stage, error: BastionError) -> None:
        """Replace whatever reply there was by ``error``'s, releasing an upstream stream it held."""
        replaced = exchange.reply
        if isinstance(replaced, SseReply):
            aclose = getattr(replaced.events, "aclose", None)
            if aclose is not None:
                await aclose()
        exchange.error = error
        exchange.reply = error_reply(exchange, error)
        exchange.notes["failed_stage"] = stage.name

    async def handle(self, exchange: Exchange) -> None:
        """Run the whole path; on return ``exchange.reply`` is set.

        The caller sends the reply, then calls ``finish`` for the outcome record.
        """
        for stage in self._before:
            if not await self._step(stage, exchange):
                await self._audit.record_denied(exchange)
                return
        if exchange.decision is None or exchange.decision.effect != "allow":
            # No stage allowed this request explicitly: never forward it (fail closed).
            denied = PolicyDenied("Denied: no decision allowed this request", data={"policies": []})
            exchange.error, exchange.reply = denied, error_reply(exchange, denied)
            await self._audit.record_denied(exchange)
            return
        if not await self._step(self._audit, exchange):
            return
        await self._step(self._forward, exchange)
        for stage in self._after:
            if exchange.error is not None:
                break
            await self._step(stage, exchange)
        reply = exchange.reply
        if reply is None:
            exchange.reply = EmptyReply(202)
        elif isinstance(reply, SseReply):
            reply.events = self._watch_result(exchange, reply.events)
        elif isinstance(reply, JsonReply):
            self._note_result(exchange, reply)

    async def record_unpiped(self, exchange: Exchange) -> None:
        """Record a request the pipeline did not run: a GET event stream, a DELETE, a POST refused
        before its body was read. Allowed when it ended without error (the session plumbing
        decision), otherwise a deny with the error's code.
        """
        if exchange.error is None:
            exchange.decision = SESSION_DECISION
        await self._audit.record_denied(exchange)

    async def finish(self, exchange: Exchange) -> None:
        """Record the outcome once the reply has been sent (for SSE: once the stream ended)."""
        if exchange.notes.get("audit_event") is not None:
            await self._audit.record_outcome(exchange)

    @staticmethod
    async def _watch_result(exchange: Exchange, events: AsyncIterator[SseEvent]) -> AsyncIterator[SseEvent]:
        async for event in events:
            if isinstance(event.message, dict) and event.message.get("id") == exchange.rpc_id:
                exchange.result_error = "error" in event.message or _is_tool_error(event.message)
            yield event

    @staticmethod
    def _note_result(exchange: Exchange, reply: JsonReply) -> None:
        message = reply.message
        exchange.result_error = reply.status >= 400 or (
            isinstance(message, dict) and ("error" in message or _is_tool_error(message))
        )


def _is_tool_error(message: dict[str, object]) -> bool:
    result = message.get("result")
    return isinstance(result, dict) and result.get("isError") is True
