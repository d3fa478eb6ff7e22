"""Bastion as an OAuth 2.1 client of an upstream's authorization server, on behalf of each user.

The MCP authorization flow (MCP 2025-11-25 basic/authorization) run by Bastion instead of
the MCP client:

- **Discovery.** With ``issuer`` configured, its RFC 8414 metadata. Without it, the upstream
  is asked (an unauthenticated ``initialize``): its 401 names the RFC 9728 protected resource
  metadata (``WWW-Authenticate: Bearer resource_metadata=...``, else the well-known URIs),
  which names the authorization server; then RFC 8414 / OpenID discovery at that issuer
  (the MCP SDK's ordered URL lists). The metadata's ``issuer`` must be exactly the one it
  was fetched for (RFC 8414 section 3.3), the protected resource's ``resource`` exactly the
  upstream's URL (RFC 9728 section 3.3), and ``S256`` must be offered (RFC 7636; MCP
  requires PKCE).
- **Registration.** A configured ``client_id``; else a Client ID Metadata Document (Bastion's
  own HTTPS URL as the client id) when the server says it accepts them; else RFC 7591 dynamic
  registration, kept sealed in the vault per (route, issuer).
- **Authorization code with PKCE S256**, ``state``, the RFC 8707 ``resource``, and RFC 9207
  ``iss`` checking. **Refresh** (RFC 6749 section 6) keeps the old refresh token when the
  server returns none. **Revocation** (RFC 7009) of the refresh token, then the access token.

Every request goes through the egress guard (no redirects with a code or a token). The
models are the MCP SDK's (``mcp.shared.auth``); the authorization URL is authlib's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_field_from_www_auth,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata
from pydantic import ValidationError

from bastion.config.credentials import UpstreamOAuthSettings
from bastion.credentials.vault import PendingConnection, TokenSet, TokenVault
from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.egress.client import EgressGuard, FetchResult
from bastion.errors import ConnectionExpired, EgressDenied, UpstreamAuthorizationError, UpstreamUnavailable
from bastion.oauth.client_auth import basic_authorization
from bastion.oauth.records import digest

__all__ = ["AuthorizationServerInfo", "UpstreamOAuthClient"]

_log = logging.getLogger("bastion.credentials")

_MAX_DOCUMENT_BYTES = 64 * 1024
_METADATA_CACHE_S = 3600.0
_PENDING_TTL_S = 600.0
_PROBE_VERSION = "2025-11-25"


@dataclass(frozen=True, slots=True)
class AuthorizationServerInfo:
    """What Bastion uses of an upstream's authorization server (RFC 8414 section 2) and resource.

    ``resource`` is the RFC 8707 resource to ask tokens for; ``scopes`` the scopes to request
    (space-joined on the wire); ``metadata_documents`` and ``iss_parameter`` are the server's
    ``client_id_metadata_document_supported`` and ``authorization_response_iss_parameter_supported``.
    """

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None
    registration_endpoint: str | None
    auth_methods: tuple[str, ...]
    metadata_documents: bool
    iss_parameter: bool
    resource: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpstreamClient:
    """Bastion's client registration at one authorization server (``client_secret`` ``None``: public)."""

    client_id: str
    client_secret: str | None = None

    def __repr__(self) -> str:
        return f"UpstreamClient(client_id={self.client_id!r})"


def _oauth_error(result: FetchResult) -> str:
    """The RFC 6749 section 5.2 ``error`` code of a refusal, if it is a short printable word."""
    error = (result.json_object() or {}).get("error")
    return error if isinstance(error, str) and error.isprintable() and len(error) < 64 else ""


