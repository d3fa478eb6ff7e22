"""The authenticate stage's token check: Bastion's own access tokens and trusted external issuers.

Every request presents a bearer token, so successful verifications are
cached by the exact token string (bounded LRU). A cached entry skips only the
signature and the static claim checks; expiry, ``nbf``/``iat``, audience and
revocation are checked again on every call, and an entry is dropped the first
time it is found expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import Key
from joserfc.jws import CompactSignature

from bastion.errors import AuthenticationError, ConfigError, clip
from bastion.identity.claims import (
    Validity,
    check_time,
    decode_claims,
    own_idp,
    principal_from_claims,
    validate_claims,
)
from bastion.identity.external import ExternalIssuer, JWKSCache, JWKSFetch
from bastion.identity.keys import SigningKeys
from bastion.identity.signature import parse_compact_jws, verify_compact_jws
from bastion.identity.tokens import IDP_CLAIM
from bastion.principal import Principal
from bastion.stores.revocations import RevocationStore

__all__ = ["TokenVerifier"]

_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 section 4
_OWN_REQUIRED = ("iat", "jti", "client_id")  # RFC 9068 section 2.2


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    validity: Validity
    audiences: frozenset[str] | None  # None: external token, its audience is the issuer's


class TokenVerifier:
    """Turns a bearer token into a :class:`Principal` or raises ``AuthenticationError``.

    ``issuer`` is Bastion's own ``iss``; ``keys`` its signing keys;
    ``revocations`` the shared revocation list; ``external_issuers`` the
    trusted external issuers; ``leeway_s`` the clock skew (seconds) tolerated
    on ``nbf``/``iat`` (never on ``exp``); ``allowed_algorithms`` the JWS
    algorithms accepted on Bastion's own tokens; ``cache_size`` the LRU bound;
    ``jwks_fetch`` fetches the external issuers' JWKS (the gateway passes
    ``guarded_jwks_fetch(egress_guard)``: every fetch through the egress guard).
    Raises ``ConfigError`` on an unsafe algorithm list, a negative leeway, an
    external issuer equal to ``issuer`` or listed twice, or external issuers
    without ``jwks_fetch``. Not thread-safe: use one instance per event loop.
    """

    def __init__(
        self,
        *,
        issuer: str,
        keys: SigningKeys,
        revocations: RevocationStore,
        external_issuers: Iterable[ExternalIssuer] = (),
        leeway_s: int = 30,
        allowed_algorithms: Iterable[str] = ("ES256",),
        cache_size: int = 10_000,
        jwks_fetch: JWKSFetch | None = None,
    ) -> None:
        self._allowed = frozenset(allowed_algorithms)
        if not self._allowed or any(a.lower() == "none" or a.upper().startswith("HS") for a in self._allowed):
            raise ConfigError("allowed_algorithms must be non-empty asymmetric algorithms (no none, no HS*)")
        if leeway_s < 0 or cache_size < 1:
            raise ConfigError("leeway_s must be >= 0 and cache_size >= 1")
        self._issuer = issuer
        self._keys = keys
        self._revocations = revocations
        self._leeway_s = leeway_s
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        settings = list(external_issuers)
        names = [item.issuer for item in settings]
        if issuer in names or len(set(names)) != len(names):
            raise ConfigError("an external issuer is listed twice or equals Bastion's own issuer")
        if settings and jwks_fetch is None:
            raise ConfigError("external issuers need a JWKS fetch (jwks_fetch: through the egress guard)")
        self._external: dict[str, tuple[ExternalIssuer, JWKSCache]] = {}
        if jwks_fetch is not None:
            self._external = {item.issuer: (item, JWKSCache.for_issuer(item, jwks_fetch)) for item in settings}

    def verify(self, token: str, audience: str, now: float | None = None) -> Principal:
        """Verify one of Bastion's own access tokens for the route whose resource URI is ``audience``.

        Checks, in order: compact JWS form, ``typ`` is ``at+jwt`` (RFC 9068
        section 4, case-insensitive), ``alg`` in the allow list (before any key
        use), ``kid`` names a live signing key, signature, ``iss``, ``aud`` (string or
        list, RFC 8707), ``exp``, ``nbf``, ``iat``, ``sub``, ``jti``/``client_id``
        present, not revoked. ``now`` is epoch seconds (default: the clock).
        Returns a Principal with ``auth_method="bastion_jwt"``, kind from
        ``bastion_kind``, ``idp`` from ``bastion_idp`` (a token minted before that claim
        existed gets its ``iss``, as ``principal.idp`` was then). Raises
        ``AuthenticationError`` (see ``reason``); the revocation store's error (``sqlite3.Error``
        for the embedded one) if it cannot be read.
        """
        stamp = time.time() if now is None else now
        entry = self._cache.get(token)
        if entry is not None and entry.principal.auth_method == "bastion_jwt":
            return self._reuse(token, entry, audience, stamp)
        return self._verify_own(token, parse_compact_jws(token), audience, stamp)

    async def authenticate(self, token: str, audience: str, now: float | None = None) -> Principal:
        """Verify a bearer token from Bastion or from a trusted external issuer (chosen by its ``iss``).

        Bastion's tokens are checked as in :meth:`verify`. An external token is
        checked the same way except: its ``alg`` must be in that issuer's list,
        its key comes from the issuer's JWKS (fetched asynchronously), ``typ``
        is not required, its ``aud`` must contain the issuer's configured
        ``audience`` (``audience`` here is ignored), and only ``exp`` and ``sub``
        are required. Returns a Principal (``auth_method="external_jwt"``, kind
        from the issuer's settings, ``idp`` its configured ``name`` or else its issuer URL;
        an ``idp`` or ``bastion_idp`` claim in the token is ignored). Raises
        ``AuthenticationError``.
        """
        stamp = time.time() if now is None else now
        entry = self._cache.get(token)
        if entry is not None:
            return self._reuse(token, entry, audience, stamp)
        obj = parse_compact_jws(token)
        iss = _peek_claims(obj).get("iss")  # unverified: only picks the issuer to verify against
        if iss == self._issuer:
            return self._verify_own(token, obj, audience, stamp)
        external = self._external.get(iss) if isinstance(iss, str) else None
        if external is None:
            raise AuthenticationError("wrong_issuer", "the token's issuer is not trusted")
        settings, jwks = external
        header = obj.protected
        alg, kid = header["alg"], header.get("kid")
        if alg == "none" or alg not in settings.algorithms:
            raise AuthenticationError("algorithm_not_allowed", f"JWS algorithm {clip(alg)!r} is not allowed")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("malformed_token", "the kid header must be a string")
        key: Key = await jwks.key_for(kid, alg)
        claims = decode_claims(verify_compact_jws(obj, key, settings.algorithms).payload)
        validity = validate_claims(
            claims, issuer=settings.issuer, audience=settings.audience, now=stamp, leeway_s=self._leeway_s
        )
        self._check_revoked(validity.jti)
        principal = principal_from_claims(
            claims,
            kind=settings.kind,
            auth_method="external_jwt",
            idp=settings.idp,
            groups_claim=settings.groups_claim,
        )
        self._remember(token, _Entry(principal, validity, None))
        return principal

    def clear_cache(self) -> None:
        """Forget every cached verification (e.g. after an emergency key removal)."""
        self._cache.clear()

    @property
    def cached(self) -> int:
        """How many verifications are cached (at most ``cache_size``)."""
        return len(self._cache)

    def purge_expired(self, now: float | None = None) -> int:
        """Drop cached entries whose token has expired at ``now`` (epoch s); returns how many.

        The gateway calls it on its housekeeping schedule (``Gateway.sweep``): an entry is
        otherwise dropped only when its token is presented again or the cache is full."""
        stamp = time.time() if now is None else now
        expired = [token for token, entry in self._cache.items() if entry.validity.expires_at <= stamp]
        for token in expired:
            del self._cache[token]
        return len(expired)

    async def aclose(self) -> None:
        """Release what the verifier holds: nothing since JWKS fetches go through the caller's
        ``jwks_fetch`` (its egress guard is closed by its owner); kept for the gateway's lifecycle."""

    def _verify_own(self, token: str, obj: CompactSignature, audience: str, now: float) -> Principal:
        typ = obj.protected.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES:
            raise AuthenticationError("wrong_token_type", "the token is not an RFC 9068 access token (typ)")
        verified = verify_compact_jws(obj, lambda header: self._own_key(header, now), self._allowed)
        claims = decode_claims(verified.payload)
        validity = validate_claims(
            claims,
            issuer=self._issuer,
            audience=audience,
            now=now,
            leeway_s=self._leeway_s,
            require=_OWN_REQUIRED,
        )
        self._check_revoked(validity.jti)
        kind = claims.get("bastion_kind", "User")
        if kind not in ("User", "ServiceAccount"):
            raise AuthenticationError("invalid_claim", "claim 'bastion_kind' must be User or ServiceAccount")
        principal = principal_from_claims(
            claims, kind=kind, auth_method="bastion_jwt", idp=own_idp(claims, IDP_CLAIM)
        )
        aud = claims["aud"]
        audiences = frozenset([aud] if isinstance(aud, str) else (a for a in aud if isinstance(a, str)))
        self._remember(token, _Entry(principal, validity, audiences))
        return principal

    def _own_key(self, header: Mapping[str, Any], now: float) -> Key:
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthenticationError("unknown_kid", "the token names no signing key (kid)")
        key = self._keys.verification_key(kid, now)
        if key is None and self._keys.refresh():  # another process may have rotated
            key = self._keys.verification_key(kid, now)
        if key is None:
            raise AuthenticationError("unknown_kid", "the token's signing key is unknown or retired")
        return key

    def _reuse(self, token: str, entry: _Entry, audience: str, now: float) -> Principal:
        if entry.audiences is not None and audience not in entry.audiences:
            raise AuthenticationError("wrong_audience", "the token was issued for another audience")
        try:
            check_time(entry.validity, now, self._leeway_s)
        except AuthenticationError:
            if now >= entry.validity.expires_at:
                self._cache.pop(token, None)
            raise
        self._check_revoked(entry.validity.jti)
        self._cache.move_to_end(token)
        return entry.principal

    def _check_revoked(self, jti: str | None) -> None:
        if jti is not None and self._revocations.is_revoked(jti):
            raise AuthenticationError("token_revoked", "the token has been revoked")

    def _remember(self, token: str, entry: _Entry) -> None:
        self._cache[token] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _peek_claims(obj: CompactSignature) -> dict[str, Any]:
    """The claims of a not-yet-verified token, used only to route it to its issuer."""
    return decode_claims(obj.payload)
