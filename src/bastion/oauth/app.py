"""The authorization server's HTTP routes, and their fail-closed wrapper.

An exception that escapes an endpoint (the store or the audit log failing, a bug)
is never a traceback: the browser endpoints show an error page and the machine
endpoints answer ``temporarily_unavailable`` / ``server_error`` (RFC 6749 section
4.1.2.1 and 5.2); nothing is issued.

The metadata and the machine endpoints (token, revocation, registration) are
readable from every origin without credentials, as browser MCP clients need
(``bastion.transport.cors.public``); the browser pages are navigations and get
no CORS headers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.errors import AuditUnavailable, OAuthError
from bastion.oauth.authorize_endpoint import AuthorizeEndpoint
from bastion.oauth.context import ServerContext, oauth_error_response
from bastion.oauth.metadata import ENDPOINTS, authorization_server_metadata, metadata_paths
from bastion.oauth.pages import error_page
from bastion.oauth.provider_endpoint import ProviderSignInEndpoint
from bastion.oauth.token_endpoint import TokenEndpoint
from bastion.transport.cors import public

__all__ = ["authorization_server_routes"]

_log = logging.getLogger("bastion.oauth")
Handler = Callable[[Request], Awaitable[Response]]


def _browser(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - fail closed: an error page, nothing issued
            _log.exception("authorization endpoint %s failed", request.url.path)
            return error_page(
                title="Sign-in is unavailable",
                message="Bastion could not complete this step; nothing was granted. Try again later.",
                status_code=503,
            )

    return run


def _machine(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except AuditUnavailable:
            _log.exception("audit log unavailable at %s", request.url.path)
            return oauth_error_response(
                OAuthError("temporarily_unavailable", "the audit log is unavailable"), status=503
            )
        except Exception:  # noqa: BLE001 - fail closed: an OAuth error, nothing issued
            _log.exception("authorization endpoint %s failed", request.url.path)
            return oauth_error_response(OAuthError("server_error", "internal error; nothing was issued"), status=500)

    return run


def authorization_server_routes(context: ServerContext) -> list[BaseRoute]:
    """The metadata documents (RFC 8414 and the OpenID discovery paths) and the endpoints."""
    metadata: dict[str, Any] = authorization_server_metadata(
        context.issuer,
        base_url=context.base_url,
        scopes=context.settings.scopes,
        registration=context.settings.dynamic_registration,
        metadata_documents=context.clients.documents_enabled,
    )

    async def serve_metadata(_: Request) -> Response:
        return JSONResponse(metadata, headers={"cache-control": "public, max-age=300"})

    authorize = AuthorizeEndpoint(context)
    token = TokenEndpoint(context)
    providers = ProviderSignInEndpoint(context, authorize)
    routes: list[BaseRoute] = [public(Route(path, serve_metadata)) for path in metadata_paths(context.issuer)]
    routes += [
        Route(ENDPOINTS["authorization"], _browser(authorize.authorize), methods=["GET"]),
        Route(ENDPOINTS["sign_in"], _browser(authorize.sign_in), methods=["POST"]),
        Route(ENDPOINTS["consent"], _browser(authorize.consent), methods=["POST"]),
        Route(ENDPOINTS["provider_sign_in"], _browser(providers.start), methods=["GET"]),
        Route(ENDPOINTS["provider_callback"], _browser(providers.callback), methods=["GET"]),
        Route(ENDPOINTS["portal_sign_in"], _browser(authorize.portal_sign_in), methods=["GET"]),
        public(Route(ENDPOINTS["token"], _machine(token.token), methods=["POST"])),
        public(Route(ENDPOINTS["revocation"], _machine(token.revoke), methods=["POST"])),
        public(Route(ENDPOINTS["registration"], _machine(token.register), methods=["POST"])),
    ]
    return routes
