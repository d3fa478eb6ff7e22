"""Kept-alive HTTP/1.1 connections to one upstream, each opened through the egress guard.

This is aiohttp used at its lower level: ``aiohttp.client_proto.ResponseHandler`` is the
protocol of every connection (aiohttp's C response parser, chunked and compressed bodies,
bodies read to the end of the connection, the read timeout, flow control) and
``aiohttp.http_writer.StreamWriter`` writes each request (its header serialiser refuses
control characters, so nothing can inject a header or a request). What this module adds
is what ``aiohttp.ClientSession`` and its ``TCPConnector`` did around them, for the one
shape of request the forward stage makes: a pool of idle connections, the connection
limit, and opening a connection to the addresses the egress guard checked.

Why not ``ClientSession.request``: on the hot path its request building (URL, headers,
cookies, timers, traces, a task for the body write) cost about 110 µs of CPU per call
on top of the roughly 60 µs this path costs (`make bench`, the upstream call row).

Opening a connection (``UpstreamConnections._connect``): the guard resolves the host once
(``EgressGuard.checked_addresses``: an IP literal in any spelling, or every address the
name resolves to), checks every address (the route's ``allow``, then ``egress.allow``)
and the connection is made to exactly those addresses, first to last, so nothing
resolves the name again (DNS rebinding cannot swap them). Every new connection asks the
guard; a connection kept alive is reused without a lookup. TLS uses the guard's context
(``EgressGuard.tls``: the system's CAs plus ``egress.ca_file``) with the URL's host as
the server name, so certificates are verified as on every other outbound connection.

A kept connection goes back to the pool only when its response was read to the end and
neither side asked to close it; it is not used once idle longer than ``keepalive_s``, and
closed then (when connections come back) or by a sweep every ``keepalive_s`` while any are idle. Waiting for a free
connection (more than ``limit`` in use) counts against the connect timeout, as in aiohttp.
A request is never sent twice: a kept connection the upstream closed at the same moment
fails the call (as aiohttp does for a POST).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Final

from aiohttp.client_proto import ResponseHandler
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.egress.client import EgressGuard
from bastion.egress.target import Target
from bastion.errors import UpstreamUnavailable

__all__ = ["PooledResponse", "UpstreamConnections"]

_BODILESS_REQUESTS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class PooledResponse:
    """One response: ``status``, ``headers`` (case-insensitive) and ``content``, the body as
    aiohttp's ``StreamReader`` (``read``, ``iter_any``). ``release`` gives the connection
    back (to the pool when the body was read to the end, else it is closed); idempotent."""

    __slots__ = ("_owner", "_protocol", "content", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: CIMultiDictProxy[str],
        content: StreamReader,
        owner: UpstreamConnections,
        protocol: ResponseHandler,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self._owner = owner
        self._protocol: ResponseHandler | None = protocol

    def release(self) -> None:
        """Return the connection to the pool, or close it when it cannot serve another request."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._owner._give_back(protocol)


