"""Minting Bastion's access tokens: RFC 9068 JWT profile, ES256, audience-bound (RFC 8707)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from joserfc import jwt

from bastion.errors import ConfigError
from bastion.identity.keys import SIGNING_ALGORITHM, SigningKeys
from bastion.principal import BASTION_IDP

__all__ = ["ACCESS_TOKEN_TYPE", "IDP_CLAIM", "MintedToken", "TokenIssuer"]

#: The ``typ`` header of an RFC 9068 access token (section 2.1).
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 -- a media type, not a secret
#: The claim naming who vouched for ``sub`` (``Principal.idp``): the configured name of the
#: OpenID Connect provider the person signed in with, ``"local"`` (users file) or ``"bastion"``.
#: Neither RFC 9068 nor OpenID Connect defines such a claim, and ``idp`` is not in the IANA
#: JWT Claims registry (Azure AD and others use it, with their own meaning), so it is a
#: private claim (RFC 7519 section 4.3) in Bastion's own prefix, like ``bastion_kind``.
#: It is read only from Bastion's own tokens, never from an external issuer's.
IDP_CLAIM = "bastion_idp"
_JTI_BYTES = 16  # 128 bits of randomness


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A signed access token (compact JWS) and the claims it carries."""

    token: str
    claims: Mapping[str, Any]


def _words(values: Iterable[str], what: str) -> list[str]:
    items = list(values)
    for item in items:
        if not isinstance(item, str) or not item or any(ch.isspace() for ch in item):
            raise ValueError(f"each {what} must be a non-empty string without spaces, got {item!r}")
    return items


class TokenIssuer:
    """Signs access tokens with the current key of a :class:`SigningKeys`.

    ``issuer`` is the ``iss`` value (Bastion's authorization server URL,
    RFC 8414); ``max_ttl_s`` the longest lifetime (seconds) any token may get.
    Raises ``ConfigError`` if ``issuer`` is empty, ``max_ttl_s`` is not
    positive, or ``max_ttl_s`` exceeds the keys' ``verify_window_s`` (a token
    must never outlive the window in which its key still verifies).
    """

    def __init__(self, keys: SigningKeys, issuer: str, max_ttl_s: int) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ConfigError("the token issuer must be a non-empty string (the authorization server URL)")
        if isinstance(max_ttl_s, bool) or not isinstance(max_ttl_s, int) or max_ttl_s <= 0:
            raise ConfigError(f"max token lifetime must be a positive number of seconds, got {max_ttl_s!r}")
        if max_ttl_s > keys.verify_window_s:
            raise ConfigError(
                f"max token lifetime {max_ttl_s}s exceeds the signing key verification window "
                f"{keys.verify_window_s}s; tokens would outlive their retired key"
            )
        self._keys = keys
        self._issuer = issuer
        self._max_ttl_s = max_ttl_s

    @property
    def issuer(self) -> str:
        """The ``iss`` claim of every token this issuer mints."""
        return self._issuer

    @property
    def max_ttl_s(self) -> int:
        """The longest lifetime, in seconds, :meth:`mint` accepts."""
        return self._max_ttl_s

    def mint(
        self,
        *,
        sub: str,
        audience: str,
        ttl_s: int,
        email: str | None = None,
        name: str | None = None,
        groups: Iterable[str] = (),
        client_id: str = "bastion-cli",
        scopes: Iterable[str] = (),
        kind: Literal["User", "ServiceAccount"] = "User",
        idp: str = BASTION_IDP,
        now: float | None = None,
    ) -> MintedToken:
        """Mint an RFC 9068 access token for ``sub`` valid on the route whose resource URI is ``audience``.

        Header: ``typ: at+jwt``, ``alg: ES256``, ``kid`` (RFC 9068 section 2.1).
        Claims: ``iss``, ``sub``, ``aud`` (RFC 8707 resource), ``iat``, ``nbf``,
        ``exp`` (= iat + ``ttl_s``, epoch seconds), ``jti`` (128 random bits, 32 hex digits),
        ``client_id``, ``scope`` (space-separated, omitted when empty, RFC 9068
        section 2.2.3), ``groups`` (list), ``bastion_kind``, ``bastion_idp`` (``idp``,
        see ``IDP_CLAIM``; the default ``"bastion"`` is for tokens minted with nobody
        signing in), and ``email`` / ``name`` when given. ``now`` (epoch seconds)
        defaults to the clock.

        Raises ``ValueError`` if ``ttl_s`` is not in ``1..max_ttl_s`` (long-lived
        tokens are refused), ``sub``/``audience``/``client_id``/``idp`` are empty, a
        scope or group is empty or contains whitespace, or ``kind`` is unknown.
        """
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int):
            raise ValueError(f"ttl_s must be an integer number of seconds, got {ttl_s!r}")
        if ttl_s <= 0 or ttl_s > self._max_ttl_s:
            raise ValueError(
                f"token lifetime {ttl_s}s refused: it must be between 1 and {self._max_ttl_s} seconds "
                "(long-lived bearer tokens are not issued)"
            )
        for label, value in (("sub", sub), ("audience", audience), ("client_id", client_id), ("idp", idp)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{label} must be a non-empty string")
        if kind not in ("User", "ServiceAccount"):
            raise ValueError(f"kind must be 'User' or 'ServiceAccount', got {kind!r}")
        group_list = _words(groups, "group")
        scope_list = _words(scopes, "scope")

        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": sub,
            "aud": audience,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_s,
            # hex, not base64url: an id that starts with "-" reads as an option to `bastion token revoke`
            "jti": secrets.token_hex(_JTI_BYTES),
            "client_id": client_id,
            "groups": group_list,
            "bastion_kind": kind,
            IDP_CLAIM: idp,
        }
        if scope_list:
            claims["scope"] = " ".join(scope_list)
        if email is not None:
            claims["email"] = email
        if name is not None:
            claims["name"] = name

        self._keys.refresh()  # sign with the key that is current now, even if the CLI rotated it
        key = self._keys.current
        header = {"typ": ACCESS_TOKEN_TYPE, "alg": SIGNING_ALGORITHM, "kid": key.kid}
        token = jwt.encode(header, claims, key.private_key, algorithms=[SIGNING_ALGORITHM])
        return MintedToken(token, claims)
