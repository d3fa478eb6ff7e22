"""Stage 11, forward, for Streamable HTTP upstreams: a session-mapping relay.

Each downstream session maps to one upstream session: ``initialize`` is
forwarded and the upstream's ``Mcp-Session-Id`` is kept behind Bastion's own.
Every later message goes to that upstream session; JSON answers come back
whole, SSE answers are relayed event by event (ids kept for resumption; the
request is shared first with a shared session store, so that the stream can be
resumed on another replica), GET
streams (``HttpStreamStage``) and DELETE (``HttpEndStage``) are relayed too. 2026-07-28 requests are stateless and are
forwarded as they are, mirrored headers included. The client's
``Authorization`` header is never forwarded (``HttpUpstream`` copies only
MCP's own headers); the route's credential source supplies the upstream's
(step 10, ``_send``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bastion.credentials.broker import send_with_credential
from bastion.errors import UpstreamError
from bastion.pipeline.context import EmptyReply, Exchange, JsonReply, Reply, SseEvent, SseReply
from bastion.pipeline.filters import sent_request
from bastion.stores.sessions import SessionStore
from bastion.upstream.http import HttpUpstream, UpstreamResponse

__all__ = ["HttpEndStage", "HttpForwardStage", "HttpStreamStage"]

logger = logging.getLogger(__name__)


async def relay_events(response: UpstreamResponse) -> AsyncIterator[SseEvent]:
    """The upstream's server-sent events as ``SseEvent``s (JSON decoded; ids kept); closes ``response``.

    Raises ``UpstreamUnavailable`` when the upstream connection fails mid-stream.
    """
    if response.events is None:
        return
    try:
        async for event in response.events:
            message: Any = None
            if event.data:
                try:
                    message = json.loads(event.data)
                except ValueError:
                    message = None
            yield SseEvent(
                message=message,
                data=None if message is not None else event.data,
                id=event.id,
                event="" if event.event == "message" else event.event,
                retry=event.retry,
            )
    finally:
        await response.aclose()


async def _send(
    exchange: Exchange,
    upstream: HttpUpstream,
    method: str,
    headers: Mapping[str, str],
    body: bytes | None,
    session_id: str | None,
) -> UpstreamResponse:
    """Step 10 (credentials) and the send: the caller's upstream credential from the route's
    source, renewed once after a 401 (``send_with_credential``); recorded on the exchange for
    the audit record (kind and whose, never the secret)."""
    source = exchange.route.credentials
    if source is not None:
        exchange.credential_kind = source.kind
        exchange.credential_principal = exchange.principal.sub if exchange.principal else None
    elif exchange.route.settings.http is not None and exchange.route.settings.http.headers:
        exchange.credential_kind = "secret_ref"

    trace = exchange.notes.get("trace_headers")  # the forward span's traceparent (bastion.tracing; else none)

    async def send(credential: dict[str, str] | None) -> UpstreamResponse:
        return await upstream.send(
            method, headers=headers, body=body, session_id=session_id, credential=credential, trace=trace
        )

    return await send_with_credential(source, exchange.principal, send)


def _upstream(exchange: Exchange) -> HttpUpstream:
    if exchange.route.http is None:
        raise UpstreamError(f"route {exchange.route.name} has no HTTP upstream")
    return exchange.route.http


async def _share_request(exchange: Exchange) -> None:
    """Share the exchange's request with the other replicas before its streamed answer is relayed:
    should the stream be cut, the client may resume it on another replica with ``Last-Event-ID``,
    and the answer the upstream replays there is relayed only for a request it can find
    (``RequestLedger.share``; nothing without a shared session store). A JSON answer cannot be
    replayed, so it costs no shared write.

    When the shared store fails the call is still answered here (its request is in this process's
    ledger); resuming its stream elsewhere would then be refused, as before sharing existed.
    """
    session = exchange.session
    if session is None or not session.requests.shared:
        return
    try:
        await session.requests.share(sent_request(exchange))
    except Exception:  # not sharing only narrows where the stream resumes (refused elsewhere)
        logger.warning("the request could not be shared; its stream resumes on this replica only", exc_info=True)


def _reply_from(response: UpstreamResponse, headers: dict[str, str]) -> Reply:
    if response.kind == "sse":
        return SseReply(response.status, relay_events(response), headers)
    if response.kind == "json":
        try:
            message = json.loads(response.body)
        except ValueError:
            return JsonReply(response.status, None, headers, raw=response.body)
        return JsonReply(response.status, message, headers, raw=response.body)
    return EmptyReply(response.status, headers)


class HttpForwardStage:
    """Forward the exchange to the route's HTTP upstream and set ``exchange.reply``."""

    name = "forward"

    def __init__(self, sessions: SessionStore) -> None:
        self._sessions = sessions

    async def run(self, exchange: Exchange) -> None:
        """POST the downstream body upstream; map the session id both ways."""
        upstream = _upstream(exchange)
        session = exchange.session
        upstream_sid = session.upstream_id if session is not None and not exchange.new_session else None
        response = await _send(exchange, upstream, "POST", exchange.http.headers, exchange.http.body, upstream_sid)
        exchange.upstream_status = response.status
        headers: dict[str, str] = {}
        if session is not None:
            if exchange.new_session:
                if response.status >= 400:
                    await self._sessions.delete(session.id)
                else:
                    updated = await self._sessions.update(session.id, upstream_id=response.session_id)
                    exchange.session = updated or session
                    headers["mcp-session-id"] = session.id
            elif response.status == 404:
                # The upstream forgot the session: forget ours so the client starts over.
                await self._sessions.delete(session.id)
        exchange.reply = _reply_from(response, headers)  # set first: a failure from here on releases it
        if response.kind == "sse" and response.status < 400 and exchange.kind == "request":
            await _share_request(exchange)  # before the stage ends, so before any event is relayed

    async def answer(self, exchange: Exchange, response: dict[str, Any]) -> None:
        """POST ``response`` (a JSON-RPC response to a server-to-client request) to the upstream
        session in the client's place, with the caller's upstream credential. Raises
        ``UpstreamError`` when the upstream cannot be reached."""
        upstream = _upstream(exchange)
        session_id = exchange.session.upstream_id if exchange.session else None
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        version = exchange.http.headers.get("mcp-protocol-version")
        if version:
            headers["mcp-protocol-version"] = version
        sent = await _send(exchange, upstream, "POST", headers, json.dumps(response).encode(), session_id)
        await sent.aclose()

    async def load_catalog(self, exchange: Exchange) -> None:
        """Fetch ``tools/list`` over the exchange's upstream session into the route's catalog."""
        upstream = _upstream(exchange)
        session_id = exchange.session.upstream_id if exchange.session else None
        headers = {k: v for k, v in exchange.http.headers.items() if k != "mcp-name"}
        headers["mcp-method"] = "tools/list"
        meta = exchange.params.get("_meta") if exchange.era == "modern" else None
        envelope = {k: v for k, v in (meta or {}).items() if k.startswith("io.modelcontextprotocol/")}

        async def fetch_page(cursor: str | None) -> dict[str, Any]:
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            if envelope:
                params["_meta"] = envelope
            message = {"jsonrpc": "2.0", "id": f"bastion-catalog-{cursor or 0}", "method": "tools/list",
                       "params": params}  # fmt: skip
            return await self._request(exchange, upstream, headers, json.dumps(message).encode(), session_id)

        await exchange.route.catalog_for(exchange.principal).reload(fetch_page)

    @staticmethod
    async def _request(
        exchange: Exchange, upstream: HttpUpstream, headers: dict[str, str], body: bytes, session_id: str | None
    ) -> dict[str, Any]:
        response = await _send(exchange, upstream, "POST", headers, body, session_id)
        try:
            if response.kind == "json":
                message = json.loads(response.body)
            elif response.kind == "sse" and response.events is not None:
                message = None
                async for event in response.events:
                    candidate = json.loads(event.data) if event.data else None
                    if isinstance(candidate, dict) and ("result" in candidate or "error" in candidate):
                        message = candidate
                        break
            else:
                message = None
        except ValueError as exc:
            raise UpstreamError("upstream answered tools/list with invalid JSON") from exc
        finally:
            await response.aclose()
        if not isinstance(message, dict) or not isinstance(message.get("result"), dict):
            raise UpstreamError(f"upstream answered tools/list with status {response.status} and no result")
        result: dict[str, Any] = message["result"]
        return result


