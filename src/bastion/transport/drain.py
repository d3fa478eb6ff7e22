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

Apart from the event loop's clock and task cancellation, no I/O; ``tests/unit/transport/test_drain.py`` and
``tests/e2e/test_graceful_drain.py`` cover it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.errors import ShuttingDown

__all__ = ["SERVER_MARGIN_S", "Drain"]

SERVER_MARGIN_S = 2
"""Seconds uvicorn's graceful timeout adds to ``drain_s``: time for the cut calls' errors and records."""


class Drain:
    """The gateway's stop sequence as the request path sees it.

    ``closing`` is set by ``begin``; ``deadline`` is then the event loop time (``loop.time()``,
    seconds) at which calls still in flight are cut. A call's handling is in flight between
    ``enter`` and ``leave`` (a set insertion each: nothing is scheduled per call); at the deadline
    every task in flight is cancelled, and ``was_cut`` tells the endpoint that its cancellation
    was the drain's (to answer ``ShuttingDown``), not uvicorn's or a disconnect's.
    """

    def __init__(self, drain_s: float, closing: asyncio.Event | None = None) -> None:
        self.drain_s = drain_s
        self.closing = closing or asyncio.Event()
        self.deadline: float | None = None
        self._flights: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._branches: set[Drain] = set()

    def begin(self) -> None:
        """Start the stop: set ``closing`` and the ``deadline`` (idempotent; the first call counts), and
        begin every ``branch``."""
        if self.deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + self.drain_s
        self.closing.set()
        loop.call_at(self.deadline, self._cut_all)
        for branch in list(self._branches):
            branch.begin()

    def branch(self) -> Drain:
        """A drain of its own for one route's endpoint, with the same ``drain_s``: it begins when this
        one does, or alone when the route is withdrawn by a reload (``bastion.transport.route_swap``);
        ``prune`` it then. A branch made after this drain began has begun."""
        branch = Drain(self.drain_s)
        self._branches.add(branch)
        if self.deadline is not None:
            branch.begin()
        return branch

    def prune(self, branch: Drain) -> None:
        """Forget ``branch`` (its route is gone); idempotent."""
        self._branches.discard(branch)

    def enter(self) -> asyncio.Task[Any] | None:
        """The current task's call is in flight (``leave`` it); the task, for ``leave`` and ``was_cut``."""
        task = asyncio.current_task()
        if task is not None:
            self._flights.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        """The call of ``task`` is answered (or was cut); forget it."""
        if task is not None:
            self._flights.discard(task)
            self._cut.discard(task)

    def was_cut(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` was cancelled by the drain's deadline (then it is un-cancelled: the endpoint
        answers the call with ``error()`` and records it)."""
        if task is None or task not in self._cut:
            return False
        task.uncancel()
        return True

    def _cut_all(self) -> None:
        for task in self._flights:
            if not task.done():
                self._cut.add(task)
                task.cancel("the graceful stop's time (server.drain_s) ran out")

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
