"""Checking OAuth requests without I/O: parameters, PKCE, resource indicators, scopes.

- Parameters may not repeat (RFC 6749 section 3.1 and 3.2).
- PKCE: only ``S256`` (OAuth 2.1 section 4.1.1, RFC 7636 section 4.2); a missing or
  ``plain`` method is refused, and the verifier must be 43-128 unreserved characters.
- ``resource`` (RFC 8707 section 2) is required and must be exactly the resource URI of
  a route; a token is then valid on that route only.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from bastion.errors import OAuthError, clip

__all__ = ["Resources", "check_code_challenge", "requested_scopes", "single_params", "verify_pkce"]

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 section 4.1
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # base64url of a SHA-256, no padding
_MAX_PARAM = 4096


def single_params(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The request parameters as a dict. Raises ``OAuthError("invalid_request")`` when one repeats
    or is longer than 4096 characters."""
    params: dict[str, str] = {}
    for name, value in items:
        if name in params:
            raise OAuthError("invalid_request", f"parameter {clip(name)!r} is repeated")
        if len(value) > _MAX_PARAM:
            raise OAuthError("invalid_request", f"parameter {clip(name)!r} is too long")
        params[name] = value
    return params


def check_code_challenge(params: Mapping[str, str]) -> str:
    """The PKCE ``code_challenge`` of an authorization request (RFC 7636 section 4.3).

    Raises ``OAuthError("invalid_request")`` when it is missing or malformed or the
    method is not ``S256``.
    """
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if not challenge:
        raise OAuthError("invalid_request", "code_challenge is required (PKCE)")
    if method != "S256":
        raise OAuthError("invalid_request", "code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise OAuthError("invalid_request", "code_challenge is not a base64url SHA-256")
    return challenge


def verify_pkce(verifier: str | None, challenge: str) -> None:
    """Check a token request's ``code_verifier`` against the code's challenge (RFC 7636 section 4.6).

    Raises ``OAuthError("invalid_grant")`` when it is missing, malformed or wrong.
    """
    if not verifier or not _VERIFIER.match(verifier):
        raise OAuthError("invalid_grant", "code_verifier is missing or malformed")
    if not hmac.compare_digest(create_s256_code_challenge(verifier), challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")


def requested_scopes(value: str | None, supported: Sequence[str], *, default: Sequence[str]) -> tuple[str, ...]:
    """The scopes asked for (RFC 6749 section 3.3), in ``supported`` order; ``default`` when absent.

    Raises ``OAuthError("invalid_scope")`` for a scope Bastion does not offer.
    """
    if value is None or not value.strip():
        return tuple(default)
    asked = set(value.split())
    unknown = sorted(asked - set(supported))
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope {clip(unknown[0])!r}")
    return tuple(scope for scope in supported if scope in asked)


@dataclass(frozen=True, slots=True)
class Resources:
    """The routes' resource URIs (RFC 8707): ``by_uri`` maps each to its route name."""

    by_uri: Mapping[str, str]

    def route_for(self, value: str | None) -> tuple[str, str]:
        """``(route name, resource URI)`` for a ``resource`` parameter.

        Raises ``OAuthError("invalid_target")`` when it is missing or names no route
        (RFC 8707 section 2: the exact URI, no prefix or trailing-slash variants).
        """
        if not value:
            raise OAuthError("invalid_target", "the resource parameter is required (RFC 8707)")
        route = self.by_uri.get(value)
        if route is None:
            raise OAuthError("invalid_target", "resource is not a route of this server")
        return route, value
