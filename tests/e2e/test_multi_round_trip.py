"""MCP 2026-07-28 through Bastion: multi round-trip requests, tasks, removed methods, Mcp-Param headers.

A real ``bastion serve`` stands in front of the conformance fixture server
(``tests/conformance/fixture_server.py``, an ``mcp`` SDK server with the SEP-2322 tools, the
tasks extension and tools with ``x-mcp-header`` parameters). The clients are plain HTTP
requests of the stateless protocol, as alice and bob (both in group ``staff``).

What is proved: a retry carrying ``requestState`` is decided again by Cedar and its decision
record names the first call (``decision.continues``); a state or task id is honoured only for
the principal it was issued to, refused with -32602 otherwise and never forwarded; a task
request is decided as the call that created the task; ``tasks/*`` without the extension is
-32021; removed and unknown methods are 404 / -32601; an unsupported version -32022; an
``Mcp-Param-*`` header that differs from the body -32020, refused by Bastion itself.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import MODERN, raw_headers, reply_message, rpc, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "conformance"))
from harness import running_fixture_server

pytestmark = pytest.mark.e2e

TASKS = "io.modelcontextprotocol/tasks"

POLICY = """
@id("staff-may-call")
permit (principal in Group::"staff", action, resource);

@id("no-escalation")
forbid (principal, action == Action::"tools/call", resource) when { context.arguments has escalate };
"""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    workdir = tmp_path_factory.mktemp("multi-round-trip")
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    with running_fixture_server() as upstream:
        config = {
            "policy": {"files": [str(workdir / "policy.cedar")]},
            "routes": [{"name": "fx", "http": {"url": upstream, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(workdir, config) as process:
            yield process


@pytest.fixture(scope="module")
def tokens(bastion: BastionProcess) -> dict[str, str]:
    return {who: bastion.mint(who, "fx", "staff", ttl="1h") for who in ("alice", "bob")}


class Client:
    """One person's stateless 2026-07-28 requests (``_meta`` envelope and mirrored headers)."""

    def __init__(self, http: httpx2.Client, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token

    def post(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        capabilities: dict[str, Any] | None = None,
        **headers: str,
    ) -> httpx2.Response:
        body = dict(params or {})
        body["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities or {},
            "io.modelcontextprotocol/clientInfo": {"name": "bastion-e2e", "version": "0"},
        }
        extra = {"mcp_protocol_version": MODERN, "mcp_method": method}
        name = body.get("uri" if method == "resources/read" else "name", body.get("taskId"))
        if name is not None:
            extra["mcp_name"] = str(name)
        extra.update(headers)
        return self.http.post(self.url, json=rpc(method, body), headers=raw_headers(self.token, **extra))

    def call(self, method: str, params: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        return reply_message(self.post(method, params, **kwargs))


@pytest.fixture
def people(bastion: BastionProcess, tokens: dict[str, str]) -> Iterator[dict[str, Client]]:
    with httpx2.Client(timeout=30) as http:
        yield {who: Client(http, bastion.url("fx"), token) for who, token in tokens.items()}


def _records(bastion: BastionProcess, method: str) -> list[dict[str, Any]]:
    with sqlite3.connect(bastion.database) as db:
        rows = db.execute(
            "SELECT record FROM audit_events WHERE json_extract(record, '$.method') = ? ORDER BY seq", (method,)
        ).fetchall()
    return [json.loads(row[0]) for row in rows]


def _by_decision(bastion: BastionProcess, method: str, kind: str) -> dict[str, dict[str, Any]]:
    return {r["decision_id"]: r for r in _records(bastion, method) if r["kind"] == kind}


def _denials(bastion: BastionProcess, method: str, reason: str, count: int = 1) -> list[dict[str, Any]]:
    """The deny records of ``method`` with ``reason``, oldest first, once there are ``count`` of them
    (a refusal's record is queued after the answer: waited for)."""

    def denials() -> list[dict[str, Any]]:
        return [r for r in _records(bastion, method) if r["kind"] == "decision" and r["decision"]["reason"] == reason]

    wait_until(lambda: len(denials()) >= count, timeout_s=10)
    return denials()


def _outcome(bastion: BastionProcess, decision_id: str) -> dict[str, Any]:
    """The outcome record of a forwarded call (queued after the answer: waited for)."""
    return wait_until(lambda: _by_decision(bastion, "tools/call", "outcome").get(decision_id), timeout_s=10)


def _answers(result: dict[str, Any]) -> dict[str, Any]:
    """Accept every elicitation of an ``input_required`` result with ``{"ok": true, "name": "Alice"}``."""
    return {key: {"action": "accept", "content": {"ok": True, "name": "Alice"}} for key in result["inputRequests"]}


ELICITATION = {"elicitation": {}}
STATE_TOOL = "test_input_required_result_request_state"


def _round_one(client: Client) -> dict[str, Any]:
    first = client.call("tools/call", {"name": STATE_TOOL, "arguments": {}}, capabilities=ELICITATION)
    result = first["result"]
    assert result["resultType"] == "input_required", first
    assert isinstance(result.get("requestState"), str), first
    return dict(result)


def test_a_retry_is_decided_again_and_its_record_names_the_first_call(
    bastion: BastionProcess, people: dict[str, Client]
) -> None:
    alice = people["alice"]
    result = _round_one(alice)
    retry = {"name": STATE_TOOL, "arguments": {}, "inputResponses": _answers(result),
             "requestState": result["requestState"]}  # fmt: skip
    done = alice.call("tools/call", retry, capabilities=ELICITATION)
    assert done["result"]["resultType"] == "complete", done
    assert "state-ok" in done["result"]["content"][0]["text"]

    decisions = [r for r in _records(bastion, "tools/call") if r["kind"] == "decision" and r["target"] == STATE_TOOL]
    first, second = decisions[-2], decisions[-1]
    assert "continues" not in first["decision"]
    assert second["decision"]["continues"] == first["decision_id"]
    assert second["decision"]["policy_ids"] == ["staff-may-call"]  # a decision of its own
    assert _outcome(bastion, first["decision_id"])["result"]["flags"] == ["input_required"]
    assert _outcome(bastion, second["decision_id"])["result"]["flags"] == []


def test_a_valid_request_state_does_not_bypass_the_policy(bastion: BastionProcess, people: dict[str, Client]) -> None:
    alice = people["alice"]
    result = _round_one(alice)
    escalated = {"name": STATE_TOOL, "arguments": {"escalate": True}, "inputResponses": _answers(result),
                 "requestState": result["requestState"]}  # fmt: skip
    denied = alice.call("tools/call", escalated, capabilities=ELICITATION)
    assert denied["error"]["code"] == -32003, denied
    assert denied["error"]["data"] == {"policies": ["no-escalation"]}
    [record] = _denials(bastion, "tools/call", "policy_denied")
    assert (record["decision"]["reason"], record["decision"]["policy_ids"]) == ("policy_denied", ["no-escalation"])
    assert record["decision_id"] not in _by_decision(bastion, "tools/call", "outcome")  # nothing forwarded


def test_another_persons_request_state_is_refused_and_never_forwarded(
    bastion: BastionProcess, people: dict[str, Client]
) -> None:
    result = _round_one(people["alice"])
    stolen = {"name": STATE_TOOL, "arguments": {}, "inputResponses": _answers(result),
              "requestState": result["requestState"]}  # fmt: skip
    response = people["bob"].post("tools/call", stolen, capabilities=ELICITATION)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32602
    [record] = _denials(bastion, "tools/call", "unknown_continuation")
    assert record["principal"]["sub"] == "bob"
    assert record["decision_id"] not in _by_decision(bastion, "tools/call", "outcome")
    # Alice's own retry still works: the refusal did not spend her state.
    done = people["alice"].call("tools/call", stolen, capabilities=ELICITATION)
    assert done["result"]["resultType"] == "complete", done


def test_a_task_is_only_for_the_person_who_created_it(bastion: BastionProcess, people: dict[str, Client]) -> None:
    alice, bob = people["alice"], people["bob"]
    with_tasks = {"extensions": {TASKS: {}}}
    created = alice.call(
        "tools/call", {"name": "slow_compute", "arguments": {"seconds": 0.2, "label": "e2e"}}, capabilities=with_tasks
    )
    assert created["result"]["resultType"] == "task", created
    task_id = created["result"]["taskId"]

    status = alice.call("tasks/get", {"taskId": task_id}, capabilities=with_tasks)
    assert status["result"]["taskId"] == task_id, status
    refused = bob.post("tasks/get", {"taskId": task_id}, capabilities=with_tasks)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, -32602)
    cancel = bob.post("tasks/cancel", {"taskId": task_id}, capabilities=with_tasks)
    assert (cancel.status_code, cancel.json()["error"]["code"]) == (400, -32602)
    undeclared = alice.post("tasks/get", {"taskId": task_id})
    assert (undeclared.status_code, undeclared.json()["error"]["code"]) == (400, -32021)
    assert undeclared.json()["error"]["data"] == {"requiredCapabilities": {"extensions": {TASKS: {}}}}

    calls = _by_decision(bastion, "tools/call", "decision")
    origin = next(r for r in calls.values() if r["target"] == "slow_compute")
    gets = _records(bastion, "tasks/get")
    allowed = [r for r in gets if r["kind"] == "decision" and r["decision"]["effect"] == "allow"]
    assert [(r["principal"]["sub"], r["target"], r["decision"]["continues"]) for r in allowed] == [
        ("alice", "slow_compute", origin["decision_id"])
    ]
    assert allowed[0]["decision"]["policy_ids"] == ["staff-may-call"]  # decided as the call of the tool
    assert _outcome(bastion, origin["decision_id"])["result"]["flags"] == ["task"]
    assert [r["principal"]["sub"] for r in _denials(bastion, "tasks/get", "unknown_continuation")] == ["bob"]
    assert [r["principal"]["sub"] for r in _denials(bastion, "tasks/cancel", "unknown_continuation")] == ["bob"]
    assert [r["principal"]["sub"] for r in _denials(bastion, "tasks/get", "missing_client_capability")] == ["alice"]


@pytest.mark.parametrize(
    "method", ["ping", "logging/setLevel", "resources/subscribe", "tasks/list", "tasks/result", "x/y"]
)
def test_methods_2026_07_28_does_not_have_are_404_method_not_found(
    bastion: BastionProcess, people: dict[str, Client], method: str
) -> None:
    response = people["alice"].post(method, {"uri": "test://watched-resource", "taskId": "t"})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == -32601
    assert response.json()["id"] == 1
    assert _denials(bastion, method, "method_not_found")[-1]["principal"]["sub"] == "alice"


def test_an_unsupported_version_names_the_supported_ones(people: dict[str, Client]) -> None:
    response = people["alice"].post("tools/list", mcp_protocol_version="2099-01-01")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["data"]) == (-32022, {"supported": [MODERN], "requested": "2099-01-01"})


CUSTOM = {"name": "test_custom_headers", "arguments": {"region": "eu-west", "priority": 3, "query": "q"}}


def test_promoted_headers_are_checked_by_bastion_before_anything_is_forwarded(
    bastion: BastionProcess, people: dict[str, Client]
) -> None:
    alice = people["alice"]
    alice.call("tools/list")  # Bastion learns the tools' schemas
    good = alice.call("tools/call", CUSTOM, mcp_param_region="eu-west", mcp_param_priority="3")
    assert good["result"]["resultType"] == "complete", good
    good_record = [r for r in _records(bastion, "tools/call") if r["kind"] == "decision"][-1]
    _outcome(bastion, good_record["decision_id"])
    forwarded = len(_by_decision(bastion, "tools/call", "outcome"))

    lying = alice.post("tools/call", CUSTOM, mcp_param_region="us-east", mcp_param_priority="3")
    assert (lying.status_code, lying.json()["error"]["code"]) == (400, -32020)
    missing = alice.post("tools/call", CUSTOM, mcp_param_priority="3")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, -32020)
    assert len(_denials(bastion, "tools/call", "header_mismatch", count=2)) == 2
    assert len(_by_decision(bastion, "tools/call", "outcome")) == forwarded
