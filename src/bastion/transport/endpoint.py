"""The MCP endpoint of one route: a raw ASGI app for POST, GET and DELETE.

Each HTTP method has its runner (``bastion.pipeline.plan.RoutePipelines``): POST
runs the whole request path, GET opens the server-to-client event stream of a
handshake-era session and DELETE ends a session (MCP 2025-11-25
basic/transports). All three pass the same origin, authentication, session and
audit stages, and every message relayed to the client the same message filters.
This module only reads the request, sends the reply and keeps a stream open
while the client wants it. Every error is answered in the protocol's own form,
never with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Receive, Scope, Send

from bastion.errors import BastionError
from bastion.pipeline.context import EmptyReply, Exchange, HttpRequest, Reply, SseEvent, SseReply
from bastion.pipeline.plan import RoutePipelines
from bastion.pipeline.runner import answers, error_reply
from bastion.transport.drain import Drain
from bastion.transport.routes import RouteRuntime
from bastion.transport.wire import read_request, send_reply

__all__ = ["McpEndpoint"]

logger = logging.getLogger(__name__)

_KEEPALIVE_S = 15.0


class McpEndpoint:
    """ASGI app serving ``route``'s MCP endpoint with its runners ``pipelines``.

    ``drain`` is the gateway's graceful stop (``bastion.transport.drain``): once it begins, a GET
    event stream ends at once, while a call in flight runs until its deadline and is then cut
    with ``ShuttingDown``. ``closing`` alone (no ``drain``) ends every stream at once. ``retire``
    does the same for this endpoint alone (its route withdrawn by a reload).
    """

    def __init__(
        self,
        route: RouteRuntime,
        pipelines: RoutePipelines,
        *,
        max_body: int,
        closing: asyncio.Event | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.route = route
        self._pipelines = pipelines
        self._max_body = max_body
        self._drain = drain or Drain(0.0, closing)
        self._closing = self._drain.closing
        self._requests = 0  # requests being served, their replies' relays included
        self._idle = asyncio.Event()
        self._idle.set()

    async def retire(self, timeout_s: float) -> bool:
        """Begin this endpoint's drain (its event streams end, its calls in flight get ``drain_s``) and
        wait up to ``timeout_s`` seconds until no request is being served on it; whether none is.
        The caller stopped routing requests here first."""
        self._drain.begin()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""
        if scope["type"] != "http":
            return
        self._requests += 1
        self._idle.clear()
        try:
            await self._serve(scope, receive, send)
        finally:
            self._requests -= 1
            if not self._requests:
                self._idle.set()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        pipeline = self._pipelines.for_method(method)
        if pipeline is None:
            await send_reply(send, EmptyReply(405, {"allow": "GET, POST, DELETE"}))
            return
        exchange: Exchange | None = None
        flight = self._drain.enter()
        try:
            try:
                request = await read_request(scope, receive, self._max_body)
                exchange = Exchange(route=self.route, http=request)
                await pipeline.handle(exchange)
            except asyncio.CancelledError:
                if not self._drain.was_cut(flight):
                    raise
                raise self._drain.error() from None  # still in flight when the graceful stop's time ran out
            finally:
                self._drain.leave(flight)
        except Exception as exc:  # refused before the runner (body over the limit), or a bug: a record either way
            error = exc if isinstance(exc, BastionError) else BastionError("Internal error")
            if not isinstance(exc, BastionError):
                logger.exception("%s %s failed", method, scope["path"])
            if exchange is None:
                exchange = Exchange(route=self.route, http=_bare_request(scope))
                exchange.notes["label"] = {"GET": "stream/open", "DELETE": "session/delete"}.get(method, "invalid")
            exchange.error = error
            exchange.reply = error_reply(exchange, error)
            if not exchange.audited:
                await pipeline.record_refused(exchange)
        reply: Reply = exchange.reply or EmptyReply(500)
        watcher: asyncio.Task[None] | None = None
        if isinstance(reply, SseReply):
            gone = asyncio.Event()
            watcher = asyncio.create_task(_watch_disconnect(receive, gone))
            reply.events = self._relay_while_wanted(reply.events, gone, exchange if method == "POST" else None)
        try:
            exchange.response_bytes = await send_reply(send, reply)
        except OSError:
            logger.info("client went away before the reply was sent")
        except Exception:  # a bug while relaying: the stream ends, the outcome record says so
            logger.exception("%s %s: relaying the reply failed", method, scope["path"])
            exchange.error = exchange.error or BastionError("Internal error while relaying the reply")
            exchange.result_error = True
        finally:
            if watcher is not None:
                watcher.cancel()
            await pipeline.finish(exchange)

    async def _relay_while_wanted(
        self, events: AsyncIterator[SseEvent], gone: asyncio.Event, call: Exchange | None
    ) -> AsyncIterator[SseEvent]:
        """Relay ``events`` until they end, the client disconnects (``gone``) or the gateway stops.

        ``call`` is the exchange of a POST's SSE answer, ``None`` for a GET event stream. Once the
        graceful stop begins, an event stream ends at once; a call's answer goes on until the
        drain deadline, and is then cut, ending with the JSON-RPC error of ``ShuttingDown`` for
        the call's request if it was not answered yet (recorded as the outcome's error).
        Stopping closes ``events``, which releases the upstream stream (or the stdio
        subscription) behind it. Idle for ``_KEEPALIVE_S`` seconds, it sends a comment line so
        that proxies keep the stream open.
        """
        closing: asyncio.Future[Any] = asyncio.ensure_future(self._closing.wait())
        left: asyncio.Future[Any] = asyncio.ensure_future(gone.wait())
        upcoming: asyncio.Future[Any] | None = None
        answered = False
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.ensure_future(anext(events))
                waiting: set[asyncio.Future[Any]] = {upcoming, left}
                drain_left = self._drain.left_s()
                if drain_left is None:
                    waiting.add(closing)
                elif call is None:
                    return  # an event stream: ends as soon as the stop begins
                elif drain_left <= 0:
                    if call.kind == "request" and not answered:
                        error = self._drain.error()
                        call.error, call.result_error = error, True
                        body = {"code": error.jsonrpc_code, "message": error.message}
                        yield SseEvent(message={"jsonrpc": "2.0", "id": call.rpc_id, "error": body})
                    return
                timeout = _KEEPALIVE_S if drain_left is None else min(_KEEPALIVE_S, drain_left)
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if left in done:
                    return
                if closing in done and upcoming not in done:
                    continue  # the stop began: judged at the top of the loop
                if not done:
                    if self._drain.left_s() is None:
                        yield SseEvent()  # a comment line
                    continue
                try:
                    event = upcoming.result()
                except StopAsyncIteration:
                    return
                upcoming = None
                if call is not None and answers(call, event.message):
                    answered = True
                yield event
        finally:
            closing.cancel()
            left.cancel()
            if upcoming is not None:
                upcoming.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await upcoming
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the ASGI server reports that the client disconnected.

    Needed because uvicorn silently drops what is sent after a disconnect: a
    stream that never learned of it would relay (and hold its upstream) forever.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


def _bare_request(scope: Scope) -> HttpRequest:
    return HttpRequest(method=scope["method"], path=scope["path"], headers={}, raw_headers=(), client_ip=None)
