"""The guard inside aiohttp: ``GuardedResolver`` and the upstream client's connections over real sockets."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from egress_cases import StaticResolver
from egress_origin import Origin

from bastion.egress import AllowList, EgressGuard, GuardedResolver, Refusal
from bastion.egress.resolver import EgressRefused
from bastion.errors import EgressDenied, UpstreamUnavailable
from bastion.upstream.http import HttpUpstream


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """A leaked socket or session shows up as a ResourceWarning (an error) in the test that leaked it."""
    yield
    gc.collect()


class Refusals:
    """An ``on_refusal`` hook that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[Refusal] = []

    async def __call__(self, refusal: Refusal) -> None:
        self.seen.append(refusal)


@pytest.fixture
def answers() -> StaticResolver:
    return StaticResolver({"mcp.internal": ["127.0.0.1"], "dual.example": ["93.184.215.14", "2606:2800::1"]})


@pytest.fixture
def refusals() -> Refusals:
    return Refusals()


@pytest.fixture
async def guard(answers: StaticResolver, refusals: Refusals) -> AsyncIterator[EgressGuard]:
    async with EgressGuard(resolver=answers, on_refusal=refusals) as guard:
        yield guard


async def _get(upstream: HttpUpstream) -> bytes:
    response = await upstream.send("GET", headers={"accept": "application/json"})
    assert response.status == 200
    return response.body


# --- the resolver on its own --------------------------------------------------------------------


async def test_the_resolver_answers_checked_numeric_addresses_of_the_asked_family(guard: EgressGuard) -> None:
    resolver = GuardedResolver(guard)
    both = await resolver.resolve("dual.example", 443, family=socket.AF_UNSPEC)
    assert [(r["host"], r["family"], r["port"]) for r in both] == [
        ("93.184.215.14", socket.AF_INET, 443),
        ("2606:2800::1", socket.AF_INET6, 443),
    ]
    assert all(r["flags"] & socket.AI_NUMERICHOST and r["hostname"] == "dual.example" for r in both)
    [v6] = await resolver.resolve("dual.example", 443, family=socket.AF_INET6)
    assert v6["host"] == "2606:2800::1"
    with pytest.raises(OSError, match="no address of family AF_INET"):
        await GuardedResolver(guard, allow=AllowList.parse(["::1"])).resolve("::1", 443, family=socket.AF_INET)
    await resolver.close()


async def test_the_resolver_refuses_with_an_oserror_carrying_the_denial(guard: EgressGuard, refusals: Refusals) -> None:
    resolver = GuardedResolver(guard, url="https://mcp.internal/mcp?key=s3cret")
    with pytest.raises(EgressRefused) as caught:
        await resolver.resolve("mcp.internal", 443)
    assert isinstance(caught.value, OSError)
    assert isinstance(caught.value.denial, EgressDenied)
    assert caught.value.denial.message == "mcp.internal resolves to 127.0.0.1, a loopback address"
    assert refusals.seen == [
        Refusal(url="https://mcp.internal/mcp", reason=caught.value.denial.message, hop=0, purpose="upstream")
    ]


async def test_the_resolver_reads_a_host_in_any_spelling(guard: EgressGuard) -> None:
    with pytest.raises(EgressRefused, match=r"^127\.0\.0\.1 is a loopback address$"):
        await GuardedResolver(guard).resolve("0x7f.1", 80)
    with pytest.raises(EgressRefused, match="percent-encoded"):
        await GuardedResolver(guard).resolve("%6c%6f%63%61%6c%68%6f%73%74", 80)


async def test_a_name_that_does_not_resolve_is_a_plain_oserror(guard: EgressGuard, refusals: Refusals) -> None:
    with pytest.raises(OSError, match="could not be resolved") as caught:
        await GuardedResolver(guard).resolve("nowhere.example", 443)
    assert not isinstance(caught.value, EgressRefused)
    assert refusals.seen == []


# --- the upstream client over real sockets ------------------------------------------------------


