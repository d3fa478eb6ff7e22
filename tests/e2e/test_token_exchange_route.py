"""A route whose upstream credential is minted by OAuth 2.0 Token Exchange (RFC 8693), end to end.

Real processes on loopback, nothing mocked:

- the STS ``tests/support/token_exchange_sts``: authenticates Bastion (HTTP Basic), verifies the
  subject token Bastion signs for the caller against Bastion's own JWKS
  (``<bastion>/.well-known/jwks.json``: ``iss`` Bastion, ``aud`` the STS) and issues an ES256
  JWT for the configured audience with ``act: {"sub": <Bastion's client id at the STS>}``;
- the upstream ``tests/support/recording_upstream``: an MCP server (the ``mcp`` SDK) that accepts
  only the STS's tokens for its audience (verified with joserfc against the STS's JWKS), records
  every request's headers before authenticating it, and answers ``whoami`` with the claims;
- ``bastion serve`` with the route ``records`` (``credentials.token_exchange``), called with the
  SDK client and tokens from ``bastion token mint``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import DEMO_CEDAR, REPO, BastionProcess, free_port, stop, wait_http
from tests.support.e2e_helpers import MODERN, connect, jwt_header, jwt_payload, raw_headers, rpc, wait_until
from tests.support.recording_upstream import RecordingUpstream

pytestmark = pytest.mark.e2e

STS_CLIENT = "bastion-at-sts"
STS_SECRET = secrets.token_urlsafe(24)
AUDIENCE = "https://records.example/api"
SCOPE = "records.read"
STS_TOKEN_TTL_S = 300
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@dataclass
class Sts:
    """The running STS: where it is and what it recorded."""

    issuer: str
    record: Path

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def exchanges(self) -> list[dict[str, Any]]:
        """One entry per request to ``/token`` (no token or secret in them), oldest first."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text(encoding="utf-8").splitlines() if line]


