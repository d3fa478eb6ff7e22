"""``metrics:``: the Prometheus ``/metrics`` endpoint (``bastion.metrics``) and who may read it.

``enabled`` (default true) counts and times every request (20-30 µs of CPU per ``tools/call``;
docs/architecture.md, "What each stage added costs") and serves the counts at ``path`` (default ``/metrics``) on the
gateway's own listener. ``/metrics`` never goes through MCP authentication; it is answered only to
a client whose address is in one of the ``allow`` networks (default: loopback only, so a gateway
listening on a public address does not hand its metrics to the internet), or that presents
``Authorization: Bearer <token>`` with ``token`` (a reference, ``{env: NAME}`` or ``{file: PATH}``).
Anything else gets 403. The client address is the connection's peer: Bastion reads no
``X-Forwarded-For``, so behind a proxy list the proxy's network or use the token.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from bastion.config.base import SecretRef, _Model

__all__ = ["LOOPBACK", "MetricsSettings"]

LOOPBACK = ("127.0.0.0/8", "::1/128")
"""The networks ``metrics.allow`` admits by default."""


class MetricsSettings(_Model):
    """``metrics``: ``enabled``, ``path``, ``allow`` (CIDR networks) and ``token`` (a secret reference).

    Raises (through pydantic, naming the key) for a path that does not start with ``/`` or lies under
    ``/mcp`` or ``/.well-known``, and for an ``allow`` entry that is not a network
    (``ipaddress.ip_network``, host bits must be zero: ``10.0.0.0/8``, ``192.0.2.7/32``).
    """

    enabled: bool = True
    path: str = "/metrics"
    allow: tuple[str, ...] = Field(default=LOOPBACK)
    token: SecretRef | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or value.endswith("/"):
            raise ValueError("the metrics path starts with '/' and does not end with '/', e.g. /metrics")
        if value.startswith(("/.well-known", "/mcp/")):
            raise ValueError("the metrics path may not be under /.well-known or /mcp/")
        return value

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a network such as 10.0.0.0/8 or ::1/128 ({exc})") from None
        return value

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``allow`` parsed (validated already)."""
        return tuple(ipaddress.ip_network(entry) for entry in self.allow)
