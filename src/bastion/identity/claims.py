"""Checks on a verified token's claims (RFC 7519 section 4.1, RFC 9068 section 4) and its Principal.

Sans-IO: no clock, no database. The caller passes ``now`` and does the
revocation lookup; :class:`Validity` is what must be re-checked on every use
of a cached verification.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bastion.errors import AuthenticationError
from bastion.principal import Principal

__all__ = ["Validity", "check_time", "decode_claims", "own_idp", "principal_from_claims", "validate_claims"]


@dataclass(frozen=True, slots=True)
class Validity:
    """The time bounds and id of a token (epoch seconds); re-checked on every request."""

    expires_at: float
    not_before: float | None
    issued_at: float | None
    jti: str | None


def decode_claims(payload: bytes) -> dict[str, Any]:
    """Decode a JWS payload as a JSON object (RFC 7519 section 7.2 step 10); else ``malformed_token``."""
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
        raise AuthenticationError("malformed_token", "the token payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise AuthenticationError("malformed_token", "the token payload is not a JSON object")
    return claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthenticationError("invalid_claim", f"claim {name!r} must be a NumericDate")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise AuthenticationError("invalid_claim", f"claim {name!r} must be a string")
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    """A list of strings, or one space-separated string (``scope``, some IdPs' ``groups``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise AuthenticationError("invalid_claim", f"claim {name!r} must be a list of strings")


def check_time(validity: Validity, now: float, leeway_s: float) -> None:
    """Refuse an expired token (``exp`` <= now, no leeway, RFC 7519 section 4.1.4) or one used
    before ``nbf`` / ``iat`` beyond ``leeway_s`` seconds (sections 4.1.5, 4.1.6).

    Raises ``AuthenticationError``: ``token_expired``, ``token_not_yet_valid``, ``issued_in_future``.
    """
    if now >= validity.expires_at:
        raise AuthenticationError("token_expired", "the token has expired")
    if validity.not_before is not None and validity.not_before > now + leeway_s:
        raise AuthenticationError("token_not_yet_valid", "the token is not valid yet (nbf)")
    if validity.issued_at is not None and validity.issued_at > now + leeway_s:
        raise AuthenticationError("issued_in_future", "the token was issued in the future (iat)")


def validate_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway_s: float,
    require: tuple[str, ...] = (),
) -> Validity:
    """Check ``iss`` equals ``issuer``, ``audience`` is in ``aud`` (a string or a list, RFC 7519
    section 4.1.3), ``exp`` is present and in the future, ``nbf``/``iat`` not in the future beyond
    the leeway, ``sub`` is a non-empty string, and every claim named in ``require`` is present.

    Returns the token's :class:`Validity`. Raises ``AuthenticationError`` with reason
    ``wrong_issuer``, ``wrong_audience``, ``missing_exp``, ``token_expired``,
    ``token_not_yet_valid``, ``issued_in_future``, ``missing_sub``, ``missing_claim``
    or ``invalid_claim``.
    """
    if claims.get("iss") != issuer:
        raise AuthenticationError("wrong_issuer", "the token was issued by another issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise AuthenticationError("wrong_audience", "the token was issued for another audience")
    expires_at = _number(claims, "exp")
    if expires_at is None:
        raise AuthenticationError("missing_exp", "the token has no expiry (exp)")
    validity = Validity(expires_at, _number(claims, "nbf"), _number(claims, "iat"), _string(claims, "jti"))
    check_time(validity, now, leeway_s)
    sub = _string(claims, "sub")
    if not sub:
        raise AuthenticationError("missing_sub", "the token has no subject (sub)")
    for name in require:
        if claims.get(name) in (None, ""):
            raise AuthenticationError("missing_claim", f"the token has no {name!r} claim")
    return validity


def own_idp(claims: Mapping[str, Any], claim: str) -> str:
    """The identity provider's name in ``claim`` of one of Bastion's own tokens, or ``""``
    when the token predates the claim (``Principal`` then falls back to ``iss``).

    Raises ``AuthenticationError("invalid_claim")`` when the claim is present but not a
    non-empty string.
    """
    if claim not in claims:
        return ""
    value = claims[claim]
    if not isinstance(value, str) or not value:
        raise AuthenticationError("invalid_claim", f"claim {claim!r} must be a non-empty string")
    return value


def principal_from_claims(
    claims: Mapping[str, Any],
    *,
    kind: Literal["User", "ServiceAccount"],
    auth_method: str,
    idp: str,
    groups_claim: str = "groups",
) -> Principal:
    """Build the :class:`Principal` of validated ``claims`` (call :func:`validate_claims` first).

    ``idp`` is decided by the caller (:func:`own_idp` for Bastion's tokens, the configured
    name for an external issuer's: never a claim an external issuer chose); ``""`` means
    ``iss``. ``groups`` come from ``groups_claim`` (list or space-separated string),
    scopes from ``scope`` (RFC 9068 section 2.2.3) or ``scp``, ``client_id``
    from ``client_id`` or ``azp``. Raises ``AuthenticationError("invalid_claim")``
    when a claim has the wrong type.
    """
    scopes = _strings(claims.get("scope", claims.get("scp")), "scope")
    client_id = _string(claims, "client_id") or _string(claims, "azp")
    return Principal(
        kind=kind,
        sub=claims["sub"],
        issuer=claims["iss"],
        auth_method=auth_method,
        expires_at=int(claims["exp"]),
        email=_string(claims, "email"),
        name=_string(claims, "name"),
        groups=_strings(claims.get(groups_claim), groups_claim),
        client_id=client_id,
        token_id=_string(claims, "jti"),
        scopes=scopes,
        idp=idp,
    )
