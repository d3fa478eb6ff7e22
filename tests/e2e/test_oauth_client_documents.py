"""Client ID Metadata Documents end to end: a real ``bastion serve`` fetching documents from an
HTTPS host on loopback through its egress guard, and the ``mcp`` SDK client identifying
itself by such a document (MCP 2025-11-25, basic/authorization, Client ID Metadata Documents).

The document host is private on purpose, so the configuration allows exactly
``localhost:<its port>`` and trusts the test CA; every other private, loopback or metadata
destination stays refused, which the attack cases check (each with an audit record).
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from tests.support.bastion_process import (
    DEMO_CEDAR,
    BastionProcess,
    free_port,
    notes_server,
    stop,
    write_users_file,
)
from tests.support.e2e_helpers import LEGACY
from tests.support.pki import make_pki

from bastion.demo.sign_in import CALLBACK, MemoryTokenStorage, ScriptedSignIn, oauth_http_client

pytestmark = pytest.mark.e2e

HOST_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "cimd_server.py"
PASSWORD = "cimd test password"


@dataclass
class Setup:
    bastion: BastionProcess
    documents_port: int

    def document(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.documents_port}{path}"


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the document host exited")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("the document host did not start")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("cimd")
    pki = make_pki(workdir)
    port = free_port()
    host = subprocess.Popen(
        [sys.executable, str(HOST_SCRIPT), "--port", str(port), "--cert", str(pki.localhost.certfile),
         "--key", str(pki.localhost.keyfile), "--redirect-uri", CALLBACK],
    )  # fmt: skip
    users_file = write_users_file(workdir, {"carol": (PASSWORD, ["support"])})
    try:
        _wait_port(port, host)
        with notes_server() as notes_url:
            config = {
                "policy": {"files": [str(DEMO_CEDAR)]},
                "identity": {"authorization_server": {"users_file": users_file}},
                "egress": {"allow": [f"localhost:{port}"], "ca_file": str(pki.ca_file)},
                "routes": [
                    {
                        "name": "notes",
                        "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                        "trust_annotations": True,  # the demo notes server: its annotations give the risk
                    }
                ],
            }
            with BastionProcess(workdir, config) as bastion:
                yield Setup(bastion, port)
    finally:
        stop(host)


async def test_sdk_client_identified_by_its_metadata_document(setup: Setup) -> None:
    url = setup.bastion.url("notes")
    client_id = setup.document("/client.json")
    person, storage = ScriptedSignIn("carol", PASSWORD), MemoryTokenStorage()
    async with (
        oauth_http_client(url, person, storage, client_metadata_url=client_id) as http,
        Client(streamable_http_client(url, http_client=http), mode=LEGACY) as client,
    ):
        result = await client.call_tool("search_notes", {"query": "welcome"})
    assert result.is_error is False
    assert storage.client_info is not None
    assert storage.client_info.client_id == client_id
    consent = next(page.text for page in person.user.pages if 'value="approve"' in page.text)
    assert client_id in consent
    assert "127.0.0.1:53682" in consent
    assert "not verified" in consent.lower() or "unverified" in consent.lower()


def audit_denials(bastion: BastionProcess, client_id: str) -> list[str | None]:
    with sqlite3.connect(bastion.database) as db:
        rows = db.execute(
            "SELECT json_extract(record, '$.decision.reason') FROM audit_events "
            "WHERE json_extract(record, '$.method') = 'oauth/authorize' AND target = ? AND effect = 'deny'",
            (client_id,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    ("path", "host", "expected"),
    [
        ("/mismatch.json", "localhost", "names a different client_id"),
        ("/to-metadata.json", "localhost", "cloud metadata"),
        ("/to-private.json", "localhost", "private"),
        ("/client.json", "127.0.0.1", "loopback"),  # the allow list names localhost:<port>, not the address
        ("/client.json", "169.254.169.254", "cloud metadata"),
        ("/client.json", "10.0.0.1", "private"),
        ("/client.json", "[::ffff:127.0.0.1]", "loopback"),
        ("/client.json", "2130706433", "loopback"),
    ],
)
def test_hostile_metadata_documents_are_refused(setup: Setup, path: str, host: str, expected: str) -> None:
    client_id = setup.document(path, host)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "resource": setup.bastion.url("notes"),
    }
    with httpx2.Client(timeout=30.0) as http:
        response = http.get(f"{setup.bastion.base_url}/oauth/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers  # never redirected to an unverified client
    assert expected in response.text
    assert audit_denials(setup.bastion, client_id) == ["invalid_client"]
