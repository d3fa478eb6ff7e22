"""``mcp-remote`` from npm through Bastion: a real third-party MCP client, end to end.

``mcp-remote`` (pinned under ``.tools``, run with Node 22) speaks stdio to its local
client and Streamable HTTP + OAuth to the remote server. Here the local client is the
``mcp`` SDK's stdio client and the remote server is a real ``bastion serve`` with its own
authorization server. ``mcp-remote`` discovers Bastion from the 401 challenge, registers
dynamically, prints the authorization URL (its browser opener is pointed at a stand-in
that only records the URL), and waits on its own loopback callback server. A scripted person
(``bastion.demo.browser.OAuthUser``) signs in and approves on Bastion's real pages and
the redirect carrying the code is delivered to that callback server. ``mcp-remote``
then exchanges the code, stores the tokens in its config directory and proxies the
SDK's requests to the notes route.

mcp-remote behaviours relied on (0.15.1):

- ``mcp-remote URL PORT``: an explicit callback port is strict (no walking to the next
  port), ``--host 127.0.0.1`` makes the redirect URI ``http://127.0.0.1:PORT/oauth/callback``
  (the callback server always listens on 127.0.0.1); http is allowed without
  ``--allow-http`` for a ``localhost``/``127.0.0.1`` server URL; ``--transport http-only``.
- ``MCP_REMOTE_CONFIG_DIR`` (else ``$HOME/.mcp-auth``) holds
  ``mcp-remote-v1/<md5(url)>_{client_info,tokens}.json``.
- Before trying a browser it always logs ``Please authorize this client by visiting:`` and
  the URL on the next line (stderr); the ``open`` package then runs its bundled ``xdg-open``,
  which, with no display and no desktop in the environment, runs ``$BROWSER URL`` (success
  logs ``Browser opened automatically.``; the system fallbacks are tried only on failure).
- With usable tokens stored (not within 60 s of expiry) it starts no callback server and
  prints no authorization URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from tests.support.bastion_process import DEMO_CEDAR, REPO, BastionProcess, free_port, notes_server, write_users_file
from tests.support.e2e_helpers import LEGACY, jwt_header, jwt_payload

from bastion.demo.browser import OAuthUser, query_of

pytestmark = pytest.mark.e2e

MCP_REMOTE = REPO / ".tools" / "bin" / "mcp-remote"
PASSWORD = "battery staple bob"
AUTHORIZE = re.compile(r"Please authorize this client by visiting:\s*\n(\S+)")
RUN_TIMEOUT_S = 40.0

if not MCP_REMOTE.exists():  # pragma: no cover - the Node tools are installed by scripts/
    pytest.skip(f"{MCP_REMOTE} is not installed", allow_module_level=True)


@dataclass
class McpRemote:
    """How to start ``mcp-remote`` for one route with its own HOME and config directory."""

    url: str
    callback_port: int
    home: Path

    @property
    def config_dir(self) -> Path:
        return self.home / "mcp-auth"

    @property
    def browser_log(self) -> Path:
        """Every URL mcp-remote asked a browser to open (see ``browser``)."""
        return self.home / "browser-opened"

    def browser(self) -> Path:
        """A stand-in browser: records the URL and succeeds, so no real browser ever sees it."""
        script = self.home / "no-browser"
        if not script.exists():
            script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{self.browser_log}"\n', encoding="utf-8")
            script.chmod(0o755)
        return script

    def opened(self) -> list[str]:
        return self.browser_log.read_text(encoding="utf-8").splitlines() if self.browser_log.exists() else []

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.callback_port}/oauth/callback"

    def params(self) -> StdioServerParameters:
        args = [self.url, str(self.callback_port), "--host", "127.0.0.1", "--transport", "http-only"]
        env = {
            "HOME": str(self.home),
            "MCP_REMOTE_CONFIG_DIR": str(self.config_dir),
            # The opener ends up running $BROWSER: the stand-in records the URL and succeeds, so
            # no real browser (chromium may be installed) ever sees it. DISPLAY, WAYLAND_DISPLAY
            # and the desktop variables are not inherited by the SDK's stdio client.
            "BROWSER": str(self.browser()),
        }
        return StdioServerParameters(command=str(MCP_REMOTE), args=args, env=env)

    def stored(self, name: str) -> dict[str, Any]:
        """One of the JSON files mcp-remote keeps for this server (``tokens``, ``client_info``)."""
        digest = hashlib.md5(self.url.encode()).hexdigest()  # noqa: S324 - mcp-remote's file naming
        path = self.config_dir / "mcp-remote-v1" / f"{digest}_{name}.json"
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data


@dataclass
class Run:
    """What one ``mcp-remote`` session showed: tools, the call's result, its stderr, the sign-in."""

    tools: list[str]
    result: Any
    stderr: str
    authorization_url: str | None = None
    redirected_to: str | None = None


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("mcp-remote")
    users_file = write_users_file(workdir, {"bob": (PASSWORD, ["support"])})
    with notes_server() as notes_url:
        config = {
            "policy": {"files": [str(DEMO_CEDAR)]},
            "identity": {
                "authorization_server": {
                    "users_file": users_file,
                    "scopes": ["mcp", "notes:write"],
                    "default_scopes": ["mcp"],
                    "dynamic_registration": True,
                }
            },
            "routes": [
                {
                    "name": "notes",
                    "title": "Team notes",
                    "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                    "trust_annotations": True,  # the demo notes server: its annotations give the risk
                }
            ],
        }
        with BastionProcess(workdir, config) as process:
            yield process


