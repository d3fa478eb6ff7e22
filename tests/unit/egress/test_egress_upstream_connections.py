"""The guard on the upstream client's connections (``bastion.upstream.connections``), over real sockets."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator

import pytest
from egress_cases import StaticResolver
from egress_origin import Origin

from bastion.egress import AllowList, EgressGuard, Refusal
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
    assert answers.questions == [("mcp.internal", plain_origin.port)]  # the client asked the guard, not the system
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
