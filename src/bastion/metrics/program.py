"""The zero-trust program gauges: how far the configuration and the policy set have come.

Computed at start, and again after a hot reload (``ProgramGauges``: a new policy set, or new
routes, whose removed routes' series are dropped), from what is known without asking any upstream:

- the routes by the upstream credential their calls carry (``route_credentials``):
  ``token_exchange`` (RFC 8693, a short-lived token minted per call from the caller's identity),
  ``user_oauth`` (each person's own OAuth tokens from the vault), ``static_secret`` (one secret for
  everyone: an HTTP header or a stdio environment variable given as a reference), ``none``;
- each route's configured tool inventory (``routes[].tools``): how many tools, how many some
  policy may permit (``PolicyEngine.may_permit``; the others are denied by default), how many are
  ``destructive`` (the configured risk; unconfigured tools are destructive too, but they are not
  in the inventory), and how many of those need a person's approval on every permit
  (``PolicyEngine.approval_need == "always"``).

Tools an upstream lists but the configuration does not name are not counted here: the catalog is
known only once a caller lists it, per caller for routes with per-user credentials. ``bastion tools
list`` shows those.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Literal

from bastion.config import BastionConfig, RouteSettings, SecretRef
from bastion.metrics.registry import BastionMetrics
from bastion.policy import PolicyEngine
from bastion.transport.routes import tool_inventory

__all__ = ["CREDENTIAL_KINDS", "CredentialKind", "ProgramGauges", "record_program", "route_credentials"]

CredentialKind = Literal["token_exchange", "user_oauth", "static_secret", "none"]
CREDENTIAL_KINDS: tuple[CredentialKind, ...] = ("token_exchange", "user_oauth", "static_secret", "none")


def route_credentials(route: RouteSettings) -> CredentialKind:
    """The kind of upstream credential ``route``'s calls carry (see the module docstring)."""
    if route.credentials is not None:
        return "token_exchange" if route.credentials.token_exchange is not None else "user_oauth"
    values = [*route.http.headers.values()] if route.http is not None else []
    if route.stdio is not None:
        values.extend(route.stdio.env.values())
    return "static_secret" if any(isinstance(value, SecretRef) for value in values) else "none"


def record_program(metrics: BastionMetrics, config: BastionConfig, engine: PolicyEngine) -> None:
    """Set the program gauges of ``metrics`` from ``config`` and ``engine`` (every credential kind
    is set, zero included, so a share can be computed from one scrape)."""
    kinds = Tally(route_credentials(route) for route in config.routes)
    for kind in CREDENTIAL_KINDS:
        metrics.routes.labels(kind).set(kinds[kind])
    metrics.policies.set(len(engine.policy_ids))
    for route in config.routes:
        inventory = tool_inventory(route)
        refs = [inventory.unlisted(name) for name in route.tools]
        high_risk = [ref for ref in refs if ref.attrs.get("risk", "destructive") == "destructive"]
        metrics.tools_configured.labels(route.name).set(len(refs))
        metrics.tools_permitted.labels(route.name).set(sum(engine.may_permit(ref) for ref in refs))
        metrics.tools_high_risk.labels(route.name).set(len(high_risk))
        approved = sum(engine.approval_need(ref) == "always" for ref in high_risk)
        metrics.tools_high_risk_approval.labels(route.name).set(approved)


class ProgramGauges:
    """The program gauges of ``metrics`` kept for the configuration in force: ``record`` sets them
    from ``config`` and ``engine`` (after a policy reload: the engine's new set), ``use`` moves them to
    a configuration whose routes a reload changed (the per-route series of a removed route are
    dropped, not left at their last values)."""

    def __init__(self, metrics: BastionMetrics, config: BastionConfig, engine: PolicyEngine) -> None:
        self._metrics = metrics
        self._config = config
        self._engine = engine

    def record(self) -> None:
        """Set the gauges for the configuration in force and the engine's policy set."""
        record_program(self._metrics, self._config, self._engine)

    def use(self, config: BastionConfig) -> None:
        """Make ``config`` the configuration in force and set the gauges for it."""
        m = self._metrics
        kept = {route.name for route in config.routes}
        for route in self._config.routes:
            if route.name not in kept:
                for gauge in (m.tools_configured, m.tools_permitted, m.tools_high_risk, m.tools_high_risk_approval):
                    gauge.remove(route.name)
        self._config = config
        self.record()
