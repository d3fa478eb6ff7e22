"""Policy: the demo Cedar policy (copied from ``src/bastion/demo/demo.cedar``) enforced on real
traffic with the official SDK client, and the ``bastion policy test`` runner."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mcp import MCPError
from mcp.types import TextContent
from tests.e2e.conftest import Gateway
from tests.support.bastion_process import BASTION, REPO
from tests.support.e2e_helpers import PROTOCOLS, connect

pytestmark = pytest.mark.e2e

EXAMPLE_CASES = REPO / "examples" / "policies" / "demo.cases.yaml"


def _text(result: object) -> str:
    return "\n".join(c.text for c in getattr(result, "content", []) if isinstance(c, TextContent))


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_tools_list_is_filtered_per_user(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("notes"), gateway.token("alice", "notes"), mode) as alice:
        alice_tools = {t.name for t in (await alice.list_tools()).tools}
    async with connect(gateway.url("notes"), gateway.token("bob", "notes"), mode) as bob:
        bob_tools = {t.name for t in (await bob.list_tools()).tools}
    assert alice_tools == {"read_logs", "search_notes", "add_note", "delete_note"}
    # bob: read_logs (argument rule applies on call), search_notes; no write/destructive tools.
    assert bob_tools == {"read_logs", "search_notes"}
    assert "delete_note" not in bob_tools


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_allowed_calls_go_through(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("notes"), gateway.token("bob", "notes"), mode) as bob:
        search = await bob.call_tool("search_notes", {"query": "restart"})
    async with connect(gateway.url("time"), gateway.token("bob", "time"), mode) as bob:
        now = await bob.call_tool("get_current_time", {"timezone": "UTC"})
    async with connect(gateway.url("notes"), gateway.token("alice", "notes"), mode) as alice:
        deleted = await alice.call_tool("delete_note", {"name": f"nothing-here-{mode}"})
    assert not search.is_error
    assert "runbook" in _text(search)
    assert not now.is_error
    assert "UTC" in _text(now)
    assert not deleted.is_error
    assert "no note" in _text(deleted)


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_denied_call_names_only_the_deciding_policy(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("notes"), gateway.token("bob", "notes"), mode) as bob:
        with pytest.raises(MCPError) as denied:
            await bob.call_tool("delete_note", {"name": "runbook"})
        # The note is still there: nothing reached the upstream.
        still = await bob.call_tool("search_notes", {"query": "systemctl"})
    assert denied.value.code == -32003
    assert denied.value.data == {"policies": ["support-no-destructive"]}
    assert "forbid" not in denied.value.message
    assert "resource.risk" not in denied.value.message
    assert "runbook" in _text(still)


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_argument_level_rule(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("notes"), gateway.token("bob", "notes"), mode) as bob:
        dev = await bob.call_tool("read_logs", {"env": "dev"})
        with pytest.raises(MCPError) as prod:
            await bob.call_tool("read_logs", {"env": "prod"})
        unnamed = await bob.call_tool("read_logs", {})  # env is required: refused before the policy looks
    assert not dev.is_error
    assert "api started" in _text(dev)
    assert prod.value.data == {"policies": ["support-logs-dev-only"]}
    assert unnamed.is_error
    assert "- (root): \"env\" is a required property" in _text(unnamed)
    async with connect(gateway.url("notes"), gateway.token("alice", "notes"), mode) as alice:
        alice_prod = await alice.call_tool("read_logs", {"env": "prod"})
    assert not alice_prod.is_error
    assert "payment failed" in _text(alice_prod)


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_denied_by_default_on_another_route(gateway: Gateway, mode: str) -> None:
    """Nothing permits bob on the git route: denied with no policy named."""
    async with connect(gateway.url("git"), gateway.token("bob", "git"), mode) as bob:
        assert (await bob.list_tools()).tools == []
        with pytest.raises(MCPError) as denied:
            await bob.call_tool("git_status", {"repo_path": str(gateway.repo)})
    assert denied.value.data == {"policies": []}


def _policy_test(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASTION, "policy", "test", *map(str, files)], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_policy_test_runner_passes_the_example_cases() -> None:
    result = _policy_test(EXAMPLE_CASES)
    assert result.returncode == 0, result.stdout + result.stderr
    passes = [line for line in result.stdout.splitlines() if "PASS" in line]
    assert len(passes) >= 10
    assert "FAIL" not in result.stdout
    assert "ERROR" not in result.stdout


def test_policy_test_runner_fails_a_wrong_expectation(tmp_path: Path) -> None:
    cases = tmp_path / "wrong.cases.yaml"
    cases.write_text(
        f"""
policies: [{REPO / "examples" / "policies" / "demo.cedar"}]
cases:
  - name: support may read dev logs
    principal: {{type: User, id: bob, groups: [support]}}
    action: tools/call
    resource: {{type: Tool, route: demo, name: read_logs, risk: read}}
    context: {{arguments: {{env: dev}}}}
    expect: allow
  - name: WRONG support may delete an index
    principal: {{type: User, id: bob, groups: [support]}}
    action: tools/call
    resource: {{type: Tool, route: demo, name: delete_index, risk: destructive}}
    expect: allow
""",
        encoding="utf-8",
    )
    result = _policy_test(cases)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout
    assert "WRONG support may delete an index" in " ".join(result.stdout.split())  # rich may wrap lines
    assert "PASS" in result.stdout  # the other case still ran


@pytest.mark.parametrize("cases_text", ["cases: []\n", "", None], ids=["empty-cases", "no-cases-key", "empty-file"])
def test_policy_test_runner_refuses_an_empty_cases_file(tmp_path: Path, cases_text: str | None) -> None:
    cases = tmp_path / "empty.cases.yaml"
    policies = f"policies: [{REPO / 'examples' / 'policies' / 'demo.cedar'}]\n"
    cases.write_text("" if cases_text is None else policies + cases_text, encoding="utf-8")
    result = _policy_test(cases)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
