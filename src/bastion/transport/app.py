"""The ASGI application: MCP endpoints per route, well-known metadata, health.

- ``<route path>``: the route's MCP endpoint (``McpEndpoint``);
- ``/.well-known/oauth-protected-resource<route path>``: RFC 9728 protected
  resource metadata for the route (section 3.1: the well-known segment goes
  between the host and the resource's path);
- ``/.well-known/jwks.json``: Bastion's public signing keys (RFC 7517 section 5);
- ``/healthz``: liveness, with each upstream's state;
- ``/readyz``: readiness (200 or 503), with each check's answer (``Gateway.readiness``).

Cross-origin access (``bastion.transport.cors``): the MCP endpoints answer the
browsers of ``server.cors.allowed_origins``; the metadata and the JWKS are
readable from every origin, without credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.config.cors import CorsSettings
from bastion.transport import cors as cross_origin
from bastion.transport.endpoint import McpEndpoint
from bastion.transport.routes import RouteRuntime

__all__ = ["GatewayApp", "build_app", "protected_resource_metadata"]


class GatewayApp:
    """The ASGI entry point: MCP endpoints by exact path, everything else to Starlette.

    The MCP endpoints are the hot path, so they are dispatched with one dict
    lookup instead of Starlette's routing and middleware stack; lifespan and
    every other path go to ``fallback``. ``cors`` says which browsers may call
    the endpoints cross-origin (``bastion.transport.cors.mcp_endpoint``).
    ``serve`` and ``withdraw`` change the endpoints while serving (a reload of
    the routes, ``bastion.transport.route_swap``): a withdrawn path is answered
    as one that never existed.
    """

    def __init__(
        self, endpoints: Sequence[McpEndpoint], fallback: Starlette, cors: CorsSettings | None = None,
        *, authorization_server: str = "",
    ) -> None:  # fmt: skip
        self._cors = cors or CorsSettings()
        self._authorization_server = authorization_server
        self._endpoints: dict[str, ASGIApp] = {}
        self._metadata: dict[str, BaseRoute] = {}  # by endpoint path: its protected resource metadata route
        self.fallback = fallback
        for endpoint in endpoints:
            self.serve(endpoint)

    def serve(self, endpoint: McpEndpoint) -> None:
        """Serve ``endpoint`` at its route's path (replacing the one there) with its RFC 9728 metadata."""
        path = endpoint.route.path
        self.withdraw(path)
        self._endpoints[path] = cross_origin.mcp_endpoint(endpoint, self._cors)
        metadata = protected_resource_metadata(endpoint.route, self._authorization_server)

        async def serve_metadata(_: Request) -> Response:
            return _json(metadata)

        route = cross_origin.public(Route(f"/.well-known/oauth-protected-resource{path}", serve_metadata))
        self._metadata[path] = route
        self.fallback.router.routes.insert(0, route)

    def withdraw(self, path: str) -> None:
        """Stop serving the endpoint at ``path`` and its metadata (idempotent)."""
        self._endpoints.pop(path, None)
        route = self._metadata.pop(path, None)
        if route is not None:
            self.fallback.router.routes.remove(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "http":
            endpoint = self._endpoints.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def protected_resource_metadata(route: RouteRuntime, authorization_server: str) -> dict[str, Any]:
    """RFC 9728 section 2 metadata for ``route``: its resource URI and who issues its tokens."""
    metadata: dict[str, Any] = {
        "resource": route.resource_uri,
        "authorization_servers": [authorization_server],
        "bearer_methods_supported": ["header"],
        "resource_name": route.settings.title or route.name,
    }
    if route.scopes_supported:
        metadata["scopes_supported"] = list(route.scopes_supported)
    return metadata


def _json(payload: Mapping[str, Any], *, cache_s: int = 300) -> JSONResponse:
    return JSONResponse(dict(payload), headers={"cache-control": f"public, max-age={cache_s}"})


def build_app(
    endpoints: Sequence[McpEndpoint],
    *,
    authorization_server: str,
    jwks: Callable[[], Mapping[str, Any]],
    health: Callable[[], Mapping[str, Any]],
    readiness: Callable[[], Awaitable[tuple[bool, Mapping[str, str]]]] | None = None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    cors: CorsSettings | None = None,
) -> GatewayApp:
    """Assemble the app. ``jwks``, ``health`` and ``readiness`` (``/readyz``: ready, and each check's
    answer; absent: always ready) are called per request; ``extra_routes`` (the
    authorization server's) are mounted at the root; ``cors`` is ``server.cors`` (none: no
    cross-origin access to the MCP endpoints)."""
    routes: list[BaseRoute] = list(extra_routes)

    async def serve_jwks(_: Request) -> Response:
        return _json(jwks(), cache_s=60)

    async def serve_health(_: Request) -> Response:
        return JSONResponse(dict(health()), headers={"cache-control": "no-store"})

    routes.append(cross_origin.public(Route("/.well-known/jwks.json", serve_jwks)))
    async def serve_readiness(_: Request) -> Response:
        ready, checks = await readiness() if readiness is not None else (True, {})
        body = {"status": "ready" if ready else "not ready", "checks": dict(checks)}
        return JSONResponse(body, status_code=200 if ready else 503, headers={"cache-control": "no-store"})

    routes.append(Route("/healthz", serve_health))
    routes.append(Route("/readyz", serve_readiness))

    async def not_found(_: Request, __: Exception) -> Response:
        return JSONResponse({"error": "not_found"}, status_code=404)

    async def not_allowed(_: Request, __: Exception) -> Response:
        return JSONResponse({"error": "method_not_allowed"}, status_code=405)

    fallback = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})
    return GatewayApp(endpoints, fallback, cors, authorization_server=authorization_server)
