"""Fetches over real sockets on 127.0.0.1: TLS with the original host name, redirects, limits."""

from __future__ import annotations

import gc
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from egress_cases import StaticResolver
from egress_origin import DOC, Origin
from tests.support.pki import Pki

from bastion.egress import AllowList, EgressGuard
from bastion.errors import ConfigError, EgressDenied, UpstreamUnavailable

LIMIT = 65536


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """A leaked socket or transport shows up as a ResourceWarning (an error) in the test that leaked it."""
    yield
    gc.collect()


def _redirect(origin: Origin, to: str, status: int = 302) -> str:
    return origin.url(f"/redirect?to={quote(to, safe='')}&status={status}")


async def test_fetch_over_tls_sends_the_original_host_name(guard: EgressGuard, origin: Origin) -> None:
    result = await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
    assert (result.url, result.status) == (origin.url("/doc"), 200)
    assert json.loads(result.body) == DOC
    assert result.headers["content-type"] == "application/json"
    [seen] = origin.requests
    assert seen.target == "/doc"
    assert seen.headers["host"] == f"localhost:{origin.port}"
    assert seen.headers["accept"] == "application/json"
    assert not {"authorization", "cookie", "proxy-authorization"} & seen.headers.keys()
    assert origin.server_names == ["localhost"]


async def test_the_certificate_is_checked_against_the_original_name_not_the_address(
    guard: EgressGuard, other_origin: Origin
) -> None:
    # The connection goes to 127.0.0.1, yet a certificate naming only other.example is accepted for other.example ...
    result = await guard.fetch(other_origin.url("/doc", host="other.example"), max_bytes=LIMIT, timeout_s=5)
    assert result.status == 200
    assert other_origin.server_names == ["other.example"]
    # ... and refused for localhost, which the certificate does not name.
    with pytest.raises(UpstreamUnavailable, match=r"could not fetch from localhost: .*certificate verify failed"):
        await guard.fetch(other_origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
    assert len(other_origin.requests) == 1


async def test_a_connection_verified_for_one_name_is_not_reused_for_another(guard: EgressGuard, origin: Origin) -> None:
    await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
    with pytest.raises(UpstreamUnavailable, match="Hostname mismatch"):
        await guard.fetch(origin.url("/doc", host="evil.example"), max_bytes=LIMIT, timeout_s=5)
    assert len(origin.requests) == 1


async def test_an_ip_literal_url_is_checked_against_the_ip_in_the_certificate(
    guard: EgressGuard, origin: Origin
) -> None:
    result = await guard.fetch(origin.url("/doc", host="0x7f.1"), max_bytes=LIMIT, timeout_s=5)
    assert (result.url, result.status) == (origin.url("/doc", host="127.0.0.1"), 200)
    assert origin.requests[0].headers["host"] == f"127.0.0.1:{origin.port}"


async def test_a_certificate_from_an_untrusted_ca_is_refused(origin: Origin, resolver: StaticResolver) -> None:
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1/32"]), resolver=resolver) as guard:
        with pytest.raises(UpstreamUnavailable, match="certificate verify failed"):
            await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)


async def test_loopback_is_refused_without_the_allow_list(pki: Pki, origin: Origin) -> None:
    async with EgressGuard(ca_file=pki.ca_file) as guard:
        with pytest.raises(EgressDenied, match=r"^localhost resolves to (127\.0\.0\.1|::1), a loopback address$"):
            await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
    assert origin.requests == []


async def test_the_system_resolver_and_an_allowed_loopback(pki: Pki, origin: Origin) -> None:
    # localhost may resolve to ::1 first, where nothing listens: the next checked address is tried.
    allow = AllowList.parse(["127.0.0.1/32", "::1/128"])
    async with EgressGuard(allow=allow, ca_file=pki.ca_file) as guard:
        result = await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
    assert result.status == 200


