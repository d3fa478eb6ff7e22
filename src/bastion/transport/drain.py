"""The graceful stop: on SIGTERM, finish what is in flight for up to ``server.drain_s`` seconds.

When an exit is requested, ``bastion serve`` (``bastion.cli.serving.GatewayServer``) calls
``Drain.begin``:

- uvicorn closes the listening socket at once (no new connection) and closes idle
  keep-alive connections; a busy connection is closed after its reply;
- ``closing`` is set: a session's GET event stream ends at once (it never finishes by itself;
  the client reconnects, to another replica behind a load balancer), a held approval wait
  ends, ``/readyz`` answers 503;
- a call in flight (a POST waiting for its upstream, or relaying its SSE answer) goes on until
  the ``deadline``, ``drain_s`` seconds later. Still unanswered then, it is cut: the client gets
  the JSON-RPC error of ``ShuttingDown`` (in its SSE stream, or as the JSON reply) and the
  outcome record says so. uvicorn's own graceful timeout is ``drain_s + _SERVER_MARGIN_S``, a
  backstop that should never fire;
- then the lifespan ends (``Gateway.stop``): upstream sessions, stdio upstreams, and the audit
  queue flushed and closed.

Sans-IO apart from the event loop's clock; ``tests/unit/transport/test_drain.py`` and
``tests/e2e/test_graceful_drain.py`` cover it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bastion.errors import ShuttingDown

__all__ = ["SERVER_MARGIN_S", "Drain"]

SERVER_MARGIN_S = 2
"""Seconds uvicorn's graceful timeout adds to ``drain_s``: time for the cut calls' errors and records."""


class Drain:
    """The gateway's stop sequence as the request path sees it.

    ``closing`` is set by ``begin``; ``deadline`` is then the event loop time (``loop.time()``,
    seconds) at which calls still in flight are cut. ``in_flight`` bounds one call's handling by
    the deadline (nothing until ``begin``: an ``asyncio.timeout_at(None)`` rescheduled by it).
    """

    def __init__(self, drain_s: float, closing: asyncio.Event | None = None) -> None:
        self.drain_s = drain_s
        self.closing = closing or asyncio.Event()
        self.deadline: float | None = None
        self._scopes: set[asyncio.Timeout] = set()

    def begin(self) -> None:
        """Start the stop: set ``closing`` and the ``deadline`` (idempotent; the first call counts)."""
        if self.deadline is not None:
            return
        self.deadline = asyncio.get_running_loop().time() + self.drain_s
        self.closing.set()
        for scope in self._scopes:
            scope.reschedule(self.deadline)

    def cut(self, scope: asyncio.Timeout | None) -> bool:
        """Whether ``scope`` (one of ``in_flight``'s) expired because the drain deadline passed."""
        return self.deadline is not None and scope is not None and scope.expired()

    @contextlib.asynccontextmanager
    async def in_flight(self) -> AsyncIterator[asyncio.Timeout]:
        """A scope that cancels its body at the drain ``deadline``; ``asyncio.timeout`` raises
        ``TimeoutError`` out of it then (``cut`` tells it apart from any other timeout)."""
        async with asyncio.timeout_at(self.deadline) as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def left_s(self) -> float | None:
        """Seconds until the ``deadline`` (``None`` before ``begin``; never below zero). ``closing`` set
        without ``begin`` (an embedding that stops by the event alone) leaves no time: ``0.0``."""
        if self.deadline is None:
            return 0.0 if self.closing.is_set() else None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    @staticmethod
    def error() -> ShuttingDown:
        """The error a call cut by the deadline is answered and recorded with."""
        return ShuttingDown("Bastion stopped before the answer was complete (server.drain_s); try again")