@dataclass
class World:
    bastion: BastionProcess
    sts: Sts
    upstream: RecordingUpstream


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("token-exchange-route")
    for part in ("bastion", "sts", "upstream"):
        (workdir / part).mkdir()
    bastion = BastionProcess(workdir / "bastion", {"policy": {"files": [str(DEMO_CEDAR)]}, "routes": []})
    sts_port = free_port()
    sts = Sts(f"http://127.0.0.1:{sts_port}", workdir / "sts" / "exchanges.jsonl")
    upstream = RecordingUpstream(workdir / "upstream", jwks_url=sts.jwks_url, issuer=sts.issuer, audience=AUDIENCE)
    bastion.config.update(
        routes=[
            {
                "name": "records",
                "title": "Records",
                "http": {"url": upstream.url, "allow_http": True, "allow": ["127.0.0.1"]},
                "credentials": {
                    "token_exchange": {
                        "token_endpoint": sts.token_endpoint,
                        "client_id": STS_CLIENT,
                        "client_secret": {"env": "STS_CLIENT_SECRET"},
                        "audience": AUDIENCE,
                        "scopes": [SCOPE],
                        "subject_token_audience": sts.issuer,
                        "allow_http": True,
                        "allow": ["127.0.0.1"],
                    }
                },
            }
        ]
    )
    bastion.write_config()
    sts_args = [
        sys.executable, "-m", "tests.support.token_exchange_sts", "--port", str(sts_port),
        "--jwks-url", f"{bastion.base_url}/.well-known/jwks.json", "--audience", sts.issuer,
        "--subject-issuer", bastion.base_url, "--issuer", sts.issuer, "--client-id", STS_CLIENT,
        "--client-secret", STS_SECRET, "--record", str(sts.record), "--expires-in", str(STS_TOKEN_TTL_S),
        "--allowed-audience", AUDIENCE,
    ]  # fmt: skip
    with (workdir / "sts" / "sts.log").open("ab") as log:
        sts_proc = subprocess.Popen(sts_args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_http(f"{sts.issuer}/healthz", proc=sts_proc)
        with upstream:
            bastion.start({"STS_CLIENT_SECRET": STS_SECRET})
            try:
                yield World(bastion, sts, upstream)
            finally:
                bastion.stop()
    finally:
        stop(sts_proc)


async def whoami(world: World, token: str) -> dict[str, Any]:
    """Call ``whoami`` on the route with the SDK client and ``token``; the upstream's claims."""
    async with connect(world.bastion.url("records"), token, MODERN) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    claims: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return claims


def upstream_bearers(world: World, since: int = 0) -> list[str]:
    """The bearer tokens the upstream received (after its first ``since`` requests), in order."""
    found = []
    for request in world.upstream.requests()[since:]:
        for value in request.header("authorization"):
            assert value.startswith("Bearer "), value
            found.append(value.removeprefix("Bearer "))
    return found


def successful_exchanges(world: World, sub: str) -> list[dict[str, Any]]:
    return [e for e in world.sts.exchanges() if e.get("sub") == sub and e["status"] == 200]


async def test_each_person_gets_an_exchanged_token_and_the_clients_token_never_goes_upstream(world: World) -> None:
    bastion = world.bastion
    alice_token = bastion.mint("alice", "records", "engineering", email="alice@example.com")
    bob_token = bastion.mint("bob", "records", "engineering")
    seen = len(world.upstream.requests())

    claims = await whoami(world, alice_token)

    # The upstream verified a token the STS issued for Alice, for the configured audience, acting as Bastion.
    assert claims["iss"] == world.sts.issuer
    assert claims["sub"] == "alice"
    assert claims["aud"] == AUDIENCE
    assert claims["act"] == {"sub": STS_CLIENT}
    assert claims["client_id"] == STS_CLIENT
    assert claims["scope"] == SCOPE
    assert claims["exp"] - claims["iat"] == STS_TOKEN_TTL_S

    # What reached the upstream: only that token, never Alice's Bastion token (in no header at all).
    alice_bearers = upstream_bearers(world, seen)
    assert alice_bearers
    assert set(alice_bearers) == {alice_bearers[0]}
    alice_upstream = alice_bearers[0]
    assert alice_upstream != alice_token
    assert jwt_payload(alice_upstream)["jti"] == claims["jti"]
    assert jwt_header(alice_upstream)["kid"] == "sts-1"
    assert not [
        (name, value) for request in world.upstream.requests() for name, value in request.headers
        if alice_token in value or alice_token.split(".")[2] in value
    ]  # fmt: skip

    # The STS saw one exchange for Alice: Bastion authenticated, a JWT subject token, the configured target.
    (exchange,) = successful_exchanges(world, "alice")
    assert exchange["path"] == "/token"
    assert exchange["client_id"] == STS_CLIENT
    assert exchange["auth"] == "basic"
    assert exchange["audience"] == AUDIENCE
    assert exchange["scope"] == SCOPE
    assert exchange["subject_token_type"] == JWT_TYPE
    assert exchange["requested_token_type"] == ACCESS_TOKEN_TYPE
    assert exchange["jti"] == claims["jti"]

    # A second call within the token's life reuses it: no second exchange, the same token upstream.
    seen = len(world.upstream.requests())
    again = await whoami(world, alice_token)
    assert again["jti"] == claims["jti"]
    assert set(upstream_bearers(world, seen)) == {alice_upstream}
    assert len(successful_exchanges(world, "alice")) == 1

    # Bob gets his own token from his own exchange; Alice's is untouched.
    seen = len(world.upstream.requests())
    bob_claims = await whoami(world, bob_token)
    assert bob_claims["sub"] == "bob"
    assert bob_claims["act"] == {"sub": STS_CLIENT}
    assert bob_claims["jti"] != claims["jti"]
    bob_bearers = set(upstream_bearers(world, seen))
    assert len(bob_bearers) == 1
    assert alice_upstream not in bob_bearers
    assert bob_token not in bob_bearers
    assert len(successful_exchanges(world, "bob")) == 1
    assert len(successful_exchanges(world, "alice")) == 1
    assert not [e for e in world.sts.exchanges() if e["status"] != 200]

    # The upstream's check is real: Alice's Bastion token, presented to it directly, is refused.
    direct = httpx2.post(world.upstream.url, json=rpc("tools/call", {"name": "whoami", "arguments": {}}),
                         headers=raw_headers(alice_token))  # fmt: skip
    assert direct.status_code == 401
    assert direct.headers["www-authenticate"].startswith("Bearer")

    # The audit log's outcome records say how the upstream credential was obtained, and for whom.
    def outcomes() -> list[dict[str, Any]]:
        return [r for r in audit_outcomes(bastion) if r["target"] == "whoami"]

    found = wait_until(lambda: len(outcomes()) >= 3 and outcomes())
    assert [(r["upstream"]["credential_kind"], r["upstream"]["credential_principal"]) for r in found] == [
        ("token_exchange", "alice"),
        ("token_exchange", "alice"),
        ("token_exchange", "bob"),
    ]
    assert all(r["upstream"]["status"] == 200 and r["result"]["error"] is False for r in found)


def audit_outcomes(bastion: BastionProcess) -> list[dict[str, Any]]:
    """The ``outcome`` audit records of ``tools/call``, oldest first."""
    with sqlite3.connect(bastion.database) as db:
        rows = db.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
    records = [json.loads(row[0]) for row in rows]
    return [r for r in records if r["kind"] == "outcome" and r["method"] == "tools/call"]
