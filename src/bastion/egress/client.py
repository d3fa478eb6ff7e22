"""The egress guard: the one outbound HTTP path for what Bastion fetches itself.

Client ID Metadata Documents, JWKS, OAuth metadata: URLs an outsider can name,
so each fetch is a server-side request forgery risk (MCP security best
practices, SSRF). Every hop is checked the same way: the URL (``parse_target``),
the host resolved once, every address it resolves to (``classify``, unless the
``AllowList`` permits it), then a connection to the checked address itself, not
to the name, so a second DNS answer (DNS rebinding) cannot redirect it. The
original host name still goes into the ``Host`` header, the TLS SNI and the
certificate check (httpcore2's ``sni_hostname`` request extension).

    fetch -> _follow_redirects -> Destinations.addresses (resolve once, classify)
                               -> PinnedTransport.request (connect to the checked address, capped body)
                               -> _redirect (the next hop, checked the same way)
    send  -> Destinations.addresses -> PinnedTransport.request (one request with a body; no redirects)
    check, checked_addresses -> Destinations.addresses (no connection: someone else connects)

Each public call reports its refusals (``EgressDenied``) to the
``on_refusal`` hook first (``_reported``): the URL shown, the reason, the hop and
the caller's ``purpose``. The refusal is raised whatever the hook does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar
from urllib.parse import urljoin

from bastion.egress.addresses import IPAddress, normalise_host, parse_host
from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.egress.destinations import Destinations, Resolver, resolve
from bastion.egress.exchange import FetchResult, PinnedTransport
from bastion.egress.refusals import Refusal, RefusalHook, report
from bastion.egress.target import Target, parse_target, shown_url
from bastion.errors import EgressDenied, UpstreamUnavailable

__all__ = ["EgressGuard", "FetchResult", "Resolver", "resolve"]

_T = TypeVar("_T")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class _Call:
    """What one ``fetch`` or ``send`` asked for, handed down its layers."""

    url: str
    max_bytes: int
    timeout_s: float
    accept: str
    allow_http: bool
    allow: AllowList
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    body: bytes = b""

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.timeout_s <= 0:
            raise ValueError(f"max_bytes must be >= 0 and timeout_s > 0, not {self.max_bytes} and {self.timeout_s}")


@dataclass(slots=True)
class _Hop:
    """Where a fetch is, for its refusal: the shown URL of the hop being checked, its number."""

    url: str
    number: int = 0


class EgressGuard:
    """Fetches URLs that outsiders name without letting them reach what they should not.

    ``allow`` permits destinations that are private on purpose (an internal
    identity provider); ``ca_file`` is a PEM bundle trusted besides the system's
    CAs (an enterprise CA); ``resolver`` replaces ``getaddrinfo``; ``max_redirects``
    bounds the redirects followed per fetch; ``on_refusal`` is awaited with a
    ``Refusal`` for every refusal by policy before it is raised (an audit record;
    its failures are logged, never raised). No cookies, no credentials, no
    proxies from the environment, no connection reuse (a pooled connection
    verified for one name must not serve another name at the same address). Use
    as ``async with EgressGuard(...) as guard`` or call ``aclose()``. Raises
    ``ConfigError`` when ``ca_file`` cannot be loaded.

    Implements the SSRF mitigations of the MCP security best practices (block
    private, link-local and metadata addresses, validate every redirect, pin the
    resolved address) with the host name kept for ``Host`` (RFC 9110 section 7.2),
    SNI (RFC 6066 section 3) and certificate verification (RFC 9525).
    """

    def __init__(
        self,
        *,
        allow: AllowList = NO_EXCEPTIONS,
        ca_file: Path | None = None,
        resolver: Resolver | None = None,
        max_redirects: int = 3,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        if max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, not {max_redirects}")
        self._destinations = Destinations(allow, resolver or resolve)
        self._max_redirects = max_redirects
        self._on_refusal = on_refusal
        self._transport = PinnedTransport(ca_file)

    @property
    def allow(self) -> AllowList:
        """The guard's own allow list (``egress.allow``)."""
        return self._destinations.allow

    @property
    def tls(self) -> ssl.SSLContext:
        """The TLS client context of every guarded connection: the system's CAs plus ``ca_file``
        (``egress.ca_file``), certificate and host name verified (RFC 9525). Connections the guard
        does not make itself (the upstream connector, ``bastion.upstream.http``) use it too."""
        return self._transport.tls

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections still open."""
        await self._transport.aclose()

    async def fetch(
        self,
        url: str,
        *,
        max_bytes: int,
        timeout_s: float,
        accept: str = "application/json",
        allow_http: bool = False,
        allow: AllowList = NO_EXCEPTIONS,
        purpose: str = "fetch",
    ) -> FetchResult:
        """GET ``url``, following up to ``max_redirects`` redirects, each hop checked afresh.

        ``max_bytes`` caps the body of each response (a larger one is refused, not
        truncated); ``timeout_s`` (seconds) bounds the whole fetch, all hops and
        lookups included; ``allow_http`` admits plain http URLs; ``allow`` is permitted
        besides the guard's own list, on every hop; ``purpose`` labels a refusal
        (``Refusal.purpose``). Any status is returned, a redirect without ``Location``
        included. Raises ``EgressDenied`` for a refusal by policy (URL, address, redirect
        count, size) and ``UpstreamUnavailable`` when the fetch fails (resolution,
        connection, TLS verification, timeout). Neither message carries a URL query or
        credentials.
        """
        call = _Call(url, max_bytes, timeout_s, accept, allow_http, allow)
        hop = _Hop(shown_url(url))
        return await self._reported(self._fetch(call, hop), hop, purpose)

    async def send(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        accept: str = "application/json",
        allow_http: bool = False,
        allow: AllowList = NO_EXCEPTIONS,
        purpose: str = "send",
        shown_as: str | None = None,
    ) -> FetchResult:
        """One request (``POST`` to a token endpoint, ``GET`` with credentials) with no redirect followed.

        A request that carries credentials or a body is never replayed to another
        host, so a redirect comes back as it is (a 3xx result). ``headers`` are added
        to the guard's own (``Host``, ``Accept``, ``User-Agent`` cannot be replaced).
        ``shown_as`` replaces the URL in a refusal's report, for a URL that is itself a secret
        (a webhook's path). Limits, checks, ``allow``, ``purpose`` and errors as for ``fetch``.
        """
        call = _Call(url, max_bytes, timeout_s, accept, allow_http, allow, method, headers, body)
        return await self._reported(self._send(call), _Hop(shown_as or shown_url(url)), purpose)

    async def check(
        self, url: str, *, allow_http: bool, allow: AllowList = NO_EXCEPTIONS, purpose: str = "url_argument"
    ) -> list[IPAddress]:
        """Check a URL someone else will fetch (a tool argument) without connecting: the same URL
        and address checks as ``fetch``, with ``allow`` permitted besides the guard's own list.

        Returns the addresses the host resolves to. Raises ``EgressDenied`` (refused by policy,
        reported with ``purpose``) or ``UpstreamUnavailable`` (the name does not resolve).
        """

        async def checked() -> list[IPAddress]:
            target = parse_target(url, allow_http=allow_http)
            return await self._destinations.addresses(target.host, target.address, target.port, allow)

        return await self._reported(checked(), _Hop(shown_url(url)), purpose)

    async def checked_addresses(
        self,
        host: str,
        port: int,
        *,
        allow: AllowList = NO_EXCEPTIONS,
        purpose: str = "upstream",
        url: str | None = None,
    ) -> list[IPAddress]:
        """The addresses another client may connect to for ``host``:``port`` (the resolver of
        ``bastion.upstream.connections``): the IP literal ``host`` names in any spelling, or every address
        the name resolves to (one lookup), each checked as ``fetch`` checks them, with ``allow``
        permitted besides the guard's own list.

        ``url`` is the URL the connection is for (shown in the refusal; default ``//host:port``).
        Raises ``EgressDenied`` (a malformed host or a refused address, reported with
        ``purpose``) or ``UpstreamUnavailable`` (the name does not resolve).
        """

        async def checked() -> list[IPAddress]:
            name = normalise_host(host)
            return await self._destinations.addresses(name, parse_host(name), port, allow)

        hop = _Hop(shown_url(url) if url is not None else f"//{host}:{port}")
        return await self._reported(checked(), hop, purpose)

    async def _reported(self, work: Awaitable[_T], hop: _Hop, purpose: str) -> _T:
        """``await work``; an ``EgressDenied`` is reported to ``on_refusal`` (never failing), then raised."""
        try:
            return await work
        except EgressDenied as exc:
            await report(self._on_refusal, Refusal(url=hop.url, reason=exc.message, hop=hop.number, purpose=purpose))
            raise

    async def _fetch(self, call: _Call, hop: _Hop) -> FetchResult:
        target = parse_target(call.url, allow_http=call.allow_http)
        try:
            async with asyncio.timeout(call.timeout_s):
                return await self._follow_redirects(target, call, hop)
        except TimeoutError:
            raise UpstreamUnavailable(f"fetching from {target.host} timed out after {call.timeout_s:g} s") from None

    async def _send(self, call: _Call) -> FetchResult:
        target = parse_target(call.url, allow_http=call.allow_http)
        try:
            async with asyncio.timeout(call.timeout_s):
                addresses = await self._destinations.addresses(target.host, target.address, target.port, call.allow)
                return await self._transport.request(
                    target, addresses, accept=call.accept, max_bytes=call.max_bytes, method=call.method,
                    extra=call.headers, body=call.body,
                )  # fmt: skip
        except TimeoutError:
            raise UpstreamUnavailable(f"sending to {target.host} timed out after {call.timeout_s:g} s") from None

    async def _follow_redirects(self, target: Target, call: _Call, hop: _Hop) -> FetchResult:
        addresses = await self._destinations.addresses(target.host, target.address, target.port, call.allow)
        while True:
            result = await self._transport.request(target, addresses, accept=call.accept, max_bytes=call.max_bytes)
            location = result.headers.get("location")
            if result.status not in _REDIRECT_STATUSES or location is None:
                return result
            if hop.number == self._max_redirects:
                raise EgressDenied(f"{target.shown} redirects again after {hop.number} redirects")
            url = urljoin(target.url, location)  # RFC 9110 section 10.2.2: relative to the current URL
            hop.url, hop.number = shown_url(url), hop.number + 1
            target, addresses = await self._redirect(url, call)

    async def _redirect(self, url: str, call: _Call) -> tuple[Target, list[IPAddress]]:
        """The next hop, ``url``, checked anew."""
        try:
            target = parse_target(url, allow_http=call.allow_http)
            addresses = await self._destinations.addresses(target.host, target.address, target.port, call.allow)
        except EgressDenied as exc:
            raise EgressDenied(f"redirect to {shown_url(url)} refused: {exc.message}") from None
        return target, addresses
