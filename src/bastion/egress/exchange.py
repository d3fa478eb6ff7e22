"""One HTTP exchange with a checked address: the egress guard's transport.

``PinnedTransport.request`` connects to an address the guard has already checked,
never to the name, and keeps the name for ``Host`` (RFC 9110 section 7.2), the TLS
SNI (RFC 6066 section 3) and the certificate check (RFC 9525) through httpcore2's
``sni_hostname`` request extension. Bodies are capped; connections are not reused.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx2

from bastion.egress.addresses import IPAddress
from bastion.egress.target import Target
from bastion.errors import ConfigError, EgressDenied, UpstreamUnavailable

__all__ = ["FetchResult", "PinnedTransport"]

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

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or ``None`` when it is not JSON or not an object."""
        try:
            value = json.loads(self.body)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None


class PinnedTransport:
    """HTTP/1.1 to checked addresses: the system's CAs plus ``ca_file`` (PEM) trusted, no proxies
    from the environment, no kept-alive connections. Raises ``ConfigError`` when ``ca_file``
    cannot be loaded."""

    def __init__(self, ca_file: Path | None) -> None:
        self.tls = _ssl_context(ca_file)
        """The TLS client context: the system's CAs plus ``ca_file``, certificate and host name checked."""
        self._transport = httpx2.AsyncHTTPTransport(
            verify=self.tls, trust_env=False, limits=httpx2.Limits(max_keepalive_connections=0)
        )

    async def aclose(self) -> None:
        """Close the connections still open."""
        await self._transport.aclose()

    async def request(
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
        """One request to the first of ``addresses`` that takes the connection; the response read and closed.

        ``target`` names the host for ``Host``, SNI and the certificate check; ``accept`` is the
        ``Accept`` header; ``extra`` headers are added (never replacing the transport's own);
        ``max_bytes`` caps the body. Raises ``EgressDenied`` when the body exceeds it and
        ``UpstreamUnavailable`` when no address takes the connection or the exchange fails.
        """
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
