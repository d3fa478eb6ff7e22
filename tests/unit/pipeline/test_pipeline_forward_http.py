"""Tests of the HTTP forward stages' GET and DELETE (``HttpStreamStage``, ``HttpEndStage``) against a real
aiohttp upstream on 127.0.0.1 (the route's real ``HttpUpstream``, egress guard included).

DELETE: Bastion's session is forgotten whatever the upstream answers; the client gets the
upstream's 2xx or 405, 200 for an upstream that had already forgotten the session (404), and an
error otherwise (502 ``UpstreamError``; 503 ``UpstreamUnavailable`` when unreachable), never a 200
that hides an upstream session left behind. GET: an upstream that breaks its event stream half way
makes the relay raise ``UpstreamUnavailable`` instead of ending quietly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bastion.config import HttpUpstream as HttpUpstreamSettings
from bastion.config import RouteSettings
from bastion.egress import AllowList, EgressGuard
from bastion.errors import UpstreamError, UpstreamUnavailable
from bastion.pipeline.context import EmptyReply, Exchange, HttpRequest, JsonReply, SseEvent, SseReply
from bastion.pipeline.stages.forward_http import HttpEndStage, HttpForwardStage, HttpStreamStage
from bastion.principal import Principal
from bastion.stores.memory_sessions import MemorySessionStore
from bastion.stores.sessions import RequestLedger, SentRequest, Session
from bastion.transport.routes import RouteRuntime
from bastion.upstream.http import HttpUpstream

ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)


class Upstream:
    """An MCP endpoint whose DELETE answers ``delete_status`` and whose GET stream sends one event, then
    breaks the connection (no end of the chunked body). ``deleted`` holds the session ids it was asked
    to end."""

    def __init__(self) -> None:
        self.delete_status = 200
        self.deleted: list[str | None] = []
        app = web.Application()
        app.router.add_delete("/mcp", self._delete)
        app.router.add_get("/mcp", self._get)
        app.router.add_post("/mcp", self._post)
        self.server = TestServer(app, host="127.0.0.1")

    async def _delete(self, request: web.Request) -> web.Response:
        self.deleted.append(request.headers.get("mcp-session-id"))
        return web.Response(status=self.delete_status)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'id: e1\ndata: {"jsonrpc": "2.0", "method": "notifications/message"}\n\n')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # abort: the chunked body never ends
        return response

    async def _post(self, request: web.Request) -> web.StreamResponse:
        """Answer as an event stream when the request's id starts with ``sse``, else as JSON."""
        rpc_id = (await request.json())["id"]
        answer = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": {"content": []}})
        if not str(rpc_id).startswith("sse"):
            return web.Response(text=answer, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"id: p1\ndata: {answer}\n\n".encode())
        return response

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/mcp"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    serving = Upstream()
    async with serving.server:
        yield serving


@pytest.fixture
async def guard(upstream: Upstream) -> AsyncIterator[EgressGuard]:
    async with EgressGuard(allow=AllowList.parse([f"127.0.0.1:{upstream.server.port}"])) as egress:
        yield egress


async def _exchange(url: str, guard: EgressGuard, sessions: MemorySessionStore, method: str) -> Exchange:
    settings = RouteSettings(name="notes", http=HttpUpstreamSettings(url=url, allow_http=True))
    route = RouteRuntime(
        settings=settings,
        resource_uri="http://gw.test/mcp/notes",
        metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/notes",
        http=HttpUpstream(url, guard=guard, allow_http=True),
    )
    headers = {"accept": "text/event-stream"}
    exchange = Exchange(route=route, http=HttpRequest(method, "/mcp/notes", headers, (), "127.0.0.1"))
    exchange.principal = ALICE
    session = await sessions.create("notes", ALICE.key)
    exchange.session = await sessions.update(session.id, upstream_id="upstream-session-1")
    return exchange


async def _gone(sessions: MemorySessionStore, session: Session | None) -> bool:
    assert session is not None
    return await sessions.get(session.id, "notes", ALICE.key) is None


@pytest.mark.parametrize(("upstream_status", "status"), [(200, 200), (202, 202), (204, 204), (404, 200), (405, 405)])
async def test_delete_answers_what_the_upstream_did(
    upstream: Upstream, guard: EgressGuard, upstream_status: int, status: int
) -> None:
    sessions = MemorySessionStore()
    exchange = await _exchange(upstream.url, guard, sessions, "DELETE")
    upstream.delete_status = upstream_status
    try:
        await HttpEndStage(sessions).run(exchange)
    finally:
        assert exchange.route.http is not None
        await exchange.route.http.aclose()
    assert isinstance(exchange.reply, EmptyReply)
    assert exchange.reply.status == status
    assert upstream.deleted == ["upstream-session-1"]
    assert await _gone(sessions, exchange.session)


