"""The one JWS signature check every token goes through (RFC 7515 compact serialization).

Parsing and verification are joserfc's; this module fixes the order and the
policy around them: the ``alg`` header is checked against the caller's allow
list before any key is looked up or used, ``none`` is never accepted, the key
must fit the algorithm (type, curve, ``use``, ``key_ops``, its own ``alg``),
and every failure becomes an ``AuthenticationError`` with a stable reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import (
    InvalidKeyCurveError,
    InvalidKeyTypeError,
    JoseError,
    UnsupportedKeyAlgorithmError,
    UnsupportedKeyOperationError,
    UnsupportedKeyUseError,
)
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from bastion.errors import AuthenticationError, clip

__all__ = ["MAX_TOKEN_LENGTH", "KeyResolver", "VerifiedJWS", "parse_compact_jws", "verify_compact_jws"]

#: Longest compact JWS accepted, in characters; real access tokens are 0.5-3 KiB.
MAX_TOKEN_LENGTH = 8192

#: Given the (untrusted) protected header, return the key to verify with or raise AuthenticationError.
KeyResolver = Callable[[Mapping[str, Any]], Key]

_KEY_TYPES = (ECKey, RSAKey, OctKey, OKPKey)
_KEY_MISFIT = (
    InvalidKeyTypeError,
    InvalidKeyCurveError,
    UnsupportedKeyAlgorithmError,
    UnsupportedKeyOperationError,
    UnsupportedKeyUseError,
)
_HEADER_REGISTRY = jws.JWSRegistry(strict_check_header=False)
# Header parameters whose semantics we do not implement: RFC 7515 section 4.1.11
# says a recipient must reject what it does not understand, and RFC 7797
# unencoded payloads ("b64": false) are never used for access tokens.
_REFUSED_HEADERS = ("crit", "b64")


@dataclass(frozen=True, slots=True)
class VerifiedJWS:
    """A JWS whose signature has been verified: its protected header and raw payload bytes."""

    header: Mapping[str, Any]
    payload: bytes


def parse_compact_jws(token: str) -> jws.CompactSignature:
    """Parse (without verifying) a JWS compact serialization (RFC 7515 section 7.1).

    Requires exactly three strict base64url segments (RFC 7515 section 2: no
    padding, no other characters), a JSON object header with a string
    ``alg``, no ``crit``/``b64``, at most ``MAX_TOKEN_LENGTH`` characters.
    Raises ``AuthenticationError`` with reason ``malformed_token`` or
    ``unsupported_header``. The result is untrusted until verified.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise AuthenticationError("malformed_token", "the token is not a compact JWS")
    try:
        obj = jws.extract_compact(token.encode("ascii"))
    except (JoseError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise AuthenticationError("malformed_token", "the token is not a compact JWS") from exc
    header = obj.protected
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise AuthenticationError("malformed_token", "the JWS header is not a JSON object with an alg")
    for name in _REFUSED_HEADERS:
        if name in header:
            raise AuthenticationError("unsupported_header", f"JWS header parameter {name!r} is not accepted")
    try:
        _HEADER_REGISTRY.check_header(header)  # types of kid, typ, jwk, x5c ...
    except (JoseError, ValueError, TypeError) as exc:
        raise AuthenticationError("malformed_token", f"invalid JWS header: {clip(str(exc))}") from exc
    return obj


def verify_compact_jws(
    token: str | jws.CompactSignature,
    key: Key | KeyResolver,
    allowed_algorithms: Collection[str],
) -> VerifiedJWS:
    """Verify a compact JWS signature (RFC 7515 section 5.2) with one key or a key resolver.

    ``allowed_algorithms`` comes from configuration, never from the token; the
    header's ``alg`` must be in it (and is never ``none``, RFC 7518 section
    3.6), checked before ``key`` is resolved or used, so the token cannot
    choose the algorithm or key type (RFC 8725 section 3.1). A resolver
    receives the untrusted header (to read ``kid``) and may raise.

    Raises ``AuthenticationError`` with reason ``malformed_token``,
    ``unsupported_header``, ``algorithm_not_allowed``, ``key_not_usable``
    (the key's type, curve, ``alg``, ``use`` or ``key_ops`` do not permit this
    algorithm for verification) or ``bad_signature``, or whatever the resolver raises.
    """
    obj = token if isinstance(token, jws.CompactSignature) else parse_compact_jws(token)
    header: Mapping[str, Any] = obj.protected
    alg = header["alg"]
    if alg == "none" or alg not in allowed_algorithms:
        raise AuthenticationError("algorithm_not_allowed", f"JWS algorithm {clip(alg)!r} is not allowed")
    resolved = key if isinstance(key, _KEY_TYPES) else key(header)
    registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
    try:
        valid = jws.validate_compact(obj, resolved, registry=registry)
    except _KEY_MISFIT as exc:
        raise AuthenticationError("key_not_usable", f"the key cannot verify {alg}: {exc}") from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise AuthenticationError("bad_signature", "the token signature is invalid") from exc
    if not valid:
        raise AuthenticationError("bad_signature", "the token signature is invalid")
    return VerifiedJWS(header, obj.payload)
