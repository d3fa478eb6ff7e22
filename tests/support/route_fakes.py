"""A ``RouteHost`` for unit tests of the routes' reload (``bastion.transport.route_swap``): it builds stand-in
routes from their settings and writes down each step (built, started, stopped, installed, retired) in
``steps``, in order; ``refuse`` and ``fail_start`` make it refuse a configuration or fail a start."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.config import BastionConfig, RouteSettings
from bastion.errors import ConfigError, UpstreamUnavailable
from bastion.transport.drain import Drain
from bastion.transport.route_swap import ServedRoute
from bastion.transport.routes import RouteRuntime

__all__ = ["RecordingHost"]


class _Endpoint:
    """``McpEndpoint.retire``, noted in the host's ``steps``."""

    def __init__(self, name: str, steps: list[tuple[Any, ...]]) -> None:
        self._name, self._steps = name, steps

    async def retire(self, timeout_s: float) -> bool:
        self._steps.append(("retired", self._name))
        return True


class RecordingHost:
    """The gateway's side of ``RouteSwap``, with stand-ins for the routes (module docstring)."""

    def __init__(self, config: BastionConfig) -> None:
        self.config = config
        self.steps: list[tuple[Any, ...]] = []
        self.served: list[ServedRoute] = [self.serve_route(settings) for settings in config.routes]
        self.steps.clear()
        self.refuse: str | None = None
        self.fail_start: str | None = None

    def names(self) -> list[str]:
        """The names of the routes serving."""
        return [served.name for served in self.served]

    def check_routes(self, config: BastionConfig) -> None:
        if self.refuse is not None:
            raise ConfigError(self.refuse)

    def serve_route(self, settings: RouteSettings, *, opened_after: float | None = None) -> ServedRoute:
        self.steps.append(("built", settings.name, opened_after is not None))
        runtime = RouteRuntime(settings=settings, resource_uri=f"http://x{settings.public_path}", metadata_url="")
        endpoint = _Endpoint(settings.name, self.steps)
        return ServedRoute(runtime, guard=None, endpoint=endpoint, drain=Drain(1.0))  # type: ignore[arg-type]

    async def start_routes(self, routes: Sequence[ServedRoute], *, strict: bool) -> None:
        self.steps.append(("started", [served.name for served in routes], strict))
        if self.fail_start is not None:
            raise UpstreamUnavailable(self.fail_start)

    async def stop_routes(self, routes: Sequence[ServedRoute]) -> None:
        self.steps.append(("stopped", [served.name for served in routes]))

    def install_routes(self, config: BastionConfig, serve: Sequence[ServedRoute], withdraw: Sequence[str]) -> None:
        self.steps.append(("installed", [served.name for served in serve], list(withdraw)))
        current = {served.name: served for served in self.served if served.name not in withdraw}
        current.update((served.name, served) for served in serve)
        self.config = config
        self.served = [current[settings.name] for settings in config.routes]
