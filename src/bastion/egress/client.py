"""The egress guard: the one outbound HTTP path for what Bastion fetches itself.

Client ID Metadata Documents, JWKS, OAuth metadata: URLs an outsider can name,
so each fetch is a server-side request forgery risk (MCP security best
practices, SSRF). Every hop is checked the same way: the URL (``parse_target``),
the host resolved once, every address it resolves to (``classify``, unless the
``AllowList`` permits it), then a connection to the checked address itself, not
to the name, so a second DNS answer (DNS rebinding) cannot redirect it. The
original host name still goes into the ``Host`` header, the TLS SNI and the
certificate check (httpcore2's ``sni_hostname`` request extension).

    fetch -> _follow_redirects -> _checked_addresses (resolve once, classify)
                               -> _exchange (connect to the checked address, capped body)
                               -> _redirect (the next hop, checked the same way)
    send  -> _checked_addresses -> _exchange (one request with a body or credentials; no redirects)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Self
from urllib.parse import urljoin

import httpx2

from bastion.egress.addresses import IPAddress, classify, describe
from bastion.egress.allowlist import NO_EXCEPTIONS, AllowList
from bastion.egress.target import Target, parse_target, shown_url
from bastion.errors import ConfigError, EgressDenied, UpstreamUnavailable

__all__ = ["EgressGuard", "FetchResult", "Resolver", "resolve"]

#: ``(host, port) -> addresses``: how the guard resolves a host name, once per hop.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REASON_CHARS = 200
_OWN_HEADERS = frozenset({"host", "accept", "accept-encoding", "user-agent", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class FetchResult:
    """The response of the last hop: its ``url`` (normalised, no fragment), ``status``,
    ``headers`` (lowercase names; repeated fields joined with ``", "``) and the whole ``body``."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The IPv4 and IPv6 addresses of ``host`` from the event loop's ``getaddrinfo``, in its order.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    families = (socket.AF_INET, socket.AF_INET6)
    return [ipaddress.ip_address(str(info[4][0])) for info in infos if info[0] in families]


