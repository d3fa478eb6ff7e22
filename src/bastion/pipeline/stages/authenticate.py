"""Stage 2, authenticate: ``Authorization: Bearer`` only (RFC 6750 section 2.1).

The token must be an access token for THIS route's resource URI (RFC 8707,
RFC 9068); every failure is a 401 whose ``WWW-Authenticate`` points at the
route's protected resource metadata (RFC 9728 section 5.1). Tokens in query
strings or form bodies are never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bastion.errors import AuthenticationError
from bastion.pipeline.context import Exchange
from bastion.principal import Principal

__all__ = ["AuthenticateStage", "Authenticator", "bearer_token"]


class Authenticator(Protocol):
    """Verifies a bearer token for an audience; see ``bastion.identity.TokenVerifier``."""

    async def authenticate(self, token: str, audience: str) -> Principal:
        """Return the principal or raise ``AuthenticationError``."""
        ...


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value.

    Raises ``AuthenticationError("missing_token")`` when absent or not Bearer.
    """
    if not authorization:
        raise AuthenticationError("missing_token", "no bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationError("missing_token", "the Authorization header is not a Bearer token")
    return token


class AuthenticateStage:
    """Turn the bearer token into a ``Principal`` for the route's audience.

    ``external_routes`` maps a trusted external issuer to the routes that accept
    its tokens: their audience is the issuer's, not a route's, so the route is
    checked here (a token from an issuer not scoped to this route is a 401).
    """

    name = "authenticate"

    def __init__(self, authenticator: Authenticator, external_routes: Mapping[str, frozenset[str]] | None = None):
        self._authenticator = authenticator
        self._external_routes = dict(external_routes or {})

    async def run(self, exchange: Exchange) -> None:
        """Set ``exchange.principal``; raise ``AuthenticationError`` (401) otherwise."""
        token = bearer_token(exchange.http.headers.get("authorization"))
        principal = await self._authenticator.authenticate(token, exchange.route.resource_uri)
        if principal.auth_method == "external_jwt" and exchange.route.name not in self._external_routes.get(
            principal.issuer, frozenset()
        ):
            raise AuthenticationError("wrong_audience", "this issuer's tokens are not accepted on this route")
        exchange.principal = principal