class UpstreamOAuthClient:
    """One route's OAuth client at its upstream's authorization server.

    ``upstream_url`` is the route's MCP endpoint and ``upstream_allow`` / ``upstream_http``
    its egress exceptions (for the discovery probe); ``redirect_uri`` is Bastion's portal
    callback; ``metadata_document_url`` the HTTPS URL of Bastion's Client ID Metadata
    Document (``None`` when Bastion is not served over https). ``clock`` returns epoch seconds.
    Raises ``ConfigError`` when the client secret reference cannot be resolved.
    """

    def __init__(
        self,
        route: str,
        settings: UpstreamOAuthSettings,
        *,
        upstream_url: str,
        egress: EgressGuard,
        vault: TokenVault,
        redirect_uri: str,
        metadata_document_url: str | None,
        upstream_allow: AllowList = NO_EXCEPTIONS,
        upstream_http: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.settings = settings
        self.upstream_url = upstream_url
        self.redirect_uri = redirect_uri
        self._metadata_document_url = metadata_document_url
        self._egress = egress
        self._vault = vault
        self._upstream_allow = upstream_allow
        self._allow = AllowList.parse(settings.allow)
        self._upstream_http = upstream_http
        self._clock = clock
        self._secret = settings.client_secret.resolve() if settings.client_secret is not None else None
        self._server: AuthorizationServerInfo | None = None
        self._server_at = 0.0
        self._lock = asyncio.Lock()

    # discovery
    async def server(self) -> AuthorizationServerInfo:
        """The authorization server and resource, discovered at most hourly.

        Raises ``UpstreamAuthorizationError`` when discovery fails or the metadata is unusable.
        """
        async with self._lock:
            if self._server is None or self._clock() - self._server_at > _METADATA_CACHE_S:
                self._server = await self._discover()
                self._server_at = self._clock()
            return self._server

    async def _discover(self) -> AuthorizationServerInfo:
        settings = self.settings
        scopes: tuple[str, ...] = settings.scopes
        resource = settings.resource or self.upstream_url
        issuer = settings.issuer
        if issuer is None:
            document, challenge_scope = await self._protected_resource()
            issuer = str(document["authorization_servers"][0])
            resource = settings.resource or str(document["resource"])
            if not scopes:
                listed = document.get("scopes_supported")
                scopes = tuple(challenge_scope.split()) if challenge_scope else tuple(listed or ())
        return await self._authorization_server(issuer, resource, scopes)

    async def _protected_resource(self) -> tuple[dict[str, Any], str | None]:
        """The upstream's RFC 9728 metadata (from its 401 challenge, else the well-known URIs),
        and the ``scope`` its challenge named."""
        probe = json.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": _PROBE_VERSION, "capabilities": {},
                       "clientInfo": {"name": "bastion-discovery", "version": "1"}},
        }).encode()  # fmt: skip
        answer = await self._call(
            "send", "POST", self.upstream_url, "the upstream", upstream=True, body=probe,
            headers={"content-type": "application/json", "mcp-protocol-version": _PROBE_VERSION},
            accept="application/json, text/event-stream",
        )  # fmt: skip
        challenge = httpx2.Response(
            answer.status, headers={"www-authenticate": answer.headers.get("www-authenticate", "")}
        )
        named = extract_field_from_www_auth(challenge, "resource_metadata") if answer.status in (401, 403) else None
        scope = extract_field_from_www_auth(challenge, "scope") if answer.status in (401, 403) else None
        for url in build_protected_resource_metadata_discovery_urls(named, self.upstream_url):
            same_origin = _origin(url) == _origin(self.upstream_url)  # the upstream's own exceptions apply there
            result = await self._call("fetch", "GET", url, "protected resource metadata", upstream=same_origin)
            document = result.json_object() if result.status == 200 else None
            if document is None:
                continue
            try:
                ProtectedResourceMetadata.model_validate(document)
            except ValidationError:
                raise UpstreamAuthorizationError(
                    f"{self.route}: the upstream's resource metadata is not valid"
                ) from None
            if str(document["resource"]).rstrip("/") != self.upstream_url.rstrip("/"):
                raise UpstreamAuthorizationError(
                    f"{self.route}: the upstream's resource metadata is for another resource (RFC 9728 section 3.3)"
                )
            if not isinstance(document["authorization_servers"][0], str):
                raise UpstreamAuthorizationError(f"{self.route}: the upstream names no authorization server")
            return document, scope
        raise UpstreamAuthorizationError(f"{self.route}: the upstream publishes no protected resource metadata")

    async def _authorization_server(
        self, issuer: str, resource: str, scopes: tuple[str, ...]
    ) -> AuthorizationServerInfo:
        for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, self.upstream_url):
            result = await self._call("fetch", "GET", url, "authorization server metadata")
            document = result.json_object() if result.status == 200 else None
            if document is None:
                continue
            try:
                metadata = OAuthMetadata.model_validate(document)
            except ValidationError:
                raise UpstreamAuthorizationError(
                    f"{self.route}: the authorization server's metadata is not valid"
                ) from None
            if document.get("issuer") != issuer:
                raise UpstreamAuthorizationError(
                    f"{self.route}: the authorization server's metadata names another issuer (RFC 8414 section 3.3)"
                )
            if "S256" not in (metadata.code_challenge_methods_supported or ()):
                raise UpstreamAuthorizationError(f"{self.route}: the authorization server does not offer PKCE S256")
            for endpoint in ("authorization_endpoint", "token_endpoint"):
                if urlsplit(str(document[endpoint])).scheme != "https" and not self.settings.allow_http:
                    raise UpstreamAuthorizationError(
                        f"{self.route}: the authorization server's {endpoint} is not https"
                    )
            return AuthorizationServerInfo(
                issuer=issuer,
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                revocation_endpoint=_optional_url(document.get("revocation_endpoint")),
                registration_endpoint=_optional_url(document.get("registration_endpoint")),
                auth_methods=tuple(metadata.token_endpoint_auth_methods_supported or ("client_secret_basic",)),
                metadata_documents=bool(metadata.client_id_metadata_document_supported),
                iss_parameter=bool(metadata.authorization_response_iss_parameter_supported),
                resource=resource,
                scopes=scopes,
            )
        raise UpstreamAuthorizationError(f"{self.route}: the authorization server publishes no metadata")

    # registration
    async def client(self, server: AuthorizationServerInfo) -> UpstreamClient:
        """Bastion's client at ``server``: configured, a metadata document URL, or registered now.

        Raises ``UpstreamAuthorizationError`` when none of these is possible.
        """
        settings = self.settings
        if settings.client_id is not None:
            return UpstreamClient(settings.client_id, self._secret)
        wants = settings.registration
        if wants != "dynamic" and server.metadata_documents and self._metadata_document_url is not None:
            return UpstreamClient(self._metadata_document_url)
        if wants != "metadata_document" and server.registration_endpoint is not None:
            kept = await self._vault.get_client(self.route, server.issuer)
            if kept is None:
                kept = await self._register(server, server.registration_endpoint)
            return UpstreamClient(str(kept["client_id"]), kept.get("client_secret"))
        raise UpstreamAuthorizationError(
            f"{self.route}: Bastion cannot register at the authorization server "
            "(no client_id configured, no dynamic registration, no client metadata documents)"
        )

    async def _register(self, server: AuthorizationServerInfo, endpoint: str) -> dict[str, Any]:
        """RFC 7591 section 3: register Bastion (confidential when the server takes client_secret_basic)."""
        method = "client_secret_basic" if "client_secret_basic" in server.auth_methods else "none"
        request: dict[str, Any] = {
            "client_name": "Bastion MCP gateway",
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
        }
        # no "scope": servers check it against their own scopes_supported, which resource
        # scopes (RFC 8707) are often not part of; the authorization request asks for them
        result = await self._call(
            "send", "POST", endpoint, "dynamic registration", body=json.dumps(request).encode(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        document = result.json_object()
        if result.status not in (200, 201) or document is None:
            detail = _oauth_error(result)
            described = (document or {}).get("error_description")
            _log.warning("route %s: registration refused: %s %.200r", self.route, result.status, described)
            raise UpstreamAuthorizationError(
                f"{self.route}: dynamic registration was refused ({detail or result.status})"
            )
        try:
            OAuthClientInformationFull.model_validate(document)
        except ValidationError:
            raise UpstreamAuthorizationError(f"{self.route}: the registration response is not valid") from None
        kept = {"client_id": document["client_id"], "client_secret": document.get("client_secret")}
        await self._vault.put_client(self.route, server.issuer, kept, now=self._clock())
        _log.info("route %s: registered at %s as client %s", self.route, server.issuer, kept["client_id"])
        return kept

    # the authorization code flow
    async def begin(self, owner: str, browser: str) -> str:
        """Start a connection for ``owner`` (a principal key) in the browser whose cookie digest is
        ``browser``: keep the PKCE verifier and return the authorization URL (RFC 6749 section 4.1.1,
        RFC 7636 section 4.3, RFC 8707 section 2.1).

        Raises ``UpstreamAuthorizationError`` when discovery or registration fails.
        """
        server = await self.server()
        client = await self.client(server)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        pending = PendingConnection(
            owner=owner,
            route=self.route,
            browser=browser,
            code_verifier=verifier,
            issuer=server.issuer,
            client_id=client.client_id,
            redirect_uri=self.redirect_uri,
            expires_at=self._clock() + _PENDING_TTL_S,
        )
        await self._vault.put_pending(digest(state), pending)
        extra: dict[str, str] = {"resource": server.resource}
        if server.scopes:
            extra["scope"] = " ".join(server.scopes)
        return str(
            prepare_grant_uri(
                server.authorization_endpoint,
                client.client_id,
                "code",
                redirect_uri=self.redirect_uri,
                state=state,
                code_challenge=create_s256_code_challenge(verifier),
                code_challenge_method="S256",
                **extra,
            )
        )

    async def finish(self, pending: PendingConnection, *, code: str, iss: str | None) -> TokenSet:
        """Redeem ``code`` for ``pending`` (RFC 6749 section 4.1.3) after checking ``iss`` (RFC 9207
        section 2.4). Raises ``UpstreamAuthorizationError``."""
        server = await self.server()
        if pending.issuer != server.issuer:
            raise UpstreamAuthorizationError(f"{self.route}: the authorization server changed; connect again")
        if (iss is None and server.iss_parameter) or (iss is not None and iss != server.issuer):
            raise UpstreamAuthorizationError(f"{self.route}: the response names another issuer (RFC 9207)")
        client = await self.client(server)
        if client.client_id != pending.client_id:
            raise UpstreamAuthorizationError(f"{self.route}: Bastion's registration changed; connect again")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.code_verifier,
            "resource": server.resource,
        }
        return await self._token_request(server, client, form, previous=None)

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """New tokens from ``tokens.refresh_token`` (RFC 6749 section 6); the old refresh token is
        kept when none comes back. Raises ``ConnectionExpired`` for ``invalid_grant`` (or no
        refresh token), ``UpstreamAuthorizationError`` / ``UpstreamUnavailable`` otherwise."""
        if tokens.refresh_token is None:
            raise ConnectionExpired(f"{self.route}: the upstream token expired and cannot be refreshed")
        server = await self.server()
        client = await self.client(server)
        if client.client_id != tokens.client_id or server.issuer != tokens.issuer:
            raise ConnectionExpired(f"{self.route}: Bastion's registration changed; connect again")
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "resource": server.resource}
        return await self._token_request(server, client, form, previous=tokens)

    async def revoke(self, tokens: TokenSet) -> bool:
        """Revoke the refresh token, then the access token (RFC 7009 section 2.1), at the server that
        issued them with the client they were issued to. True when the server accepted every
        request; False when it has no revocation endpoint, refused, or is no longer that server.
        Never raises for the server's answer (the caller deletes the tokens either way)."""
        try:
            server = await self.server()
            if server.issuer != tokens.issuer:  # never hand tokens to another server
                return False
            client = await self.client(server)
        except (UpstreamAuthorizationError, UpstreamUnavailable, EgressDenied) as exc:
            _log.warning("route %s: cannot revoke upstream tokens: %s", self.route, exc.message)
            return False
        if server.revocation_endpoint is None or client.client_id != tokens.client_id:
            return False
        revoked = True
        pairs = [("refresh_token", tokens.refresh_token), ("access_token", tokens.access_token)]
        for hint, token in pairs:
            if token is None:
                continue
            form = {"token": token, "token_type_hint": hint}
            try:
                result = await self._post_form(server.revocation_endpoint, client, form, "revocation")
            except (UpstreamAuthorizationError, UpstreamUnavailable, EgressDenied) as exc:
                _log.warning("route %s: revoking an upstream %s failed: %s", self.route, hint, exc.message)
                revoked = False
                continue
            revoked = revoked and result.status == 200
        return revoked

    async def _token_request(
        self,
        server: AuthorizationServerInfo,
        client: UpstreamClient,
        form: dict[str, str],
        *,
        previous: TokenSet | None,
    ) -> TokenSet:
        result = await self._post_form(server.token_endpoint, client, form, "token")
        if result.status != 200:
            error = _oauth_error(result)
            if previous is not None and error == "invalid_grant":
                raise ConnectionExpired(f"{self.route}: the upstream refused the refresh token; connect again")
            if result.status >= 500:
                raise UpstreamUnavailable(f"{self.route}: the authorization server answered {result.status}")
            raise UpstreamAuthorizationError(
                f"{self.route}: the authorization server refused ({error or result.status})"
            )
        document = result.json_object()
        try:
            token = OAuthToken.model_validate(document)
        except ValidationError:
            raise UpstreamAuthorizationError(f"{self.route}: the token response is not a bearer token") from None
        refresh = token.refresh_token or (previous.refresh_token if previous is not None else None)
        return TokenSet(
            access_token=token.access_token,
            token_type="Bearer",  # noqa: S106 - the token type, not a secret
            issuer=server.issuer,
            client_id=client.client_id,
            refresh_token=refresh,
            expires_at=self._clock() + token.expires_in if token.expires_in is not None else None,
            scope=token.scope if token.scope is not None else (previous.scope if previous else None),
        )

    async def _post_form(self, url: str, client: UpstreamClient, form: dict[str, str], what: str) -> FetchResult:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if client.client_secret is None:
            form = {**form, "client_id": client.client_id}
        else:
            headers["authorization"] = basic_authorization(client.client_id, client.client_secret)
        return await self._call("send", "POST", url, what, body=urlencode(form).encode(), headers=headers)

    async def _call(
        self,
        how: str,
        method: str,
        url: str,
        what: str,
        *,
        upstream: bool = False,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> FetchResult:
        """One guarded request (``fetch``: GET following checked redirects; ``send``: no redirects).
        ``upstream`` uses the route's upstream exceptions instead of the authorization server's.
        Raises ``UpstreamAuthorizationError`` when the guard refuses or the server cannot be reached."""
        allow_http = self._upstream_http if upstream else self.settings.allow_http
        extra = self._upstream_allow if upstream else self._allow
        try:
            if how == "fetch":
                return await self._egress.fetch(
                    url, max_bytes=_MAX_DOCUMENT_BYTES, timeout_s=self.settings.timeout_s, accept=accept,
                    allow_http=allow_http, allow=extra, purpose="upstream_oauth",
                )  # fmt: skip
            return await self._egress.send(
                method, url, max_bytes=_MAX_DOCUMENT_BYTES, timeout_s=self.settings.timeout_s, headers=headers,
                body=body, accept=accept, allow_http=allow_http, allow=extra, purpose="upstream_oauth",
            )  # fmt: skip
        except (EgressDenied, UpstreamUnavailable) as exc:
            _log.warning("route %s: %s request failed: %s", self.route, what, exc.message)
            raise UpstreamAuthorizationError(f"{self.route}: the {what} cannot be reached ({exc.message})") from None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _optional_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
