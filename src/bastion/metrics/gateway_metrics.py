"""What the gateway builds for ``metrics:``: the registry, its observer, the program gauges, the route.

``GatewayMetrics.build(config, engine)`` returns ``None`` when ``metrics.enabled`` is false: then
no observer is placed (the runner calls nothing per stage) and ``/metrics`` is not served (404).
The program gauges are computed at start, again after a hot reload of the policy set (at the
observer's next flush), and at once when a reload changed the routes (``routes_changed``).
``watch`` connects the approval desk, the audit log and the session store
once they are built (decision times, pending requests, audit transactions and queue, sessions open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Route

from bastion.approvals import ApprovalRequest
from bastion.approvals.desk import ApprovalDesk
from bastion.config import BastionConfig
from bastion.errors import ConfigError
from bastion.metrics.endpoint import metrics_route
from bastion.metrics.observer import MetricsObserver
from bastion.metrics.program import ProgramGauges
from bastion.metrics.registry import BastionMetrics
from bastion.metrics.sampled import ScrapedGauges
from bastion.policy import PolicyEngine

__all__ = ["GatewayMetrics", "check_metrics_path"]


def check_metrics_path(config: BastionConfig) -> None:
    """Raise ``ConfigError`` when a route of ``config`` is served at ``metrics.path`` (at start, and for
    the routes of a reload)."""
    path = config.metrics.path
    for route in config.routes:
        if route.public_path == path:
            raise ConfigError(f"metrics.path: {path} is the path of route {route.name}")


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The gateway's ``metrics``, the ``observer`` its runners are given, the ``route`` serving them,
    the ``program`` gauges and the gauges read from the stores at each scrape (``scraped``)."""

    metrics: BastionMetrics
    observer: MetricsObserver
    route: Route
    program: ProgramGauges
    scraped: ScrapedGauges = field(default_factory=ScrapedGauges)

    @classmethod
    def build(cls, config: BastionConfig, engine: PolicyEngine) -> GatewayMetrics | None:
        """Everything for ``config.metrics`` with ``engine``'s policy set, or ``None`` when off.
        Raises ``ConfigError`` when ``metrics.path`` is a route's path or the token does not resolve."""
        settings = config.metrics
        if not settings.enabled:
            return None
        check_metrics_path(config)
        metrics = BastionMetrics()
        program = ProgramGauges(metrics, config, engine)
        program.record()
        observer = MetricsObserver(metrics, engine, on_policies=program.record)
        scraped = ScrapedGauges()
        return cls(metrics, observer, metrics_route(settings, metrics, flush=observer.flush, sample=scraped.sample),
                   program, scraped)  # fmt: skip

    def routes_changed(self, config: BastionConfig) -> None:
        """A reload put ``config``'s routes in force: recompute the program gauges for them."""
        self.program.use(config)

    def watch(self, *, approvals: ApprovalDesk, audit: Any, sessions: Any) -> None:
        """Feed the metrics from ``approvals`` (each decision's time; the store's pending requests at
        each scrape), ``audit`` (an ``AuditLog``: each transaction's time through its ``on_commit``
        and its ``queued`` records at each flush, when it has them) and ``sessions`` (a
        ``SessionStore``: its ``count()`` at each scrape, when it has one)."""
        m = self.metrics
        approvals.on_decided = self._decided
        self.scraped.watch(m.approvals_pending, lambda: approvals.store.count("pending"))
        count = getattr(sessions, "count", None)
        if callable(count):
            self.scraped.watch(m.sessions_open, count)
        if hasattr(audit, "on_commit"):
            audit.on_commit = m.audit_write.observe  # thread-safe: the embedded log's writer is a thread
        if hasattr(audit, "queued"):
            self.observer.sample(m.audit_queue, lambda: float(audit.queued))

    def _decided(self, request: ApprovalRequest) -> None:
        """One decision (``approved`` or ``denied``) and its time from the request."""
        if request.decided_at is not None and request.status in ("approved", "denied"):
            seconds = max(0.0, request.decided_at - request.created_at)
            self.metrics.approval_decision.labels(request.status).observe(seconds)
