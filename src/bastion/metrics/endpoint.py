"""``GET /metrics``: the Prometheus text exposition, for the clients ``metrics:`` admits.

Not an MCP endpoint: no bearer token of Bastion's, no session, no audit record. Access is decided
here, before anything is read (``admitted``): the connection's peer address in one of
``metrics.allow``'s networks (default loopback; an IPv4-mapped IPv6 address counts as its IPv4
address), or ``Authorization: Bearer <metrics.token>`` (compared in constant time). Otherwise 403
with ``{"error": "forbidden"}``. The peer is the TCP peer uvicorn reports (``proxy_headers`` is off:
``X-Forwarded-For`` is never read).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.config.metrics import MetricsSettings
from bastion.errors import ConfigError
from bastion.metrics.multiprocess import MULTIPROC_ENV, exposition
from bastion.metrics.registry import BastionMetrics

__all__ = ["Network", "admitted", "metrics_route"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text format 0.0.4, which every Prometheus reads (the names are all legacy-valid)."""


def admitted(client_host: str | None, authorization: str | None, networks: Sequence[Network],
             token: bytes | None) -> bool:  # fmt: skip
    """Whether a request from ``client_host`` (the peer address, ``None`` when unknown) with the
    ``authorization`` header may read the metrics (see the module docstring)."""
    if token is not None and authorization is not None:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token):
            return True
    if client_host is None:
        return False
    try:
        address = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def metrics_route(settings: MetricsSettings, metrics: BastionMetrics, *, flush: Callable[[], None] | None = None,
                  sample: Callable[[], Awaitable[None]] | None = None) -> Route:  # fmt: skip
    """The ``GET settings.path`` route serving ``metrics``, awaiting ``sample`` (the gauges read from
    the stores: ``ScrapedGauges.sample``, never raises) and calling ``flush`` first (what the
    observer tallied). Raises ``ConfigError`` when ``metrics.token`` is set and cannot be resolved or
    is empty (an empty token would admit ``Authorization: Bearer`` with nothing after it), at start,
    not at the first scrape."""
    networks = settings.networks()
    token = settings.token.resolve().strip().encode() if settings.token is not None else None
    if token is not None and not token:
        raise ConfigError("metrics.token: the secret it names is empty")

    async def serve(request: Request) -> Response:
        host = request.client.host if request.client is not None else None
        if not admitted(host, request.headers.get("authorization"), networks, token):
            return JSONResponse({"error": "forbidden"}, status_code=403, headers={"cache-control": "no-store"})
        if sample is not None:
            await sample()
        if flush is not None:
            flush()
        if os.environ.get(MULTIPROC_ENV):  # reads every worker's files: off the event loop
            body = await asyncio.to_thread(exposition, metrics.registry)
        else:
            body = exposition(metrics.registry)
        return Response(body, media_type=_TEXT_FORMAT, headers={"cache-control": "no-store"})

    return Route(settings.path, serve, methods=["GET"])