@pytest.fixture(scope="module")
def remote(bastion: BastionProcess, tmp_path_factory: pytest.TempPathFactory) -> McpRemote:
    return McpRemote(bastion.url("notes"), free_port(), tmp_path_factory.mktemp("mcp-remote-home"))


async def authorization_url(log: Path) -> str:
    """Wait for mcp-remote to print the authorization URL on its stderr."""
    while True:
        if found := AUTHORIZE.search(await anyio.Path(log).read_text(errors="replace")):
            return found.group(1)
        await asyncio.sleep(0.05)


async def sign_in(log: Path, person: OAuthUser) -> tuple[str, str]:
    """The person opens the printed URL, signs in, approves; the browser follows the redirect."""
    url = await authorization_url(log)
    redirected_to = await asyncio.to_thread(person.authorize, url)
    async with httpx2.AsyncClient(timeout=10.0) as http:
        callback = await http.get(redirected_to)  # mcp-remote's own loopback callback server
    assert callback.status_code == 200, callback.text
    assert "Authorization successful" in callback.text
    return url, redirected_to


async def run_mcp_remote(remote: McpRemote, log: Path, person: OAuthUser | None, bastion: BastionProcess) -> Run:
    """Start mcp-remote under the SDK's stdio client, list tools and call ``search_notes``.

    With ``person``, a concurrent task waits for the authorization URL and signs in.
    """
    signing: asyncio.Task[tuple[str, str]] | None = None
    try:
        with log.open("w", encoding="utf-8") as errlog:
            async with asyncio.timeout(RUN_TIMEOUT_S), asyncio.TaskGroup() as tasks:
                if person is not None:
                    signing = tasks.create_task(sign_in(log, person))
                async with Client(stdio_client(remote.params(), errlog=errlog), mode=LEGACY) as client:
                    tools = sorted(tool.name for tool in (await client.list_tools()).tools)
                    result = await client.call_tool("search_notes", {"query": "welcome"})
    except Exception:  # a timeout, a failed sign-in, a refused call
        # Shown by pytest with the failure.
        print(f"--- mcp-remote stderr ---\n{await anyio.Path(log).read_text(errors='replace')}")
        print(f"--- bastion log ---\n{bastion.log()}")
        raise
    url, redirected_to = signing.result() if signing is not None else (None, None)
    return Run(tools, result, await anyio.Path(log).read_text(errors="replace"), url, redirected_to)