class UpstreamConnections:
    """The connections to the upstream at ``target`` (see the module docstring).

    ``guard`` checks every new connection (``allow`` is permitted besides its own list;
    ``url`` is shown in its refusals); ``limit`` bounds the connections in use at once
    (more requests wait); ``connect_timeout_s`` bounds the lookup and the connection,
    ``read_timeout_s`` each wait for response bytes; ``keepalive_s`` how long an idle
    connection is kept.
    """

    def __init__(
        self,
        target: Target,
        *,
        guard: EgressGuard,
        url: str,
        allow: AllowList = NO_EXCEPTIONS,
        limit: int = 256,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        keepalive_s: float = 30.0,
    ) -> None:
        self._target = target
        self._authority = target.authority
        self._guard = guard
        self._url = url
        self._allow = allow
        self._tls: ssl.SSLContext | None = guard.tls if target.scheme == "https" else None
        self._connect_timeout = connect_timeout_s
        self._read_timeout = read_timeout_s
        self._keepalive = keepalive_s
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[tuple[ResponseHandler, float]] = deque()  # oldest first
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, headers: Mapping[str, str], body: bytes | None) -> PooledResponse:
        """Send ``method`` to the target's path with ``headers`` (``Host`` and ``Content-Length``
        are added) and ``body``; return once the response's status and headers arrived.

        Raises ``EgressDenied`` (the guard refused the connection, reported by its hook),
        ``UpstreamUnavailable`` (the name does not resolve, no address answers, TLS fails),
        ``TimeoutError`` (connect or read), ``aiohttp.ClientError`` (the connection broke),
        ``aiohttp.http_exceptions.HttpProcessingError`` (a malformed response), ``ValueError``
        (a header with a control character: nothing was sent). The caller must ``release``
        the response.
        """
        if self._slots.locked():  # every connection is in use: wait for one within the connect timeout
            async with asyncio.timeout(self._connect_timeout):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            protocol = self._kept()  # not `or`: a protocol with no queued response is falsy (DataQueue)
            if protocol is None:
                protocol = await self._connect()
        except BaseException:
            self._slots.release()
            raise
        try:
            status, fields, content = await self._exchange(protocol, method, headers, body)
        except BaseException:
            protocol.close()
            self._slots.release()
            raise
        return PooledResponse(status, fields, content, self, protocol)

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their response is released."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, deque()
        for protocol, _ in idle:
            protocol.close()

    def _kept(self) -> ResponseHandler | None:
        """The most recently used idle connection still fit to use; stale ones are closed."""
        if not self._idle:
            return None
        oldest = asyncio.get_running_loop().time() - self._keepalive
        while self._idle:
            protocol, since = self._idle.pop()
            if since >= oldest and protocol.is_connected() and not protocol.should_close:
                return protocol
            protocol.close()
        return None

    async def _connect(self) -> ResponseHandler:
        loop = asyncio.get_running_loop()
        target = self._target
        failure = "no address"
        async with asyncio.timeout(self._connect_timeout):
            try:
                addresses = await self._guard.checked_addresses(
                    target.host, target.port, allow=self._allow, purpose="upstream", url=self._url
                )
            except UpstreamUnavailable as exc:  # the name does not resolve
                raise UpstreamUnavailable(f"upstream unreachable: {exc.message}") from None
            for address in addresses:
                try:
                    _, protocol = await loop.create_connection(
                        lambda: ResponseHandler(loop),
                        str(address),
                        target.port,
                        ssl=self._tls,
                        server_hostname=target.host if self._tls is not None else None,
                    )
                except ssl.SSLCertVerificationError as exc:
                    failure = f"upstream certificate not verified: {exc.verify_message}"
                except OSError as exc:  # refused, unreachable, a TLS handshake that failed otherwise
                    failure = f"upstream unreachable: {type(exc).__name__}"
                else:
                    return protocol
        raise UpstreamUnavailable(failure)

    async def _exchange(
        self, protocol: ResponseHandler, method: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, CIMultiDictProxy[str], StreamReader]:
        loop = asyncio.get_running_loop()
        protocol.set_response_params(
            read_until_eof=True, auto_decompress=True, read_timeout=self._read_timeout, skip_payload=method == "HEAD"
        )
        fields = CIMultiDict(headers)
        fields["Host"] = self._authority
        if body or method not in _BODILESS_REQUESTS:
            fields["Content-Length"] = str(len(body or b""))
        writer = StreamWriter(protocol, loop)
        await writer.write_headers(f"{method} {self._target.path} HTTP/1.1", fields)  # buffered: one write
        await writer.write_eof(body or b"")
        protocol.start_timeout()
        while True:
            message, content = await protocol.read()
            if not 100 <= message.code <= 199 or message.code == 101:
                return message.code, message.headers, content
            # An interim response (103 Early Hints, an unasked 100 Continue): the final one follows.
            # aiohttp stops the read timer at a response without a body; the wait goes on under it.
            protocol.start_timeout()

    def _give_back(self, protocol: ResponseHandler) -> None:
        self._slots.release()
        if self._closed or protocol.should_close or not protocol.is_connected():
            protocol.close()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._idle.append((protocol, now))
        self._close_stale(now)
        if self._sweep is None:
            self._sweep = loop.call_later(self._keepalive, self._on_sweep)

    def _close_stale(self, now: float) -> None:
        """Close the idle connections unused for longer than ``keepalive_s`` (the oldest are first)."""
        oldest = now - self._keepalive
        while self._idle and self._idle[0][1] < oldest:
            self._idle.popleft()[0].close()

    def _on_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweep = None
        self._close_stale(loop.time())
        if self._idle:  # every connection idle is closed within twice ``keepalive_s``
            self._sweep = loop.call_later(self._keepalive, self._on_sweep)
