"""Authorization server metadata (RFC 8414 section 2), listing only what Bastion supports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ENDPOINTS", "authorization_server_metadata", "metadata_paths"]

#: Paths of the authorization server's endpoints, relative to the issuer's origin.
ENDPOINTS = {
    "authorization": "/oauth/authorize",
    "token": "/oauth/token",
    "revocation": "/oauth/revoke",
    "registration": "/oauth/register",
    "sign_in": "/oauth/sign-in",
    "consent": "/oauth/consent",
    "provider_sign_in": "/oauth/sign-in/provider",
    "provider_callback": "/oauth/callback",
    "portal_sign_in": "/portal/sign-in",
    "portal": "/portal",
}


def authorization_server_metadata(
    issuer: str,
    *,
    base_url: str,
    scopes: Sequence[str],
    registration: bool,
    metadata_documents: bool,
) -> dict[str, Any]:
    """The RFC 8414 document for ``issuer``; endpoints live under ``base_url``.

    ``registration`` adds ``registration_endpoint`` (RFC 7591);
    ``metadata_documents`` sets ``client_id_metadata_document_supported``
    (MCP 2025-11-25, basic/authorization, Client ID Metadata Documents).
    """
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": base_url + ENDPOINTS["authorization"],
        "token_endpoint": base_url + ENDPOINTS["token"],
        "revocation_endpoint": base_url + ENDPOINTS["revocation"],
        "jwks_uri": base_url + "/.well-known/jwks.json",
        "scopes_supported": list(scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": metadata_documents,
    }
    if registration:
        document["registration_endpoint"] = base_url + ENDPOINTS["registration"]
    return document


def metadata_paths(issuer: str) -> list[str]:
    """Where the metadata is served: RFC 8414 section 3.1 (the well-known segment before the
    issuer's path) and the OpenID Connect Discovery 1.0 section 4 variants MCP clients also try
    (MCP 2025-11-25, basic/authorization, Authorization Server Metadata Discovery)."""
    path = urlsplit(issuer).path.rstrip("/")
    if not path:
        return ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
    return [
        f"/.well-known/oauth-authorization-server{path}",
        f"/.well-known/openid-configuration{path}",
        f"{path}/.well-known/openid-configuration",
    ]
