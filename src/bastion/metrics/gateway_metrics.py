"""What the gateway builds for ``metrics:``: the registry, its observer, the program gauges, the route.

``GatewayMetrics.build(config, engine)`` returns ``None`` when ``metrics.enabled`` is false: then
no observer is placed (the runner calls nothing per stage) and ``/metrics`` is not served (404).
The program gauges are computed at start and again after a hot reload of the policy set (at the
observer's next flush).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.routing import Route

from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.metrics.endpoint import metrics_route
from bastion.metrics.observer import MetricsObserver
from bastion.metrics.program import record_program
from bastion.metrics.registry import BastionMetrics
from bastion.policy import PolicyEngine

__all__ = ["GatewayMetrics"]


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The gateway's ``metrics``, the ``observer`` its runners are given and the ``route`` serving them."""

    metrics: BastionMetrics
    observer: MetricsObserver
    route: Route

    @classmethod
    def build(cls, config: BastionConfig, engine: PolicyEngine) -> GatewayMetrics | None:
        """Everything for ``config.metrics`` with ``engine``'s policy set, or ``None`` when off.
        Raises ``ConfigError`` when ``metrics.path`` is a route's path or the token does not resolve."""
        settings = config.metrics
        if not settings.enabled:
            return None
        for route in config.routes:
            if route.public_path == settings.path:
                raise ConfigError(f"metrics.path: {settings.path} is the path of route {route.name}")
        metrics = BastionMetrics()
        record_program(metrics, config, engine)
        observer = MetricsObserver(metrics, engine, on_policies=lambda: record_program(metrics, config, engine))
        return cls(metrics, observer, metrics_route(settings, metrics, flush=observer.flush))
