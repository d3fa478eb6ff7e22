"""A route's upstream credential minted by OAuth 2.0 Token Exchange (RFC 8693).

For such a route Bastion asks a Security Token Service (STS) for a short-lived,
audience-restricted token for the calling user and presents that token upstream;
the client's own token never goes upstream. The request is RFC 8693 section 2.1:
Bastion's client credentials (``client_secret_basic``, RFC 6749 section 2.3.1), a
subject token Bastion signs for the user, and the target (``audience`` and/or
``resource``, RFC 8707) and ``scope`` of the token wanted::

    token_exchange:
      token_endpoint: https://sts.example/oauth2/token
      client_id: bastion
      client_secret: {env: STS_CLIENT_SECRET}
      audience: https://api.example
      scopes: [notes.read]
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import AllowEntries, SecretRef, _Model
from bastion.egress.allowlist import AllowList

__all__ = ["ACCESS_TOKEN_TYPE_URI", "JWT_TOKEN_TYPE_URI", "PRESENTABLE_TOKEN_TYPES", "TokenExchangeSettings"]

#: RFC 8693 section 3 token type identifiers Bastion can present upstream as a bearer token.
ACCESS_TOKEN_TYPE_URI = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 -- a URN, not a secret
JWT_TOKEN_TYPE_URI = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 -- a URN, not a secret
PRESENTABLE_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE_URI, JWT_TOKEN_TYPE_URI})

_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 section 3.3 scope-token


class TokenExchangeSettings(_Model):
    """How to obtain a route's upstream token by token exchange (RFC 8693 section 2.1).

    - ``token_endpoint``: the STS's token endpoint, an https URL without fragment or user
      info (RFC 6749 section 3.2); plain http only with ``allow_http: true`` (tests, a
      sidecar on loopback).
    - ``client_id`` / ``client_secret``: Bastion's client at the STS. With a secret (a
      reference, ``{env: NAME}`` or ``{file: PATH}``, never inline) Bastion authenticates
      with ``client_secret_basic`` (RFC 6749 section 2.3.1); without one it sends
      ``client_id`` in the form as a public client.
    - ``audience`` / ``resource``: where the issued token will be used (RFC 8693 section
      2.1; ``resource`` is an absolute URI without fragment, RFC 8707 section 2). At least
      one is required: a token without a target is not audience-restricted.
    - ``scopes``: the ``scope`` requested (RFC 6749 section 3.3 scope-tokens).
    - ``requested_token_type``: ``urn:ietf:params:oauth:token-type:access_token`` (default)
      or ``...:jwt``, the two types Bastion can present as a bearer token (section 3).
    - ``subject_token_audience``: the ``aud`` of the subject token Bastion mints for the
      STS (the identifier the STS expects, often its issuer URL); defaults to
      ``token_endpoint``. ``subject_token_ttl_s``: that token's lifetime in seconds
      (1..300, default 60); it is used once, right away.
    - ``refresh_margin_s``: a cached upstream token is exchanged again this many seconds
      before it expires (0..3600, default 30).
    - ``timeout_s``: bound on one exchange in seconds (default 10, at most 60).
    - ``allow``: egress allow list entries (CIDRs, ``host[:port]``) for an STS on a
      private address, as ``egress.allow``; ``allow_list`` is the parsed form the
      guard that reaches the STS must be built with.

    Raises ``pydantic.ValidationError`` naming the key on any invalid value.
    """

    token_endpoint: str
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretRef | None = None
    audience: str | None = Field(default=None, min_length=1, max_length=2048)
    resource: str | None = None
    scopes: tuple[str, ...] = ()
    requested_token_type: str = ACCESS_TOKEN_TYPE_URI
    subject_token_audience: str | None = Field(default=None, min_length=1, max_length=2048)
    subject_token_ttl_s: int = Field(default=60, ge=1, le=300)
    refresh_margin_s: int = Field(default=30, ge=0, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    allow_http: bool = False
    allow: AllowEntries = ()

    @field_validator("resource")
    @classmethod
    def _resource_uri(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if not parts.scheme or "#" in value:
                raise ValueError(f"resource {value!r} must be an absolute URI without fragment (RFC 8707 section 2)")
        return value

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not _SCOPE.match(scope):
                raise ValueError(f"{scope!r} is not a valid scope token (RFC 6749 section 3.3)")
        return value

    @field_validator("requested_token_type")
    @classmethod
    def _presentable_type(cls, value: str) -> str:
        if value not in PRESENTABLE_TOKEN_TYPES:
            raise ValueError(
                f"requested_token_type {value!r} cannot be presented upstream as a bearer token; "
                f"use {ACCESS_TOKEN_TYPE_URI} or {JWT_TOKEN_TYPE_URI}"
            )
        return value

    @model_validator(mode="after")
    def _endpoint_and_target(self) -> TokenExchangeSettings:
        parts = urlsplit(self.token_endpoint)
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname or parts.fragment or "#" in self.token_endpoint:
            allowed = "an http or https" if self.allow_http else "an https (http only with allow_http: true)"
            raise ValueError(f"token_endpoint {self.token_endpoint!r} must be {allowed} URL with a host, no fragment")
        if parts.username is not None or parts.password is not None:
            raise ValueError("token_endpoint must not carry user info; use client_id and client_secret")
        if self.audience is None and self.resource is None:
            raise ValueError("token exchange needs 'audience' or 'resource' (or both): the token's target")
        return self

    @property
    def allow_list(self) -> AllowList:
        """``allow`` parsed (validated at load, so this does not raise)."""
        return AllowList.parse(self.allow)

    @property
    def subject_audience(self) -> str:
        """The ``aud`` of the subject token: ``subject_token_audience``, else ``token_endpoint``."""
        return self.subject_token_audience or self.token_endpoint
