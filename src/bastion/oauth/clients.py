"""Who the clients are: registered in config, registered dynamically, or named by a metadata document.

Three kinds of ``client_id`` (MCP 2025-11-25, basic/authorization, "Client
Registration Approaches"):

- a client registered in the configuration (``identity.authorization_server.clients``);
- an https URL: a Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document
  section 3/4), fetched through the egress guard (https only, no private, loopback,
  link-local or metadata addresses, size and time caps), whose ``client_id`` must equal
  the URL exactly, cached as its ``Cache-Control`` says (capped);
- an id issued by dynamic client registration (RFC 7591), kept in the store.

Redirect URIs are compared exactly (OAuth 2.1 section 4.1.2.1), except that a
loopback IP redirect URI of a native app may use any port (RFC 8252 section 7.3).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from bastion.config.oauth import ClientMetadataDocumentSettings, RegisteredClient, check_redirect_uri
from bastion.errors import BastionError, OAuthError, clip
from bastion.oauth.records import digest
from bastion.oauth.store import AuthorizationGrantStore

__all__ = ["Client", "ClientDirectory", "DocumentFetch", "FetchedDocument", "redirect_uri_matches"]

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)
_DEFAULT_CACHE_S = 300
_LOOPBACK = re.compile(r"^(?P<origin>http://(?:127\.0\.0\.1|\[::1\]))(?::(?P<port>[0-9]{1,5}))?(?P<rest>[/?][^#]*)?$")
_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")


@dataclass(frozen=True, slots=True)
class Client:
    """A known client. ``secret_digest`` is None for a public client (PKCE only).

    ``verified`` is false for a client anyone could have created (dynamic
    registration, a metadata document outside the allowed domains): the consent
    page warns about it.
    """

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    kind: Literal["registered", "metadata_document", "dynamic"]
    verified: bool
    secret_digest: str | None = None

    def check_secret(self, secret: str | None) -> bool:
        """Whether ``secret`` authenticates this client (a public client must send none)."""
        if self.secret_digest is None:
            return secret is None
        return secret is not None and hmac.compare_digest(digest(secret), self.secret_digest)


class FetchedDocument(Protocol):
    """A fetched response: status, lowercase header names, body bytes (``egress.FetchResult``)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


class DocumentFetch(Protocol):
    """Fetch ``url`` through the egress guard. Raises ``EgressDenied``/``UpstreamUnavailable``."""

    def __call__(self, url: str, *, max_bytes: int, timeout_s: float) -> Awaitable[FetchedDocument]: ...


def redirect_uri_matches(registered: Sequence[str], presented: str) -> bool:
    """Whether ``presented`` is one of ``registered``: exact string equality, or a loopback IP
    redirect differing only in port (RFC 8252 section 7.3; never for ``localhost``): the two
    strings must be equal once the port is cut out of each, character for character."""
    if presented in registered:
        return True
    key = _loopback_key(presented)
    return key is not None and any(_loopback_key(uri) == key for uri in registered)


def _loopback_key(uri: str) -> str | None:
    """``uri`` without its port when it is ``http://127.0.0.1[:port]...`` or ``http://[::1][:port]...``
    (lowercase scheme, no userinfo, no fragment), else None."""
    match = _LOOPBACK.match(uri)
    if match is None or "#" in uri or int(match["port"] or 0) > 65535:
        return None
    return match["origin"] + (match["rest"] or "")


def _cache_seconds(headers: Mapping[str, str], cap_s: int) -> int:
    control = headers.get("cache-control", "")
    if _NO_CACHE.search(control):
        return 0
    match = _MAX_AGE.search(control)
    return min(int(match[1]) if match else _DEFAULT_CACHE_S, cap_s)


def is_metadata_document_id(client_id: str) -> bool:
    """A ``client_id`` that names a metadata document: an https URL with a path (CIMD section 3)."""
    parts = urlsplit(client_id)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")


