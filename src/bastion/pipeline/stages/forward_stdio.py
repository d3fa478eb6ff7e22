"""Stage 11, forward, for stdio upstreams: Bastion terminates the MCP session.

The stdio process has one MCP connection, Bastion's. Downstream sessions are
Bastion's own: ``initialize`` (handshake era) and ``server/discover``
(2026-07-28) are answered from the process's initialize result; requests are
forwarded with Bastion's ids (``StdioServer.request``); progress
notifications for a request are streamed back on that request's SSE response
when the client accepts SSE. For 2026-07-28 clients the per-request envelope
keys are removed before forwarding and ``resultType`` is added to results.
A GET stream (``StdioStreamStage``) relays the process's broadcast
notifications; a DELETE (``StdioEndStage``) ends Bastion's session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from bastion.errors import TransportError, UpstreamError
from bastion.pipeline.context import EmptyReply, Exchange, JsonReply, SseEvent, SseReply
from bastion.stores.sessions import SessionStore, rpc_key
from bastion.transport.checks import SERVED_HANDSHAKE_VERSIONS, SERVED_MODERN_VERSIONS
from bastion.upstream.stdio import ServerRequestHandler, StdioServer

__all__ = ["StdioEndStage", "StdioForwardStage", "StdioStreamStage", "modernize_result"]

_ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY})
_LATEST_HANDSHAKE = SERVED_HANDSHAKE_VERSIONS[-1]
_CLIENT_ANSWER_TIMEOUT_S = 300.0
_CACHEABLE = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)


def modernize_result(method: str, result: dict[str, Any]) -> dict[str, Any]:
    """Give a handshake-era result the fields 2026-07-28 requires (basic/utilities, caching).

    Every result gets ``resultType: "complete"``; cacheable results get
    ``cacheScope: "private"`` (a filtered answer is per principal) and
    ``ttlMs: 0`` (no freshness promised) unless the upstream set them.
    """
    extra: dict[str, Any] = {"resultType": "complete"}
    if method in _CACHEABLE:
        extra.update(cacheScope="private", ttlMs=0)
    return {**extra, **result}


def _negotiate(exchange: Exchange) -> str:
    """The protocol version Bastion answers ``initialize`` with: the client's if served, else the latest."""
    requested = exchange.params.get("protocolVersion")
    return requested if requested in SERVED_HANDSHAKE_VERSIONS else _LATEST_HANDSHAKE


def _strip_envelope(params: dict[str, Any]) -> dict[str, Any]:
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return params
    kept = {k: v for k, v in meta.items() if k not in _ENVELOPE_KEYS and not k.startswith("io.modelcontextprotocol/")}
    stripped = {k: v for k, v in params.items() if k != "_meta"}
    if kept:
        stripped["_meta"] = kept
    return stripped


