"""The MCP conformance suite's authorization server scenarios against Bastion's issuer.

``conformance authorization --url <issuer>`` (``authorization_harness``) against a real
``bastion serve`` with the authorization server on (local users, dynamic registration, one
route). The suite is the OAuth client; a scripted person (``bastion.demo.browser.OAuthUser``)
signs in and consents on Bastion's pages when the suite asks for the browser step. The suite
runs for two clients: one registered dynamically (RFC 7591) and one pre-registered in the
configuration, both public clients (PKCE, ``token_endpoint_auth_method: none``).

Skipped when the installed suite has no ``authorization`` command (0.1.16 has none; see
docs/conformance.md, "Authorization server scenarios").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import authorization_harness as authz  # tests/conformance is on sys.path (conftest.py)
import httpx2
import pytest
import yaml
from tests.support.bastion_process import BastionProcess, free_port, notes_server

from bastion.demo.browser import OAuthUser, query_of
from bastion.oauth.users import hash_password

pytestmark = pytest.mark.conformance

USERNAME, PASSWORD = "conformance-user", "conformance suite password"
PERMIT_ALL = """
@id("conformance-suite-may-do-anything")
permit (principal, action, resource);
"""
PRE_REGISTERED = "conformance-pre-registered"

EXPECTED_FAILURES: dict[str, str] = {}
"""Scenario -> why Bastion fails it (a Bastion bug); such scenarios are strict xfails."""

SCENARIOS = ["authorization-server-metadata-endpoint", "authorization-code-grant"]
CLIENTS = ["dynamically-registered", "pre-registered"]


@pytest.fixture(scope="module")
def authorization_cli(conformance_cli: Path) -> Path:
    """The pre-release CLI ``.tools/bin/conformance-next`` (``conformance_cli`` installs the Node tools)."""
    try:
        return authz.authorization_cli()
    except authz.AuthorizationCommandMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def callback_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory, callback_port: int) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("bastion-authz-conformance")
    users = [{"username": USERNAME, "password_hash": hash_password(PASSWORD), "groups": ["conformance"]}]
    (workdir / "users.yaml").write_text(yaml.safe_dump({"users": users}), encoding="utf-8")
    (workdir / "policy.cedar").write_text(PERMIT_ALL, encoding="utf-8")
    callback = f"http://127.0.0.1:{callback_port}/callback"
    with notes_server() as notes_url:
        config = {
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "identity": {
                "authorization_server": {
                    "users_file": "users.yaml",
                    "scopes": ["mcp"],
                    "default_scopes": ["mcp"],
                    "dynamic_registration": True,
                    "clients": [
                        {"client_id": PRE_REGISTERED, "client_name": "Conformance", "redirect_uris": [callback]}
                    ],
                }
            },
            "routes": [{"name": "notes", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(workdir, config) as bastion:
            yield bastion


def register(bastion: BastionProcess, callback_port: int) -> str:
    """A public client, registered the way an MCP client does (RFC 7591)."""
    metadata = {
        "client_name": "MCP conformance suite",
        "redirect_uris": [f"http://127.0.0.1:{callback_port}/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    }
    response = httpx2.post(f"{bastion.base_url}/oauth/register", json=metadata, timeout=10.0)
    assert response.status_code == 201, response.text
    client_id: str = response.json()["client_id"]
    return client_id


def run_suite(bastion: BastionProcess, cli: Path, port: int, client_id: str, **options: Any) -> authz.AuthorizationRun:
    run = authz.run_authorization_suite(
        cli,
        bastion.base_url,
        client_id=client_id,
        callback_port=port,
        sign_in=OAuthUser(USERNAME, PASSWORD).authorize,
        **options,
    )
    for name, result in run.results.items():
        print(f"{name}: {result.status} {result.reason or ''}")
    return run


@pytest.fixture(scope="module")
def runs(authorization_cli: Path, issuer: BastionProcess, callback_port: int) -> dict[str, authz.AuthorizationRun]:
    """One suite run per client kind, each with ``--resource`` naming the route."""
    client_ids = {"dynamically-registered": register(issuer, callback_port), "pre-registered": PRE_REGISTERED}
    return {
        kind: run_suite(issuer, authorization_cli, callback_port, client_id, resource=issuer.url("notes"))
        for kind, client_id in client_ids.items()
    }


def test_the_suite_has_the_scenarios_this_file_expects(authorization_cli: Path) -> None:
    assert list(authz.list_authorization_scenarios(authorization_cli)) == SCENARIOS


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[name]))
        if name in EXPECTED_FAILURES
        else name
        for name in SCENARIOS
    ],
)
def test_scenario_passes(
    runs: dict[str, authz.AuthorizationRun], issuer: BastionProcess, client: str, scenario: str
) -> None:
    run = runs[client]
    result = run.results[scenario]
    assert result.status == "passed", f"{result.reason}\n{run.output[-3000:]}\n{issuer.log()[-3000:]}"
    assert not result.warnings, result.warnings


def test_the_code_grant_went_through_bastions_pages(
    runs: dict[str, authz.AuthorizationRun], issuer: BastionProcess
) -> None:
    run = runs["dynamically-registered"]
    assert len(run.authorization_urls) == 1
    request = query_of(run.authorization_urls[0])
    assert request["resource"] == issuer.url("notes")
    assert request["code_challenge_method"] == "S256"
    response = query_of(run.redirects[0])
    assert response["state"] == request["state"]
    assert response["iss"] == issuer.base_url  # RFC 9207, which the suite checks when present
    assert "code" in response


def test_without_resource_bastion_refuses_the_authorization_request(
    authorization_cli: Path, issuer: BastionProcess, callback_port: int
) -> None:
    # Bastion issues tokens for one route (audience = the route's URL) and requires RFC 8707
    # `resource`, which MCP clients MUST send; the suite sends it only when given --resource.
    run = run_suite(issuer, authorization_cli, callback_port, PRE_REGISTERED)
    grant = run.results["authorization-code-grant"]
    assert grant.status == "failed"
    assert "invalid_target" in (grant.reason or "")
    assert run.results["authorization-server-metadata-endpoint"].passed
