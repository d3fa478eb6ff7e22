"""What the authorization server keeps between requests: typed records, free of I/O.

A *grant* is what one user approved for one client on one route with some
scopes; authorization codes and refresh-token families each carry one. Secrets
(codes, refresh tokens, browser cookies) are never stored: only their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthorizationCode",
    "Consent",
    "FederatedSignIn",
    "Grant",
    "PendingAuthorization",
    "RefreshUse",
    "UserIdentity",
    "digest",
]


def digest(secret: str) -> str:
    """The SHA-256 of a secret as 64 hex digits: how codes, refresh tokens and cookies are stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """A signed-in person: subject, profile and groups, and ``idp`` (the identity provider that vouched)."""

    sub: str
    idp: str
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """This identity as a JSON object (``from_dict`` reads it back)."""
        return {"sub": self.sub, "idp": self.idp, "email": self.email, "name": self.name, "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserIdentity:
        """Read ``to_dict`` output. Raises ``KeyError``/``TypeError`` on anything else."""
        return cls(data["sub"], data["idp"], data.get("email"), data.get("name"), tuple(data.get("groups") or ()))

    def to_json(self) -> str:
        """This identity as JSON text (``from_json`` reads it back)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> UserIdentity:
        """Read ``to_json`` output. Raises ``ValueError``/``KeyError`` on anything else."""
        return cls.from_dict(json.loads(text))

    @property
    def label(self) -> str:
        """How pages name the user: the name, else the email, else the subject."""
        return self.name or self.email or self.sub


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``user`` approved: ``client_id`` may act on ``route`` (resource URI ``resource``) with ``scopes``."""

    client_id: str
    route: str
    resource: str
    scopes: tuple[str, ...]
    user: UserIdentity

    def to_json(self) -> str:
        """This grant as JSON text (``from_json`` reads it back)."""
        return json.dumps(
            {
                "client_id": self.client_id,
                "route": self.route,
                "resource": self.resource,
                "scopes": list(self.scopes),
                "user": self.user.to_dict(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Grant:
        """Read ``to_json`` output. Raises ``ValueError``/``KeyError`` on anything else."""
        data: dict[str, Any] = json.loads(text)
        user = UserIdentity.from_dict(data["user"])
        return cls(data["client_id"], data["route"], data["resource"], tuple(data["scopes"]), user)


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """An authorization request (RFC 6749 section 4.1.1) between ``/authorize`` and the redirect back.

    ``id`` names it in the sign-in and consent forms; ``browser`` is the
    SHA-256 of the cookie that binds it to the browser that started it and
    ``csrf_token`` the token its forms must echo. ``expires_at`` is epoch
    seconds. ``user`` is set once someone signed in.
    """

    id: str
    client_id: str
    client_name: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    route: str
    resource: str
    scopes: tuple[str, ...]
    browser: str
    csrf_token: str
    expires_at: float
    unverified_client: bool = False
    user: UserIdentity | None = None

    def grant(self, user: UserIdentity) -> Grant:
        """The grant this request asks ``user`` for."""
        return Grant(self.client_id, self.route, self.resource, self.scopes, user)


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """An issued code (stored by its digest): single use, bound to the redirect URI and PKCE challenge.

    ``used`` is true when it had been redeemed before the current attempt;
    ``family_id`` names the refresh-token family its redemption started.
    """

    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float
    used: bool = False
    family_id: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshUse:
    """The result of presenting a refresh token (stored by its digest).

    ``previous_use`` is when it had been used before (None: this is its first
    use); ``revoked`` whether its family was revoked; ``expires_at`` is the
    family's absolute end (epoch seconds).
    """

    family_id: str
    grant: Grant
    expires_at: float
    revoked: bool
    previous_use: float | None


@dataclass(frozen=True, slots=True)
class Consent:
    """A remembered approval: ``sub`` let ``client_id`` use ``route`` with ``scopes`` (``granted_at`` epoch s)."""

    sub: str
    client_id: str
    route: str
    scopes: tuple[str, ...]
    granted_at: float


@dataclass(frozen=True, slots=True)
class FederatedSignIn:
    """A sign-in sent to an OpenID Connect provider, kept (by the digest of its ``state``) until
    the provider redirects back (OpenID Connect Core 1.0 section 3.1.2).

    ``pending_id`` is the authorization request it signs in for; ``provider`` the
    provider's configured name; ``nonce`` and ``code_verifier`` (PKCE, RFC 7636) the
    secrets the answer is checked against; ``browser`` the digest of the browser
    cookie that started it; ``expires_at`` epoch seconds.
    """

    pending_id: str
    provider: str
    nonce: str
    code_verifier: str
    browser: str
    expires_at: float

    def to_json(self) -> str:
        """This record as JSON text (``from_json`` reads it back)."""
        return json.dumps({name: getattr(self, name) for name in self.__slots__})

    @classmethod
    def from_json(cls, text: str) -> FederatedSignIn:
        """Read ``to_json`` output. Raises ``ValueError``/``TypeError`` on anything else."""
        return cls(**json.loads(text))
