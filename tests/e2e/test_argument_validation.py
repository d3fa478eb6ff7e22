"""Argument validation end to end: real MCP servers' own input schemas, through a real ``bastion serve``.

Three stdio routes run real servers: ``time`` (``mcp-server-time``, with ``strict_arguments: true``),
``git`` (``mcp-server-git`` on a temp repository) and ``everything`` (the npm
``@modelcontextprotocol/server-everything``, draft-07 schemas, with ``denials: tool_error``). Each
schema is the one the server listed; nothing here writes a schema.

What is proved: a call whose arguments the tool's schema refuses (a wrong type, a missing required
property, an extra property on the strict route, a value outside the schema's ``minItems`` /
``maximum`` / ``enum``) is refused in the form the client's protocol version asks for (a tool
execution error for 2025-11-25 and 2026-07-28, JSON-RPC -32602 for 2025-06-18), recorded as a deny
with reason ``invalid_arguments`` and never forwarded (no outcome record), while a valid call on the
same route still works; an extra property passes on a route without ``strict_arguments``; a call the
policy forbids is a tool execution error naming the policy on the ``denials: tool_error`` route and
JSON-RPC -32003 elsewhere.

No ``maxLength`` case: none of the three servers' tools has ``maxLength`` (nor ``minLength`` or
``pattern``) on any property; the size bounds they do have, ``minItems`` (git_add ``files``) and
``maximum`` (get-resource-links ``count``), are tested instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import REPO, BastionProcess
from tests.support.e2e_helpers import (
    LEGACY,
    audit_records,
    connect,
    legacy_post,
    make_git_repo,
    modern_post,
    open_session,
    reply_message,
    rpc,
    wait_until,
)

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
EVERYTHING = REPO / ".tools" / "bin" / "mcp-server-everything"
if not EVERYTHING.exists():  # pragma: no cover - the Node tools are installed by scripts/
    pytest.skip(f"{EVERYTHING} is not installed", allow_module_level=True)

POLICY = """
@id("e2e-may-call")
permit (principal in Group::"e2e", action, resource);

@id("no-env-dump")
forbid (principal, action == Action::"tools/call", resource == Tool::"everything/get-env");

@id("no-reset")
forbid (principal, action == Action::"tools/call", resource == Tool::"git/git_reset");
"""

SDK, OLD, MODERN = "2025-11-25 SDK client", "2025-06-18", "2026-07-28"
FORMS = (SDK, OLD, MODERN)

# (route, tool, arguments, the one error line Bastion must report); nothing is forwarded, so the
# git repository path is a placeholder.
REFUSED = {
    "time-wrong-type": ("time", "get_current_time", {"timezone": 5}, '- /timezone: 5 is not of type "string"'),
    "git-wrong-type": ("git", "git_log", {"repo_path": "/r", "max_count": "ten"},
                       '- /max_count: "ten" is not of type "integer"'),
    "everything-wrong-type": ("everything", "get-sum", {"a": 1, "b": "2"}, '- /b: "2" is not of type "number"'),
    "time-missing": ("time", "convert_time", {"source_timezone": "UTC", "time": "12:00"},
                     '- (root): "target_timezone" is a required property'),
    "git-missing": ("git", "git_commit", {"repo_path": "/r"}, '- (root): "message" is a required property'),
    "everything-no-arguments": ("everything", "echo", None, '- (root): "message" is a required property'),
    "time-strict-extra": ("time", "get_current_time", {"timezone": "UTC", "verbose": True},
                          "- (root): Unevaluated properties are not allowed ('verbose' was unexpected)"),
    "git-min-items": ("git", "git_add", {"repo_path": "/r", "files": []}, "- /files: [] has less than 1 item"),
    "everything-maximum": ("everything", "get-resource-links", {"count": 11},
                           "- /count: 11 is greater than the maximum of 10"),
    "everything-enum": ("everything", "get-structured-content", {"location": "Paris"},
                        '- /location: "Paris" is not one of "New York", "Chicago" or "Los Angeles"'),
}  # fmt: skip


@dataclass
class Gateway:
    """The running gateway, alice's token for each route, and the audit log as the tests read it."""

    bastion: BastionProcess
    repo: str
    tokens: dict[str, str] = field(default_factory=dict)

    def valid(self, route: str) -> tuple[str, dict[str, Any]]:
        """A call ``route``'s upstream accepts."""
        return {"time": ("get_current_time", {"timezone": "UTC"}), "git": ("git_status", {"repo_path": self.repo}),
                "everything": ("echo", {"message": "hello"})}[route]  # fmt: skip

    async def call(self, form: str, route: str, tool: str, arguments: Any, status: int | None = 200) -> dict[str, Any]:
        """``tools/call`` as a client of ``form``; the JSON-RPC reply (``result`` or ``error``), sent with
        HTTP ``status`` (when not None)."""
        url, token = self.bastion.url(route), self.tokens[route]
        if form == SDK:
            async with connect(url, token, LEGACY) as client:
                result = await client.call_tool(tool, arguments)
            return {"result": result.model_dump(by_alias=True, exclude_unset=True)}  # as sent: no SDK defaults
        params = {"name": tool} if arguments is None else {"name": tool, "arguments": arguments}
        with httpx2.Client(timeout=30) as http:
            if form == MODERN:
                response = modern_post(http, url, token, "tools/call", params)
            else:
                session = open_session(http, url, token, version=OLD)
                response = legacy_post(http, url, token, session, rpc("tools/call", params), version=OLD)
        assert status in (None, response.status_code), response.text
        return reply_message(response)

    def decisions(self, tool: str, reason: str | None) -> list[dict[str, Any]]:
        """The decision records of calls of ``tool`` with ``reason`` (None: allowed), oldest first."""
        records = [r for r in audit_records(self.bastion.database, "tools/call") if r["kind"] == "decision"]
        return [r for r in records if (r["target"], r["decision"].get("reason")) == (tool, reason)]

    def new_decision(self, tool: str, reason: str | None, before: int) -> dict[str, Any]:
        """The newest such record once there are more than ``before`` (queued after the answer: waited for)."""
        return wait_until(lambda: self.decisions(tool, reason)[before:], timeout_s=10)[-1]

    def outcomes(self) -> set[str]:
        """The decision ids of the calls that were forwarded (they have an outcome record)."""
        return {r["decision_id"] for r in audit_records(self.bastion.database, "tools/call") if r["kind"] == "outcome"}

    async def valid_call_works_and_was_the_only_one_forwarded(self, form: str, route: str, refused: str) -> None:
        """A valid call on ``route`` is answered and gets its outcome record; the ``refused`` decision has
        none (the audit log is written in order: it would be there by now)."""
        tool, arguments = self.valid(route)
        before = len(self.decisions(tool, None))
        reply = await self.call(form, route, tool, arguments)
        assert reply["result"].get("isError") is not True, reply
        allowed = self.new_decision(tool, None, before)
        assert allowed["decision"]["effect"] == "allow"
        wait_until(lambda: allowed["decision_id"] in self.outcomes(), timeout_s=10)
        assert refused not in self.outcomes()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("argument-validation")
    repo = make_git_repo(workdir / "repo")
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    config = {
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "routes": [
            {"name": "time", "strict_arguments": True,
             "stdio": {"command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"]}},
            {"name": "git", "stdio": {"command": str(BIN / "mcp-server-git"), "args": ["--repository", str(repo)]}},
            {"name": "everything", "denials": "tool_error", "stdio": {"command": str(EVERYTHING), "args": ["stdio"]}},
        ],
    }  # fmt: skip
    with BastionProcess(workdir, config) as bastion:
        tokens = {route: bastion.mint("alice", route, "e2e", ttl="1h") for route in ("time", "git", "everything")}
        yield Gateway(bastion, str(repo), tokens)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", REFUSED)
