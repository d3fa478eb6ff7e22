"""``server.argument_limits`` through a real ``bastion serve`` in front of the real notes server.

A well-formed but hostile ``tools/call`` (an arguments object of 150,000 members, an array
of 400,000 elements; each about 2.7 MB) is refused with JSON-RPC -32602 and HTTP 400
before the policy decides: nothing reaches the upstream, and the deny record keeps the
arguments' digest and the measured sizes, not the arguments. A large call within the
limits (a 1 MB note) still goes through.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.e2e.conftest import GROUPS
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server
from tests.support.e2e_helpers import legacy_post, open_session, reply_message, rpc, wait_until

from bastion.audit.canonical import arguments_sha256

pytestmark = pytest.mark.e2e

MAX_BODY = 8 * 1024 * 1024
HOSTILE = {
    "object": ({"name": "n", "text": "t", **{f"k{i:06d}": i for i in range(150_000)}}, "max_members", 150_002),
    "array": ({"name": "n", "text": "t", "items": list(range(400_000))}, "max_elements", 400_000),
}


class World:
    """A Bastion (body limit 8 MB, default argument limits) in front of the notes server."""

    def __init__(self, bastion: BastionProcess, notes_url: str) -> None:
        self.bastion = bastion
        self.debug_url = notes_url.removesuffix("/mcp") + "/debug/requests"
        self.http = httpx2.Client(timeout=60.0)
        self.token = bastion.mint("alice", "notes", *GROUPS["alice"])
        self.session = open_session(self.http, bastion.url("notes"), self.token)

    def call(self, arguments: dict[str, Any], rpc_id: int) -> httpx2.Response:
        message = rpc("tools/call", {"name": "add_note", "arguments": arguments}, rpc_id=rpc_id)
        return legacy_post(self.http, self.bastion.url("notes"), self.token, self.session, message)

    def upstream_requests(self) -> list[dict[str, str]]:
        seen: list[dict[str, str]] = self.http.get(self.debug_url).json()
        return seen

    def records(self, reason: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.bastion.database) as db:
            rows = db.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
        records = [json.loads(row[0]) for row in rows]
        return [r for r in records if (r.get("decision") or {}).get("reason") == reason]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir: Path = tmp_path_factory.mktemp("argument-limits")
    with notes_server() as notes_url:
        config = {
            "server": {"max_body_bytes": MAX_BODY},
            "audit": {"synchronous": "normal"},
            "policy": {"files": [str(DEMO_CEDAR)]},
            "routes": [{"name": "notes", "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]}}],
        }
        with BastionProcess(workdir, config) as bastion:
            world = World(bastion, notes_url)
            try:
                yield world
            finally:
                world.http.close()


@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_hostile_arguments_are_refused_before_the_upstream_and_audited_by_digest(world: World, shape: str) -> None:
    arguments, limit, found = HOSTILE[shape]
    before = world.upstream_requests()
    response = world.call(arguments, rpc_id=shape)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == -32602
    assert f"server.argument_limits.{limit}" in error["message"]
    assert response.json()["id"] == shape
    assert world.upstream_requests() == before, "the refused call reached the upstream"

    digest = arguments_sha256(arguments)

    def recorded() -> list[dict[str, Any]]:  # the deny record is committed just after the answer
        return [r for r in world.records("arguments_too_large") if r["arguments_sha256"] == digest]

    records = wait_until(recorded)
    assert len(records) == 1
    record = records[0]
    assert record["method"] == "tools/call"
    assert record["decision"]["effect"] == "deny"
    assert record["arguments"] is None
    sizes = record["decision"]["argument_sizes"]
    assert sizes["exceeded"] == limit
    assert sizes[limit.removeprefix("max_")] == found
    assert "k000001" not in json.dumps(record)


def test_a_large_call_within_the_limits_still_passes(world: World) -> None:
    text = "lorem ipsum dolor sit amet " * 37_000  # 999,000 characters
    response = world.call({"name": "big-note", "text": text}, rpc_id=7)
    assert response.status_code == 200, response.text[:500]
    message = reply_message(response)
    assert "result" in message, message
    assert message["result"].get("isError") is not True, message
    assert any(r.get(":method") == "POST" for r in world.upstream_requests())