@pytest.mark.parametrize(
    ("to", "allow_http", "fragment"),
    [
        ("http://169.254.169.254/latest/meta-data/", True, "169.254.169.254 is a cloud metadata address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            False,
            "URL scheme 'http' for 169.254.169.254 is not allowed (only https)",
        ),
        ("https://10.0.0.1/", False, "10.0.0.1 is a private address"),
        ("https://0xa9fea9fe/latest/", False, "169.254.169.254 is a cloud metadata address"),
        ("https://evil.example/", False, None),
    ],
)
async def test_a_redirect_to_a_forbidden_destination_is_refused_on_the_hop(
    pki: Pki, origin: Origin, to: str, allow_http: bool, fragment: str | None
) -> None:
    resolver = StaticResolver({"localhost": ["127.0.0.1"], "evil.example": ["192.168.0.10"]})
    fragment = fragment or "evil.example resolves to 192.168.0.10, a private address"
    allow = AllowList.parse(["127.0.0.1/32"])
    async with EgressGuard(allow=allow, ca_file=pki.ca_file, resolver=resolver) as guard:
        with pytest.raises(EgressDenied) as caught:
            await guard.fetch(_redirect(origin, to), max_bytes=LIMIT, timeout_s=5, allow_http=allow_http)
    assert caught.value.message == f"redirect to {to} refused: {fragment}"
    assert len(origin.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_relative_redirect_is_followed(guard: EgressGuard, origin: Origin, status: int) -> None:
    result = await guard.fetch(_redirect(origin, "/doc?x=1", status), max_bytes=LIMIT, timeout_s=5)
    assert (result.url, result.status) == (origin.url("/doc?x=1"), 200)
    assert [seen.target for seen in origin.requests][1:] == ["/doc?x=1"]


async def test_cookies_are_neither_kept_nor_sent(guard: EgressGuard, origin: Origin) -> None:
    result = await guard.fetch(origin.url("/cookie"), max_bytes=LIMIT, timeout_s=5)
    assert result.status == 200
    await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
    assert [seen.headers.get("cookie") for seen in origin.requests] == [None, None, None]


async def test_up_to_max_redirects_are_followed(guard: EgressGuard, origin: Origin) -> None:
    result = await guard.fetch(origin.url("/hop?n=2"), max_bytes=LIMIT, timeout_s=5)  # 3 redirects, to /doc
    assert (result.url, result.status) == (origin.url("/doc"), 200)
    assert len(origin.requests) == 4


async def test_too_many_redirects_are_refused(guard: EgressGuard, origin: Origin) -> None:
    with pytest.raises(EgressDenied, match=f"^https://localhost:{origin.port}/loop redirects again after 3 redirects$"):
        await guard.fetch(origin.url("/loop"), max_bytes=LIMIT, timeout_s=5)
    assert len(origin.requests) == 4


async def test_no_redirects_at_all(pki: Pki, origin: Origin, resolver: StaticResolver) -> None:
    allow = AllowList.parse(["127.0.0.1/32"])
    async with EgressGuard(allow=allow, ca_file=pki.ca_file, resolver=resolver, max_redirects=0) as guard:
        with pytest.raises(EgressDenied, match="redirects again after 0 redirects"):
            await guard.fetch(_redirect(origin, "/doc"), max_bytes=LIMIT, timeout_s=5)


@pytest.mark.parametrize("route", ["/bytes", "/stream"])
async def test_a_body_over_max_bytes_is_refused(guard: EgressGuard, origin: Origin, route: str) -> None:
    with pytest.raises(EgressDenied, match=f"^response from localhost exceeds {LIMIT} bytes$"):
        await guard.fetch(origin.url(f"{route}?n={LIMIT + 1}"), max_bytes=LIMIT, timeout_s=5)
    result = await guard.fetch(origin.url(f"{route}?n={LIMIT}"), max_bytes=LIMIT, timeout_s=5)
    assert len(result.body) == LIMIT


async def test_a_slow_server_times_out(guard: EgressGuard, origin: Origin) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match=r"^fetching from localhost timed out after 0\.3 s$"):
        await guard.fetch(origin.url("/slow?s=10"), max_bytes=LIMIT, timeout_s=0.3)
    assert time.monotonic() - started < 2


async def test_the_timeout_covers_all_hops(guard: EgressGuard, origin: Origin) -> None:
    # Each hop answers within 0.2 s, the four of them do not within 0.5 s.
    with pytest.raises(UpstreamUnavailable, match=r"timed out after 0\.5 s"):
        await guard.fetch(origin.url("/hop?n=2&s=0.2"), max_bytes=LIMIT, timeout_s=0.5)
    assert 2 <= len(origin.requests) <= 3


async def test_http_only_when_allowed(plain_origin: Origin, resolver: StaticResolver) -> None:
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1/32"]), resolver=resolver) as guard:
        with pytest.raises(EgressDenied, match="URL scheme 'http' for localhost is not allowed"):
            await guard.fetch(plain_origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)
        result = await guard.fetch(plain_origin.url("/doc"), max_bytes=LIMIT, timeout_s=5, allow_http=True)
    assert result.status == 200
    assert plain_origin.requests[0].headers["host"] == f"localhost:{plain_origin.port}"


async def test_an_allowed_name_needs_no_address_range(pki: Pki, origin: Origin, resolver: StaticResolver) -> None:
    allow = AllowList.parse([f"localhost:{origin.port}"])
    async with EgressGuard(allow=allow, ca_file=pki.ca_file, resolver=resolver) as guard:
        assert (await guard.fetch(origin.url("/doc"), max_bytes=LIMIT, timeout_s=5)).status == 200
        with pytest.raises(EgressDenied, match=r"127\.0\.0\.1, a loopback address"):
            await guard.fetch(origin.url("/doc", host="other.example"), max_bytes=LIMIT, timeout_s=5)


async def test_connection_refused_is_unavailable(guard: EgressGuard) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(UpstreamUnavailable, match=r"^could not fetch from localhost: "):
        await guard.fetch(f"https://localhost:{port}/doc", max_bytes=LIMIT, timeout_s=5)


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="egress ca_file"):
        EgressGuard(ca_file=tmp_path / "missing.pem")
