"""The tool inventory through a real ``bastion serve``: a route that does not trust its server's
tool annotations treats every tool without a configured risk as destructive; one that trusts them
takes the risk from them; the configuration's labels reach Cedar as ``resource.labels``.

Three routes in front of the same demo notes server (``search_notes`` and ``read_logs`` are
annotated ``readOnlyHint: true``, ``delete_note`` ``destructiveHint: true``):

- ``untrusted``: nothing configured (the default, ``trust_annotations: false``);
- ``trusted``: ``trust_annotations: true``;
- ``labelled``: ``trust_annotations: true`` and a ``tools:`` map labelling ``search_notes``
  ``customer-data`` and configuring ``read_logs`` as ``destructive`` (a configured risk wins).

The policy permits every tool to ``staff`` and forbids destructive tools and tools labelled
``customer-data``. Each tool's listing and call must agree, with the SDK client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mcp import MCPError
from tests.support.bastion_process import BastionProcess, notes_server
from tests.support.e2e_helpers import PROTOCOLS, connect

pytestmark = pytest.mark.e2e

POLICY = """
@id("staff-tools")
permit (principal in Group::"staff", action == Action::"tools/call", resource);

@id("no-destructive")
forbid (principal, action == Action::"tools/call", resource) when { resource.risk == "destructive" };

@id("no-customer-data")
forbid (principal, action == Action::"tools/call", resource) when { resource.labels.contains("customer-data") };
"""
NOTES_TOOLS = ("search_notes", "read_logs", "add_note", "delete_note")
ARGUMENTS = {"search_notes": {"query": "restart"}, "read_logs": {"env": "dev"}}


@dataclass
class World:
    bastion: BastionProcess

    def token(self, route: str) -> str:
        return self.bastion.mint("sam", route, "staff")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("tool-inventory")
    (workdir / "inventory.cedar").write_text(POLICY, encoding="utf-8")
    with notes_server() as notes_url:
        http = {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}
        tools = {
            "search_notes": {"owner": "sre", "classification": "confidential", "labels": ["customer-data"]},
            "read_logs": {"risk": "destructive", "owner": "sre", "classification": "internal"},
        }
        config = {
            "policy": {"files": [str(workdir / "inventory.cedar")]},
            "routes": [
                {"name": "untrusted", "http": http},
                {"name": "trusted", "http": http, "trust_annotations": True},
                {"name": "labelled", "http": http, "trust_annotations": True, "tools": tools},
            ],
        }
        with BastionProcess(workdir, config) as bastion:
            yield World(bastion)


async def _judged(world: World, route: str, mode: str) -> dict[str, str]:
    """Each notes tool as the client sees it: ``allowed``, or the JSON-RPC code and deciding policy ids of
    the denial; ``listed``: the notes tools ``tools/list`` shows."""
    async with connect(world.bastion.url(route), world.token(route), mode) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        judged: dict[str, str] = {}
        for name in ("search_notes", "read_logs"):
            try:
                result = await client.call_tool(name, ARGUMENTS[name])
            except MCPError as denied:
                judged[name] = f"{denied.code} {','.join(denied.data['policies'])}"
            else:
                judged[name] = "error" if result.is_error else "allowed"
            assert (judged[name] == "allowed") == (name in listed)  # the listing and the call agree
    judged["listed"] = ",".join(sorted(listed & set(NOTES_TOOLS)))
    return judged


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_without_trusted_annotations_a_read_only_tool_is_destructive(world: World, mode: str) -> None:
    assert await _judged(world, "untrusted", mode) == {
        "search_notes": "-32003 no-destructive",
        "read_logs": "-32003 no-destructive",
        "listed": "",
    }


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_with_trusted_annotations_a_read_only_tool_is_read(world: World, mode: str) -> None:
    assert await _judged(world, "trusted", mode) == {
        "search_notes": "allowed",
        "read_logs": "allowed",
        "listed": "add_note,read_logs,search_notes",  # add_note: destructiveHint false, a write tool
    }


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_configured_labels_and_risk_reach_the_policy(world: World, mode: str) -> None:
    assert await _judged(world, "labelled", mode) == {
        "search_notes": "-32003 no-customer-data",
        "read_logs": "-32003 no-destructive",  # configured destructive, though annotated read-only
        "listed": "add_note",
    }


def test_bastion_check_warns_about_the_route_that_trusts_nothing(world: World) -> None:
    result = world.bastion.cli("check", "--config", str(world.bastion.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    output = " ".join(result.stdout.split())  # rich may wrap lines
    assert (
        "warning: route untrusted: the upstream's tool annotations are not trusted, so every tool is treated "
        "as destructive" in output
    )
    assert "warning: route trusted:" not in output
    assert "warning: route labelled:" not in output  # both configured tools have an owner and a classification
    assert "OK (1 warning)" in output