class EgressGuard:
    """Fetches URLs that outsiders name without letting them reach what they should not.

    ``allow`` permits destinations that are private on purpose (an internal
    identity provider); ``ca_file`` is a PEM bundle trusted besides the system's
    CAs (an enterprise CA); ``resolver`` replaces ``getaddrinfo``; ``max_redirects``
    bounds the redirects followed per fetch. No cookies, no credentials, no
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
    ) -> None:
        if max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, not {max_redirects}")
        self._allow = allow
        self._resolve = resolver or resolve
        self._max_redirects = max_redirects
        self._transport = httpx2.AsyncHTTPTransport(
            verify=_ssl_context(ca_file), trust_env=False, limits=httpx2.Limits(max_keepalive_connections=0)
        )

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
    ) -> FetchResult:
        """GET ``url``, following up to ``max_redirects`` redirects, each hop checked afresh.

        ``max_bytes`` caps the body of each response (a larger one is refused, not
        truncated); ``timeout_s`` (seconds) bounds the whole fetch, all hops and
        lookups included; ``allow_http`` admits plain http URLs. Any status is
        returned, a redirect without ``Location`` included. Raises ``EgressDenied``
        for a refusal by policy (URL, address, redirect count, size) and
        ``UpstreamUnavailable`` when the fetch fails (resolution, connection, TLS
        verification, timeout). Neither message carries a URL query or credentials.
        """
        if max_bytes < 0 or timeout_s <= 0:
            raise ValueError(f"max_bytes must be >= 0 and timeout_s > 0, not {max_bytes} and {timeout_s}")
        target = parse_target(url, allow_http=allow_http)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._follow_redirects(target, accept=accept, max_bytes=max_bytes, allow_http=allow_http)
        except TimeoutError:
            raise UpstreamUnavailable(f"fetching from {target.host} timed out after {timeout_s:g} s") from None

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
    ) -> FetchResult:
        """One request (``POST`` to a token endpoint, ``GET`` with credentials) with no redirect followed.

        A request that carries credentials or a body is never replayed to another
        host, so a redirect comes back as it is (a 3xx result). ``headers`` are added
        to the guard's own (``Host``, ``Accept``, ``User-Agent`` cannot be replaced).
        Limits, checks and errors as for ``fetch``.
        """
        if max_bytes < 0 or timeout_s <= 0:
            raise ValueError(f"max_bytes must be >= 0 and timeout_s > 0, not {max_bytes} and {timeout_s}")
        target = parse_target(url, allow_http=allow_http)
        try:
            async with asyncio.timeout(timeout_s):
                addresses = await self._checked_addresses(target)
                return await self._exchange(
                    target, addresses, accept=accept, max_bytes=max_bytes, method=method, extra=headers, body=body
                )
        except TimeoutError:
            raise UpstreamUnavailable(f"sending to {target.host} timed out after {timeout_s:g} s") from None

    async def check(self, url: str, *, allow_http: bool, allow: AllowList = NO_EXCEPTIONS) -> list[IPAddress]:
        """Check a URL someone else will fetch (a tool argument) without connecting: the same URL
        and address checks as ``fetch``, with ``allow`` permitted besides the guard's own list.

        Returns the addresses the host resolves to. Raises ``EgressDenied`` (refused by policy)
        or ``UpstreamUnavailable`` (the name does not resolve).
        """
        target = parse_target(url, allow_http=allow_http)
        return await self._checked_addresses(target, allow)

    async def _follow_redirects(self, target: Target, *, accept: str, max_bytes: int, allow_http: bool) -> FetchResult:
        addresses = await self._checked_addresses(target)
        redirects = 0
        while True:
            result = await self._exchange(target, addresses, accept=accept, max_bytes=max_bytes)
            location = result.headers.get("location")
            if result.status not in _REDIRECT_STATUSES or location is None:
                return result
            if redirects == self._max_redirects:
                raise EgressDenied(f"{target.shown} redirects again after {redirects} redirects")
            redirects += 1
            target, addresses = await self._redirect(target, location, allow_http=allow_http)

    async def _redirect(self, target: Target, location: str, *, allow_http: bool) -> tuple[Target, list[IPAddress]]:
        """The next hop, ``location`` resolved against the current URL (RFC 9110 section 10.2.2), checked anew."""
        url = urljoin(target.url, location)
        try:
            next_target = parse_target(url, allow_http=allow_http)
            return next_target, await self._checked_addresses(next_target)
        except EgressDenied as exc:
            raise EgressDenied(f"redirect to {shown_url(url)} refused: {exc.message}") from None

    async def _checked_addresses(self, target: Target, extra: AllowList = NO_EXCEPTIONS) -> list[IPAddress]:
        """The addresses to connect to: the IP literal, or every address the host resolves to.

        Raises ``EgressDenied`` if any of them is refused and allowed neither by the guard's
        list nor by ``extra``.
        """
        if target.address is not None:
            if (refusal := self._refusal(target, target.address, extra)) is not None:
                raise EgressDenied(f"{target.host} is {refusal}")
            return [target.address]
        try:
            addresses = list(dict.fromkeys(await self._resolve(target.host, target.port)))
        except OSError as exc:
            raise UpstreamUnavailable(f"{target.host} could not be resolved") from exc
        if not addresses:
            raise UpstreamUnavailable(f"{target.host} resolves to no address")
        for address in addresses:
            if (refusal := self._refusal(target, address, extra)) is not None:
                raise EgressDenied(f"{target.host} resolves to {address}, {refusal}")
        return addresses

    def _refusal(self, target: Target, address: IPAddress, extra: AllowList = NO_EXCEPTIONS) -> str | None:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            return "an address with a zone id"
        reason = classify(address)
        if reason is None:
            return None
        if self._allow.permits(target.host, address, target.port) or extra.permits(target.host, address, target.port):
            return None
        return describe(reason)

    async def _exchange(
        self,
        target: Target,
        addresses: list[IPAddress],
        *,
        accept: str,
        max_bytes: int,
        method: str = "GET",
        extra: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> FetchResult:
        """One request to the first of ``addresses`` that takes the connection; the response read and closed."""
        own = {"Host": target.authority, "Accept": accept, "Accept-Encoding": "identity", "User-Agent": "Bastion"}
        headers = {k: v for k, v in (extra or {}).items() if k.lower() not in _OWN_HEADERS} | own
        failure: httpx2.HTTPError | None = None
        for address in addresses:
            request = httpx2.Request(
                method,
                target.connect_url(address),
                headers=headers,
                content=body or None,
                extensions={"sni_hostname": target.host},
            )
            try:
                response = await self._transport.handle_async_request(request)
            except httpx2.ConnectError as exc:
                failure = exc
                continue
            except httpx2.HTTPError as exc:
                raise _unavailable(target, exc) from exc
            try:
                body = await _read_body(response, target, max_bytes)
            except httpx2.HTTPError as exc:
                raise _unavailable(target, exc) from exc
            finally:
                await response.aclose()
            return FetchResult(target.url, response.status_code, MappingProxyType(dict(response.headers.items())), body)
        raise _unavailable(target, failure)


async def _read_body(response: httpx2.Response, target: Target, max_bytes: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``max_bytes`` (declared or streamed)."""
    refusal = EgressDenied(f"response from {target.host} exceeds {max_bytes} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise refusal
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise refusal
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(target: Target, exc: httpx2.HTTPError | None) -> UpstreamUnavailable:
    reason = (str(exc) or type(exc).__name__)[:_MAX_REASON_CHARS] if exc is not None else "no address"
    return UpstreamUnavailable(f"could not fetch from {target.host}: {reason}")


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trusted CAs plus ``ca_file``; certificate and host name checks on, TLS 1.2 at least."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as exc:
            raise ConfigError(f"egress ca_file {ca_file}: {exc}") from None
    return context
