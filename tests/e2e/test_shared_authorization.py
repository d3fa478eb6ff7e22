"""The authorization server's records shared by replicas (issue 17): two ``bastion serve`` processes
with ``stores.postgres`` on one schema behind HAProxy (round robin, no stickiness), the official
``mcp`` SDK client signing in through the balancer with a person scripted over HTTP.

Every request of the flow is balanced on its own, so dynamic registration, the authorization
request, the sign-in, the consent, the code's redemption and the MCP calls land on both replicas
(HAProxy's ``x-bastion-replica`` header shows it): the flow only completes if each step finds what
another replica wrote. Then the consent given once is remembered by both (no page the second time),
and a refresh token rotated through one replica is refused as reused on the other, which revokes
its family there too (OAuth 2.1 section 4.3.1); ``bastion consent`` with either replica's
configuration lists and revokes the same consent.

Real processes on loopback: HAProxy, two gateways with the balancer's URL as their public URL and one
signing key (copied, as in ``test_shared_stores``), the demo notes server.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, free_port, notes_server, write_users_file
from tests.support.databases import POSTGRES_URL, REDIS_URL, delete_redis_keys, drop_postgres_schema, postgres_schema
from tests.support.e2e_helpers import LEGACY
from tests.support.load_balancer import REPLICA_HEADER, HAProxy

from bastion.demo.sign_in import MemoryTokenStorage, ScriptedSignIn, oauth_http_client

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse alice"


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[HAProxy, list[BastionProcess]]]:
    """Two replicas with the authorization server on one PostgreSQL schema (sessions in Redis)
    behind HAProxy; the schema and the Redis keys are removed afterwards."""
    schema = postgres_schema(tmp_path)
    prefix = f"bastion-e2e:{schema}:"
    stores = {"postgres": {"url": POSTGRES_URL, "schema": schema}, "redis": {"url": REDIS_URL, "prefix": prefix}}
    port = free_port()
    try:
        with notes_server() as notes_url:
            replicas = [_replica(tmp_path / name, f"http://127.0.0.1:{port}", notes_url, stores) for name in "ab"]
            first, second = replicas
            with first:
                first.mint("warm-up", "notes")  # creates the signing key, which the second replica is given
                (second.workdir / "data").mkdir(parents=True, mode=0o700)
                shutil.copy2(first.workdir / "data" / "signing-keys.json", second.workdir / "data")
                with second, HAProxy(tmp_path / "haproxy", [r.port for r in replicas], port) as balancer:
                    yield balancer, replicas
    finally:
        asyncio.run(drop_postgres_schema(tmp_path))
        asyncio.run(delete_redis_keys(prefix))


def _replica(workdir: Path, public_url: str, notes_url: str, stores: dict[str, Any]) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    users_file = write_users_file(workdir, {"alice": (PASSWORD, ["engineering"])})
    return BastionProcess(workdir, {
        "server": {"public_url": public_url},
        "policy": {"files": [str(DEMO_CEDAR)]},
        "stores": stores,
        "identity": {"authorization_server": {"users_file": users_file, "dynamic_registration": True,
                                              "refresh_reuse_grace": "0s"}},
        "routes": [{"name": "notes", "title": "Team notes", "trust_annotations": True,
                    "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
    })  # fmt: skip


async def _connect(url: str, person: ScriptedSignIn, storage: MemoryTokenStorage, served: set[str]) -> list[str]:
    """Sign in with OAuth through the balancer (when challenged) and list the tools; ``served`` gets
    the replica of every answer."""

    async def record(response: httpx2.Response) -> None:
        served.add(response.headers.get(REPLICA_HEADER, "?"))

    async with oauth_http_client(url, person, storage) as http:
        http.event_hooks["response"].append(record)
        async with Client(streamable_http_client(url, http_client=http), mode=LEGACY) as client:
            return sorted(tool.name for tool in (await client.list_tools()).tools)


def test_a_sign_in_spread_over_replicas_completes_and_its_grant_is_shared(
    balanced: tuple[HAProxy, list[BastionProcess]],
) -> None:
    balancer, (a, b) = balanced
    url = balancer.url("notes")
    person, storage, served = ScriptedSignIn("alice", PASSWORD), MemoryTokenStorage(), set[str]()
    tools = asyncio.run(_connect(url, person, storage, served))
    assert "search_notes" in tools
    assert served == {"r0", "r1"}, "every step was balanced on its own"
    assert storage.client_info is not None
    assert storage.tokens is not None
    assert storage.tokens.refresh_token is not None

    # The consent given once holds on both replicas: the same browser gets no page at all.
    person.user.pages.clear()
    for _ in range(2):
        again = MemoryTokenStorage(storage.client_info)
        asyncio.run(_connect(url, person, again, set()))
        assert again.tokens is not None
    assert [page.status_code for page in person.user.pages] == [303, 303]

    # A refresh token rotated through one replica is a reuse on the other: the family is revoked.
    client_id, refresh = storage.client_info.client_id, storage.tokens.refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id}
    with httpx2.Client(timeout=10) as http:
        rotated = http.post(a.base_url + "/oauth/token", data=form)
        assert rotated.status_code == 200, rotated.text
        reused = http.post(b.base_url + "/oauth/token", data=form)
        assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
        assert "reused" in reused.json()["error_description"]
        fresh = {**form, "refresh_token": rotated.json()["refresh_token"]}
        refused = http.post(a.base_url + "/oauth/token", data=fresh)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant"), "its family was revoked"

    # The CLI of either replica's configuration reaches the same records.
    listed = b.cli("consent", "list", "--sub", "alice", "--config", str(b.config_path))
    assert client_id[:12] in listed.stdout
    revoked = a.cli("consent", "revoke", "--sub", "alice", "--config", str(a.config_path))
    assert "revoked 1 consents and 2 token families of alice" in revoked.stdout  # the reused one was already
