"""The MCP endpoint of one route: a raw ASGI app for POST, GET and DELETE.

POST runs the whole pipeline (``bastion.pipeline.runner``). GET opens the
server-to-client event stream of a handshake-era session and DELETE ends a
session (MCP 2025-11-25 basic/transports); both authenticate and check the
session binding exactly like POST, then relay to the upstream. Every error is
answered in the protocol's own form, never with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Receive, Scope, Send

from bastion.credentials.broker import send_with_credential
from bastion.errors import BastionError, NotAcceptable, SessionNotFound, SessionRequired, TransportError
from bastion.pipeline.context import EmptyReply, Exchange, HttpRequest, Reply, SseEvent, SseReply
from bastion.pipeline.runner import Pipeline, error_reply
from bastion.pipeline.stages.authenticate import AuthenticateStage
from bastion.pipeline.stages.forward_http import _relay_events
from bastion.stores.sessions import SessionStore
from bastion.transport.checks import OriginPolicy, accepts
from bastion.transport.routes import RouteRuntime
from bastion.transport.wire import read_request, send_reply
from bastion.upstream.http import UpstreamResponse

__all__ = ["McpEndpoint"]

logger = logging.getLogger(__name__)

_KEEPALIVE_S = 15.0


class McpEndpoint:
    """ASGI app serving ``route``'s MCP endpoint."""

    def __init__(
        self,
        route: RouteRuntime,
        pipeline: Pipeline,
        *,
        origins: OriginPolicy,
        authenticate: AuthenticateStage,
        sessions: SessionStore,
        max_body: int,
        closing: asyncio.Event | None = None,
    ) -> None:
        self.route = route
        self._pipeline = pipeline
        self._origins = origins
        self._authenticate = authenticate
        self._sessions = sessions
        self._max_body = max_body
        self._closing = closing or asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("POST", "GET", "DELETE"):
            await send_reply(send, EmptyReply(405, {"allow": "GET, POST, DELETE"}))
            return
        exchange: Exchange | None = None
        piped = False
        try:
            request = await read_request(scope, receive, self._max_body)
            exchange = Exchange(route=self.route, http=request)
            if method == "POST":
                piped = True
                await self._pipeline.handle(exchange)
            else:
                await self._stream_or_delete(exchange)
        except Exception as exc:  # fail closed, in the protocol's own form, with a record
            error = exc if isinstance(exc, BastionError) else BastionError("Internal error")
            if not isinstance(exc, BastionError):
                logger.exception("%s %s failed", method, scope["path"])
            if exchange is None:
                exchange = Exchange(route=self.route, http=_bare_request(scope))
            exchange.error = error
            exchange.reply = error_reply(exchange, error)
        if not piped:  # the pipeline records what it handles; this records GET, DELETE and unread POSTs
            exchange.notes["label"] = {"GET": "stream/open", "DELETE": "session/delete"}.get(method, "invalid")
            await self._pipeline.record_unpiped(exchange)
        reply: Reply = exchange.reply or EmptyReply(500)
        watcher: asyncio.Task[None] | None = None
        if isinstance(reply, SseReply):
            gone = asyncio.Event()
            watcher = asyncio.create_task(_watch_disconnect(receive, gone))
            reply.events = self._relay_while_wanted(reply.events, gone)
        try:
            exchange.response_bytes = await send_reply(send, reply)
        except OSError:
            logger.info("client went away before the reply was sent")
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._pipeline.finish(exchange)

    async def _stream_or_delete(self, exchange: Exchange) -> None:
        headers = exchange.http.headers
        self._origins.check(headers)
        if exchange.http.method == "GET" and not accepts(headers)[1]:
            raise NotAcceptable("Not Acceptable: GET needs Accept: text/event-stream")
        await self._authenticate.run(exchange)
        session_id = headers.get("mcp-session-id")
        if not session_id:
            if exchange.http.method == "GET":
                exchange.reply = EmptyReply(405, {"allow": "POST, DELETE"})
                return
            raise SessionRequired("Bad Request: MCP-Session-Id header is required")
        principal = exchange.principal
        if principal is None:
            raise TransportError("no principal")
        session = await self._sessions.get(session_id, self.route.name, principal.key)
        if session is None:
            raise SessionNotFound("Session not found")
        exchange.session = session
        if exchange.http.method == "DELETE":
            await self._delete(exchange)
        else:
            await self._open_stream(exchange)

    async def _delete(self, exchange: Exchange) -> None:
        session = exchange.session
        if session is None:
            return
        status = 200
        if self.route.http is not None and session.upstream_id:
            response = await self._send_upstream(exchange, "DELETE", session.upstream_id)
            await response.aclose()
            status = response.status if response.status in (200, 202, 204, 405) else 200
        await self._sessions.delete(session.id)
        exchange.reply = EmptyReply(status)

    async def _open_stream(self, exchange: Exchange) -> None:
        session = exchange.session
        if session is None:
            return
        if self.route.http is not None:
            response = await self._send_upstream(exchange, "GET", session.upstream_id)
            if response.kind == "sse":
                exchange.reply = SseReply(200, _relay_events(response))
            else:
                await response.aclose()
                exchange.reply = EmptyReply(response.status)
            return
        exchange.reply = SseReply(200, self._broadcast(), {})

    async def _send_upstream(self, exchange: Exchange, method: str, session_id: str | None) -> UpstreamResponse:
        """A GET stream or DELETE to the HTTP upstream, with the caller's upstream credential."""
        upstream = self.route.http
        if upstream is None:
            raise TransportError("the route has no HTTP upstream")

        async def send(credential: dict[str, str] | None) -> UpstreamResponse:
            return await upstream.send(
                method, headers=exchange.http.headers, session_id=session_id, credential=credential
            )

        return await send_with_credential(self.route.credentials, exchange.principal, send)

    async def _relay_while_wanted(
        self, events: AsyncIterator[SseEvent], gone: asyncio.Event
    ) -> AsyncIterator[SseEvent]:
        """Relay ``events`` until they end, the client disconnects (``gone``) or the gateway shuts down.

        Stopping closes ``events``, which releases the upstream stream (or the
        stdio subscription) behind it. Idle for ``_KEEPALIVE_S`` seconds, it
        sends a comment line so that proxies keep the stream open.
        """
        closing: asyncio.Future[Any] = asyncio.ensure_future(self._closing.wait())
        left: asyncio.Future[Any] = asyncio.ensure_future(gone.wait())
        upcoming: asyncio.Future[Any] | None = None
        try:
            while True:
                if upcoming is None:
                    upcoming = asyncio.ensure_future(anext(events))
                waiting: set[asyncio.Future[Any]] = {upcoming, closing, left}
                done, _ = await asyncio.wait(waiting, timeout=_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                if closing in done or left in done:
                    return
                if not done:
                    yield SseEvent()  # a comment line
                    continue
                try:
                    event = upcoming.result()
                except StopAsyncIteration:
                    return
                upcoming = None
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

    async def _broadcast(self) -> AsyncIterator[SseEvent]:
        server = self.route.stdio
        if server is None:
            return
        queue = server.subscribe()
        try:
            while True:
                yield SseEvent(message=await queue.get())
        finally:
            server.unsubscribe(queue)


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
