"""A browser MCP client on another origin, in headless Chromium: what CORS lets it read.

Real processes on loopback, nothing mocked: ``bastion serve`` (the notes route in front of the demo
notes server, the authorization server with dynamic registration, and
``server.cors.allowed_origins`` naming one page origin), a small aiohttp site serving the pages,
and Debian's Chromium (``tests.support.browser``). A page runs ``fetch()`` as the MCP TypeScript
SDK does in a browser; only what the CORS protocol lets it read comes back to the test, so an
answer Bastion sent but the browser withheld shows up as a failed fetch.

- From ``http://127.0.0.1:<site port>`` (listed): the protected resource metadata, the
  authorization server metadata and the JWKS (with the ``MCP-Protocol-Version`` header the SDK
  sends, so each is preflighted), registration, a token endpoint error, the 401 challenge with its
  ``WWW-Authenticate``, ``initialize`` with a bearer token (``Mcp-Session-Id`` read from the
  answer), ``tools/list`` on that session, a stateless 2026-07-28 ``tools/list`` (``Mcp-Method``)
  and DELETE of the session.
- From ``http://localhost:<site port>`` (another origin, not listed): the public documents still
  read; every MCP request fails in the browser and none reaches the request path (no audit record).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import TIMEOUT_MS, LoopbackSite
from tests.support.e2e_helpers import LEGACY_VERSION, MODERN, envelope, initialize_params

pytestmark = pytest.mark.e2e

PAGE = "<!DOCTYPE html><title>Browser MCP client</title><p>fetch() runs here.</p>"

#: What the page does, step by step; each step's answer as the page can read it (status, the
#: headers CORS exposes to it, body), or the error ``fetch()`` raised.
CLIENT_SCRIPT = """
async ({bastion, route, token, legacy, modern, initialize, envelope}) => {
  const endpoint = bastion + route;
  const seen = {};
  const read = async (response) => ({
    status: response.status,
    headers: Object.fromEntries([...response.headers]),
    body: await response.text(),
  });
  const step = async (name, url, init) => {
    try {
      seen[name] = await read(await fetch(url, init));
    } catch (error) {
      seen[name] = {error: String(error)};
    }
    return seen[name];
  };
  const json = (extra) => ({
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    ...extra,
  });
  const rpc = (id, method, params) => JSON.stringify(
    id === null ? {jsonrpc: "2.0", method, params} : {jsonrpc: "2.0", id, method, params});
  const version = {"MCP-Protocol-Version": legacy};

  await step("resource_metadata", bastion + "/.well-known/oauth-protected-resource" + route, {headers: version});
  await step("server_metadata", bastion + "/.well-known/oauth-authorization-server", {headers: version});
  await step("jwks", bastion + "/.well-known/jwks.json", {headers: version});
  await step("register", bastion + "/oauth/register", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({redirect_uris: [location.origin + "/callback"], token_endpoint_auth_method: "none"}),
  });
  await step("token", bastion + "/oauth/token", {
    method: "POST",
    headers: {"Content-Type": "application/x-www-form-urlencoded", ...version},
    body: "grant_type=authorization_code&code=not-a-code&client_id=nobody",
  });
  await step("challenge", endpoint, {method: "POST", headers: json({}), body: rpc(1, "initialize", initialize)});
  const bearer = {"Authorization": "Bearer " + token};
  const opened = await step("initialize", endpoint, {
    method: "POST", headers: json(bearer), body: rpc(1, "initialize", initialize),
  });
  const session = opened.headers ? opened.headers["mcp-session-id"] : undefined;
  if (session) {
    const on = {...bearer, ...version, "Mcp-Session-Id": session};
    await step("initialized", endpoint, {
      method: "POST", headers: json(on), body: rpc(null, "notifications/initialized", {}),
    });
    await step("tools_list", endpoint, {method: "POST", headers: json(on), body: rpc(2, "tools/list", {})});
    await step("delete", endpoint, {method: "DELETE", headers: on});
  }
  await step("stateless_tools_list", endpoint, {
    method: "POST",
    headers: json({...bearer, "MCP-Protocol-Version": modern, "Mcp-Method": "tools/list"}),
    body: rpc(3, "tools/list", {_meta: envelope}),
  });
  return seen;
}
"""


@pytest.fixture(scope="module")
def site() -> LoopbackSite:
    """The pages' site (started in each test): its port is in Bastion's config before Bastion starts."""
    return LoopbackSite({"/": PAGE})


@pytest.fixture(scope="module")
def cors_gateway(tmp_path_factory: pytest.TempPathFactory, site: LoopbackSite) -> Iterator[BastionProcess]:
    """``bastion serve`` letting only ``http://127.0.0.1:<site port>`` call its MCP endpoints."""
    workdir = tmp_path_factory.mktemp("cors")
    users_file = write_users_file(workdir, {"alice": ("correct horse alice", ["engineering"])})
    with notes_server() as notes_url:
        config: dict[str, Any] = {
            "server": {"cors": {"allowed_origins": [site.url("")]}},
            "policy": {"files": [str(DEMO_CEDAR)]},
            "identity": {"authorization_server": {"users_file": users_file, "dynamic_registration": True}},
            "routes": [{"name": "notes", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(workdir, config) as bastion:
            yield bastion


async def run_page(bastion: BastionProcess, page_url: str) -> dict[str, Any]:
    """Open ``page_url`` in Chromium and run ``CLIENT_SCRIPT`` there against ``bastion``'s notes route."""
    token = bastion.mint("alice", "notes", "engineering")
    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(page_url)
        seen: dict[str, Any] = await page.evaluate(
            CLIENT_SCRIPT,
            {
                "bastion": bastion.base_url,
                "route": "/mcp/notes",
                "token": token,
                "legacy": LEGACY_VERSION,
                "modern": MODERN,
                "initialize": initialize_params(),
                "envelope": envelope(),
            },
        )
        await context.close()
    return seen


def answer(step: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC answer in a step's body, sent as JSON or as an event stream."""
    body = str(step["body"])
    if step["headers"].get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
        found: dict[str, Any] = json.loads(data[-1])
        return found
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def assert_public_documents_read(seen: dict[str, Any], bastion: BastionProcess) -> None:
    assert seen["resource_metadata"]["status"] == 200, seen["resource_metadata"]
    metadata = json.loads(seen["resource_metadata"]["body"])
    assert metadata["resource"] == bastion.url("notes")
    assert metadata["authorization_servers"] == [bastion.base_url]
    assert json.loads(seen["server_metadata"]["body"])["issuer"] == bastion.base_url
    assert seen["jwks"]["status"] == 200, seen["jwks"]
    assert json.loads(seen["jwks"]["body"])["keys"]
    assert seen["register"]["status"] == 201, seen["register"]
    assert json.loads(seen["register"]["body"])["client_id"].startswith("dcr-")
    assert seen["token"]["status"] in (400, 401), seen["token"]
    assert json.loads(seen["token"]["body"])["error"] in ("invalid_client", "invalid_grant")


async def test_a_page_on_an_allowed_origin_uses_the_mcp_endpoint(
    cors_gateway: BastionProcess, site: LoopbackSite
) -> None:
    bastion = cors_gateway
    before = len(bastion.audit_rows("initialize"))
    async with site:
        seen = await run_page(bastion, site.url("/"))
    assert_public_documents_read(seen, bastion)

    challenge = seen["challenge"]
    assert challenge["status"] == 401, challenge
    assert challenge["headers"]["www-authenticate"].startswith(
        f'Bearer resource_metadata="{bastion.base_url}/.well-known/oauth-protected-resource/mcp/notes"'
    )

    opened = seen["initialize"]
    assert opened["status"] == 200, opened
    assert opened["headers"]["mcp-session-id"]  # readable only because it is exposed
    assert answer(opened)["result"]["protocolVersion"] == LEGACY_VERSION
    assert seen["initialized"]["status"] in (200, 202), seen["initialized"]
    tools = {tool["name"] for tool in answer(seen["tools_list"])["result"]["tools"]}
    assert "search_notes" in tools
    assert seen["delete"]["status"] == 200, seen["delete"]
    stateless = {tool["name"] for tool in answer(seen["stateless_tools_list"])["result"]["tools"]}
    assert stateless == tools

    decided = [(effect, reason) for effect, reason, _ in bastion.audit_rows("initialize")[before:]]
    assert decided[:2] == [("deny", "unauthenticated"), ("allow", None)]  # through the whole request path


async def test_a_page_on_another_origin_reads_only_the_public_documents(
    cors_gateway: BastionProcess, site: LoopbackSite
) -> None:
    bastion = cors_gateway
    before = {method: len(bastion.audit_rows(method)) for method in ("initialize", "tools/list")}
    async with site:
        seen = await run_page(bastion, site.url("/", host="localhost"))  # same server, another origin
    assert_public_documents_read(seen, bastion)

    for step in ("challenge", "initialize", "stateless_tools_list"):
        assert "Failed to fetch" in seen[step].get("error", ""), (step, seen[step])
    assert "initialized" not in seen  # no session id could be read
    # The preflight was refused, so the browser never sent the requests themselves.
    assert {method: len(bastion.audit_rows(method)) for method in before} == before
