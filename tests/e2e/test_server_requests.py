"""Server-to-client requests through Bastion: decided by policy, audited, relayed on both transports.

``tests/support/asking_server.py`` (an ``mcp`` SDK server) runs behind two routes: ``ask`` over stdio
(Bastion owns the process) and ``askhttp`` over Streamable HTTP. Its ``confirm`` tool asks the
person through ``elicitation/create``, its ``summarize`` tool asks the client's model through
``sampling/createMessage``. The policy permits elicitation to alice only and sampling to nobody.
The client is the official SDK client with callbacks that record what reached it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import types
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from tests.support.bastion_process import BastionProcess, free_port, stop, wait_http

pytestmark = pytest.mark.e2e

ASKING_SERVER = Path(__file__).parents[1] / "support" / "asking_server.py"
ROUTES = ("ask", "askhttp")

POLICY = """
@id("everyone-calls")
permit (principal, action == Action::"tools/call", resource);

@id("alice-may-be-asked")
permit (principal == User::"alice", action == Action::"elicitation/create", resource);
"""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("server-requests")
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ASKING_SERVER), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    config = {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "routes": [
            {"name": "ask", "stdio": {"command": sys.executable, "args": [str(ASKING_SERVER)]}},
            {"name": "askhttp", "http": {"url": f"http://127.0.0.1:{port}/mcp", "allow_http": True,
                                         "allow": ["127.0.0.1"]}},
        ],
    }  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/mcp", proc=upstream)
        with BastionProcess(workdir, config) as process:
            yield process
    finally:
        stop(upstream)


class Person:
    """The client side: answers elicitation with ``ok: true`` and sampling with a fixed text; records both."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.sampled: list[str] = []

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params.message)
        return types.ElicitResult(action="accept", content={"ok": True})

    async def sample(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampled.append(str(params.messages[0].content))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="a summary"), model="test"
        )


async def _call(
    bastion: BastionProcess, sub: str, route: str, tool: str, arguments: dict[str, Any]
) -> tuple[str, Person]:
    person = Person()
    token = bastion.mint(sub, route)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0)) as http,
        Client(
            streamable_http_client(bastion.url(route), http_client=http),
            mode="legacy",
            elicitation_callback=person.elicit,
            sampling_callback=person.sample,
        ) as client,
    ):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    text = next(c.text for c in result.content if isinstance(c, types.TextContent))
    return text, person


def _records(bastion: BastionProcess, method: str) -> list[tuple[str, str | None, str | None]]:
    return bastion.audit_rows(method)


@pytest.mark.parametrize("route", ROUTES)
async def test_a_permitted_elicitation_reaches_the_person_and_is_recorded(bastion: BastionProcess, route: str) -> None:
    before = len(_records(bastion, "elicitation/create"))
    text, person = await _call(bastion, "alice", route, "confirm", {"action": "deploy"})
    assert text == "confirmed"
    assert person.asked == ["Really deploy?"]
    records = _records(bastion, "elicitation/create")[before:]
    assert records == [("allow", None, "confirm")]


@pytest.mark.parametrize("route", ROUTES)
async def test_an_elicitation_no_policy_permits_never_reaches_the_person(bastion: BastionProcess, route: str) -> None:
    before = len(_records(bastion, "elicitation/create"))
    text, person = await _call(bastion, "bob", route, "confirm", {"action": "deploy"})
    assert person.asked == []
    assert text == "refused: Denied by Bastion"  # the upstream got a JSON-RPC error in the client's place
    assert _records(bastion, "elicitation/create")[before:] == [("deny", "policy_denied", "confirm")]


@pytest.mark.parametrize("route", ROUTES)
async def test_sampling_is_denied_by_default(bastion: BastionProcess, route: str) -> None:
    before = len(_records(bastion, "sampling/createMessage"))
    text, person = await _call(bastion, "alice", route, "summarize", {"text": "a long story"})
    assert person.sampled == []
    assert text.startswith("refused: Denied")
    assert _records(bastion, "sampling/createMessage")[before:] == [("deny", "policy_denied", "summarize")]
