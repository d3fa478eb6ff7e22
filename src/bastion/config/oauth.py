"""The authorization server's configuration (``identity.authorization_server``) and egress settings.

Bastion is the OAuth 2.1 authorization server of its routes (MCP 2025-11-25,
basic/authorization). Clients are pre-registered here, identified by a Client
ID Metadata Document (an https URL), or registered dynamically (RFC 7591, off
by default). Users sign in through OpenID Connect providers
(``identity_providers``) or a local users file (development only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import AllowEntries, SecretRef, _Model
from bastion.identity.durations import parse_duration
from bastion.principal import IDP_NAME_PATTERN, RESERVED_IDPS

__all__ = [
    "AuthorizationServerSettings",
    "ClientMetadataDocumentSettings",
    "EgressSettings",
    "IdentityProviderSettings",
    "RegisteredClient",
    "check_redirect_uri",
]

_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 section 3.3 scope-token


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def check_redirect_uri(uri: str) -> str:
    """Validate a client's redirect URI (RFC 6749 section 3.1.2, OAuth 2.1 section 2.3.1, RFC 8252 section 7).

    An absolute URI without a fragment: https, http only for a loopback host
    (native apps), or a private-use scheme with a dot (``com.example.app:/cb``).
    Returns it unchanged; raises ``ValueError`` naming what is wrong.
    """
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri:
        raise ValueError(f"redirect URI {uri!r} must be absolute and have no fragment")
    if parts.scheme == "https":
        if not parts.hostname:
            raise ValueError(f"redirect URI {uri!r} has no host")
    elif parts.scheme == "http":
        if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError(f"redirect URI {uri!r}: http is allowed only for a loopback host")
    elif "." not in parts.scheme or parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise ValueError(f"redirect URI {uri!r}: scheme {parts.scheme!r} is not allowed")
    return uri


class RegisteredClient(_Model):
    """A client registered in the configuration (RFC 6749 section 2).

    Public clients (``client_secret`` unset) authenticate with PKCE alone; a
    confidential client's secret is a reference and is sent with HTTP Basic
    or in the form body (``client_secret_basic`` / ``client_secret_post``).
    """

    client_id: str = Field(min_length=1, max_length=255)
    client_name: str | None = None
    redirect_uris: tuple[str, ...] = Field(min_length=1)
    client_secret: SecretRef | None = None

    _redirects = field_validator("redirect_uris")(lambda value: tuple(check_redirect_uri(uri) for uri in value))


class IdentityProviderSettings(_Model):
    """An OpenID Connect provider people sign in with (OpenID Connect Core 1.0 section 3.1).

    Bastion is its relying party: authorization code flow with PKCE S256, ``state``
    and ``nonce``; the provider's metadata comes from ``issuer`` + ``/.well-known/
    openid-configuration`` (OpenID Connect Discovery 1.0 section 4) through the egress
    guard, so a provider on a private address must be in ``egress.allow``. Register
    ``<base_url>/oauth/callback`` as the redirect URI at the provider.

    ``name`` appears in URLs, audit records and user ids (a signed-in user's subject is
    ``<name>:<sub>``: ``sub`` is unique only per issuer, section 2), and is the person's
    ``principal.idp`` in policies (carried in the ``bastion_idp`` claim); ``label`` is the
    sign-in button's text. ``client_secret`` is a reference (``client_secret_basic``);
    without one Bastion is a public client. ``groups_claim`` names the claim (in the ID
    token or the UserInfo response) whose strings become Cedar ``Group`` membership.
    ``userinfo`` fetches the UserInfo response for claims the ID token lacks. An email is
    kept only when ``email_verified`` is true, unless ``trust_unverified_email`` (a provider
    that never sends ``email_verified`` but controls every address it issues).
    ``clock_skew_s`` is the leeway on ``exp``/``iat``; ``timeout_s`` bounds each request.
    """

    name: str = Field(pattern=IDP_NAME_PATTERN)
    label: str | None = Field(default=None, max_length=64)
    issuer: str
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretRef | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    groups_claim: str = Field(default="groups", min_length=1)
    userinfo: bool = True
    trust_unverified_email: bool = False
    clock_skew_s: int = Field(default=60, ge=0, le=600)
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("issuer")
    @classmethod
    def _https_issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"issuer {value!r} must be an https URL without query or fragment")
        return value

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("scopes must include 'openid' (OpenID Connect Core section 3.1.2.1)")
        for scope in value:
            if not _SCOPE.match(scope):
                raise ValueError(f"{scope!r} is not a valid scope token (RFC 6749 section 3.3)")
        return value

    @property
    def display_name(self) -> str:
        """What the sign-in button says after "Sign in with"."""
        return self.label or self.name


class ClientMetadataDocumentSettings(_Model):
    """Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25).

    ``allowed_domains`` (empty: any) limits which hosts may identify clients;
    a client from a listed domain is shown as verified on the consent page.
    """

    enabled: bool = True
    allowed_domains: tuple[str, ...] = ()
    max_bytes: int = Field(default=5 * 1024, ge=512, le=1024 * 1024)
    timeout_s: float = Field(default=5.0, gt=0, le=30)
    max_cache_s: int = Field(default=24 * 3600, ge=0)


class AuthorizationServerSettings(_Model):
    """Bastion's OAuth 2.1 authorization server (RFC 8414 metadata at the issuer).

    Lifetimes accept durations such as ``60s``, ``10m``, ``30d``.
    ``refresh_reuse_grace`` is how long after a refresh token's first use a
    duplicate use still gets new tokens (two racing refreshes of one client);
    any later reuse revokes the whole token family. ``scopes`` are all the
    scopes Bastion grants; ``default_scopes`` those a client gets when it asks for
    none and that a route's 401 challenge names. The others are for step-up: a
    policy annotated ``@scope("x")`` asks for ``x`` with a 403 ``insufficient_scope``.
    """

    enabled: bool = True
    scopes: tuple[str, ...] = ("mcp",)
    default_scopes: tuple[str, ...] = ("mcp",)
    clients: tuple[RegisteredClient, ...] = ()
    client_metadata_documents: ClientMetadataDocumentSettings = ClientMetadataDocumentSettings()
    dynamic_registration: bool = False
    identity_providers: tuple[IdentityProviderSettings, ...] = ()
    users_file: Path | None = None
    code_ttl: Annotated[int, Field(ge=1, le=600)] = 60
    request_ttl: Annotated[int, Field(ge=60, le=3600)] = 600
    sign_in_ttl: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 8 * 3600
    refresh_token_ttl: Annotated[int, Field(ge=60, le=365 * 24 * 3600)] = 30 * 24 * 3600
    refresh_reuse_grace: Annotated[int, Field(ge=0, le=60)] = 5

    _durations = field_validator(
        "code_ttl", "request_ttl", "sign_in_ttl", "refresh_token_ttl", "refresh_reuse_grace", mode="before"
    )(_duration)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one scope is needed")
        for scope in value:
            if not _SCOPE.match(scope):
                raise ValueError(f"{scope!r} is not a valid scope token (RFC 6749 section 3.3)")
        return value

    @model_validator(mode="after")
    def _default_scopes(self) -> AuthorizationServerSettings:
        unknown = sorted(set(self.default_scopes) - set(self.scopes))
        if unknown:
            raise ValueError(f"default_scopes must be among scopes; not a scope: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _unique_clients(self) -> AuthorizationServerSettings:
        ids = [client.client_id for client in self.clients]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"client ids must be unique; repeated: {', '.join(dupes)}")
        names = [provider.name for provider in self.identity_providers]
        if RESERVED_IDPS.intersection(names) or len(set(names)) != len(names):
            raise ValueError(
                "identity provider names must be unique and not 'local' (the users file's name) "
                "or 'bastion' (tokens Bastion mints with nobody signing in)"
            )
        return self


class EgressSettings(_Model):
    """Every outbound connection: upstreams, client metadata documents, identity providers, JWKS,
    upstream authorization servers and token exchange.

    ``allow`` lists destinations that are private on purpose (CIDRs such as
    ``10.0.0.0/8`` or ``host[:port]``); ``ca_file`` is an extra CA bundle (PEM) to
    trust besides the system's, e.g. the company's internal CA, for every one of
    those connections (HTTPS upstreams included).
    """

    allow: AllowEntries = ()
    ca_file: Path | None = None
