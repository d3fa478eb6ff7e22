"""Tests of ``bastion.transport.connections``: the listener's header and body limits, without sockets.

The protocol is driven as uvicorn drives it (``connection_made``, ``data_received``)
with a transport that records what is written; the limits are fractions of a
second so the timers run out during the test. ``tests/e2e/test_slow_clients.py``
shows the same against a real ``bastion serve``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from bastion.transport import connections
from bastion.transport.connections import ConnectionLimits, http_protocol
from bastion.transport.wire import BODY_DEADLINE

T = 0.4  # seconds for the headers, and for the body
LIMITS = ConnectionLimits(header_timeout_s=T, body_timeout_s=T, max_header_bytes=4096)
HEAD = b"POST /mcp/r HTTP/1.1\r\nHost: example\r\nContent-Length: 10\r\n\r\n"


class Transport(asyncio.Transport):
    """Records what the protocol writes and whether it closed the connection; like asyncio's, tells
    the protocol that the connection is lost soon after ``close``."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.writes: list[bytes] = []
        self.closed = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        if not self.closed and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class App:
    """An ASGI app that reads the whole body and answers 200; keeps the scopes it saw."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _connection(app: App, limits: ConnectionLimits = LIMITS) -> tuple[Any, Transport]:
    config = uvicorn.Config(app, http=http_protocol(limits), ws="none", log_config=None)
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


def _answer(transport: Transport) -> tuple[bytes, dict[str, Any]]:
    head, _, body = transport.written.partition(b"\r\n\r\n")
    return head, json.loads(body)


async def test_partial_headers_are_answered_408_in_jsonrpc_form_and_closed() -> None:
    protocol, transport = _connection(App())
    protocol.data_received(b"POST /mcp/r HTTP/1.1\r\nHost: exa")
    await asyncio.sleep(T / 4)
    assert not transport.closed
    await asyncio.sleep(T)
    assert transport.closed
    head, message = _answer(transport)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in head
    assert message == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Request Timeout: the headers did not arrive within 0.4 s"},
    }


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    _, transport = _connection(App())
    await asyncio.sleep(T * 1.5)
    assert transport.closed
    assert transport.written == b""


async def test_headers_sent_in_time_are_served_and_the_app_gets_the_body_deadline() -> None:
    app = App()
    protocol, transport = _connection(app)
    before = asyncio.get_running_loop().time()
    protocol.data_received(HEAD + b"0123456789")
    await asyncio.sleep(T * 1.5)  # past both deadlines: the request was complete before either
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not transport.closed
    limit = app.scopes[0]["extensions"][BODY_DEADLINE]
    assert limit["timeout_s"] == T
    assert before + T <= limit["deadline"] <= before + T * 1.5


async def test_the_next_request_on_a_kept_alive_connection_has_its_own_header_deadline() -> None:
    protocol, transport = _connection(App())
    protocol.data_received(HEAD + b"0123456789")
    await asyncio.sleep(T / 4)
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHo")
    await asyncio.sleep(T * 1.5)
    assert transport.closed
    assert transport.written.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 408 Request Timeout\r\n" in transport.written


async def test_headers_over_max_header_bytes_are_answered_431_and_closed() -> None:
    protocol, transport = _connection(App())
    protocol.data_received(b"POST /mcp/r HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 5000 + b"\r\n")
    assert transport.closed
    head, message = _answer(transport)
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert message["error"]["message"] == "Request Header Fields Too Large: more than 4096 bytes"


@pytest.mark.parametrize("pipelined", [False, True])
async def test_a_complete_header_block_over_max_header_bytes_never_reaches_the_app(pipelined: bool) -> None:
    """A whole oversized header block in one read (alone, or pipelined after a request that is
    served) is refused when the headers are complete: 431, closed, the application never sees it."""
    app = App()
    protocol, transport = _connection(app)
    pad = b"X-Pad: " + b"a" * 20_000
    huge = b"POST /mcp/r HTTP/1.1\r\nHost: example\r\n" + pad + b"\r\nContent-Length: 10\r\n\r\n0123456789"
    protocol.data_received((HEAD + b"0123456789" if pipelined else b"") + huge)
    await asyncio.sleep(T / 4)
    assert transport.closed
    answers = transport.written.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == (2 if pipelined else 1)
    head, _, body = answers[-1].partition(b"\r\n\r\n")
    assert head.startswith(b"431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head
    assert json.loads(body)["error"]["message"] == "Request Header Fields Too Large: more than 4096 bytes"
    assert len(app.scopes) == (1 if pipelined else 0)


async def test_a_body_that_never_completes_closes_the_connection_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app (here: one that waits) is given the deadline; the protocol closes one grace later."""
    monkeypatch.setattr(connections, "CLOSE_GRACE_S", T)
    protocol, transport = _connection(App())
    protocol.data_received(HEAD + b"01234")
    await asyncio.sleep(T * 1.5)  # past the deadline, within the grace
    assert not transport.closed
    await asyncio.sleep(T)
    assert transport.closed


async def test_partial_headers_sent_during_an_answer_wait_for_it_to_end_then_get_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long answer (an event stream) is not cut by the next request's header deadline."""
    monkeypatch.setattr(connections, "CLOSE_GRACE_S", T / 2)
    finish = asyncio.Event()

    async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"event", "more_body": True})
        await finish.wait()
        await send({"type": "http.response.body", "body": b""})

    protocol, transport = _connection(stream)  # type: ignore[arg-type]
    protocol.data_received(b"GET /mcp/r HTTP/1.1\r\nHost: example\r\n\r\n")
    protocol.data_received(b"GET /mcp/r HTTP/1.1\r\nHo")
    await asyncio.sleep(T * 2)
    assert not transport.closed
    finish.set()
    await asyncio.sleep(T * 1.5)
    assert transport.closed
    assert b"HTTP/1.1 408 Request Timeout\r\n" in transport.written


# --- one write per reply ------------------------------------------------------------------------


class StreamingApp:
    """An ASGI app whose answer's body comes in two parts, the second only once ``go`` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await self.go.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})


async def test_a_whole_reply_leaves_in_one_write() -> None:
    protocol, transport = _connection(App())
    protocol.data_received(HEAD + b"0123456789")
    await asyncio.sleep(0.05)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")  # the head and its empty body, together
    protocol.data_received(HEAD + b"0123456789")  # the next request on the kept-alive connection
    await asyncio.sleep(0.05)
    assert len(transport.writes) == 2
    assert not transport.closed


async def test_a_streamed_reply_sends_its_head_at_once_and_its_parts_as_they_come() -> None:
    app = StreamingApp()
    protocol, transport = _connection(app)  # type: ignore[arg-type]
    protocol.data_received(HEAD + b"0123456789")
    await asyncio.sleep(0.05)  # the body is not ready: the head must not wait for it
    [head] = transport.writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    app.go.set()
    await asyncio.sleep(0.05)
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"]


async def test_a_reply_on_a_closing_connection_is_written_before_the_close() -> None:
    protocol, transport = _connection(App())
    protocol.data_received(HEAD.replace(b"Host: example", b"Host: example\r\nConnection: close") + b"0123456789")
    await asyncio.sleep(0.05)
    assert transport.closed
    [reply] = transport.writes
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in reply
