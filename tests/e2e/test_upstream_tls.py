"""HTTPS upstreams behind a company CA: Bastion verifies them with ``egress.ca_file``, never without.

Real processes on loopback, nothing mocked:

- a throwaway PKI (``tests/support/pki``): a test CA, a ``localhost`` certificate (IP 127.0.0.1)
  and an ``other`` certificate (``other.example`` only);
- two HTTPS MCP servers (``tests/support/e2e_env_server`` with ``--port/--cert/--key``): one with
  the ``localhost`` certificate, one with the ``other`` certificate, both on 127.0.0.1;
- ``bastion serve`` with ``egress.ca_file`` set to the test CA (routes ``trusted`` and
  ``wrong-name``), and a second one without it (route ``trusted`` only);
- the official SDK client with tokens from ``bastion token mint``.

The company CA is trusted exactly where it is configured: with it, the upstream's certificate
verifies and the call goes through; without it, Bastion refuses the connection (no fallback to
an unverified one); a certificate for another name is refused even when its CA is trusted. Each
refusal is a JSON-RPC error (503, -32603) and an outcome record ``upstream_unavailable``.
"""

from __future__ import annotations

import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, free_port, stop
from tests.support.e2e_helpers import (
    ENV_SERVER,
    LEGACY,
    MODERN,
    connect,
    initialize_params,
    legacy_post,
    modern_post,
    reply_message,
    rpc,
    wait_until,
)
from tests.support.pki import Leaf, make_pki

pytestmark = pytest.mark.e2e


@dataclass
class World:
    upstream_pid: int
    with_ca: BastionProcess
    without_ca: BastionProcess
    token_with_ca: str
    token_without_ca: str


def _https_upstream(leaf: Leaf, ca_file: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the env server over HTTPS with ``leaf``; wait until it answers over TLS with a chain
    to ``ca_file`` (names not checked: the ``other`` leaf is not for 127.0.0.1)."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ENV_SERVER),
                "--port",
                str(port),
                "--cert",
                str(leaf.certfile),
                "--key",
                str(leaf.keyfile),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    chain_only = ssl.create_default_context(cafile=ca_file)
    chain_only.check_hostname = False

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTPS upstream exited:\n{log.read_text(errors='replace')}")
        try:
            with httpx2.Client(verify=chain_only, timeout=2.0) as http:
                http.get(f"https://127.0.0.1:{port}/mcp")
        except httpx2.TransportError:
            return False
        return True

    wait_until(listening, timeout_s=30.0)
    return proc, port


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("upstream-tls")
    pki = make_pki(workdir)
    trusted, trusted_port = _https_upstream(pki.localhost, pki.ca_file, workdir / "trusted.log")
    other, other_port = _https_upstream(pki.other, pki.ca_file, workdir / "other.log")
    routes = {
        "trusted": {
            "name": "trusted",
            "http": {"url": f"https://127.0.0.1:{trusted_port}/mcp", "allow": ["127.0.0.1"]},
        },
        "wrong-name": {
            "name": "wrong-name",
            "http": {"url": f"https://127.0.0.1:{other_port}/mcp", "allow": ["127.0.0.1"]},
        },
    }
    policy = {"files": [str(DEMO_CEDAR)]}
    with_ca = BastionProcess(
        workdir / "with-ca",
        {"policy": policy, "egress": {"ca_file": str(pki.ca_file)}, "routes": list(routes.values())},
    )
    without_ca = BastionProcess(workdir / "without-ca", {"policy": policy, "routes": [routes["trusted"]]})
    try:
        with with_ca, without_ca:
            yield World(
                upstream_pid=trusted.pid,
                with_ca=with_ca,
                without_ca=without_ca,
                token_with_ca=with_ca.mint("alice", "trusted", "engineering"),
                token_without_ca=without_ca.mint("alice", "trusted", "engineering"),
            )
    finally:
        stop(trusted)
        stop(other)


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
async def test_upstream_behind_the_configured_ca_is_reached_over_verified_tls(world: World, mode: str) -> None:
    async with connect(world.with_ca.url("trusted"), world.token_with_ca, mode) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error
    assert result.structured_content == {"result": world.upstream_pid}


def _unavailable_outcomes(bastion: BastionProcess) -> int:
    """How many outcome records in ``bastion``'s audit log say the upstream was unavailable."""
    with sqlite3.connect(bastion.database) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM audit_events WHERE json_extract(record, '$.kind') = 'outcome' "
            "AND json_extract(record, '$.result.error_code') = 'upstream_unavailable'"
        ).fetchone()
    return int(count)


def _refusal(bastion: BastionProcess, route: str, token: str, mode: str) -> httpx2.Response:
    """The first request a client of ``mode`` sends on ``route``: ``initialize`` (2025-11-25) or a
    stateless ``tools/call`` of ``whoami`` (2026-07-28)."""
    with httpx2.Client(timeout=30.0) as http:
        if mode == LEGACY:
            return legacy_post(http, bastion.url(route), token, None, rpc("initialize", initialize_params()))
        return modern_post(http, bastion.url(route), token, "tools/call", {"name": "whoami", "arguments": {}})


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
def test_without_the_ca_the_upstream_is_refused_not_reached_unverified(world: World, mode: str) -> None:
    recorded = _unavailable_outcomes(world.without_ca)
    response = _refusal(world.without_ca, "trusted", world.token_without_ca, mode)
    assert response.status_code == 503, response.text
    error = reply_message(response)["error"]
    assert error["code"] == -32603
    assert error["message"] == "upstream certificate not verified: unable to get local issuer certificate"
    wait_until(lambda: _unavailable_outcomes(world.without_ca) == recorded + 1)


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
def test_a_certificate_for_another_name_is_refused_even_under_the_trusted_ca(world: World, mode: str) -> None:
    token = world.with_ca.mint("alice", "wrong-name", "engineering")
    recorded = _unavailable_outcomes(world.with_ca)
    response = _refusal(world.with_ca, "wrong-name", token, mode)
    assert response.status_code == 503, response.text
    error = reply_message(response)["error"]
    assert error["code"] == -32603
    assert error["message"] == (
        "upstream certificate not verified: IP address mismatch, certificate is not valid for '127.0.0.1'."
    )
    wait_until(lambda: _unavailable_outcomes(world.with_ca) == recorded + 1)
