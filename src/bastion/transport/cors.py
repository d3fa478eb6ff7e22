"""Cross-origin access for browser MCP clients (Fetch standard, "CORS protocol").

Two kinds of answer, both built here with Starlette's ``CORSMiddleware``:

- ``mcp_endpoint``: a route's MCP endpoint, for the origins of
  ``server.cors.allowed_origins`` (credentials only when configured, never with
  ``"*"``). Preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are
  answered here, before the endpoint; every other answer, errors included,
  carries ``Access-Control-Allow-Origin`` for an allowed origin and exposes
  ``EXPOSED_HEADERS``. A refused origin gets no CORS headers and its request
  still meets the endpoint's Origin check (403), which admits the same origins
  (``ServerSettings.browser_origins``).
- ``public``: documents and endpoints that any client may use and that hold no
  ambient authority: protected resource metadata (RFC 9728), authorization
  server metadata (RFC 8414), the JWKS, and the token, revocation and
  registration endpoints (RFC 6749, 7009, 7591), which a browser MCP client
  calls cross-origin. Readable from every origin (``*``), never with
  credentials, so a page can send them no cookie. The authorization, sign-in
  and consent pages are navigations, not fetches, and get no CORS headers.

Everything a browser needs to see from an MCP endpoint is in ``EXPOSED_HEADERS``;
everything an MCP client sends is in ``REQUEST_HEADERS`` (MCP 2025-11-25
basic/transports, 2026-07-28 routing headers, RFC 6750 ``Authorization``).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.config.cors import CorsSettings

__all__ = ["EXPOSED_HEADERS", "MCP_METHODS", "REQUEST_HEADERS", "mcp_endpoint", "public"]

#: Request headers a cross-origin page may send (beyond the CORS-safelisted ones).
REQUEST_HEADERS: tuple[str, ...] = (
    "Accept",
    "Authorization",
    "Content-Type",
    "Last-Event-ID",
    "Mcp-Method",
    "Mcp-Name",
    "MCP-Protocol-Version",
    "Mcp-Session-Id",
)

#: Response headers a cross-origin page may read: the session id, the negotiated version, and the
#: RFC 9728 challenge of a 401 (which names the protected resource metadata).
EXPOSED_HEADERS: tuple[str, ...] = ("Mcp-Session-Id", "MCP-Protocol-Version", "WWW-Authenticate")

#: The methods of an MCP endpoint (MCP basic/transports: POST, GET stream, DELETE session).
MCP_METHODS: tuple[str, ...] = ("POST", "GET", "DELETE")

_PUBLIC_MAX_AGE_S = 600


def _cors(
    app: ASGIApp, origins: Collection[str], methods: Collection[str], credentials: bool, max_age_s: int
) -> ASGIApp:
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=methods,
        allow_headers=REQUEST_HEADERS,
        allow_credentials=credentials,
        expose_headers=EXPOSED_HEADERS,
        max_age=max_age_s,
    )


def mcp_endpoint(endpoint: ASGIApp, settings: CorsSettings) -> ASGIApp:
    """``endpoint`` (an MCP endpoint) answering browsers of ``settings.allowed_origins``.

    With no origin configured it is ``endpoint`` itself: no preflight is answered (the
    endpoint's 405) and no response carries CORS headers.
    """
    if not settings.allowed_origins:
        return endpoint
    return _cors(endpoint, settings.allowed_origins, MCP_METHODS, settings.allow_credentials, settings.max_age_s)


def public(route: Route) -> Route:
    """``route`` readable from every origin without credentials; preflights answered.

    The returned route also takes ``OPTIONS``: a preflight is answered by the CORS layer, any
    other ``OPTIONS`` is a 405 naming the route's methods (the route's handler never sees it).
    """
    methods = sorted(route.methods or {"GET"})
    app = _cors(_NoOptions(route.app, methods), ("*",), methods, False, _PUBLIC_MAX_AGE_S)
    return Route(route.path, app, methods=[*methods, "OPTIONS"], name=route.name)


class _NoOptions:
    """Answer an ``OPTIONS`` that is not a preflight with 405, as if the route had no ``OPTIONS``."""

    def __init__(self, app: ASGIApp, methods: Collection[str]) -> None:
        self._app = app
        self._allow = ", ".join(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            response = JSONResponse({"error": "method_not_allowed"}, status_code=405, headers={"allow": self._allow})
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)
