"""Signing people in through OpenID Connect providers: Bastion as the relying party.

The authorization code flow of OpenID Connect Core 1.0 section 3.1 with PKCE S256
(RFC 7636), ``state`` and ``nonce``. The provider's endpoints come from its
discovery document (OpenID Connect Discovery 1.0 section 4, checked by authlib's
``OpenIDProviderMetadata``; its ``issuer`` must equal the configured one, section
4.3). The ID token is verified as section 3.1.3.7 asks: signature with the
provider's JWKS (joserfc, an asymmetric algorithm the provider announces), then
``iss``, ``aud`` (Bastion's client id, no other audience), ``azp``, ``exp``,
``iat``, ``nonce`` and ``at_hash`` (authlib's ``CodeIDToken``). Claims the ID
token lacks come from the UserInfo endpoint, whose ``sub`` must be the ID
token's (section 5.3.2).

Every request to the provider goes through the egress guard: a provider on a
private address must be in ``egress.allow``, and a redirect is never followed
with a code or a token. Failures raise ``bastion.errors.IdentityProviderError`` with a
message safe to show the person signing in.

    provider = OpenIDProvider(settings, egress, redirect_uri="https://bastion.example/oauth/callback")
    url = await provider.authorization_url(state=..., nonce=..., code_verifier=...)
    user = await provider.sign_in(code=..., code_verifier=..., nonce=...)   # -> UserIdentity
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import InvalidClaimError, JoseError
from joserfc.jws import extract_compact

from bastion.config.oauth import IdentityProviderSettings
from bastion.egress.client import EgressGuard, FetchResult
from bastion.errors import AuthenticationError, EgressDenied, IdentityProviderError, UpstreamUnavailable
from bastion.identity.external import EXTERNAL_ALGORITHMS, JWKSCache
from bastion.oauth.client_auth import basic_authorization
from bastion.oauth.records import UserIdentity

__all__ = ["OpenIDProvider", "ProviderEndpoints", "groups_from"]

_log = logging.getLogger("bastion.oauth.federation")

_MAX_DOCUMENT_BYTES = 64 * 1024
_MAX_JWKS_BYTES = 256 * 1024
_METADATA_CACHE_S = 3600
_JWKS_CACHE_S = 300
_MAX_GROUPS = 256
_MAX_GROUP_CHARS = 256


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """What Bastion uses of a provider's discovery document (OpenID Connect Discovery 1.0 section 3)."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    signing_algorithms: frozenset[str]
    iss_parameter: bool


def groups_from(value: Any) -> tuple[tuple[str, ...], int]:
    """``(groups, dropped)`` from a groups claim: a list of strings (or one string).

    A group is kept when it is a non-empty string of at most 256 characters with
    no whitespace or control characters (Bastion's tokens carry groups space-free);
    at most 256 are kept. ``dropped`` counts what was left out.
    """
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    dropped = 0 if isinstance(value, (str, list)) or value is None else 1
    kept: list[str] = []
    for item in items:
        if not _usable_group(item) or (item not in kept and len(kept) == _MAX_GROUPS):
            dropped += 1
        elif item not in kept:
            kept.append(item)
    return tuple(kept), dropped


def _usable_group(item: Any) -> bool:
    return (
        isinstance(item, str)
        and 0 < len(item) <= _MAX_GROUP_CHARS
        and item.isprintable()
        and not any(ch.isspace() for ch in item)
    )


