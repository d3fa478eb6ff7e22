"""The authorization server on the shared PostgreSQL store while the database is away: its endpoints
fail closed (an OAuth error, nothing issued, never a traceback) and answer again once it is back,
without a restart.

A private PostgreSQL cluster of the test's own (``tests.support.databases.private_postgres``) is
stopped as by a crash and started again under the running server.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import yaml
from oauth_helpers import RFC7636_VERIFIER, served
from tests.support.bastion_process import free_port
from tests.support.databases import private_postgres

from bastion.config import BastionConfig, parse_config
from bastion.oauth.store_postgres import PostgresAuthorizationStore
from bastion.stores.postgres import PostgresDatabase

ISSUER = "http://127.0.0.1:8123"
REDIRECT = "http://127.0.0.1:5555/cb"
EXCHANGE = {
    "grant_type": "authorization_code", "code": "never-issued", "redirect_uri": REDIRECT, "client_id": "cli",
    "code_verifier": RFC7636_VERIFIER, "resource": ISSUER + "/mcp/echo",
}  # fmt: skip
REGISTRATION = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "Tool"}


def _config(tmp_path: Path) -> BastionConfig:
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);')
    document = {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": 8123},
        "policy": {"files": ["p.cedar"]},
        "identity": {"authorization_server": {
            "dynamic_registration": True, "client_metadata_documents": {"enabled": False},
            "clients": [{"client_id": "cli", "client_name": "CLI", "redirect_uris": ["http://127.0.0.1/cb"]}],
        }},
        "routes": [{"name": "echo", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True,
                                             "allow": ["127.0.0.1"]}}],
    }  # fmt: skip
    (tmp_path / "bastion.yaml").write_text(yaml.safe_dump(document))
    return parse_config(document, base_dir=tmp_path)


def _answers(response: httpx2.Response) -> tuple[int, str]:
    assert "Traceback" not in response.text
    return response.status_code, response.json()["error"]


def test_the_endpoints_fail_closed_while_postgresql_is_away_and_answer_once_it_is_back(tmp_path: Path) -> None:
    with private_postgres(free_port()) as postgres:
        store = PostgresAuthorizationStore(PostgresDatabase(postgres.url, connect_timeout_s=2.0))
        with served(_config(tmp_path), tmp_path / "data", store=store) as server:
            assert _answers(server.http.post("/oauth/token", data=EXCHANGE)) == (400, "invalid_grant")
            registered = server.http.post("/oauth/register", json=REGISTRATION)
            assert registered.status_code == 201, registered.text

            postgres.stop()
            assert _answers(server.http.post("/oauth/token", data=EXCHANGE)) == (500, "server_error")
            assert _answers(server.http.post("/oauth/register", json=REGISTRATION)) == (500, "server_error")
            refresh = {"grant_type": "refresh_token", "refresh_token": "r", "client_id": "cli"}
            assert _answers(server.http.post("/oauth/token", data=refresh)) == (500, "server_error")

            postgres.start()
            answers = [_answers(server.http.post("/oauth/token", data=EXCHANGE)) for _ in range(12)]
            # the pool drops each connection the restart broke as it meets it, then answers again
            assert answers[-1] == (400, "invalid_grant"), answers
            assert set(answers) <= {(500, "server_error"), (400, "invalid_grant")}
