"""Message filters: the one hook every upstream-to-client message passes.

The runner hands each message the upstream sends towards the client, on every
stream (a JSON reply, a POST's SSE stream, a GET stream, resumed or not, a stdio
server's notifications), to ``MessageInspector.inspect``, which runs the route's
filters in order (docs/architecture.md, "Message filters"; the order is
``bastion.pipeline.plan.FILTER_SLOTS``). A filter returns the message (changed or
not) or ``None`` to drop it: list filtering, list_changed, server-to-client requests,
continuations and result volume are filters, and definition scanning, pinning and
result redaction are meant to be others.

Deny by construction, before any filter runs:

- a response is only relayed when it answers a request this client sent: on a
  POST's reply, that request's own id; on a GET stream (MCP 2025-11-25
  basic/transports, "Resumability and Redelivery"), a request recorded in the
  session's ``RequestLedger`` (in this process, else, with a shared session store,
  shared there by the replica the request was sent through: the one lookup that may
  do I/O, and a lookup that fails drops the response, ``ledger_unavailable``). Any
  other response is dropped (``unsolicited_response``);
- a JSON value that is not one JSON-RPC object (a batch array, a number) is dropped;
- a filter that raises (or drops the answer to the exchange's own request)
  never lets the message pass unfiltered: the message is dropped, and for that
  answer ``inspect`` raises ``AnswerWithheld`` (a drop) or ``BastionError`` (a filter
  that raised: a bug, ``internal_error``), so the client gets a JSON-RPC error in its
  place (the runner's JSON reply, or an error event ending the stream).

Every drop is reported to ``on_drop`` (the audit stage records it) with a stable
reason code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from bastion.errors import AnswerWithheld, BastionError
from bastion.pipeline.context import Exchange, JsonReply, SseEvent, SseReply
from bastion.stores.sessions import SentRequest, rpc_key

__all__ = ["DropHandler", "MessageFilter", "MessageInspector", "StreamKind", "answers_own", "sent_request"]

logger = logging.getLogger(__name__)

StreamKind = Literal["reply", "stream"]
"""``reply``: the answer to the exchange's own POST (JSON or SSE); ``stream``: a GET stream."""

DropHandler = Callable[[Exchange, dict[str, Any] | None, str], Awaitable[None]]
"""Called with the exchange, the dropped message (``None`` if not an object) and a reason code."""


class MessageFilter(Protocol):
    """One filter of upstream-to-client messages.

    ``apply`` gets the exchange whose stream carries the message, the message
    (a JSON-RPC object) and, for a response, the request it answers (else
    ``None``). It returns the message to relay (the same object, or a new one) or
    ``None`` to drop it. Raising drops it too (fail closed). A filter that records
    its own decisions sets ``audits_own_drops = True``; otherwise every drop is
    recorded for it.
    """

    name: str

    async def apply(
        self, exchange: Exchange, message: dict[str, Any], answered: SentRequest | None
    ) -> dict[str, Any] | None:
        """Return the message to relay, or ``None`` to drop it."""
        ...


