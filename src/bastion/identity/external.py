"""Trusted external token issuers: their settings and a cache of their public keys (JWKS, RFC 7517 section 5).

The cache fetches ``jwks_url`` with a ``JWKSFetch`` (in the gateway
``guarded_jwks_fetch``: through the egress guard, so a JWKS on a private or
loopback address must be listed in ``egress.allow``), keeps the key set for
``jwks_cache_s``, refetches early when a token names an unknown ``kid`` (at
most once per ``REFETCH_INTERVAL_S``; a failed fetch is not retried sooner
either, so a down IdP is not hammered), caps the response at ``MAX_JWKS_BYTES``
and the request at ``FETCH_TIMEOUT_S``. If a refetch fails the previously
fetched keys stay in use; with no keys at all the token is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key
from joserfc.jws import JWSRegistry
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.egress.client import EgressGuard
from bastion.errors import AuthenticationError, EgressDenied, UpstreamUnavailable
from bastion.principal import IDP_NAME_PATTERN

__all__ = [
    "FETCH_TIMEOUT_S",
    "MAX_JWKS_BYTES",
    "REFETCH_INTERVAL_S",
    "ExternalIssuer",
    "JWKSCache",
    "JWKSFetch",
    "guarded_jwks_fetch",
]

MAX_JWKS_BYTES = 1024 * 1024
FETCH_TIMEOUT_S = 5.0
REFETCH_INTERVAL_S = 30.0
#: Asymmetric JWS algorithms an external issuer may use (RFC 7518 section 3.1, RFC 8037).
EXTERNAL_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ExternalIssuer(BaseModel):
    """A trusted external OAuth/OIDC issuer whose JWT access tokens Bastion accepts.

    ``issuer`` must equal the tokens' ``iss``; ``audience`` must be in their
    ``aud``; ``jwks_url`` is https (http only on a loopback host, for local
    identity providers); ``algorithms`` is the allow list (never ``none`` or
    HS*: a public JWKS cannot carry a shared secret, RFC 8725 section 3.1);
    ``groups_claim`` names the claim holding group names; ``kind`` is the Cedar
    principal type; ``jwks_cache_s`` how long (seconds) a fetched key set is reused;
    ``routes`` the names of the routes that accept this issuer's tokens (required: an
    external token is never good for every route by default). ``name`` (optional, like an
    identity provider's: lowercase letters, digits, ``-``) is what policies see as
    ``principal.idp`` (see :attr:`idp`).
    Raises ``pydantic.ValidationError`` naming the bad field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=IDP_NAME_PATTERN)
    jwks_url: str
    audience: str = Field(min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    groups_claim: str = Field(default="groups", min_length=1)
    kind: Literal["User", "ServiceAccount"] = "ServiceAccount"
    jwks_cache_s: int = Field(default=300, ge=1)
    routes: tuple[str, ...] = Field(min_length=1)

    @property
    def idp(self) -> str:
        """``principal.idp`` of this issuer's tokens: ``name``, else ``issuer`` (never a token claim)."""
        return self.name or self.issuer

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg.lower() == "none":
                raise ValueError("algorithm 'none' is never accepted")
            if alg.upper().startswith("HS"):
                raise ValueError(f"{alg} needs a shared secret, which a public JWKS cannot carry")
            if alg not in EXTERNAL_ALGORITHMS:
                raise ValueError(f"unsupported algorithm {alg!r}; use one of {sorted(EXTERNAL_ALGORITHMS)}")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.hostname or parts.scheme not in ("https", "http"):
            raise ValueError("jwks_url must be an absolute https URL")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            raise ValueError("jwks_url must use https (plain http only on a loopback host)")
        return value


def _import_keys(document: Any) -> list[Key]:
    """The usable public signing keys of a JWK Set document; other entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: list[Key] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or _PRIVATE_MEMBERS & entry.keys() or entry.get("use", "sig") != "sig":
            continue
        try:
            keys.append(JWKRegistry.import_key(entry))
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    return keys


#: Fetches a JWK Set: ``url -> body`` of a 200 response. Raises ``ValueError`` (any other status),
#: ``EgressDenied`` (refused by the egress guard, too large) or ``UpstreamUnavailable``.
JWKSFetch = Callable[[str], Awaitable[bytes]]


class JWKSCache:
    """The public keys at ``jwks_url``, fetched lazily by ``fetch`` and refreshed as described above.

    ``cache_s`` is how long (seconds) a fetched key set is reused; ``clock``
    returns monotonic seconds (tests pass a fake). ``for_issuer`` builds the
    cache of an :class:`ExternalIssuer`.
    """

    def __init__(
        self,
        jwks_url: str,
        fetch: JWKSFetch,
        *,
        cache_s: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty cache; nothing is fetched until the first :meth:`key_for`."""
        self._url = jwks_url
        self._fetch = fetch
        self._cache_s = cache_s
        self._clock = clock
        self._keys: list[Key] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failed_at: float | None = None  # failed fetches back off for REFETCH_INTERVAL_S
        self._lock = asyncio.Lock()

    @classmethod
    def for_issuer(
        cls, settings: ExternalIssuer, fetch: JWKSFetch, *, clock: Callable[[], float] = time.monotonic
    ) -> JWKSCache:
        """The key cache of an external issuer, fetching ``settings.jwks_url`` with ``fetch``."""
        return cls(settings.jwks_url, fetch, cache_s=settings.jwks_cache_s, clock=clock)

    async def key_for(self, kid: str | None, alg: str) -> Key:
        """The issuer's key for ``kid`` that can verify ``alg`` (``alg`` already allow-listed).

        Without ``kid``, the one key fitting ``alg``, if exactly one does.
        Raises ``AuthenticationError``: ``unknown_kid``, or ``jwks_unavailable``
        when no key set could ever be fetched.
        """
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._cache_s
        if stale and (self._failed_at is None or now - self._failed_at >= REFETCH_INTERVAL_S):
            await self._refresh(now)
        key = self._find(kid, alg)
        if key is None and (self._attempted_at is None or now - self._attempted_at >= REFETCH_INTERVAL_S):
            await self._refresh(now)
            key = self._find(kid, alg)
        if key is None:
            if self._fetched_at is None:
                raise AuthenticationError("jwks_unavailable", "the issuer's JWKS could not be fetched")
            raise AuthenticationError("unknown_kid", "no key of the external issuer matches the token")
        return key

    def _find(self, kid: str | None, alg: str) -> Key | None:
        model = JWSRegistry.algorithms[alg]
        fitting: list[Key] = []
        for key in self._keys:
            try:
                model.check_key(key)
            except JoseError:
                continue
            fitting.append(key)
        if kid is None:
            return fitting[0] if len(fitting) == 1 else None
        return next((key for key in fitting if key.kid == kid), None)

    async def _refresh(self, now: float) -> None:
        async with self._lock:
            if self._attempted_at is not None and self._attempted_at >= now:
                return  # another task refreshed while we waited
            self._attempted_at = self._clock()
            try:
                async with asyncio.timeout(FETCH_TIMEOUT_S):
                    body = await self._fetch(self._url)
                self._keys = _import_keys(json.loads(body))
            except (ValueError, TimeoutError, RecursionError, EgressDenied, UpstreamUnavailable):
                self._failed_at = self._attempted_at
                return  # keep the keys we had; see module docstring
            self._fetched_at, self._failed_at = self._attempted_at, None


def guarded_jwks_fetch(guard: EgressGuard) -> JWKSFetch:
    """A ``JWKSFetch`` through ``guard`` (``EgressGuard.fetch``, purpose ``"jwks"``): each hop's
    address checked and redirects re-checked, at most ``MAX_JWKS_BYTES`` (RFC 7517 section 5
    gives no size; a key set is a few kB), ``FETCH_TIMEOUT_S``. Plain http only where
    ``ExternalIssuer`` admits it (a loopback ``jwks_url``), and then only if ``egress.allow``
    lists the address. Raises ``ValueError`` for a status other than 200."""

    async def fetch(url: str) -> bytes:
        result = await guard.fetch(
            url,
            max_bytes=MAX_JWKS_BYTES,
            timeout_s=FETCH_TIMEOUT_S,
            accept="application/jwk-set+json, application/json",
            allow_http=urlsplit(url).scheme == "http",
            purpose="jwks",
        )
        if result.status != 200:
            raise ValueError(f"JWKS fetch from {result.url} answered {result.status}")
        return result.body

    return fetch