@pytest.fixture(scope="module")
def first_run(remote: McpRemote, bastion: BastionProcess) -> Run:
    """The first session: no stored tokens, so bob signs in and consents."""
    person = OAuthUser("bob", PASSWORD)
    return asyncio.run(run_mcp_remote(remote, remote.home / "first.log", person, bastion))


def audit(bastion: BastionProcess, method: str) -> list[tuple[str, str | None, str | None, str | None, str | None]]:
    """(effect, principal sub, principal client_id, route, target) of every decision record of ``method``."""
    with sqlite3.connect(bastion.database) as db:
        rows = db.execute(
            "SELECT json_extract(record, '$.decision.effect'), json_extract(record, '$.principal.sub'), "
            "json_extract(record, '$.principal.client_id'), json_extract(record, '$.route'), target FROM audit_events "
            "WHERE json_extract(record, '$.method') = ? AND json_extract(record, '$.kind') = 'decision' "
            "ORDER BY seq",
            (method,),
        ).fetchall()
    return [(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def test_mcp_remote_signs_in_through_bastion_and_calls_a_tool(
    first_run: Run, remote: McpRemote, bastion: BastionProcess
) -> None:
    assert "search_notes" in first_run.tools
    assert "delete_note" not in first_run.tools  # bob is in support
    assert first_run.result.is_error is False

    # mcp-remote registered itself dynamically with the exact loopback redirect URI.
    client_info = remote.stored("client_info")
    client_id = client_info["client_id"]
    assert client_id.startswith("dcr-")
    assert client_info["redirect_uris"] == [remote.redirect_uri]

    # The authorization request it printed: PKCE S256, the route as resource, its redirect URI.
    assert first_run.authorization_url is not None
    assert first_run.authorization_url.startswith(f"{bastion.base_url}/")
    authorize = query_of(first_run.authorization_url)
    assert authorize["client_id"] == client_id
    assert authorize["redirect_uri"] == remote.redirect_uri
    assert authorize["resource"] == remote.url
    assert authorize["code_challenge_method"] == "S256"
    assert first_run.redirected_to is not None
    assert first_run.redirected_to.startswith(f"{remote.redirect_uri}?")
    assert "code" in query_of(first_run.redirected_to)
    assert remote.opened() == [first_run.authorization_url]  # only the stand-in browser saw it

    # The token mcp-remote stored is Bastion's, for this route exactly.
    token = remote.stored("tokens")["access_token"]
    assert jwt_header(token)["typ"] == "at+jwt"
    claims = jwt_payload(token)
    assert claims["iss"] == bastion.base_url
    assert claims["aud"] == remote.url
    assert (claims["sub"], claims["groups"], claims["client_id"]) == ("bob", ["support"], client_id)

    # Bastion's side: the token was issued to that client for bob, and bob's call was allowed.
    tokens = audit(bastion, "oauth/token")
    assert any(row[:3] == ("allow", "bob", client_id) and row[-1] == client_id for row in tokens), tokens
    calls = audit(bastion, "tools/call")
    assert ("allow", "bob", client_id, "notes", "search_notes") in calls, calls


async def test_mcp_remote_reuses_its_stored_tokens(first_run: Run, remote: McpRemote, bastion: BastionProcess) -> None:
    stored = remote.stored("tokens")["access_token"]
    calls_before = len(audit(bastion, "tools/call"))
    tokens_before = len(audit(bastion, "oauth/token"))

    # No person this time: a sign-in would wait for one and time out.
    second = await run_mcp_remote(remote, remote.home / "second.log", None, bastion)

    assert "Please authorize" not in second.stderr
    assert "OAuth callback server running" not in second.stderr
    assert remote.opened() == [first_run.authorization_url]  # nothing new was opened
    assert "search_notes" in second.tools
    assert second.result.is_error is False
    assert remote.stored("tokens")["access_token"] == stored
    assert len(audit(bastion, "oauth/token")) == tokens_before  # not even a refresh
    calls = audit(bastion, "tools/call")[calls_before:]
    assert [(effect, sub, route, target) for effect, sub, _, route, target in calls] == [
        ("allow", "bob", "notes", "search_notes")
    ]
