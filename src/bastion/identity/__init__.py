"""Identity: Bastion's signing keys, access tokens, revocation and token verification.

Public API (the implementation modules are private to the package)::

    SigningKeys.load_or_create(data_dir, verify_window_s=...)   ES256 keys, rotation, JWKS
    TokenIssuer(keys, issuer, max_ttl_s).mint(...)              RFC 9068 access tokens
    RevocationList(path)                                         revoked jti, shared via SQLite
    TokenVerifier(...).verify / .authenticate                    bearer token -> Principal
    ExternalIssuer, JWKSCache                                    trusted external issuers
    verify_compact_jws                                           the one JWS signature check
    parse_duration("15m")                                        durations in seconds
"""

from bastion.identity.durations import parse_duration
from bastion.identity.external import ExternalIssuer, JWKSCache
from bastion.identity.keys import SIGNING_ALGORITHM, SigningKey, SigningKeys
from bastion.identity.revocation import RevocationList
from bastion.identity.signature import VerifiedJWS, parse_compact_jws, verify_compact_jws
from bastion.identity.tokens import ACCESS_TOKEN_TYPE, MintedToken, TokenIssuer
from bastion.identity.verifier import TokenVerifier

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "SIGNING_ALGORITHM",
    "ExternalIssuer",
    "JWKSCache",
    "MintedToken",
    "RevocationList",
    "SigningKey",
    "SigningKeys",
    "TokenIssuer",
    "TokenVerifier",
    "VerifiedJWS",
    "parse_compact_jws",
    "parse_duration",
    "verify_compact_jws",
]
