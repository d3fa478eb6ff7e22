"""Fixtures for the egress tests: a throwaway PKI, TLS and plain origins on 127.0.0.1, guards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from egress_cases import StaticResolver
from egress_origin import Origin
from tests.support.pki import Pki, make_pki

from bastion.egress import AllowList, EgressGuard


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and two leaf certificates: localhost/127.0.0.1 and other.example."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def origin(pki: Pki) -> AsyncIterator[Origin]:
    """An HTTPS origin whose certificate names localhost and 127.0.0.1."""
    server = Origin(pki.localhost)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def other_origin(pki: Pki) -> AsyncIterator[Origin]:
    """An HTTPS origin whose certificate names only other.example."""
    server = Origin(pki.other)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def plain_origin() -> AsyncIterator[Origin]:
    """A plain-http origin."""
    server = Origin(None)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def resolver() -> StaticResolver:
    """localhost, other.example and evil.example all on 127.0.0.1 (IPv4 only)."""
    return StaticResolver({name: ["127.0.0.1"] for name in ("localhost", "other.example", "evil.example")})


@pytest.fixture
async def guard(pki: Pki, resolver: StaticResolver) -> AsyncIterator[EgressGuard]:
    """A guard that trusts the test CA and allows 127.0.0.1/32."""
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1/32"]), ca_file=pki.ca_file, resolver=resolver) as guard:
        yield guard


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to send a request."""

    async def tripwire(*_args: Any, **_kwargs: Any) -> httpx2.Response:
        pytest.fail("the guard tried to connect")

    monkeypatch.setattr(httpx2.AsyncHTTPTransport, "handle_async_request", tripwire)