class HttpStreamStage:
    """GET: open the upstream session's event stream (MCP 2025-11-25 basic/transports,
    "Listening for Messages from the Server") and relay it; ``Last-Event-ID`` is passed
    on so a stream can be resumed, and the runner's message filters inspect what it replays."""

    name = "forward"

    async def run(self, exchange: Exchange) -> None:
        """Set ``exchange.reply`` to the relayed stream, or to the upstream's bodiless status."""
        upstream = _upstream(exchange)
        session = exchange.session
        upstream_sid = session.upstream_id if session is not None else None
        response = await _send(exchange, upstream, "GET", exchange.http.headers, None, upstream_sid)
        exchange.upstream_status = response.status
        if response.kind == "sse":
            exchange.reply = SseReply(200, relay_events(response))
            return
        await response.aclose()
        exchange.reply = EmptyReply(response.status)


class HttpEndStage:
    """DELETE: end the upstream session, then Bastion's (MCP 2025-11-25 basic/transports,
    "Session Management").

    Bastion's session is forgotten whatever the upstream answers. The client gets
    the upstream's 2xx or 405; an upstream that had already forgotten the session
    (404) counts as ended (200); any other status is an ``UpstreamError`` (502),
    and an unreachable upstream an ``UpstreamUnavailable`` (503), so the client and
    the outcome record both learn that the upstream session may still exist.
    """

    name = "forward"

    def __init__(self, sessions: SessionStore) -> None:
        self._sessions = sessions

    async def run(self, exchange: Exchange) -> None:
        """Set ``exchange.reply``; raise ``UpstreamError`` / ``UpstreamUnavailable`` as above."""
        session = exchange.session
        if session is None:
            raise UpstreamError("DELETE reached the forward stage without a session")
        status = 200
        try:
            if session.upstream_id:
                upstream = _upstream(exchange)
                response = await _send(exchange, upstream, "DELETE", exchange.http.headers, None, session.upstream_id)
                await response.aclose()
                status = exchange.upstream_status = response.status
        finally:
            await self._sessions.delete(session.id)
        if status == 404:
            status = 200
        if not (200 <= status < 300 or status == 405):
            raise UpstreamError(f"the upstream answered DELETE with status {status}; its session may remain")
        exchange.reply = EmptyReply(status)
