"""What ``HttpUpstream.send`` tells the upstream: the headers MCP defines, never the client's credentials.

The upstream is a real aiohttp server on 127.0.0.1 that keeps every header line it receives (duplicates
too); the client is the real ``HttpUpstream`` with its guarded connections (``egress.allow`` names the
server's port). The client's ``Authorization``, cookies, proxy credentials, session id and any header
MCP does not define must never arrive; the route's own headers and the caller's upstream credential do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bastion.egress import AllowList, EgressGuard
from bastion.upstream.http import HttpUpstream

#: Headers a client of Bastion may send: what MCP defines, then what must stay at Bastion.
MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-11-25",
    "mcp-method": "tools/call",
    "mcp-name": "add",
    "mcp-param-region": "eu-west",
}
CLIENT_ONLY = {
    "authorization": "Bearer the-clients-token-for-bastion",
    "cookie": "__Host-bastion-session=s3cret; theme=dark",
    "proxy-authorization": "Basic dXNlcjpwYXNz",
    "mcp-session-id": "the-clients-session-at-bastion",
    "x-api-key": "the-clients-key",
    "x-forwarded-for": "203.0.113.9",
    "forwarded": "for=203.0.113.9",
    "origin": "https://app.example",
    "referer": "https://app.example/page",
    "user-agent": "some-client/1.0",
    "host": "bastion.example",
    "x-anything": "else",
}
#: What the HTTP client adds itself (the connection's own fields).
TRANSPORT = {"host", "content-length"}
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{}}}'


class RecordingUpstream:
    """An MCP endpoint answering ``{}`` to every POST; ``seen`` holds the header lines of each request
    as received, names lowercased, in order. ``server`` (aiohttp's ``TestServer``) serves it on 127.0.0.1."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, str]]] = []
        app = web.Application()
        app.router.add_post("/mcp", self._answer)
        self.server = TestServer(app, host="127.0.0.1")

    async def _answer(self, request: web.Request) -> web.Response:
        self.seen.append([(name.decode().lower(), value.decode()) for name, value in request.raw_headers])
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    recording = RecordingUpstream()
    async with recording.server:
        yield recording


async def sent(
    upstream: RecordingUpstream,
    *,
    extra_headers: Mapping[str, str] | None = None,
    credential: Mapping[str, str] | None = None,
    session_id: str | None = None,
) -> dict[str, list[str]]:
    """Send one POST with the client's headers through a fresh ``HttpUpstream`` (the route's
    ``extra_headers``, the caller's ``credential`` and upstream ``session_id``); the header lines the
    upstream received, as ``name -> [values]``, without the HTTP client's own."""
    async with EgressGuard(allow=AllowList.parse([f"127.0.0.1:{upstream.port}"])) as guard:
        client = HttpUpstream(upstream.url, guard=guard, allow_http=True, extra_headers=extra_headers)
        try:
            response = await client.send(
                "POST",
                headers={**MCP_HEADERS, **CLIENT_ONLY},
                body=BODY,
                session_id=session_id,
                credential=credential,
            )
            assert response.status == 200
        finally:
            await client.aclose()
    [lines] = upstream.seen
    received: dict[str, list[str]] = {}
    for name, value in lines:
        received.setdefault(name, []).append(value)
    assert received["host"] == [f"127.0.0.1:{upstream.port}"]  # the client's Host is not the upstream's
    return {name: values for name, values in received.items() if name not in TRANSPORT}


async def test_only_the_headers_mcp_defines_reach_the_upstream(upstream: RecordingUpstream) -> None:
    received = await sent(upstream)
    assert received == {name: [value] for name, value in MCP_HEADERS.items()}
    for secret in ("authorization", "cookie", "proxy-authorization", "mcp-session-id"):
        assert secret not in received


async def test_the_upstream_gets_the_routes_credential_and_session_never_the_clients(
    upstream: RecordingUpstream,
) -> None:
    received = await sent(
        upstream,
        extra_headers={"x-api-key": "the-routes-key"},
        credential={"authorization": "Bearer the-upstream-token"},
        session_id="the-upstream-session",
    )
    assert received == {
        **{name: [value] for name, value in MCP_HEADERS.items()},
        "x-api-key": ["the-routes-key"],
        "authorization": ["Bearer the-upstream-token"],
        "mcp-session-id": ["the-upstream-session"],
    }
    assert "cookie" not in received
    assert "proxy-authorization" not in received
