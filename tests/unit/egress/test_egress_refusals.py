"""The guard refuses forbidden destinations before any connection is tried."""

from __future__ import annotations

import re
import socket

import pytest
from egress_cases import IP_LITERALS, StaticResolver

from bastion.egress import AllowList, EgressGuard
from bastion.egress.addresses import IPAddress
from bastion.errors import EgressDenied, UpstreamUnavailable

pytestmark = pytest.mark.usefixtures("no_connections")


def _url(host: str) -> str:
    return f"https://{host if host.startswith('[') or ':' not in host else f'[{host}]'}:8443/doc"


@pytest.mark.parametrize(("host", "address", "reason"), IP_LITERALS)
async def test_ip_literals_in_every_encoding_are_refused(host: str, address: str, reason: str) -> None:
    resolver = StaticResolver({})
    async with EgressGuard(resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match=f"^{re.escape(address)} is an? {reason} address$"):
            await guard.fetch(_url(host), max_bytes=1024, timeout_s=5)
    assert resolver.questions == []


async def test_a_name_resolving_to_a_metadata_address_is_refused() -> None:
    resolver = StaticResolver({"evil.example": ["169.254.169.254"]})
    async with EgressGuard(resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match=r"^evil\.example resolves to 169\.254\.169\.254, a cloud metadata"):
            await guard.fetch("https://evil.example/.well-known/jwks.json", max_bytes=1024, timeout_s=5)
    assert resolver.questions == [("evil.example", 443)]


async def test_one_forbidden_address_among_public_ones_is_enough() -> None:
    resolver = StaticResolver({"mixed.example": ["93.184.215.14", "2606:2800::1", "10.0.0.7"]})
    async with EgressGuard(resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match=r"mixed\.example resolves to 10\.0\.0\.7, a private address"):
            await guard.fetch("https://mixed.example:8443/", max_bytes=1024, timeout_s=5)
    assert resolver.questions == [("mixed.example", 8443)]


async def test_localhost_through_the_system_resolver_is_loopback() -> None:
    async with EgressGuard() as guard:
        with pytest.raises(EgressDenied, match=r"^localhost resolves to (127\.0\.0\.1|::1), a loopback address$"):
            await guard.fetch("https://LOCALHOST./client.json", max_bytes=1024, timeout_s=5)


async def test_the_allow_list_for_one_address_does_not_cover_another() -> None:
    resolver = StaticResolver({"idp.internal": ["10.0.0.5", "169.254.169.254"]})
    async with EgressGuard(allow=AllowList.parse(["10.0.0.0/8"]), resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match=r"169\.254\.169\.254, a cloud metadata address"):
            await guard.fetch("https://idp.internal/", max_bytes=1024, timeout_s=5)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/", "URL scheme 'ftp'"),
        ("http://example.com/", "URL scheme 'http' for example.com is not allowed"),
        ("https://client:secret@example.com/", "carries user info"),
        ("https:///doc", "URL has no host"),
        ("https://%6c%6f%63%61%6c%68%6f%73%74/", "percent-encoded"),
        ("https://[fe80::1%25eth0]/", "zone id"),
    ],
)
async def test_bad_urls_are_refused(url: str, fragment: str) -> None:
    resolver = StaticResolver({})
    async with EgressGuard(resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match=fragment) as caught:
            await guard.fetch(url, max_bytes=1024, timeout_s=5)
    assert "secret" not in str(caught.value)
    assert resolver.questions == []


async def test_a_name_that_does_not_resolve_is_unavailable() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with EgressGuard(resolver=resolver) as guard:
        with pytest.raises(UpstreamUnavailable, match=r"^nowhere\.example could not be resolved$"):
            await guard.fetch("https://nowhere.example/", max_bytes=1024, timeout_s=5)


async def test_a_name_with_no_address_is_unavailable() -> None:
    async with EgressGuard(resolver=StaticResolver({"empty.example": []})) as guard:
        with pytest.raises(UpstreamUnavailable, match="resolves to no address"):
            await guard.fetch("https://empty.example/", max_bytes=1024, timeout_s=5)


async def test_a_zone_scoped_address_is_refused_even_when_allowed() -> None:
    resolver = StaticResolver({"router.internal": ["fe80::1%eth0"]})
    async with EgressGuard(allow=AllowList.parse(["fe80::/10"]), resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match="an address with a zone id"):
            await guard.fetch("https://router.internal/", max_bytes=1024, timeout_s=5)


@pytest.mark.parametrize(("max_bytes", "timeout_s"), [(-1, 5.0), (1024, 0.0)])
async def test_bad_limits_are_a_programming_error(max_bytes: int, timeout_s: float) -> None:
    async with EgressGuard() as guard:
        with pytest.raises(ValueError, match="max_bytes must be"):
            await guard.fetch("https://example.com/", max_bytes=max_bytes, timeout_s=timeout_s)
