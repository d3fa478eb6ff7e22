"""Upstream tokens minted by OAuth 2.0 Token Exchange (RFC 8693) at a Security Token Service.

For a route configured with ``token_exchange`` Bastion trades a subject token it signs
for the calling user (a short-lived JWT, ``subject_token_type`` ``...:jwt``) for an
audience-restricted upstream token, and presents that token upstream; the client's own
token never leaves Bastion (docs/architecture.md, "Credentials").

    token_for(principal)
      -> cached and fresh?            return it (per ``principal.key``, LRU-bounded)
      -> an exchange in flight?       share it (one request per principal at a time)
      -> _exchange                    mint the subject token, POST the form (section 2.1)
         -> _request                  through the egress guard's ``send``: no redirects
         -> _parse_success            section 2.2.1: access_token, issued_token_type,
                                      token_type Bearer (or N_A for a non-access-token JWT),
                                      expires_in
         -> _parse_failure            section 2.2.2 / RFC 6749 section 5.2 error body

Errors (all in ``bastion.errors``)::

    BastionError
    ├── EgressDenied                 403  -32003  the guard refused the STS address (propagated)
    └── UpstreamError
        ├── UpstreamUnavailable      503  -32603  the STS could not be reached (propagated)
        └── TokenExchangeFailed      502  -32603  the STS refused, or answered unusably

No message, log line or ``repr`` carries a token or the client secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from bastion.config.exchange import ACCESS_TOKEN_TYPE_URI, JWT_TOKEN_TYPE_URI, TokenExchangeSettings
from bastion.egress.client import FetchResult
from bastion.errors import ConfigError, TokenExchangeFailed
from bastion.principal import Principal

from .tokens import UpstreamToken

__all__ = ["GRANT_TYPE", "MAX_CACHED_TOKENS", "Send", "TokenExchange"]

#: The grant type of a token exchange request (RFC 8693 section 2.1).
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: How many principals' tokens one ``TokenExchange`` keeps (least recently used dropped first).
MAX_CACHED_TOKENS = 10_000

_log = logging.getLogger("bastion.credentials.exchange")

_MAX_RESPONSE_BYTES = 64 * 1024
_MAX_TOKEN_CHARS = 16 * 1024
_ERROR_CODE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$")  # RFC 6749 section 5.2 error charset
_DESCRIPTION = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")  # error_description charset, same section
_SHOWN_VALUE = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")
_JWS_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
_MAX_DESCRIPTION_CHARS = 200


class Send(Protocol):
    """The egress guard's one-request method, ``bastion.egress.EgressGuard.send``.

    ``method`` and ``url`` as given; ``max_bytes`` caps the response body, ``timeout_s``
    (seconds) bounds the request; no redirect is followed. Raises ``EgressDenied`` or
    ``UpstreamUnavailable``.
    """

    def __call__(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = ...,
        body: bytes = ...,
        allow_http: bool = ...,
    ) -> Coroutine[Any, Any, FetchResult]: ...


class TokenExchange:
    """Upstream tokens for one route, exchanged at its STS per principal (RFC 8693).

    ``send`` is the egress guard's ``send`` (``Send``), from a guard whose allow list
    includes ``settings.allow_list``; ``subject_token(principal)`` returns the subject
    token, a JWT Bastion signed for the user with ``aud`` = ``settings.subject_audience``
    and a lifetime of ``settings.subject_token_ttl_s``; ``client_secret`` is the resolved
    ``settings.client_secret`` (None exactly when that is unset); ``clock`` returns epoch
    seconds; ``max_cached`` bounds the cache. Raises ``ConfigError`` when ``client_secret``
    and the settings disagree, ``ValueError`` when ``max_cached`` is below 1.

    Issued tokens are cached per ``principal.key`` (at most ``max_cached``, by default
    ``MAX_CACHED_TOKENS``, the least recently used dropped first) until
    ``settings.refresh_margin_s`` seconds before they expire; a token issued without
    ``expires_in`` is used once and not cached. Concurrent calls for one principal share
    one request. The cache is per process and forgets on restart; a user's changed
    groups or email reach the STS only with the next exchange.
    """

    def __init__(
        self,
        settings: TokenExchangeSettings,
        *,
        route_name: str,
        send: Send,
        subject_token: Callable[[Principal], str],
        client_secret: str | None,
        clock: Callable[[], float] = time.time,
        max_cached: int = MAX_CACHED_TOKENS,
    ) -> None:
        if max_cached < 1:
            raise ValueError(f"max_cached must be at least 1, not {max_cached}")
        if (settings.client_secret is None) != (client_secret is None):
            raise ConfigError(
                f"route {route_name}: token_exchange.client_secret is "
                f"{'set' if settings.client_secret is not None else 'not set'} but the resolved secret "
                f"{'is missing' if client_secret is None else 'was given'}"
            )
        self.settings = settings
        self.route_name = route_name
        self._send = send
        self._subject_token = subject_token
        self._client_secret = client_secret
        self._clock = clock
        self._max_cached = max_cached
        self._host = urlsplit(settings.token_endpoint).hostname or "?"
        self._cache: OrderedDict[str, UpstreamToken] = OrderedDict()
        self._pending: dict[str, asyncio.Task[UpstreamToken]] = {}

    def __repr__(self) -> str:
        parts = urlsplit(self.settings.token_endpoint)
        return (
            f"TokenExchange(route={self.route_name!r}, token_endpoint='{parts.scheme}://{parts.netloc}{parts.path}', "
            f"client_id={self.settings.client_id!r}, audience={self.settings.audience!r}, "
            f"resource={self.settings.resource!r}, cached={len(self._cache)})"
        )

    async def token_for(self, principal: Principal) -> UpstreamToken:
        """The upstream token for ``principal``: cached while fresh, else exchanged (RFC 8693 section 2).

        Raises ``TokenExchangeFailed`` (the STS refused or answered unusably),
        ``EgressDenied`` (the guard refused the STS's address) or ``UpstreamUnavailable``
        (the STS could not be reached or timed out); what ``subject_token`` raises propagates.
        A failure is not cached.
        """
        key = principal.key
        cached = self._cache.get(key)
        if cached is not None and cached.fresh(self._clock(), self.settings.refresh_margin_s):
            self._cache.move_to_end(key)
            return cached
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._exchange(principal))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        # shielded: a caller that is cancelled does not cancel the exchange others wait for
        return await asyncio.shield(task)

    def forget(self, principal_key: str) -> None:
        """Drop the cached token of ``principal_key`` (a ``Principal.key``), e.g. after an upstream 401.

        An exchange already in flight is not cancelled; its token is new, so it is kept.
        """
        self._cache.pop(principal_key, None)

    def _settled(self, key: str, task: asyncio.Task[UpstreamToken]) -> None:
        """Remove the finished exchange; cache its token if it may be reused."""
        if self._pending.get(key) is task:
            del self._pending[key]
        if task.cancelled() or task.exception() is not None:  # retrieved, so never "never retrieved"
            return
        token = task.result()
        if token.expires_at is None:
            return
        self._cache[key] = token
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    async def _exchange(self, principal: Principal) -> UpstreamToken:
        """One token exchange request and its validated response (RFC 8693 sections 2.1-2.2)."""
        started = self._clock()
        subject_token = self._subject_token(principal)
        form = self._form(subject_token)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._client_secret is not None:  # client_secret_basic: each part form-encoded first (RFC 6749 2.3.1)
            pair = f"{quote(self.settings.client_id, safe='')}:{quote(self._client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        result = await self._send(
            "POST",
            self.settings.token_endpoint,
            max_bytes=_MAX_RESPONSE_BYTES,
            timeout_s=self.settings.timeout_s,
            headers=headers,
            body=urlencode(form).encode("ascii"),
            allow_http=self.settings.allow_http,
        )
        secrets = tuple(s for s in (subject_token, self._client_secret) if s)
        try:
            if result.status != 200:
                raise self._parse_failure(result, secrets)
            token = self._parse_success(result, started, secrets)
        except TokenExchangeFailed as exc:
            _log.warning("%s (principal %s)", exc.message, principal.sub)
            raise
        _log.info(
            "route %s: token exchange for %s at %s issued a token expiring at %s",
            self.route_name,
            principal.sub,
            self._host,
            token.expires_at,
        )
        return token

    def _form(self, subject_token: str) -> list[tuple[str, str]]:
        """The request parameters (RFC 8693 section 2.1), in the order the RFC lists them."""
        settings = self.settings
        form = [("grant_type", GRANT_TYPE)]
        if settings.resource is not None:
            form.append(("resource", settings.resource))
        if settings.audience is not None:
            form.append(("audience", settings.audience))
        if settings.scopes:
            form.append(("scope", " ".join(settings.scopes)))
        form += [
            ("requested_token_type", settings.requested_token_type),
            ("subject_token", subject_token),
            ("subject_token_type", JWT_TOKEN_TYPE_URI),
        ]
        if self._client_secret is None:  # a public client identifies itself (RFC 6749 section 3.2.1)
            form.append(("client_id", settings.client_id))
        return form

    def _failed(self, what: str, *, error: str | None = None, status: int | None = None) -> TokenExchangeFailed:
        return TokenExchangeFailed(
            f"route {self.route_name}: token exchange at {self._host} failed: {what}", error=error, sts_status=status
        )

    def _parse_success(self, result: FetchResult, started: float, secrets: tuple[str, ...]) -> UpstreamToken:
        """The issued token from a 200 response (RFC 8693 section 2.2.1); refuses what cannot be a bearer token."""
        body = result.json_object()
        if body is None:
            raise self._failed("the response is not a JSON object", status=result.status)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise self._failed("the response has no access_token", status=result.status)
        if len(access_token) > _MAX_TOKEN_CHARS or not _is_header_safe(access_token):
            raise self._failed("the access_token cannot be sent in an Authorization header", status=result.status)
        secrets = (*secrets, access_token)
        issued_type = body.get("issued_token_type")
        if not isinstance(issued_type, str) or not issued_type:
            raise self._failed("the response has no issued_token_type", status=result.status)
        if issued_type not in (ACCESS_TOKEN_TYPE_URI, JWT_TOKEN_TYPE_URI):
            raise self._failed(
                f"the issued token type {_shown(issued_type, secrets)} cannot be presented as a bearer token",
                status=result.status,
            )
        raw_type = body.get("token_type")
        kind = raw_type.lower() if isinstance(raw_type, str) else None
        # N_A: "not an access token" (section 2.2.1); a JWT is still presented as a bearer token, an
        # access token typed N_A is contradictory. Anything else (DPoP, MAC ...) needs more than a header.
        if not (kind == "bearer" or (kind == "n_a" and issued_type != ACCESS_TOKEN_TYPE_URI)):
            shown = _shown(raw_type, secrets) if raw_type is not None else "missing"
            raise self._failed(f"token_type {shown} cannot be presented as a bearer token", status=result.status)
        expires_at = self._expires_at(body.get("expires_in"), started, result.status)
        scope = body.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise self._failed("the scope in the response is not a string", status=result.status)
        if scope is None and self.settings.scopes:  # same as requested when omitted (section 2.2.1)
            scope = " ".join(self.settings.scopes)
        return UpstreamToken(access_token=access_token, expires_at=expires_at, scope=scope)  # presented as Bearer

    def _expires_at(self, expires_in: Any, started: float, status: int) -> float | None:
        """Epoch seconds the token expires, counted from before the request; None without ``expires_in``."""
        if expires_in is None:
            return None
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
            or expires_in <= 0
        ):
            raise self._failed("expires_in is not a positive number of seconds", status=status)
        return started + float(expires_in)

    def _parse_failure(self, result: FetchResult, secrets: tuple[str, ...]) -> TokenExchangeFailed:
        """The error of a non-200 response (RFC 8693 section 2.2.2, RFC 6749 section 5.2), made safe to show."""
        body = result.json_object()
        error = body.get("error") if body is not None else None
        if not isinstance(error, str) or not _ERROR_CODE.match(error):
            what = "a redirect, which is not followed" if 300 <= result.status < 400 else "no OAuth error"
            return self._failed(f"the STS answered {result.status} with {what}", status=result.status)
        what = f"the STS refused it ({result.status} {error}"
        description = body.get("error_description") if body is not None else None
        if isinstance(description, str) and _is_safe_description(description, secrets):
            what += f": {description[:_MAX_DESCRIPTION_CHARS]}"
        return self._failed(what + ")", error=error, status=result.status)


def _is_header_safe(value: str) -> bool:
    """Visible ASCII only, so the token fits ``Authorization: Bearer`` without header injection."""
    return value.isascii() and value.isprintable() and " " not in value


def _is_safe_description(description: str, secrets: tuple[str, ...]) -> bool:
    """An ``error_description`` fit for a message: RFC 6749 charset, no echoed secret, nothing token-like."""
    if not _DESCRIPTION.match(description):
        return False
    if any(secret in description for secret in secrets):
        return False
    return _JWS_LIKE.search(description) is None


def _shown(value: Any, secrets: tuple[str, ...]) -> str:
    """An untrusted response value for a message: quoted if short and plain, else a placeholder."""
    if isinstance(value, str) and _SHOWN_VALUE.match(value) and not any(value in s for s in secrets):
        return repr(value)
    return "(an unrecognised value)"
