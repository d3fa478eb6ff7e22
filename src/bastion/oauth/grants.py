"""The token endpoint's grants and token revocation (OAuth 2.1 sections 3.2 and 4; RFC 7009).

- ``authorization_code``: a single-use code, bound to its client, redirect URI,
  PKCE challenge and resource. A replayed code revokes every token its first
  redemption issued (RFC 6749 section 4.1.2, OAuth 2.1 section 4.1.3).
- ``refresh_token``: opaque, rotated on every use (OAuth 2.1 section 4.3.1). A
  token used again after ``reuse_grace_s`` revokes its whole family and the
  family's access tokens; within the grace a duplicate (two racing refreshes)
  gets new tokens too.
- Access tokens are RFC 9068 JWTs whose audience is the grant's route only, carrying
  the signed-in person's identity provider (``bastion_idp``, from the grant's user; so a
  refreshed token keeps it).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.errors import OAuthError
from bastion.identity.tokens import TokenIssuer
from bastion.oauth.clients import Client
from bastion.oauth.records import Grant, digest
from bastion.oauth.requests import Resources, requested_scopes, verify_pkce
from bastion.oauth.store import AuthorizationStore
from bastion.stores.revocations import RevocationStore

__all__ = ["GrantService", "IssuedTokens"]


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """A token response (RFC 6749 section 5.1) and what it was issued for (for the audit record)."""

    body: Mapping[str, Any]
    grant: Grant
    jti: str


class GrantService:
    """Runs grants against the store; every refusal is an ``OAuthError`` with the RFC 6749 section 5.2 code.

    ``access_ttl_s`` is the access-token lifetime, ``refresh_ttl_s`` a family's
    absolute lifetime and ``reuse_grace_s`` the duplicate-refresh window (seconds).
    """

    def __init__(
        self,
        store: AuthorizationStore,
        issuer: TokenIssuer,
        revocations: RevocationStore,
        resources: Resources,
        *,
        access_ttl_s: int,
        refresh_ttl_s: int,
        reuse_grace_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._issuer = issuer
        self._revocations = revocations
        self._resources = resources
        self._access_ttl_s = access_ttl_s
        self._refresh_ttl_s = refresh_ttl_s
        self._reuse_grace_s = reuse_grace_s
        self._clock = clock

    async def authorization_code(self, client: Client, params: Mapping[str, str]) -> IssuedTokens:
        """Redeem ``params["code"]`` for ``client`` (already authenticated).

        Raises ``OAuthError``: ``invalid_grant`` (unknown, expired, used, another
        client's, redirect URI or PKCE mismatch), ``invalid_target`` (resource
        missing or not the code's).
        """
        code = params.get("code")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        family_id = secrets.token_hex(16)
        record = await self._store.redeem_code(digest(code), family_id)
        now = self._clock()
        if record is None:
            raise OAuthError("invalid_grant", "unknown authorization code")
        if record.used:
            if record.family_id is not None:
                await self._revoke(record.family_id, now)
            raise OAuthError("invalid_grant", "authorization code was already used; its tokens are revoked")
        if record.expires_at <= now:
            raise OAuthError("invalid_grant", "authorization code expired")
        if record.grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "authorization code was issued to another client")
        if params.get("redirect_uri") != record.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        verify_pkce(params.get("code_verifier"), record.code_challenge)
        _, resource = self._resources.route_for(params.get("resource"))
        if resource != record.grant.resource:
            raise OAuthError("invalid_target", "resource differs from the authorization request")
        await self._store.create_family(family_id, record.grant, now + self._refresh_ttl_s, now)
        issued = await self._issue(record.grant, family_id, now)
        if await self._store.family_revoked(family_id):  # the code was replayed meanwhile
            await self._revoke(family_id, now)
            raise OAuthError("invalid_grant", "authorization code was used twice; its tokens are revoked")
        return issued

    async def refresh_token(self, client: Client, params: Mapping[str, str]) -> IssuedTokens:
        """Rotate ``params["refresh_token"]`` for ``client`` (already authenticated).

        Raises ``OAuthError``: ``invalid_grant`` (unknown, expired, revoked,
        another client's, reused after rotation: the family is then revoked),
        ``invalid_target``, ``invalid_scope`` (more scopes than granted).
        """
        token = params.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        now = self._clock()
        # Check what the request asks for before using the token up: a refused request
        # (another client's token, a wrong resource or scope) does not count as a use.
        found = await self._store.peek_refresh(digest(token))
        if found is None:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if found.grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "refresh token was issued to another client")
        grant = found.grant
        if "resource" in params:
            _, resource = self._resources.route_for(params["resource"])
            if resource != grant.resource:
                raise OAuthError("invalid_target", "resource differs from the original grant")
        if "scope" in params:
            scopes = requested_scopes(params["scope"], grant.scopes, default=grant.scopes)
            grant = Grant(grant.client_id, grant.route, grant.resource, scopes, grant.user)
        use = await self._store.use_refresh(digest(token), now)
        if use is None:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if use.revoked:
            raise OAuthError("invalid_grant", "refresh token was revoked")
        if use.expires_at <= now:
            raise OAuthError("invalid_grant", "refresh token expired")
        if use.previous_use is not None and now - use.previous_use > self._reuse_grace_s:
            await self._revoke(use.family_id, now)
            raise OAuthError(
                "invalid_grant", "refresh token reused after rotation; every token of the grant is revoked"
            )
        return await self._issue(grant, use.family_id, now)

    async def revoke(self, client: Client, token: str) -> str | None:
        """Revoke a refresh token's family (RFC 7009 section 2.1); returns the family id, None if unknown.

        Raises ``OAuthError("unauthorized_client")`` when the token belongs to another client.
        """
        found = await self._store.family_of(digest(token))
        if found is None:
            return None
        family_id, client_id = found
        if client_id != client.client_id:
            raise OAuthError("unauthorized_client", "the token was issued to another client")
        await self._revoke(family_id, self._clock())
        return family_id

    async def revoke_user(self, sub: str, client_id: str | None) -> int:
        """Revoke every family of ``sub`` (for one client, or all); returns how many."""
        families = await self._store.families_of(sub, client_id)
        for family_id in families:
            await self._revoke(family_id, self._clock())
        return len(families)

    async def _revoke(self, family_id: str, now: float) -> None:
        for jti, expires_at in await self._store.revoke_family(family_id, now):
            await self._revocations.revoke(jti, expires_at)

    async def _issue(self, grant: Grant, family_id: str, now: float) -> IssuedTokens:
        user = grant.user
        minted = self._issuer.mint(
            sub=user.sub,
            audience=grant.resource,
            ttl_s=self._access_ttl_s,
            email=user.email,
            name=user.name,
            groups=user.groups,
            client_id=grant.client_id,
            scopes=grant.scopes,
            idp=user.idp,
            now=now,
        )
        jti = str(minted.claims["jti"])
        await self._store.add_access_token(family_id, jti, int(minted.claims["exp"]))
        refresh = secrets.token_urlsafe(32)
        await self._store.add_refresh(digest(refresh), family_id, now)
        body = {
            "access_token": minted.token,
            "token_type": "Bearer",
            "expires_in": self._access_ttl_s,
            "refresh_token": refresh,
            "scope": " ".join(grant.scopes),
        }
        return IssuedTokens(body, grant, jti)
