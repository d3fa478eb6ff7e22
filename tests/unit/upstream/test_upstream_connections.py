"""The upstream client's own connection pool (``bastion.upstream.connections``), over real sockets.

The upstream is a raw asyncio server on 127.0.0.1 that answers each request with scripted bytes
and records what it received on each connection it accepted; the client is the real
``HttpUpstream`` or ``UpstreamConnections`` behind the real ``EgressGuard``. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from bastion.egress import AllowList, EgressGuard
from bastion.egress.target import parse_target
from bastion.errors import UpstreamError, UpstreamUnavailable
from bastion.upstream.connections import UpstreamConnections
from bastion.upstream.http import HttpUpstream

JSON_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
#: The longest a test waits for what must happen (a connection accepted or closed, an answer).
WAIT_S = 5.0


@dataclass(frozen=True)
class Reply:
    """What the upstream does with one request: write ``data``, then ``keep`` the connection for the
    next request, ``close`` it, or ``hold`` it open answering nothing more until the client closes it."""

    data: bytes
    then: Literal["keep", "close", "hold"] = "keep"


class Connection:
    """One connection the upstream accepted: every byte it received, the requests read from it, and
    ``closed`` (set once it is over). The upstream closes it only after a ``close`` reply (or a request
    beyond its script), so otherwise ``closed`` means the client closed it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()

    async def wait_closed(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.closed.wait()


class ScriptedUpstream:
    """An HTTP/1.1 server on 127.0.0.1 answering the requests, in arrival order, with ``replies``."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = deque(replies)
        self.connections: list[Connection] = []
        self._accepted = asyncio.Condition()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/mcp"

    @property
    def requests(self) -> list[bytes]:
        return [request for connection in self.connections for request in connection.requests]

    async def connection(self, index: int) -> Connection:
        """The ``index``-th connection accepted, once it is."""
        async with asyncio.timeout(WAIT_S), self._accepted:
            await self._accepted.wait_for(lambda: len(self.connections) > index)
        return self.connections[index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        connection = Connection()
        async with self._accepted:
            self.connections.append(connection)
            self._accepted.notify_all()
        try:
            while request := await _read_request(reader, connection):
                connection.requests.append(request)
                reply = self.replies.popleft() if self.replies else Reply(b"", then="close")
                writer.write(reply.data)
                await writer.drain()
                if reply.then == "close":
                    break
                if reply.then == "hold":
                    while data := await reader.read(65536):
                        connection.received += data
                    break
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
        except (ConnectionError, asyncio.CancelledError):
            # Not re-raised: asyncio 3.11 logs an error for a connection handler that ends cancelled.
            writer.transport.abort()
        finally:
            connection.closed.set()
            self._handlers.discard(task)


async def _read_request(reader: asyncio.StreamReader, connection: Connection) -> bytes:
    """The next request (head and ``Content-Length`` body), or ``b""`` once the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        connection.received += exc.partial
        return b""
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    request = head + await reader.readexactly(length)
    connection.received += request
    return request


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of the chunked transfer coding (an empty one is the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """A leaked socket shows up as a ResourceWarning (an error) in the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture
async def guard() -> AsyncIterator[EgressGuard]:
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1"])) as guard:
        yield guard


@asynccontextmanager
async def serving(*replies: Reply) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(*replies)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.close()


@asynccontextmanager
async def client(
    upstream: ScriptedUpstream, guard: EgressGuard, timeout_s: float = WAIT_S
) -> AsyncIterator[HttpUpstream]:
    http = HttpUpstream(upstream.url, guard=guard, allow_http=True, timeout_s=timeout_s)
    try:
        yield http
    finally:
        await http.aclose()


@asynccontextmanager
async def pool(upstream: ScriptedUpstream, guard: EgressGuard, **options: Any) -> AsyncIterator[UpstreamConnections]:
    connections = UpstreamConnections(
        parse_target(upstream.url, allow_http=True), guard=guard, url=upstream.url, **options
    )
    try:
        yield connections
    finally:
        await connections.aclose()


async def get(connections: UpstreamConnections) -> bytes:
    """One GET, its body read to the end and the response released."""
    response = await connections.request("GET", {"accept": "application/json"}, None)
    try:
        return await response.content.read()
    finally:
        response.release()


async def post(http: HttpUpstream, credential: dict[str, str] | None = None) -> bytes:
    response = await http.send(
        "POST", headers={"accept": "application/json"}, body=b'{"jsonrpc":"2.0"}', credential=credential
    )
    await response.aclose()
    assert response.status == 200
    return response.body


async def let_the_client_read_the_close() -> None:
    """On loopback the upstream's FIN is in the client's socket at once; reading it takes a turn of the loop."""
    await asyncio.sleep(0.05)


# --- keep-alive ----------------------------------------------------------------------------------


async def test_a_kept_alive_connection_serves_the_next_request(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK), Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        assert await post(http) == b"{}"
        assert await post(http) == b"{}"
    [connection] = upstream.connections
    assert len(connection.requests) == 2


async def test_a_connection_idle_longer_than_keepalive_is_closed_and_a_new_one_opened(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK), Reply(JSON_OK)) as upstream, pool(upstream, guard, keepalive_s=0.01) as pooled:
        await get(pooled)
        await asyncio.sleep(0.05)  # five times keepalive_s
        await get(pooled)
        await upstream.connections[0].wait_closed()
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1]


# --- a connection that cannot serve another request is closed --------------------------------


async def test_an_event_stream_closed_early_closes_its_connection(guard: EgressGuard) -> None:
    stream = Reply(SSE_HEAD + chunk(b"data: first\n\n"), then="hold")  # one event, the stream left open
    async with serving(stream, Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        response = await http.send("GET", headers={"accept": "text/event-stream"})
        assert response.kind == "sse"
        assert response.events is not None
        async for event in response.events:
            assert event.data == "first"
            break
        await response.aclose()
        await upstream.connections[0].wait_closed()
        assert await post(http) == b"{}"
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1]


async def test_a_body_over_the_size_limit_closes_its_connection(guard: EgressGuard) -> None:
    too_large = Reply(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16777217\r\n\r\n{", then="hold"
    )
    async with serving(too_large, Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        with pytest.raises(UpstreamError, match="exceeds the size limit"):
            await post(http)
        await upstream.connections[0].wait_closed()
        assert await post(http) == b"{}"
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1]


async def test_a_response_asking_to_close_is_not_reused_even_if_the_upstream_keeps_it_open(
    guard: EgressGuard,
) -> None:
    closing = Reply(JSON_OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), then="hold")
    async with serving(closing, Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        await post(http)
        await upstream.connections[0].wait_closed()
        assert await post(http) == b"{}"
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1]


async def test_a_kept_connection_the_upstream_closed_while_idle_is_not_used(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK, then="close"), Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        await post(http)
        await upstream.connections[0].closed.wait()
        await let_the_client_read_the_close()
        assert await post(http) == b"{}"  # on a new connection, not a failure on the closed one
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1]


# --- reading responses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "interim",
    [
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n", id="103"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n", id="100-then-103"),
    ],
)
async def test_interim_responses_are_skipped_for_the_final_one(guard: EgressGuard, interim: bytes) -> None:
    async with serving(Reply(interim + JSON_OK), Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        response = await http.send("POST", headers={}, body=b"{}")
        assert (response.status, response.kind, response.body) == (200, "json", b"{}")
        await post(http)
    [connection] = upstream.connections  # the interim responses left the connection fit for the next request
    assert len(connection.requests) == 2


BODY = b'{"result": "' + b"x" * 200_000 + b'"}'


@pytest.mark.parametrize(
    ("reply", "connections"),
    [
        pytest.param(
            Reply(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"".join(map(chunk, [BODY[:1], BODY[1:70_000], BODY[70_000:], b""]))
            ),
            1,
            id="chunked",
        ),
        pytest.param(
            Reply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + BODY, "close"),
            2,
            id="until-the-connection-ends",
        ),
    ],
)
async def test_a_body_is_read_whole_in_either_framing(guard: EgressGuard, reply: Reply, connections: int) -> None:
    async with serving(reply, Reply(JSON_OK)) as upstream, client(upstream, guard) as http:
        assert await post(http) == BODY
        assert await post(http) == b"{}"
    assert len(upstream.connections) == connections


# --- refusals and failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    [
        {"authorization": "Bearer x\r\nX-Injected: 1"},
        {"authorization": "Bearer x\nX-Injected: 1"},
        {"authorization": "Bearer x\rX-Injected: 1"},
        {"x-api-key\r\nX-Injected": "1"},
    ],
    ids=["crlf-in-value", "lf-in-value", "cr-in-value", "crlf-in-name"],
)
async def test_a_header_holding_cr_or_lf_is_refused_before_a_byte_is_sent(
    guard: EgressGuard, credential: dict[str, str]
) -> None:
    async with serving() as upstream, client(upstream, guard) as http:
        with pytest.raises(UpstreamUnavailable, match="ValueError"):
            await post(http, credential=credential)
        connection = await upstream.connection(0)
        await connection.wait_closed()
    assert connection.received == b""


async def test_with_a_limit_of_one_a_second_request_waits_for_the_first_to_be_released(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK), Reply(JSON_OK)) as upstream, pool(upstream, guard, limit=1) as pooled:
        first = await pooled.request("GET", {}, None)
        second = asyncio.create_task(get(pooled))
        await asyncio.sleep(0)  # the second request starts: were it not held, it would open a connection now
        assert await first.content.read() == b"{}"
        assert len(upstream.requests) == 1
        first.release()
        assert await second == b"{}"
    [connection] = upstream.connections  # the second request waited, then took the first one's connection
    assert len(connection.requests) == 2


async def test_an_upstream_that_never_answers_times_out_and_its_connection_is_dropped(guard: EgressGuard) -> None:
    async with (
        serving(Reply(b"", then="hold"), Reply(JSON_OK)) as upstream,
        client(upstream, guard, timeout_s=0.2) as http,
    ):
        with pytest.raises(UpstreamUnavailable, match="timed out"):
            async with asyncio.timeout(WAIT_S):
                await post(http)
        await upstream.connections[0].wait_closed()
        assert await post(http) == b"{}"
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1]


async def test_an_interim_response_then_silence_times_out(guard: EgressGuard) -> None:
    async with (
        serving(Reply(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", then="hold")) as upstream,
        client(upstream, guard, timeout_s=0.2) as http,
    ):
        with pytest.raises(UpstreamUnavailable, match="timed out"):
            async with asyncio.timeout(WAIT_S):
                await post(http)


async def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK)) as upstream, pool(upstream, guard, limit=1, connect_timeout_s=0.1) as pooled:
        first = await pooled.request("GET", {}, None)  # held, never released while the second waits
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(WAIT_S):
                    await pooled.request("GET", {}, None)
        finally:
            first.release()
    assert len(upstream.requests) == 1


async def test_idle_connections_below_the_most_recent_are_closed_once_stale(guard: EgressGuard) -> None:
    replies = [Reply(JSON_OK)] * 4
    async with serving(*replies) as upstream, pool(upstream, guard, keepalive_s=0.1) as pooled:
        held = [await pooled.request("GET", {}, None) for _ in range(3)]  # a burst: three connections
        for response in held:
            await response.content.read()
            response.release()
        assert len(upstream.connections) == 3
        await get(pooled)  # one at a time from now on: the most recent connection serves it
        for connection in upstream.connections:  # the sweep closes the two left idle, then this one
            await connection.wait_closed()
    assert [len(connection.requests) for connection in upstream.connections] == [1, 1, 2]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(b"HTTP/1.1 abc\r\n\r\n", "hold"), id="status-not-a-number"),
        pytest.param(Reply(b"\x00\x01\x02 not http at all\r\n\r\n", "hold"), id="garbage"),
        pytest.param(Reply(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "hold"), id="header-without-colon"),
        pytest.param(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "hold"), id="length-not-a-number"),
        pytest.param(
            Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "hold"), id="chunk-size-not-hex"
        ),
        pytest.param(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "close"), id="body-cut-short"),
        pytest.param(Reply(b"", "close"), id="closed-without-an-answer"),
    ],
)
async def test_a_malformed_or_broken_response_is_unavailable_and_nothing_else(guard: EgressGuard, reply: Reply) -> None:
    async with serving(reply) as upstream, client(upstream, guard, timeout_s=60) as http:
        with pytest.raises(UpstreamUnavailable, match=r"^upstream (unreachable|failed mid-response): "):
            async with asyncio.timeout(WAIT_S):  # a response that is never judged broken fails the test
                await post(http)
        await upstream.connections[0].wait_closed()


# --- closing ---------------------------------------------------------------------------------------


async def test_aclose_closes_the_idle_connections(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK)) as upstream, pool(upstream, guard) as pooled:
        await get(pooled)
        await pooled.aclose()
        await upstream.connections[0].wait_closed()


async def test_a_response_released_after_aclose_closes_its_connection(guard: EgressGuard) -> None:
    async with serving(Reply(JSON_OK)) as upstream, pool(upstream, guard) as pooled:
        response = await pooled.request("GET", {}, None)
        await pooled.aclose()
        assert await response.content.read() == b"{}"  # read to the end: it would be pooled but for aclose
        response.release()
        await upstream.connections[0].wait_closed()