async def test_an_allowed_upstream_name_is_reached_at_the_checked_address(
    guard: EgressGuard, answers: StaticResolver, plain_origin: Origin
) -> None:
    url = plain_origin.url("/doc", host="mcp.internal")
    upstream = HttpUpstream(url, guard=guard, allow=AllowList.parse(["127.0.0.1"]), allow_http=True)
    try:
        assert b"client_id" in await _get(upstream)
    finally:
        await upstream.aclose()
    assert answers.questions == [("mcp.internal", plain_origin.port)]  # aiohttp asked the guard, not the system
    assert plain_origin.requests[0].headers["host"] == f"mcp.internal:{plain_origin.port}"


async def test_the_global_allow_list_admits_an_upstream_too(answers: StaticResolver, plain_origin: Origin) -> None:
    async with EgressGuard(allow=AllowList.parse(["mcp.internal"]), resolver=answers) as guard:
        upstream = HttpUpstream(plain_origin.url("/doc", host="mcp.internal"), guard=guard, allow_http=True)
        try:
            await _get(upstream)
        finally:
            await upstream.aclose()


async def test_each_new_connection_is_checked_again_so_rebinding_fails(
    guard: EgressGuard, answers: StaticResolver, refusals: Refusals, plain_origin: Origin
) -> None:
    url = plain_origin.url("/doc", host="mcp.internal")
    upstream = HttpUpstream(url, guard=guard, allow=AllowList.parse(["127.0.0.0/8"]), allow_http=True)
    try:
        await _get(upstream)
        await _get(upstream)  # the pooled connection: no new lookup
        assert len(answers.questions) == 1
        await upstream.aclose()  # the next request needs a new connection, and a new lookup (no DNS cache)
        answers.answers = {"mcp.internal": ["169.254.169.254"]}
        with pytest.raises(
            EgressDenied, match=r"mcp\.internal resolves to 169\.254\.169\.254, a cloud metadata address"
        ):
            await _get(upstream)
    finally:
        await upstream.aclose()
    assert len(answers.questions) == 2
    assert len(plain_origin.requests) == 2
    assert [(r.purpose, r.hop) for r in refusals.seen] == [("upstream", 0)]


async def test_an_allowed_ip_literal_upstream_is_reached(guard: EgressGuard, plain_origin: Origin) -> None:
    upstream = HttpUpstream(
        plain_origin.url("/doc", host="0x7f.1"), guard=guard, allow=AllowList.parse(["127.0.0.1"]), allow_http=True
    )
    try:
        await _get(upstream)
        await _get(upstream)
    finally:
        await upstream.aclose()
    assert plain_origin.requests[0].headers["host"] == f"127.0.0.1:{plain_origin.port}"


async def test_a_refused_ip_literal_upstream_is_refused_and_reported_on_every_call(
    guard: EgressGuard, refusals: Refusals, plain_origin: Origin
) -> None:
    upstream = HttpUpstream(plain_origin.url("/doc", host="127.0.0.1"), guard=guard, allow_http=True)
    try:
        for _ in range(2):
            with pytest.raises(EgressDenied, match=r"127\.0\.0\.1 is a loopback address"):
                await _get(upstream)
    finally:
        await upstream.aclose()
    assert plain_origin.requests == []
    assert len(refusals.seen) == 2


async def test_an_unresolvable_upstream_is_unavailable_not_denied(guard: EgressGuard, refusals: Refusals) -> None:
    upstream = HttpUpstream("https://nowhere.example/mcp", guard=guard)
    try:
        with pytest.raises(UpstreamUnavailable, match="upstream unreachable"):
            await _get(upstream)
    finally:
        await upstream.aclose()
    assert refusals.seen == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://mcp.example/mcp", "URL scheme 'http' for mcp.example is not allowed"),
        ("https://user:pw@mcp.example/mcp", "carries user info"),
    ],
)
def test_an_upstream_url_the_guard_cannot_accept_is_refused_at_construction(
    guard: EgressGuard, url: str, fragment: str
) -> None:
    with pytest.raises(EgressDenied, match=fragment):
        HttpUpstream(url, guard=guard)