class MessageInspector:
    """Runs ``filters`` on every upstream-to-client message of an exchange's reply."""

    def __init__(self, filters: Sequence[MessageFilter], on_drop: DropHandler) -> None:
        self.filters = tuple(filters)
        self._on_drop = on_drop

    def wrap(self, exchange: Exchange, stream: StreamKind) -> None:
        """Make an SSE ``exchange.reply`` pass the filters event by event as it is relayed
        (a JSON reply is filtered at once by ``inspect_reply``)."""
        reply = exchange.reply
        if isinstance(reply, SseReply):
            reply.events = self._events(exchange, reply.events, stream)

    async def inspect_reply(self, exchange: Exchange) -> None:
        """Filter a JSON ``exchange.reply`` (the answer to the exchange's own request) in place.

        Raises ``AnswerWithheld`` when the answer is dropped (it answers another request, or a
        filter dropped it), ``BastionError`` when a filter raised (see ``inspect``).
        """
        reply = exchange.reply
        if not isinstance(reply, JsonReply) or reply.message is None:
            return
        kept = await self.inspect(exchange, reply.message, "reply")
        if kept is None and exchange.kind == "request":
            raise AnswerWithheld("Internal error in inspect: the upstream's reply does not answer this request")
        if kept is reply.message:
            return
        reply.raw = None
        reply.message = kept

    async def _events(
        self, exchange: Exchange, events: AsyncIterator[SseEvent], stream: StreamKind
    ) -> AsyncIterator[SseEvent]:
        try:
            async for event in events:
                if event.message is None:  # a comment, a priming event or text that is not JSON: no message
                    yield event
                    continue
                kept = await self.inspect(exchange, event.message, stream)  # raises: the runner ends the stream
                if kept is not None:
                    event.message = kept
                    yield event
                elif event.id:  # keep the event id so that resumption still counts it
                    yield SseEvent(id=event.id, data="")
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def inspect(self, exchange: Exchange, message: Any, stream: StreamKind) -> dict[str, Any] | None:
        """One message through the checks and every filter; ``None`` when dropped (and reported)."""
        if not isinstance(message, dict):
            await self._on_drop(exchange, None, "not_a_message")
            return None
        answered: SentRequest | None = None
        if "method" not in message:
            answered = self._answered(exchange, message, stream)
            reason = "unsolicited_response"
            if answered is None and stream == "stream" and exchange.session is not None:
                try:  # the ledger in this process missed: the request may have been sent through another replica
                    answered = await exchange.session.requests.find_shared(message.get("id"))
                except Exception:  # any failure withholds the answer (fail closed)
                    logger.warning("the shared request ledger did not answer; the response is withheld", exc_info=True)
                    reason = "ledger_unavailable"
            if answered is None:
                await self._on_drop(exchange, message, reason)
                return None
        current: dict[str, Any] = message
        for message_filter in self.filters:
            try:
                kept = await message_filter.apply(exchange, current, answered)
            except Exception as exc:
                logger.exception("message filter %s failed; the message is not relayed", message_filter.name)
                await self._on_drop(exchange, message, "filter_failed")
                if answers_own(exchange, answered):
                    raise BastionError("Internal error in inspect") from exc
                return None
            if kept is None:
                if not getattr(message_filter, "audits_own_drops", False):
                    await self._on_drop(exchange, message, f"filtered:{message_filter.name}")
                if answers_own(exchange, answered):
                    raise AnswerWithheld(f"Internal error in inspect: the answer was withheld ({message_filter.name})")
                return None
            current = kept
        return current

    @staticmethod
    def _answered(exchange: Exchange, message: dict[str, Any], stream: StreamKind) -> SentRequest | None:
        """The request ``message`` (a response) answers, or ``None``. On a POST's reply that is the
        POST's own request (an error with a ``null`` id counts: JSON-RPC 2.0 section 5 uses it when
        the server could not read the id); on a GET stream, a request in this process's ledger of the
        session (``inspect`` then looks in the shared ledger)."""
        rpc_id = message.get("id")
        if stream == "reply":
            own = rpc_key(exchange.rpc_id) if exchange.kind == "request" else None
            if own is None:
                return None
            if rpc_key(rpc_id) == own or (rpc_id is None and "error" in message and "result" not in message):
                return sent_request(exchange)
            return None
        ledger = exchange.session.requests if exchange.session is not None else None
        return ledger.find(rpc_id) if ledger is not None else None


def answers_own(exchange: Exchange, answered: SentRequest | None) -> bool:
    """Whether ``answered`` (the request a response answers) is the exchange's own request."""
    return answered is not None and exchange.kind == "request" and rpc_key(answered.rpc_id) == rpc_key(exchange.rpc_id)


def sent_request(exchange: Exchange) -> SentRequest:
    """The exchange's own request, as the filters see it (built once per exchange)."""
    sent = exchange.notes.get("sent_request")
    if sent is None:
        sent = SentRequest(exchange.rpc_id, exchange.method or "", exchange.target, "cursor" not in exchange.params)
        exchange.notes["sent_request"] = sent
    return sent