class ClientDirectory:
    """Finds a client by ``client_id``; ``find`` raises ``OAuthError("invalid_client")`` for an unknown one.

    ``fetch`` fetches metadata documents (None: documents are off).
    """

    def __init__(
        self,
        registered: Sequence[RegisteredClient],
        store: AuthorizationGrantStore,
        documents: ClientMetadataDocumentSettings,
        fetch: DocumentFetch | None,
        *,
        resolve_secret: Callable[[RegisteredClient], str | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registered: dict[str, Client] = {}
        for entry in registered:
            secret = (resolve_secret or _resolve)(entry)
            self._registered[entry.client_id] = Client(
                entry.client_id,
                entry.client_name or entry.client_id,
                entry.redirect_uris,
                "registered",
                verified=True,
                secret_digest=digest(secret) if secret is not None else None,
            )
        self._store = store
        self._documents = documents
        self._fetch = fetch if documents.enabled else None
        self._cache: dict[str, tuple[Client, float]] = {}
        self._clock = clock

    @property
    def documents_enabled(self) -> bool:
        """Whether metadata-document client ids are accepted."""
        return self._fetch is not None

    async def find(self, client_id: str) -> Client:
        """The client ``client_id``. Raises ``OAuthError`` (``invalid_client``) naming why it is unknown."""
        client = self._registered.get(client_id)
        if client is not None:
            return client
        if is_metadata_document_id(client_id):
            return await self._from_document(client_id)
        metadata = await self._store.get_client(client_id)
        if metadata is None:
            raise OAuthError("invalid_client", "unknown client_id")
        return Client(
            client_id,
            str(metadata.get("client_name") or client_id),
            tuple(metadata["redirect_uris"]),
            "dynamic",
            verified=False,
            secret_digest=metadata.get("client_secret_digest"),
        )

    async def _from_document(self, client_id: str) -> Client:
        if self._fetch is None:
            raise OAuthError("invalid_client", "client ID metadata documents are not accepted here")
        now = self._clock()
        cached = self._cache.get(client_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        host = (urlsplit(client_id).hostname or "").lower()
        allowed = tuple(domain.lower().strip(".") for domain in self._documents.allowed_domains)
        if allowed and not any(host == d or host.endswith("." + d) for d in allowed):
            raise OAuthError("invalid_client", f"client metadata documents from {host} are not accepted")
        try:
            fetched = await self._fetch(
                client_id, max_bytes=self._documents.max_bytes, timeout_s=self._documents.timeout_s
            )
        except BastionError as exc:
            raise OAuthError("invalid_client", f"client metadata document refused: {exc}") from exc
        client = parse_metadata_document(client_id, fetched, verified=bool(allowed))
        ttl = _cache_seconds(fetched.headers, self._documents.max_cache_s)
        if ttl > 0:
            self._cache[client_id] = (client, now + ttl)
        return client


def parse_metadata_document(client_id: str, fetched: FetchedDocument, *, verified: bool) -> Client:
    """Check a fetched metadata document (CIMD section 4) and make it a public ``Client``.

    Raises ``OAuthError("invalid_client")`` when the status is not 200, the body is not a
    JSON object, its ``client_id`` differs from the URL, it has a secret or an auth method
    other than ``none``, or its ``redirect_uris`` are missing or invalid.
    """
    if fetched.status != 200:
        raise OAuthError("invalid_client", f"client metadata document answered HTTP {fetched.status}")
    try:
        document: Any = json.loads(fetched.body)
    except (ValueError, RecursionError) as exc:
        raise OAuthError("invalid_client", "client metadata document is not JSON") from exc
    if not isinstance(document, dict):
        raise OAuthError("invalid_client", "client metadata document is not a JSON object")
    if document.get("client_id") != client_id:
        raise OAuthError("invalid_client", "client metadata document names a different client_id")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise OAuthError("invalid_client", "client metadata document must not carry a client secret")
    if document.get("token_endpoint_auth_method", "none") != "none":
        raise OAuthError("invalid_client", "only public clients (token_endpoint_auth_method none) are supported")
    redirect_uris = _redirect_uris(document.get("redirect_uris"))
    name = document.get("client_name")
    return Client(
        client_id,
        name if isinstance(name, str) and name.strip() else client_id,
        redirect_uris,
        "metadata_document",
        verified=verified,
    )


def _redirect_uris(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(uri, str) for uri in value):
        raise OAuthError("invalid_client", "redirect_uris must be a non-empty list of strings")
    try:
        return tuple(check_redirect_uri(uri) for uri in value)
    except ValueError as exc:
        raise OAuthError("invalid_client", str(exc)) from exc


def registration_metadata(body: Any) -> tuple[dict[str, Any], str]:
    """Validate a dynamic registration request (RFC 7591 section 2/3.1).

    Returns the metadata to keep and the token endpoint auth method. Raises
    ``OAuthError("invalid_redirect_uri" | "invalid_client_metadata")``.
    """
    if not isinstance(body, dict):
        raise OAuthError("invalid_client_metadata", "the registration request must be a JSON object")
    try:
        redirect_uris = _redirect_uris(body.get("redirect_uris"))
    except OAuthError as exc:
        raise OAuthError("invalid_redirect_uri", exc.description) from exc
    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in _AUTH_METHODS:
        shown = clip(str(method))
        raise OAuthError("invalid_client_metadata", f"token_endpoint_auth_method {shown!r} is not supported")
    for key, allowed in (("grant_types", {"authorization_code", "refresh_token"}), ("response_types", {"code"})):
        values = body.get(key, [])
        if not isinstance(values, list) or not set(values) <= allowed:
            raise OAuthError("invalid_client_metadata", f"{key} may only contain {', '.join(sorted(allowed))}")
    name = body.get("client_name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise OAuthError("invalid_client_metadata", "client_name must be a string of at most 200 characters")
    metadata = {
        "redirect_uris": list(redirect_uris),
        "client_name": name,
        "token_endpoint_auth_method": method,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    return metadata, str(method)


def _resolve(entry: RegisteredClient) -> str | None:
    return entry.client_secret.resolve() if entry.client_secret is not None else None