class OpenIDProvider:
    """One configured OpenID Connect provider and Bastion's client there.

    ``redirect_uri`` is Bastion's callback (``<base_url>/oauth/callback``);
    ``clock`` returns epoch seconds. Raises ``ConfigError`` when the client
    secret reference cannot be resolved.
    """

    def __init__(
        self,
        settings: IdentityProviderSettings,
        egress: EgressGuard,
        *,
        redirect_uri: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redirect_uri = redirect_uri
        self._egress = egress
        self._clock = clock
        self._secret = settings.client_secret.resolve() if settings.client_secret is not None else None
        self._endpoints: ProviderEndpoints | None = None
        self._endpoints_at = 0.0
        self._lock = asyncio.Lock()
        self._keys: JWKSCache | None = None

    @property
    def name(self) -> str:
        """The configured name (URLs, audit records, the ``<name>:`` prefix of user ids)."""
        return self.settings.name

    async def endpoints(self) -> ProviderEndpoints:
        """The provider's endpoints from its discovery document, fetched at most hourly.

        Raises ``IdentityProviderError`` when the document cannot be fetched, is not
        valid metadata, names another issuer, or lacks PKCE S256 when it lists methods.
        """
        async with self._lock:
            if self._endpoints is None or self._clock() - self._endpoints_at >= _METADATA_CACHE_S:
                self._endpoints = await self._discover()
                self._endpoints_at = self._clock()
            return self._endpoints

    async def _discover(self) -> ProviderEndpoints:
        issuer = self.settings.issuer
        document = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery")
        metadata = OpenIDProviderMetadata(document)
        try:
            metadata.validate()
        except (ValueError, TypeError, AttributeError) as exc:  # the last two: a value of the wrong JSON type
            detail = exc if isinstance(exc, ValueError) else "a value has the wrong type"
            raise IdentityProviderError(f"{self.name}: the discovery document is not valid: {detail}") from None
        if metadata.get("issuer") != issuer:
            raise IdentityProviderError(f"{self.name}: the discovery document names another issuer")
        methods = metadata.get("code_challenge_methods_supported")
        if methods is not None and (not isinstance(methods, list) or "S256" not in methods):
            raise IdentityProviderError(f"{self.name}: the provider does not support PKCE S256")
        announced = metadata.get("id_token_signing_alg_values_supported") or []
        # never empty: validate() insists on RS256 (Discovery 1.0 section 3)
        algorithms = frozenset(alg for alg in announced if isinstance(alg, str) and alg in EXTERNAL_ALGORITHMS)
        userinfo = metadata.get("userinfo_endpoint")
        endpoints = ProviderEndpoints(
            authorization_endpoint=str(metadata["authorization_endpoint"]),
            token_endpoint=str(metadata["token_endpoint"]),
            jwks_uri=str(metadata["jwks_uri"]),
            userinfo_endpoint=str(userinfo) if isinstance(userinfo, str) else None,
            signing_algorithms=algorithms,
            iss_parameter=metadata.get("authorization_response_iss_parameter_supported") is True,
        )
        if self._keys is None or endpoints.jwks_uri != (self._endpoints.jwks_uri if self._endpoints else None):
            self._keys = JWKSCache(endpoints.jwks_uri, self._fetch_jwks, cache_s=_JWKS_CACHE_S)
        return endpoints

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        """The provider's authorization URL for this sign-in (OpenID Connect Core section 3.1.2.1).

        Raises ``IdentityProviderError`` when the provider's metadata is unavailable.
        """
        endpoints = await self.endpoints()
        return str(
            prepare_grant_uri(
                endpoints.authorization_endpoint,
                self.settings.client_id,
                "code",
                redirect_uri=self.redirect_uri,
                scope=" ".join(self.settings.scopes),
                state=state,
                nonce=nonce,
                code_challenge=create_s256_code_challenge(code_verifier),
                code_challenge_method="S256",
            )
        )

    async def check_issuer(self, iss: str | None) -> None:
        """Check the ``iss`` of the authorization response (RFC 9207 section 2.4): when present it
        must be this provider's issuer; when the provider announces it (its discovery document,
        fetched if this process has not yet), it must be present. Raises ``IdentityProviderError``."""
        expected = (await self.endpoints()).iss_parameter
        if (iss is None and expected) or (iss is not None and iss != self.settings.issuer):
            raise IdentityProviderError(f"{self.name}: the response names another issuer (RFC 9207)")

    async def sign_in(self, *, code: str, code_verifier: str, nonce: str) -> tuple[UserIdentity, dict[str, Any]]:
        """Redeem ``code`` and return who signed in and what is worth recording.

        The identity's ``sub`` is ``<name>:<sub>``, ``idp`` the provider's name;
        ``email`` only when ``email_verified`` is true (unless the provider is
        configured to trust unverified email); groups from ``groups_claim``. The
        second value is ``{"provider", "provider_sub", "dropped_groups"}`` for the audit log.
        Raises ``IdentityProviderError`` for anything the provider or its tokens get wrong.
        """
        endpoints = await self.endpoints()
        tokens = await self._redeem(endpoints, code, code_verifier)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str):
            raise IdentityProviderError(f"{self.name}: the token response has no ID token")
        claims = await self._verify_id_token(
            endpoints, id_token, nonce, access_token if isinstance(access_token, str) else None
        )
        wanted = (self.settings.groups_claim, "email", "email_verified", "name")
        if (
            self.settings.userinfo
            and endpoints.userinfo_endpoint
            and isinstance(access_token, str)
            and any(name not in claims for name in wanted)
        ):
            info = await self._userinfo(endpoints.userinfo_endpoint, access_token)
            if info.get("sub") != claims["sub"]:
                raise IdentityProviderError(f"{self.name}: the UserInfo response is for another subject")
            claims = {**info, **claims}
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> tuple[UserIdentity, dict[str, Any]]:
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > 255 or not sub.isprintable():
            raise IdentityProviderError(f"{self.name}: the ID token's sub is not a usable identifier")
        groups, dropped = groups_from(claims.get(self.settings.groups_claim))
        email = claims.get("email")
        verified = claims.get("email_verified") is True or self.settings.trust_unverified_email
        name = claims.get("name")
        identity = UserIdentity(
            sub=f"{self.name}:{sub}",
            idp=self.name,
            email=email if isinstance(email, str) and verified else None,
            name=name if isinstance(name, str) else None,
            groups=groups,
        )
        return identity, {"provider": self.name, "provider_sub": sub, "dropped_groups": dropped}

    async def _redeem(self, endpoints: ProviderEndpoints, code: str, code_verifier: str) -> dict[str, Any]:
        """The token response for ``code`` (RFC 6749 section 4.1.3, RFC 7636 section 4.5)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._secret is None:
            form["client_id"] = self.settings.client_id
        else:  # client_secret_basic: each part form-encoded first (RFC 6749 section 2.3.1)
            headers["Authorization"] = basic_authorization(self.settings.client_id, self._secret)
        result = await self._request("POST", endpoints.token_endpoint, "token", headers, urlencode(form).encode())
        body = result.json_object()
        if result.status != 200:
            error = body.get("error") if body else None
            detail = f" ({error})" if isinstance(error, str) and error.isprintable() and len(error) < 64 else ""
            raise IdentityProviderError(f"{self.name}: the provider refused the sign-in code{detail}")
        if body is None or str(body.get("token_type", "")).lower() != "bearer":
            raise IdentityProviderError(f"{self.name}: the token response is not a bearer token response")
        return body

    async def _verify_id_token(
        self, endpoints: ProviderEndpoints, id_token: str, nonce: str, access_token: str | None
    ) -> dict[str, Any]:
        """The ID token's claims once its signature and claims check out (Core section 3.1.3.7)."""
        keys = self._keys
        if keys is None:
            raise IdentityProviderError(f"{self.name}: the provider's keys are unknown")
        try:
            header = extract_compact(id_token.encode("ascii")).headers()
            alg = header.get("alg")
            if not isinstance(alg, str) or alg not in endpoints.signing_algorithms:
                raise IdentityProviderError(f"{self.name}: the ID token is signed with an algorithm not accepted")
            key = await keys.key_for(header.get("kid"), str(alg))
            token = jwt.decode(id_token, key, algorithms=[str(alg)])
            claims = CodeIDToken(
                token.claims,
                token.header,
                options={
                    "iss": {"essential": True, "value": self.settings.issuer},
                    "aud": {"essential": True, "value": self.settings.client_id},
                },
                params={"nonce": nonce, "client_id": self.settings.client_id, "access_token": access_token},
            )
            claims.validate(now=int(self._clock()), leeway=self.settings.clock_skew_s)
            if isinstance(claims["aud"], list) and set(claims["aud"]) != {self.settings.client_id}:
                raise InvalidClaimError("aud")  # another audience, which Bastion cannot trust (step 3)
        except AuthenticationError as exc:
            raise IdentityProviderError(f"{self.name}: the ID token's signing key is unknown ({exc.reason})") from None
        except (JoseError, ValueError, UnicodeError) as exc:
            what = getattr(exc, "claim", None) or type(exc).__name__
            raise IdentityProviderError(f"{self.name}: the ID token is not valid ({what})") from None
        return dict(claims)

    async def _userinfo(self, url: str, access_token: str) -> dict[str, Any]:
        """The UserInfo response as JSON (OpenID Connect Core section 5.3); a signed one is refused."""
        headers = {"Authorization": f"Bearer {access_token}"}
        result = await self._request("GET", url, "UserInfo", headers, b"")
        body = result.json_object() if result.status == 200 else None
        if body is None:
            raise IdentityProviderError(f"{self.name}: the UserInfo endpoint answered {result.status}, not JSON")
        return body

    async def _fetch_jwks(self, url: str) -> bytes:
        """The provider's JWK Set (a ``JWKSFetch``) through the egress guard."""
        result = await self._egress.fetch(
            url,
            max_bytes=_MAX_JWKS_BYTES,
            timeout_s=self.settings.timeout_s,
            accept="application/jwk-set+json",
            purpose="identity_provider",
        )
        if result.status != 200:
            raise ValueError(f"JWKS fetch from {url} answered {result.status}")
        return result.body

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            result = await self._egress.fetch(
                url, max_bytes=_MAX_DOCUMENT_BYTES, timeout_s=self.settings.timeout_s, purpose="identity_provider"
            )
        except (EgressDenied, UpstreamUnavailable) as exc:
            _log.warning("identity provider %s: %s fetch failed: %s", self.name, what, exc.message)
            raise IdentityProviderError(f"{self.name}: the provider cannot be reached ({what})") from None
        body = result.json_object() if result.status == 200 else None
        if body is None:
            raise IdentityProviderError(f"{self.name}: the {what} document answered {result.status}, not JSON")
        return body

    async def _request(self, method: str, url: str, what: str, headers: dict[str, str], body: bytes) -> FetchResult:
        try:
            return await self._egress.send(
                method,
                url,
                headers=headers,
                body=body,
                max_bytes=_MAX_DOCUMENT_BYTES,
                timeout_s=self.settings.timeout_s,
                purpose="identity_provider",
            )
        except (EgressDenied, UpstreamUnavailable) as exc:
            _log.warning("identity provider %s: %s request failed: %s", self.name, what, exc.message)
            raise IdentityProviderError(f"{self.name}: the provider cannot be reached ({what})") from None
