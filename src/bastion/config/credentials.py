"""Upstream credentials in the configuration: per-user OAuth to the upstream, and the vault key.

A route whose upstream has its own authorization says so under ``credentials``::

    routes:
      - name: tracker
        http: {url: "https://tracker.example/mcp"}
        credentials:
          oauth:                               # each user connects once, in the portal
            issuer: https://auth.tracker.example   # omit to discover it (RFC 9728, from the upstream's 401)
            client_id: bastion                 # omit to register (Client ID Metadata Document or RFC 7591)
            client_secret: {env: TRACKER_SECRET}
            scopes: [issues:read]

    credentials:
      vault_key: {env: BASTION_VAULT_KEY}      # 32 random bytes, base64url (`bastion credentials generate-key`)
      previous_vault_keys: [{file: /run/secrets/old-vault-key}]

Secrets are references only (``SecretRef``), never inline.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import AllowEntries, SecretRef, _Model
from bastion.config.exchange import TokenExchangeSettings

__all__ = ["RouteCredentials", "UpstreamOAuthSettings", "VaultSettings"]


def _https_url(value: str, what: str, *, allow_http: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an https:// URL with a host")
    if parts.scheme == "http" and not allow_http:
        raise ValueError(f"{what} must use https (set allow_http: true for a plain-http test server)")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} may not have a query or fragment")
    return value


class UpstreamOAuthSettings(_Model):
    """Per-user OAuth 2.1 to an upstream that has its own authorization server.

    ``issuer`` names the upstream's authorization server (its RFC 8414 metadata is
    fetched); without it the server is discovered the MCP way (2025-11-25
    basic/authorization, "Authorization Server Discovery"): the upstream's 401
    ``WWW-Authenticate`` ``resource_metadata`` or its RFC 9728 well-known document.
    ``client_id`` (with ``client_secret`` for a confidential client) is Bastion's
    registration there; without it Bastion offers a Client ID Metadata Document when
    the server supports them, else registers dynamically (RFC 7591). ``scopes`` are
    requested (default: what the protected resource metadata lists); ``resource``
    is the RFC 8707 resource (default: the one the upstream's metadata names, else
    its URL). Tokens are refreshed ``refresh_margin_s`` seconds before they expire.
    ``allow`` / ``allow_http`` let the authorization server sit on a private
    address or plain http (tests), as ``egress.allow`` does for everything.
    """

    issuer: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = None
    scopes: tuple[str, ...] = ()
    resource: str | None = None
    registration: Literal["auto", "metadata_document", "dynamic"] = "auto"
    refresh_margin_s: int = Field(default=60, ge=0, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    allow: AllowEntries = ()
    allow_http: bool = False

    @field_validator("scopes")
    @classmethod
    def _scope_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not scope or any(ch.isspace() or not ch.isprintable() for ch in scope):
                raise ValueError(f"scope {scope!r} must be a non-empty word")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamOAuthSettings:
        if self.issuer is not None:
            _https_url(self.issuer, "issuer", allow_http=self.allow_http)
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("client_secret needs client_id")
        if self.client_id is not None and self.registration != "auto":
            raise ValueError("registration applies only when client_id is not set")
        return self


class RouteCredentials(_Model):
    """``routes[].credentials``: exactly one of ``oauth`` (each user's own tokens, from the
    portal) or ``token_exchange`` (RFC 8693, minted per call from the user's identity)."""

    oauth: UpstreamOAuthSettings | None = None
    token_exchange: TokenExchangeSettings | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RouteCredentials:
        if (self.oauth is None) == (self.token_exchange is None):
            raise ValueError("credentials need exactly one of 'oauth' or 'token_exchange'")
        return self


class VaultSettings(_Model):
    """``credentials``: the key that encrypts the token vault (AES-256-GCM).

    ``vault_key`` is 32 random bytes written as base64url (43 characters); new
    records are sealed with it. ``previous_vault_keys`` still open records sealed
    before a rotation (``bastion credentials rotate`` re-seals them all with the
    current key, after which the old key can be dropped).
    """

    vault_key: SecretRef | None = None
    previous_vault_keys: tuple[SecretRef, ...] = ()

    @model_validator(mode="after")
    def _key_for_previous(self) -> VaultSettings:
        if self.previous_vault_keys and self.vault_key is None:
            raise ValueError("previous_vault_keys need a current vault_key")
        return self
