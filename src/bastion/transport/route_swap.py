"""The routes side of a hot reload (issue 17): build and start the routes a new configuration adds or
changes, swap them in, and retire the routes it withdraws.

``RouteSwap`` is the ``RouteChanges`` of ``bastion.policy.reloading.PolicyReloader``; the gateway
is its ``RouteHost`` and builds and starts each route exactly as at start (``Gateway.serve_route``,
``Gateway.start_routes``). A route is identified by its name:

- **added**: built (upstream, credentials, definition guard, endpoint) and started (the guard's
  pins loaded, a stdio upstream's process started and its handshake done) before the swap; any
  failure refuses the whole reload, and what was started is stopped;
- **removed**: at the swap its path is withdrawn (a new request is answered as for a path that
  never existed); then it is retired in the background: its event streams end at once, its calls
  in flight finish within ``server.drain_s`` (then they are cut with ``ShuttingDown``), and its
  upstream stops (the stdio process ends, the HTTP connections close). Its upstream sessions are
  not ended one by one: the session store cannot list them by route, so an HTTP upstream expires
  them itself (a stdio upstream's end with its process);
- **changed** (any setting differs): removed and added under the same name in one step. The new
  endpoint ends the route's sessions opened before the swap: each is answered 404 when next
  presented (MCP 2025-11-25 basic/transports, "Session Management"), and its client initializes
  again, on the new upstream. Sessions are ended even when the upstream stayed the same: a changed
  credential or tool setting must not ride on a session opened under the old one.

Sources: docs/architecture.md, "Hot reload"; issue 17, "Configuration changes without restart".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.catalog.guard import DefinitionGuard
from bastion.config import BastionConfig, RouteSettings
from bastion.policy.reloading import RouteDiff, RoutePlan, route_diff
from bastion.transport.drain import SERVER_MARGIN_S, Drain
from bastion.transport.endpoint import McpEndpoint
from bastion.transport.routes import RouteRuntime

__all__ = ["RouteHost", "RouteSwap", "ServedRoute", "SwapPlan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """One route as the gateway serves it: its runtime (upstream, credentials, catalogs), its
    definition guard, its MCP endpoint and that endpoint's drain (a branch of the gateway's)."""

    runtime: RouteRuntime
    guard: DefinitionGuard
    endpoint: McpEndpoint
    drain: Drain

    @property
    def name(self) -> str:
        """The route's name."""
        return self.runtime.name


@dataclass(frozen=True, slots=True)
class SwapPlan:
    """A reload's routes: ``config`` the new configuration, ``previous`` the running one, ``new`` the
    routes it adds or changes (built and started, not yet serving), ``old`` the running routes it
    withdraws or replaces."""

    diff: RouteDiff
    config: BastionConfig
    previous: BastionConfig
    new: tuple[ServedRoute, ...]
    old: tuple[ServedRoute, ...]


class RouteHost(Protocol):
    """What the swap needs of the gateway (``bastion.gateway.Gateway``)."""

    @property
    def config(self) -> BastionConfig:
        """The configuration in force."""
        ...

    @property
    def served(self) -> Sequence[ServedRoute]:
        """The routes serving now, in the configuration's order."""
        ...

    def check_routes(self, config: BastionConfig) -> None:
        """Raise ``ConfigError`` when ``config``'s routes need what the running gateway lacks (a restart)."""
        ...

    def serve_route(self, settings: RouteSettings, *, opened_after: float | None = None) -> ServedRoute:
        """The route built as at start; sessions opened before ``opened_after`` (epoch s) are ended."""
        ...

    async def start_routes(self, routes: Sequence[ServedRoute], *, strict: bool) -> None:
        """Start ``routes`` as at start (``strict``: raise the first failure)."""
        ...

    async def stop_routes(self, routes: Sequence[ServedRoute]) -> None:
        """Stop ``routes``' upstreams (never raises)."""
        ...

    def install_routes(self, config: BastionConfig, serve: Sequence[ServedRoute], withdraw: Sequence[str]) -> None:
        """Serve ``serve`` (replacing the routes of their names) and stop serving the routes named
        ``withdraw``; ``config`` (whose routes these are then) is in force after."""
        ...


class RouteSwap:
    """Applies the routes of a reload on ``host`` (module docstring); ``drain_s`` is ``server.drain_s``."""

    def __init__(self, host: RouteHost, *, drain_s: float) -> None:
        self._host = host
        self._drain_s = drain_s
        self._retiring: dict[asyncio.Task[None], ServedRoute] = {}

    async def prepare(self, config: BastionConfig) -> SwapPlan | None:
        """The plan for ``config``'s routes, its new routes started; ``None`` when they are the running
        ones. Raises ``ConfigError`` (a restart needed, a secret that does not resolve) or
        ``UpstreamUnavailable`` (a stdio upstream that does not start), having stopped what it started."""
        running = {served.name: served for served in self._host.served}
        diff = route_diff([served.runtime.settings for served in running.values()], config.routes)
        if not diff:
            return None
        self._host.check_routes(config)
        now = time.time()
        fresh = set(diff.added) | set(diff.changed)
        new: list[ServedRoute] = []
        try:
            for settings in config.routes:
                if settings.name in fresh:
                    new.append(self._host.serve_route(settings, opened_after=now if settings.name in running else None))
            await self._host.start_routes(new, strict=True)
        except BaseException:
            await self._host.stop_routes(new)
            raise
        old = tuple(running[name] for name in (*diff.removed, *diff.changed))
        return SwapPlan(diff, config, self._host.config, tuple(new), old)

    def commit(self, plan: RoutePlan) -> None:
        """Serve the plan's new routes; withdraw the removed ones (``retire`` ends them after)."""
        swap = _plan(plan)
        self._host.install_routes(swap.config, swap.new, swap.diff.removed)

    async def rollback(self, plan: RoutePlan) -> None:
        """Serve the plan's old routes again and stop its new ones."""
        swap = _plan(plan)
        self._host.install_routes(swap.previous, swap.old, swap.diff.added)
        await self._host.stop_routes(swap.new)

    async def discard(self, plan: RoutePlan) -> None:
        """Stop the plan's new routes, never committed."""
        await self._host.stop_routes(_plan(plan).new)

    def retire(self, plan: RoutePlan) -> None:
        """End the plan's old routes in the background: their requests finish (within ``drain_s``),
        then their upstreams stop."""
        for served in _plan(plan).old:
            task = asyncio.get_running_loop().create_task(self._retire(served), name=f"retire:{served.name}")
            self._retiring[task] = served
            task.add_done_callback(self._retiring.pop)

    async def _retire(self, served: ServedRoute) -> None:
        if not await served.endpoint.retire(self._drain_s + SERVER_MARGIN_S):
            logger.warning("route %s: requests still running when it was retired", served.name)
        await self._host.stop_routes([served])
        logger.info("route %s: the withdrawn route's upstream stopped", served.name)

    async def close(self) -> None:
        """At the gateway's stop: the routes still being retired stop now."""
        retiring = dict(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        await self._host.stop_routes(list(retiring.values()))


def _plan(plan: RoutePlan) -> SwapPlan:
    """The plan as ``prepare`` made it."""
    if not isinstance(plan, SwapPlan):
        raise TypeError(f"not a route swap plan: {plan!r}")
    return plan