async def test_arguments_the_servers_schema_refuses_are_answered_as_the_version_asks_and_never_forwarded(
    gateway: Gateway, case: str, form: str
) -> None:
    route, tool, arguments, line = REFUSED[case]
    before = len(gateway.decisions(tool, "invalid_arguments"))
    reply = await gateway.call(form, route, tool, arguments)

    text = f"Invalid arguments for tool {tool!r}:\n{line}"
    if form == OLD:  # before 2025-11-25: JSON-RPC "Invalid params"
        assert reply["error"] == {"code": -32602, "message": text}, reply
    else:  # MCP 2025-11-25 server/tools "Error Handling": a tool execution error the model can read
        result = reply["result"]
        assert result["isError"] is True, reply
        assert result["content"] == [{"type": "text", "text": text}]
        assert result["structuredContent"] == {"error": {"code": -32602, "reason": "invalid_arguments"}}
        assert result.get("resultType") == ("complete" if form == MODERN else None)

    record = gateway.new_decision(tool, "invalid_arguments", before)
    assert (record["decision"]["effect"], record["principal"]["sub"]) == ("deny", "alice")
    await gateway.valid_call_works_and_was_the_only_one_forwarded(form, route, record["decision_id"])


@pytest.mark.parametrize(
    ("route", "tool", "arguments"),
    [("git", "git_status", {"verbose": True}), ("everything", "echo", {"message": "hi", "verbose": True})],
)
async def test_an_extra_property_passes_where_strict_arguments_is_off(
    gateway: Gateway, route: str, tool: str, arguments: dict[str, Any]
) -> None:
    if route == "git":
        arguments = {**arguments, "repo_path": gateway.repo}
    before = len(gateway.decisions(tool, None))
    reply = await gateway.call(SDK, route, tool, arguments)
    assert reply["result"].get("isError") is not True, reply
    allowed = gateway.new_decision(tool, None, before)
    wait_until(lambda: allowed["decision_id"] in gateway.outcomes(), timeout_s=10)  # forwarded


DENIED = [("everything", "get-env", "no-env-dump", form) for form in FORMS] + [
    ("git", "git_reset", "no-reset", form)
    for form in (OLD, MODERN)  # the SDK client raises on a JSON-RPC error
]


@pytest.mark.parametrize(("route", "tool", "policy", "form"), DENIED)
async def test_a_policy_denial_is_a_tool_error_only_where_the_route_says_so(
    gateway: Gateway, route: str, tool: str, policy: str, form: str
) -> None:
    arguments = {"repo_path": gateway.repo} if route == "git" else {}
    before = len(gateway.decisions(tool, "policy_denied"))
    reply = await gateway.call(form, route, tool, arguments, status=None)
    if route == "everything":  # denials: tool_error, whatever the protocol version
        result = reply["result"]
        assert (result["isError"], result["content"]) == (
            True,
            [{"type": "text", "text": f"Denied by policy {policy}"}],
        )
        assert result["structuredContent"] == {
            "error": {"code": -32003, "reason": "policy_denied", "policies": [policy]}
        }
    else:  # the default: a JSON-RPC error
        assert reply["error"]["code"] == -32003, reply
        assert reply["error"]["data"] == {"policies": [policy]}

    record = gateway.new_decision(tool, "policy_denied", before)
    assert (record["decision"]["effect"], record["decision"]["policy_ids"]) == ("deny", [policy])
    assert record["decision_id"] not in gateway.outcomes()  # nothing forwarded
