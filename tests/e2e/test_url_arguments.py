"""URL-valued tool arguments, end to end: a fetch tool behind Bastion cannot be pointed at the cloud
metadata address, loopback or a private network, in any spelling, while the route's allow list lets
it reach the one internal page it is meant to.

Real processes: ``bastion serve`` with a ``fetch`` route (``url_arguments.format_uri``: the tool's
``url`` is ``"format": "uri"`` in its input schema) in front of a deliberately naive fetch server
(``tests/support/naive_fetch_server.py``, no SSRF protection of its own, unlike the official
``mcp-server-fetch``), and two small HTTP servers on loopback: the allowed internal page and a
"forbidden" one that records every request, to prove a refused call never reached the upstream.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import MCPError
from mcp.types import TextContent
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import MODERN, connect, wait_until
from tests.support.loopback_page import Site, serve

pytestmark = pytest.mark.e2e

FETCH_SERVER = Path(__file__).resolve().parents[1] / "support" / "naive_fetch_server.py"

POLICY = """
@id("everyone-may-fetch")
permit (principal, action == Action::"tools/call", resource in Server::"fetch");
"""


@dataclass
class Setup:
    bastion: BastionProcess
    internal: Site
    forbidden: Site

    def token(self) -> str:
        return self.bastion.mint("alice", "fetch")

    def denials(self) -> list[tuple[str, str | None, str | None]]:
        return [row for row in self.bastion.audit_rows("tools/call") if row[0] == "deny"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("url-arguments")
    (workdir / "fetch.cedar").write_text(POLICY, encoding="utf-8")
    with serve(Site("the internal wiki page")) as internal, serve(Site("must never be fetched")) as forbidden:
        config = {
            "policy": {"files": [str(workdir / "fetch.cedar")]},
            "routes": [
                {
                    "name": "fetch",
                    "stdio": {"command": sys.executable, "args": [str(FETCH_SERVER)]},
                    "url_arguments": {"format_uri": True, "allow": [f"127.0.0.1:{internal.port}"]},
                }
            ],
        }
        with BastionProcess(workdir, config) as bastion:
            yield Setup(bastion, internal, forbidden)


async def fetch(setup: Setup, url: str) -> str:
    async with connect(setup.bastion.url("fetch"), setup.token(), MODERN) as client:
        result = await client.call_tool("fetch", {"url": url})
    assert result.is_error is False, result
    return "".join(item.text for item in result.content if isinstance(item, TextContent))


async def refused(setup: Setup, url: str) -> MCPError:
    async with connect(setup.bastion.url("fetch"), setup.token(), MODERN) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fetch", {"url": url})
    return caught.value


async def test_the_allowed_internal_page_is_fetched(setup: Setup) -> None:
    text = await fetch(setup, f"http://127.0.0.1:{setup.internal.port}/wiki")
    assert "the internal wiki page" in text
    assert "/wiki" in setup.internal.hits


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://metadata.google.internal./computeMetadata/v1/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/admin", "private"),
        ("http://127.0.0.1:{forbidden}/", "loopback"),
        ("http://2130706433:{forbidden}/", "loopback"),  # 127.0.0.1 as one decimal number
        ("http://0x7f.1:{forbidden}/", "loopback"),  # hex and short form
        ("http://[::ffff:127.0.0.1]:{forbidden}/", "loopback"),  # IPv4-mapped IPv6
        ("http://localhost:{forbidden}/", "loopback"),  # a name that resolves to loopback
        ("http://0.0.0.0:{forbidden}/", ""),
        ("file:///etc/passwd", "no host"),
        ("gopher://127.0.0.1:{forbidden}/", "scheme"),
        ("http://user:pw@127.0.0.1:{forbidden}/", ""),
    ],
)
async def test_a_url_pointing_inward_is_refused_before_the_upstream_sees_it(setup: Setup, url: str, says: str) -> None:
    url = url.format(forbidden=setup.forbidden.port)
    before = len(setup.denials())
    error = await refused(setup, url)
    assert error.code == -32003
    assert error.data == {"argument": "url"}
    assert "argument 'url'" in error.message
    assert says in error.message
    assert setup.forbidden.hits == []  # nothing was forwarded, so nothing was fetched
    denials = wait_until(lambda: (rows := setup.denials())[before:] and rows)  # the record is written after the reply
    assert denials[before:] == [("deny", "egress_denied", "fetch")]


async def test_a_tool_the_upstream_does_not_list_is_refused_not_skipped(setup: Setup) -> None:
    """``fetch_quietly`` is served but never listed: its schema, and so which argument is a URL,
    is unknown. Bastion refuses the call instead of forwarding it with the URL unchecked."""
    before = len(setup.denials())
    url = f"http://127.0.0.1:{setup.forbidden.port}/quiet"
    async with connect(setup.bastion.url("fetch"), setup.token(), MODERN) as client:
        listed = await client.list_tools()
        assert "fetch_quietly" not in [tool.name for tool in listed.tools]
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fetch_quietly", {"url": url})
    assert caught.value.error.code == -32003
    assert "definition is unknown" in caught.value.error.message
    assert "/quiet" not in setup.forbidden.hits
    denials = wait_until(lambda: (rows := setup.denials())[before:] and rows)
    assert denials[before:] == [("deny", "egress_denied", "fetch_quietly")]