@pytest.mark.parametrize("upstream_status", [400, 401, 403, 500, 503])
async def test_a_delete_the_upstream_refuses_is_an_upstream_error(
    upstream: Upstream, guard: EgressGuard, upstream_status: int
) -> None:
    sessions = MemorySessionStore()
    exchange = await _exchange(upstream.url, guard, sessions, "DELETE")
    upstream.delete_status = upstream_status
    try:
        with pytest.raises(UpstreamError, match=f"status {upstream_status}") as raised:
            await HttpEndStage(sessions).run(exchange)
    finally:
        assert exchange.route.http is not None
        await exchange.route.http.aclose()
    assert type(raised.value) is UpstreamError
    assert raised.value.status == 502
    assert exchange.upstream_status == upstream_status
    assert await _gone(sessions, exchange.session)  # Bastion's session ends all the same


async def test_a_delete_to_an_unreachable_upstream_is_unavailable() -> None:
    with socket.socket() as sock:  # a port on 127.0.0.1 that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sessions = MemorySessionStore()
    async with EgressGuard(allow=AllowList.parse([f"127.0.0.1:{port}"])) as guard:
        exchange = await _exchange(f"http://127.0.0.1:{port}/mcp", guard, sessions, "DELETE")
        try:
            with pytest.raises(UpstreamUnavailable) as raised:
                await HttpEndStage(sessions).run(exchange)
        finally:
            assert exchange.route.http is not None
            await exchange.route.http.aclose()
    assert raised.value.status == 503
    assert await _gone(sessions, exchange.session)


async def _drain(events: AsyncIterator[SseEvent], into: list[Any]) -> None:
    async for event in events:
        into.append(event.message)


async def test_a_get_stream_the_upstream_breaks_raises_instead_of_ending(
    upstream: Upstream, guard: EgressGuard
) -> None:
    exchange = await _exchange(upstream.url, guard, MemorySessionStore(), "GET")
    relayed: list[Any] = []
    try:
        await HttpStreamStage().run(exchange)
        assert isinstance(exchange.reply, SseReply)
        with pytest.raises(UpstreamUnavailable, match="mid-stream"):
            await _drain(exchange.reply.events, relayed)
    finally:
        assert exchange.route.http is not None
        await exchange.route.http.aclose()
    assert relayed == [{"jsonrpc": "2.0", "method": "notifications/message"}]


class Shared:
    """A ``SharedRequests`` that keeps what was recorded, or fails."""

    def __init__(self, *, failing: bool = False) -> None:
        self.recorded: list[tuple[str, SentRequest]] = []
        self.failing = failing

    async def record(self, session_id: str, request: SentRequest) -> bool:
        if self.failing:
            raise ConnectionError("the shared store is gone")
        self.recorded.append((session_id, request))
        return True

    async def find(self, session_id: str, rpc_id: Any) -> SentRequest | None:
        return None


async def _call(upstream: Upstream, guard: EgressGuard, shared: Shared, rpc_id: str) -> Exchange:
    """A ``tools/call`` POSTed through ``HttpForwardStage`` on a session whose ledger shares with ``shared``."""
    exchange = await _exchange(upstream.url, guard, MemorySessionStore(), "POST")
    assert exchange.session is not None
    ledger = RequestLedger(session_id=exchange.session.id, shared=shared)
    exchange.session = dataclasses.replace(exchange.session, requests=ledger)
    message = {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "method": "tools/call",
        "params": {"name": "search", "arguments": {"q": "x"}},
    }
    exchange.message, exchange.kind, exchange.target = message, "request", "search"
    exchange.http = dataclasses.replace(
        exchange.http, headers={"accept": "application/json, text/event-stream", "content-type": "application/json"},
        body=json.dumps(message).encode(),
    )  # fmt: skip
    try:
        await HttpForwardStage(MemorySessionStore()).run(exchange)
        if isinstance(exchange.reply, SseReply):
            relayed: list[Any] = []
            await _drain(exchange.reply.events, relayed)
            exchange.notes["relayed"] = relayed
    finally:
        assert exchange.route.http is not None
        await exchange.route.http.aclose()
    return exchange


async def test_a_call_answered_as_a_stream_is_shared_before_it_is_relayed(
    upstream: Upstream, guard: EgressGuard
) -> None:
    shared = Shared()
    exchange = await _call(upstream, guard, shared, "sse-1")
    assert isinstance(exchange.reply, SseReply)
    assert exchange.session is not None
    assert shared.recorded == [(exchange.session.id, SentRequest("sse-1", "tools/call", "search", True))]
    assert [m["id"] for m in exchange.notes["relayed"]] == ["sse-1"]


async def test_a_call_answered_as_json_is_not_shared(upstream: Upstream, guard: EgressGuard) -> None:
    shared = Shared()
    exchange = await _call(upstream, guard, shared, "json-1")
    assert isinstance(exchange.reply, JsonReply)
    assert shared.recorded == []  # a JSON answer cannot be replayed: no shared write


async def test_a_call_whose_request_cannot_be_shared_is_still_answered(
    upstream: Upstream, guard: EgressGuard, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bastion.pipeline.stages.forward_http"):
        exchange = await _call(upstream, guard, Shared(failing=True), "sse-2")
    assert [m["id"] for m in exchange.notes["relayed"]] == ["sse-2"]
    assert "resumes on this replica only" in caplog.text