class StdioForwardStage:
    """Answer or forward the exchange on the route's stdio process; set ``exchange.reply``."""

    name = "forward"

    @staticmethod
    def _server(exchange: Exchange) -> StdioServer:
        if exchange.route.stdio is None:
            raise UpstreamError(f"route {exchange.route.name} has no stdio upstream")
        return exchange.route.stdio

    def __init__(self, sessions: SessionStore) -> None:
        self._sessions = sessions
        self._awaiting: dict[tuple[str, Any], asyncio.Future[dict[str, Any]]] = {}

    async def run(self, exchange: Exchange) -> None:
        """Handle one downstream message on a stdio route."""
        server = self._server(exchange)
        headers = {"mcp-session-id": exchange.session.id} if exchange.new_session and exchange.session else {}
        if exchange.kind == "response":
            self._deliver(exchange)
            exchange.reply = EmptyReply(202)
            return
        if exchange.kind != "request":
            # Notifications (initialized, cancelled, ...) stay at Bastion.
            exchange.reply = EmptyReply(202)
            return
        method = exchange.method or ""
        if method == "initialize":
            version = _negotiate(exchange)
            if exchange.session is not None:
                updated = await self._sessions.update(exchange.session.id, protocol_version=version)
                exchange.session = updated or exchange.session
            exchange.reply = JsonReply(200, self._initialize(exchange, server, version), headers)
            return
        if method == "server/discover":
            exchange.reply = JsonReply(200, self._discover(exchange, server))
            return
        params = _strip_envelope(exchange.params)
        meta = params.get("_meta")
        wants_progress = isinstance(meta, dict) and "progressToken" in meta and exchange.accepts_sse
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        call = asyncio.create_task(
            server.request(
                method,
                params,
                on_progress=queue.put_nowait if wants_progress else None,
                on_request=self._relay_to(exchange, queue),
            )
        )
        if not wants_progress:
            # Answer in JSON unless the server asks the client something first: then the
            # reply becomes an SSE stream carrying that request (MCP basic/transports).
            getter = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait({getter, call}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                await self._settle(call)
                raise
            finally:
                if not getter.done():
                    getter.cancel()
            if not getter.done() or getter.cancelled():
                exchange.upstream_status = 200
                exchange.reply = JsonReply(200, self._finish(exchange, call.result()), headers)
                return
            exchange.reply = SseReply(200, self._stream(exchange, call, queue, first=getter.result()), headers)
            return
        exchange.reply = SseReply(200, self._stream(exchange, call, queue), headers)

    @staticmethod
    async def _settle(call: asyncio.Task[dict[str, Any]]) -> None:
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, UpstreamError):
                await call

    def _relay_to(self, exchange: Exchange, queue: asyncio.Queue[dict[str, Any]]) -> ServerRequestHandler:
        """The handler that relays a server-to-client request of this call to its client: onto the
        call's SSE stream (where the message filters decide it), then waits for the client's
        response (``_deliver``) or the filter's refusal (``answer``)."""
        session = exchange.session
        relayable = exchange.accepts_sse and exchange.era == "handshake" and session is not None

        async def relay(message: dict[str, Any]) -> dict[str, Any]:
            if not relayable or session is None:
                text = f"{message.get('method')} cannot reach this client: its call does not take an event stream"
                return {"error": {"code": -32603, "message": text}}
            key = (session.id, rpc_key(message.get("id")))
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._awaiting[key] = future
            queue.put_nowait(message)
            try:
                return await asyncio.wait_for(future, _CLIENT_ANSWER_TIMEOUT_S)
            except TimeoutError:
                return {"error": {"code": -32603, "message": "the client did not answer in time"}}
            finally:
                self._awaiting.pop(key, None)

        return relay

    def _deliver(self, exchange: Exchange) -> None:
        """A client's response to a relayed server-to-client request: hand it to the waiting relay.
        Raises ``TransportError`` (400) when no relayed request of this session awaits it."""
        session = exchange.session
        key = (session.id if session else "", rpc_key(exchange.rpc_id))
        future = self._awaiting.get(key)
        if future is None or future.done():
            raise TransportError("Invalid Request: no request from the server awaits this response")
        future.set_result(exchange.message or {})

    async def answer(self, exchange: Exchange, response: dict[str, Any]) -> None:
        """Answer a relayed server-to-client request in the client's place (a refusal by policy)."""
        session = exchange.session
        future = self._awaiting.get((session.id if session else "", rpc_key(response.get("id"))))
        if future is not None and not future.done():
            future.set_result(response)

    def _finish(self, exchange: Exchange, response: dict[str, Any]) -> dict[str, Any]:
        message = {**response, "id": exchange.rpc_id}
        result = message.get("result")
        if exchange.era == "modern" and isinstance(result, dict):
            message["result"] = modernize_result(exchange.method or "", result)
        return message

    async def _stream(
        self,
        exchange: Exchange,
        call: asyncio.Task[dict[str, Any]],
        queue: asyncio.Queue[dict[str, Any]],
        first: dict[str, Any] | None = None,
    ) -> AsyncIterator[SseEvent]:
        """Relay what ``queue`` receives (progress, server-to-client requests) until ``call``
        ends, then its answer. The call's failure propagates (the runner turns it into an
        error event); closing the stream cancels the call."""
        try:
            if first is not None:
                yield SseEvent(message=first)
            while not call.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, call}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield SseEvent(message=getter.result())
                else:
                    getter.cancel()
            exchange.upstream_status = 200
            yield SseEvent(message=self._finish(exchange, call.result()))
        finally:
            await self._settle(call)

    @staticmethod
    def _initialize(exchange: Exchange, server: StdioServer, version: str) -> dict[str, Any]:
        upstream = server.initialize_result
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": upstream.get("capabilities", {}),
            "serverInfo": upstream.get("serverInfo", {"name": exchange.route.name, "version": "unknown"}),
        }
        if upstream.get("instructions"):
            result["instructions"] = upstream["instructions"]
        return {"jsonrpc": "2.0", "id": exchange.rpc_id, "result": result}

    @staticmethod
    def _discover(exchange: Exchange, server: StdioServer) -> dict[str, Any]:
        upstream = server.initialize_result
        result: dict[str, Any] = {
            "supportedVersions": list(SERVED_MODERN_VERSIONS),
            "capabilities": upstream.get("capabilities", {}),
            "resultType": "complete",
            "cacheScope": "private",
            "ttlMs": 0,
            "_meta": {
                "io.modelcontextprotocol/serverInfo": upstream.get(
                    "serverInfo", {"name": exchange.route.name, "version": "unknown"}
                )
            },
        }
        if upstream.get("instructions"):
            result["instructions"] = upstream["instructions"]
        return {"jsonrpc": "2.0", "id": exchange.rpc_id, "result": result}

    async def load_catalog(self, exchange: Exchange) -> None:
        """Fetch ``tools/list`` from the process into the route's catalog."""
        server = self._server(exchange)

        async def fetch_page(cursor: str | None) -> dict[str, Any]:
            response = await server.request("tools/list", {"cursor": cursor} if cursor else {}, timeout_s=30)
            result = response.get("result")
            if not isinstance(result, dict):
                raise UpstreamError(f"tools/list failed: {response.get('error')}")
            return result

        await exchange.route.catalog_for(exchange.principal).reload(fetch_page)


class StdioStreamStage:
    """GET: a stream of the process's broadcast notifications (list changes, log messages)."""

    name = "forward"

    async def run(self, exchange: Exchange) -> None:
        """Set ``exchange.reply`` to the stream (it ends with an error if the listener overflows)."""
        server = StdioForwardStage._server(exchange)
        exchange.reply = SseReply(200, self._broadcast(server))

    @staticmethod
    async def _broadcast(server: StdioServer) -> AsyncIterator[SseEvent]:
        subscription = server.subscribe()
        try:
            while True:
                yield SseEvent(message=await subscription.next())
        finally:
            server.unsubscribe(subscription)


class StdioEndStage:
    """DELETE: forget Bastion's session (the process's one MCP session is Bastion's own)."""

    name = "forward"

    def __init__(self, sessions: SessionStore) -> None:
        self._sessions = sessions

    async def run(self, exchange: Exchange) -> None:
        """Delete the exchange's session; answer 200."""
        if exchange.session is not None:
            await self._sessions.delete(exchange.session.id)
        exchange.reply = EmptyReply(200)
