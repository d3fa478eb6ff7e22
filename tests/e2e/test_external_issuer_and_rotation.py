"""Trusted external issuers and signing-key rotation, against a real Bastion.

An external issuer is a real loopback HTTP server publishing a JWKS; machine
clients present tokens it signed (RS256) and reach tools as the configured
``ServiceAccount`` with the groups of the configured claim. The JWKS is fetched through the
egress guard, so its loopback address is in ``egress.allow``; a Bastion without that entry
refuses the fetch (audited) and with it every token of that issuer. Key rotation with
``bastion token rotate-keys`` while Bastion runs: tokens signed by the old key
keep working, tokens minted afterwards carry the new key and work too, and the
JWKS publishes both.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from mcp import MCPError
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import connect, jwt_header

pytestmark = pytest.mark.e2e

POLICY = """
@id("robots-may-tell-time")
permit (principal in Group::"robots", action == Action::"tools/call", resource in Server::"time");
"""
AUDIENCE = "bastion-e2e"


class JwksServer:
    """A loopback identity provider that only publishes its public keys."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "ext-1", "alg": "RS256", "use": "sig"})
        body = json.dumps({"keys": [self.key.as_dict(private=False)]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def sign(self, sub: str, *, groups: list[str], audience: str = AUDIENCE, key: RSAKey | None = None) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": sub, "aud": audience, "iat": now, "exp": now + 300, "roles": groups}
        header = {"alg": "RS256", "kid": "ext-1", "typ": "JWT"}
        return jwt.encode(header, claims, key or self.key, algorithms=["RS256"])


@pytest.fixture(scope="module")
def idp() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _config(idp: JwksServer, workdir: Path, *, allow_idp: bool) -> dict[str, Any]:
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    time_server = str(Path(sys.executable).with_name("mcp-server-time"))
    port = idp.server.server_address[1]
    return {
        "egress": {"allow": [f"127.0.0.1:{port}"] if allow_idp else []},
        "identity": {
            "external_issuers": [
                {
                    "issuer": idp.issuer,
                    "jwks_url": f"{idp.issuer}/jwks.json",
                    "audience": AUDIENCE,
                    "algorithms": ["RS256"],
                    "groups_claim": "roles",
                    "routes": ["time"],
                }
            ]
        },
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "routes": [
            {"name": "time", "stdio": {"command": time_server, "args": ["--local-timezone", "UTC"]}},
            # Not scoped for the external issuer; never reached (authentication fails first).
            {"name": "other", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]}},
        ],
    }


@pytest.fixture(scope="module")
def bastion(idp: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("external")
    with BastionProcess(workdir, _config(idp, workdir, allow_idp=True)) as process:
        yield process


def _call(url: str, token: str, mode: str = "legacy") -> Any:
    """The tool's result, or the ``MCPError`` the gateway answered with."""

    async def run() -> Any:
        async with connect(url, token, mode) as client:
            try:
                return await client.call_tool("get_current_time", {"timezone": "UTC"})
            except MCPError as exc:
                return exc

    return asyncio.run(run())


def test_a_machine_client_with_an_external_token_calls_a_tool(idp: JwksServer, bastion: BastionProcess) -> None:
    token = idp.sign("ci-robot", groups=["robots"])
    for mode in ("legacy", "2026-07-28"):
        result = _call(bastion.url("time"), token, mode)
        assert not result.is_error
        assert "UTC" in result.content[0].text


def test_external_tokens_with_the_wrong_audience_group_or_key_are_refused(
    idp: JwksServer, bastion: BastionProcess
) -> None:
    client_info = {"name": "t", "version": "1"}
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client_info}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    wrong_audience = idp.sign("ci-robot", groups=["robots"], audience="someone-else")
    forged = idp.sign("ci-robot", groups=["robots"], key=RSAKey.generate_key(2048))  # same kid, another key
    for token in (wrong_audience, forged):
        response = httpx2.post(bastion.url("time"), json=body, headers={**headers, "authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert "resource_metadata=" in response.headers["www-authenticate"]
    scoped_elsewhere = idp.sign("ci-robot", groups=["robots"])
    response = httpx2.post(
        bastion.url("other"), json=body, headers={**headers, "authorization": f"Bearer {scoped_elsewhere}"}
    )
    assert response.status_code == 401  # the issuer's tokens are accepted on its routes only
    outsider = idp.sign("intruder", groups=["visitors"])
    denied = _call(bastion.url("time"), outsider)
    assert isinstance(denied, MCPError)
    assert denied.data == {"policies": []}


def test_rotating_keys_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(bastion: BastionProcess) -> None:
    old = bastion.mint("alice", "time", "robots")
    bastion.cli("token", "rotate-keys", "--config", str(bastion.config_path))
    new = bastion.mint("alice", "time", "robots")
    assert jwt_header(old)["kid"] != jwt_header(new)["kid"]
    published = {key["kid"] for key in httpx2.get(f"{bastion.base_url}/.well-known/jwks.json").json()["keys"]}
    assert {jwt_header(old)["kid"], jwt_header(new)["kid"]} <= published
    for token in (old, new):
        assert not _call(bastion.url("time"), token).is_error


def test_an_issuer_whose_jwks_the_egress_guard_refuses_is_not_trusted(
    idp: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("external-refused")
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    token = idp.sign("ci-robot", groups=["robots"])
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
    }
    with BastionProcess(workdir, _config(idp, workdir, allow_idp=False)) as process:
        response = httpx2.post(process.url("time"), json=body, headers=headers)
        rows = process.audit_rows("egress/connect")
    assert response.status_code == 401
    assert rows, "the refused JWKS fetch left no audit record"
    assert {(effect, reason) for effect, reason, _ in rows} == {("deny", "egress_denied")}
    assert {target for _, _, target in rows} == {f"{idp.issuer}/jwks.json"}
