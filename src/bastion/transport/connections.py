"""Per-connection limits of Bastion's HTTP listener: the defence against slow and hostile clients.

uvicorn closes a connection idle between requests (``timeout_keep_alive``) and,
with ``limit_concurrency``, answers 503 to a request that arrives while too many
connections are open; but it waits for a request's headers and body forever and
keeps headers of any size. ``BastionHttpProtocol``, uvicorn's httptools
protocol selected through ``uvicorn.Config(http=...)`` (``http_protocol``),
adds three limits (``server.*`` settings):

- ``header_timeout_s``: a connection sends a request's complete headers within
  this many seconds of connecting, or of the first byte of its next request;
  else it is answered 408 (closed without an answer when it sent nothing) and
  closed;
- ``max_header_bytes``: more header bytes than this are answered 431 (RFC 6585
  section 5) and the connection closed: while they arrive (the raw bytes counted), and once a
  request's headers are complete (its request target and header lines counted: a whole block
  that came in one read, or a pipelined request's, is judged there and never reaches the
  application);
- ``body_timeout_s``: the body is complete within this many seconds of the
  headers. The deadline reaches the application in the ASGI scope (the
  ``bastion.transport.wire.BODY_DEADLINE`` extension), where ``read_request``
  raises ``BodyTimeout`` (408, a JSON-RPC error and an audit record); a second
  later a connection whose body is still not complete (a client that trickles
  on after that 408, or after a 413) is closed.

The answers are JSON-RPC errors with ``id: null`` and ``Connection: close``.
They are logged, not audited: no route or principal is known yet, and a record
per socket would let anyone fill the audit log.

One more thing the protocol changes, for speed: uvicorn writes a response's status line and
headers, then its body, as two writes (two system calls and, with ``TCP_NODELAY``, two TCP
segments). Each request's response goes through ``_HeadWithBody``, which holds the head until
the body's first write, or until the event loop's next turn when the body is not ready by then
(a stream), so a whole JSON reply leaves in one write.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from uvicorn._types import ASGIApplication
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion.transport.wire import BODY_DEADLINE

__all__ = ["BastionHttpProtocol", "ConnectionLimits", "http_protocol"]

logger = logging.getLogger(__name__)

#: How long after the body deadline a connection whose body is still arriving is closed: the time
#: the application's 408 has to reach the client first.
CLOSE_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The listener's limits: seconds for a request's headers and for its body, bytes of headers."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int


class BastionHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol with the header and body limits of the module docstring.

    ``limits`` is set on the subclass ``http_protocol`` makes: uvicorn builds one
    instance per connection from the class alone. A connection is in one phase
    at a time (awaiting a request's headers, reading its body, or idle between
    requests, where uvicorn's keep-alive timeout rules) with one deadline. One
    timer serves all of them: it is armed only when none is pending or the new
    deadline comes sooner, and when it fires on a deadline that has moved on it
    re-arms for that one, so a busy kept-alive connection costs no timer per request.
    """

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Literal["headers", "body", "idle"] = "idle"
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection; its first request's headers are due within ``header_timeout_s``."""
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timer, then let uvicorn end the request."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; count it against ``max_header_bytes`` while a request's headers are awaited."""
        if self._phase == "idle":  # the first bytes of the next request on a kept-alive connection
            self._await_headers()
        if self._phase == "headers":
            self._header_bytes += len(data)
        super().data_received(data)
        if self._phase == "headers" and self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"Request Header Fields Too Large: more than {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        """A request starts (httptools callback): a pipelined one's headers are due from now."""
        super().on_message_begin()
        if self._phase == "idle":
            self._await_headers()

    def on_headers_complete(self) -> None:
        """The headers are in (httptools callback): refuse them when too large, else hand the body
        deadline to the application."""
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            message = f"Request Header Fields Too Large: more than {self.limits.max_header_bytes} bytes"
            logger.info("431 to %s: %s", self._peer, message)
            app, self.app = self.app, _refusal(431, message)  # uvicorn starts the request with self.app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        timeout_s = self.limits.body_timeout_s
        deadline = self.loop.time() + timeout_s
        extensions = self.scope.setdefault("extensions", {})
        extensions[BODY_DEADLINE] = {"deadline": deadline, "timeout_s": timeout_s}
        self._phase = "body"
        self._set_deadline(deadline + CLOSE_GRACE_S)
        super().on_headers_complete()
        cycle = self.cycle  # the request's response cycle, which uvicorn has just made
        if cycle is not None:
            cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        """The body is in (httptools callback)."""
        self._phase = "idle"
        self._deadline = None
        super().on_message_complete()

    def _await_headers(self) -> None:
        self._phase = "headers"
        self._header_bytes = 0
        self._set_deadline(self.loop.time() + self.limits.header_timeout_s)

    def _set_deadline(self, at: float) -> None:
        self._deadline = at
        if self._timer is not None and self._timer_at <= at:
            return  # fires first, and re-arms for ``at``
        if self._timer is not None:
            self._timer.cancel()
        self._arm(at)

    def _arm(self, at: float) -> None:
        self._timer, self._timer_at = self.loop.call_at(at, self._on_timer), at

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < deadline:  # a later request's deadline
            self._arm(deadline)
        elif self._phase == "body":
            logger.info("closed a connection from %s whose request body never completed", self._peer)
            self.transport.close()
        elif self.cycle is not None and not self.cycle.response_complete:
            self._arm(now + CLOSE_GRACE_S)  # a pipelined request's headers wait for the answer being written
        else:
            self._headers_overdue()

    def _headers_overdue(self) -> None:
        if self._header_bytes == 0:
            logger.info("closed a connection from %s that sent no request", self._peer)
            self.transport.close()
            return
        self._refuse(408, f"Request Timeout: the headers did not arrive within {self.limits.header_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON-RPC error (``id: null``) and close the connection."""
        if self.transport.is_closing():
            return
        logger.info("%d to %s: %s", status, self._peer, message)
        body = _error_body(message)
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    @property
    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"


class _HeadWithBody:
    """The transport as one response cycle of uvicorn's sees it (``write``, ``close``,
    ``is_closing``): its first write (the status line and headers) is held and leaves with the
    second (the body, or its first chunk), in one write; or alone at the event loop's next turn,
    or before a ``close``, whichever comes first. Later writes pass straight through."""

    __slots__ = ("_flush_handle", "_head", "_loop", "_started", "_transport")

    _JOIN_BYTES = 64 * 1024  # a body up to this size is copied after the head; a larger one is not

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        """Hold the first write; send it with the second; pass the rest through."""
        if not self._started:
            self._started = True
            self._head = bytes(data)
            self._flush_handle = self._loop.call_soon(self._flush)
            return
        head = self._head
        if head is None:
            self._transport.write(data)
            return
        self._head = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if len(data) <= self._JOIN_BYTES:
            self._transport.write(head + data)
        else:
            self._transport.writelines((head, data))

    def close(self) -> None:
        """Send what is held, then close the connection."""
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing or closed."""
        return self._transport.is_closing()

    def _flush(self) -> None:
        head, self._head = self._head, None
        self._flush_handle = None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)


def _error_body(message: str) -> bytes:
    """A JSON-RPC error with ``id: null`` (the request was never read) as the answer's body."""
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return json.dumps(error, separators=(",", ":")).encode()


def _refusal(status: int, message: str) -> ASGIApplication:
    """An ASGI application that answers ``status`` with ``_error_body(message)`` and closes the
    connection, whatever the request."""
    body = _error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


def http_protocol(limits: ConnectionLimits) -> type[BastionHttpProtocol]:
    """A ``BastionHttpProtocol`` subclass bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("BastionHttpProtocol", (BastionHttpProtocol,), {"limits": limits})
