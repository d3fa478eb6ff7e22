"""What every authorization server endpoint shares, and the responses they have in common."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

from bastion.config.oauth import AuthorizationServerSettings
from bastion.errors import BodyTimeout, BodyTooLarge, OAuthError
from bastion.oauth.auditing import OAuthAudit
from bastion.oauth.clients import ClientDirectory
from bastion.oauth.federation import OpenIDProvider
from bastion.oauth.grants import GrantService
from bastion.oauth.requests import Resources
from bastion.oauth.store import AuthorizationStore
from bastion.oauth.users import LocalUsers
from bastion.stores.counters import RateCounter
from bastion.transport.wire import read_request

__all__ = ["NO_STORE", "ServerContext", "oauth_error_response", "read_body", "read_form", "redirect_with"]

#: Headers of every response that carries a token or a code (RFC 6749 section 5.1).
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


@dataclass(frozen=True, slots=True)
class ServerContext:
    """The authorization server's parts. ``route_titles`` maps route names to display names;
    ``providers`` the OpenID Connect providers people sign in with, by name; ``rates`` the rate
    counter the sign-in throttle counts on."""

    issuer: str
    base_url: str
    settings: AuthorizationServerSettings
    store: AuthorizationStore
    clients: ClientDirectory
    grants: GrantService
    audit: OAuthAudit
    resources: Resources
    route_titles: Mapping[str, str]
    users: LocalUsers | None
    rates: RateCounter
    providers: Mapping[str, OpenIDProvider] = field(default_factory=dict)
    clock: Callable[[], float] = field(default=time.time)

    @property
    def origin(self) -> str:
        """The scheme and authority of ``base_url`` (what a same-origin form POST sends as ``Origin``)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


async def read_body(request: Request, limit: int) -> bytes | None:
    """The POST body, or None as soon as it exceeds ``limit`` bytes (chunked bodies included:
    the declared length is not trusted). Read by the MCP endpoints' own reader. Raises
    ``OAuthError("invalid_request")`` when the body is not in by ``server.body_timeout_s``."""
    try:
        return (await read_request(request.scope, request.receive, limit)).body
    except BodyTooLarge:
        return None
    except BodyTimeout as exc:
        raise OAuthError("invalid_request", "the request body did not arrive in time") from exc


async def read_form(request: Request, limit: int, max_fields: int) -> list[tuple[str, str]] | None:
    """An ``application/x-www-form-urlencoded`` body's fields (at most ``max_fields``), or None
    when it is over ``limit`` bytes. Raises ``OAuthError("invalid_request")`` for too many fields."""
    body = await read_body(request, limit)
    if body is None:
        return None
    try:
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=max_fields)
    except ValueError as exc:
        raise OAuthError("invalid_request", "too many form fields") from exc


def redirect_with(redirect_uri: str, params: Mapping[str, str | None]) -> RedirectResponse:
    """A 303 to ``redirect_uri`` with ``params`` added to its query (RFC 6749 section 4.1.2: the
    registered URI's own query is kept). ``None`` values are left out."""
    parts = urlsplit(redirect_uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    response = RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=303)
    response.headers.update(NO_STORE)
    return response


def oauth_error_response(
    exc: OAuthError, *, headers: Mapping[str, str] | None = None, status: int | None = None
) -> JSONResponse:
    """An RFC 6749 section 5.2 error body; the status is ``status`` or the error's own (400, 401 for
    ``invalid_client``)."""
    body: dict[str, Any] = {"error": exc.error, "error_description": exc.description}
    return JSONResponse(body, status_code=status or exc.http_status, headers={**NO_STORE, **(headers or {})})
