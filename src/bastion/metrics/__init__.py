"""Prometheus metrics: the request path's counts and timings, and the zero-trust program gauges.

- ``registry``: every metric's name, labels, unit and buckets (``BastionMetrics``);
- ``observer``: ``MetricsObserver``, fed by the runner at each stage's end and at each request's end;
- ``program``: the gauges set at start from the configuration and the policy set;
- ``endpoint``: ``GET /metrics`` and who may read it (``metrics.allow``, ``metrics.token``);
- ``multiprocess``: the workers of ``bastion serve --workers N`` summed in one scrape;
- ``gateway_metrics``: what the gateway builds from ``metrics:``.

See docs/architecture.md, "Metrics".
"""

from bastion.metrics.endpoint import admitted, metrics_route
from bastion.metrics.gateway_metrics import GatewayMetrics
from bastion.metrics.multiprocess import MULTIPROC_ENV, exposition, prepare_directory, worker_exited
from bastion.metrics.observer import OTHER, MetricsObserver
from bastion.metrics.program import record_program, route_credentials
from bastion.metrics.registry import BastionMetrics

__all__ = [
    "MULTIPROC_ENV",
    "OTHER",
    "BastionMetrics",
    "GatewayMetrics",
    "MetricsObserver",
    "admitted",
    "exposition",
    "metrics_route",
    "prepare_directory",
    "record_program",
    "route_credentials",
    "worker_exited",
]
