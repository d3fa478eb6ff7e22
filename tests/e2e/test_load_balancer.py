"""Replicas behind a real load balancer (issue 17): two ``bastion serve`` processes on PostgreSQL and
Redis behind HAProxy (round robin, no stickiness: each request is balanced on its own).

- An MCP session (2025-11-25, the official SDK client) opened through the balancer continues
  whichever replica each request reaches; HAProxy's own ``x-bastion-replica`` answer header shows
  that both served it.
- A call answered as SSE, and the session's GET event stream, work through the balancer; when the
  replica holding the GET stream is killed (SIGKILL), the client reconnects through the balancer to
  the other replica with ``Last-Event-ID``, and the upstream (which keeps its events) replays what
  was sent meanwhile, then the stream goes on. A call whose SSE answer was cut when its replica was
  killed is answered on the other replica when the client resumes with ``Last-Event-ID`` (the request
  was shared in Redis), inspected there; the same replay on another session is withheld.
- A token revoked with one replica's CLI is refused by every replica within a second.
- A stdio route runs its upstream on every replica.

Real processes on loopback: HAProxy, two gateways with one public URL (the balancer's) and one
signing key (copied, as in ``test_shared_stores``), the resumable MCP server
(``tests.support.resumable_server``) and the official ``mcp-server-time`` over stdio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LoggingMessageNotificationParams
from tests.support.bastion_process import BastionProcess, free_port
from tests.support.databases import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_keys,
    drop_postgres_schema,
    postgres_schema,
)
from tests.support.e2e_helpers import (
    child_processes,
    jwt_payload,
    modern_post,
    open_session,
    reply_message,
    rpc,
    wait_until,
)
from tests.support.load_balancer import REPLICA_HEADER, HAProxy
from tests.support.resumable_server import resumable_server

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
POLICY = """
@id("dev-all-tools")
permit (principal in Group::"dev", action == Action::"tools/call", resource);
"""


@dataclass
class Cluster:
    """The balancer, the replicas behind it (``r0``, ``r1`` in HAProxy's names) and the upstream."""

    balancer: HAProxy
    replicas: list[BastionProcess]
    upstream_calls: Callable[[], list[dict[str, Any]]]

    def replica(self, name: str) -> BastionProcess:
        """The replica HAProxy calls ``name`` (``r0``, ``r1``)."""
        return self.replicas[int(name.removeprefix("r"))]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``stores`` of a configuration: a PostgreSQL schema and a Redis key prefix of the test's own,
    both removed afterwards."""
    schema = postgres_schema(tmp_path)
    prefix = f"bastion-e2e:{schema}:"
    yield {"postgres": {"url": POSTGRES_URL, "schema": schema}, "redis": {"url": REDIS_URL, "prefix": prefix}}
    asyncio.run(drop_postgres_schema(tmp_path))
    asyncio.run(delete_redis_keys(prefix))


@pytest.fixture
def cluster(tmp_path: Path, stores: dict[str, Any]) -> Iterator[Cluster]:
    """Two replicas (routes ``resumable``: HTTP, ``time``: stdio) behind HAProxy, whose URL is their
    public URL (the tokens' audience)."""
    port = free_port()
    with resumable_server() as (upstream_url, upstream_calls):
        replicas = [_replica(tmp_path / name, f"http://127.0.0.1:{port}", upstream_url, stores) for name in "ab"]
        first, second = replicas
        with first:
            first.mint("warm-up", "resumable")  # creates the signing key, which the second replica is given
            (second.workdir / "data").mkdir(parents=True, mode=0o700)
            shutil.copy2(first.workdir / "data" / "signing-keys.json", second.workdir / "data")
            with second, HAProxy(tmp_path / "haproxy", [r.port for r in replicas], port) as balancer:
                yield Cluster(balancer, replicas, upstream_calls)


def _replica(workdir: Path, public_url: str, upstream_url: str, stores: dict[str, Any]) -> BastionProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.cedar").write_text(POLICY, encoding="utf-8")
    return BastionProcess(workdir, {
        "server": {"public_url": public_url},
        "policy": {"files": [str(workdir / "policy.cedar")]},
        "stores": stores,
        "routes": [
            {"name": "resumable", "http": {"url": upstream_url, "allow_http": True, "allow": ["127.0.0.1"]}},
            {"name": "time", "stdio": {"command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"]}},
        ],
    })  # fmt: skip


@dataclass(frozen=True)
class Seen:
    """One request the client sent through the balancer, and who answered it."""

    method: str
    version: str | None
    session_id: str | None
    last_event_id: str | None
    status: int
    replica: str | None


def _recording() -> tuple[list[Seen], dict[str, Any]]:
    """A list of ``Seen`` and the ``event_hooks`` of an ``httpx2.AsyncClient`` that fill it."""
    seen: list[Seen] = []

    async def record(response: httpx2.Response) -> None:
        request = response.request
        sent, replica = request.headers, response.headers.get(REPLICA_HEADER)
        seen.append(Seen(request.method, sent.get("mcp-protocol-version"), sent.get("mcp-session-id"),
                         sent.get("last-event-id"), response.status_code, replica))  # fmt: skip

    return seen, {"response": [record]}


def test_a_session_continues_whichever_replica_each_request_reaches(cluster: Cluster) -> None:
    token = cluster.replicas[0].mint("sam", "resumable", "dev")
    seen, hooks = _recording()

    async def drive() -> list[str]:
        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30, event_hooks=hooks) as http,
            Client(streamable_http_client(cluster.balancer.url("resumable"), http_client=http),
                   mode="legacy") as client,
        ):  # fmt: skip
            answers = []
            for n in range(20):
                result = await client.call_tool("echo", {"text": f"call-{n}"})
                assert not result.is_error, result
                answers.append(result.content[0].text)
            return answers

    assert asyncio.run(drive()) == [f"call-{n}" for n in range(20)]
    posts = [s for s in seen if s.method == "POST" and s.session_id is not None]
    assert len({s.session_id for s in posts}) == 1  # one session throughout
    assert {s.version for s in posts} == {"2025-11-25"}
    assert all(s.status in (200, 202) for s in posts), posts
    served = [s.replica for s in posts]
    assert {"r0", "r1"} <= set(served), served
    assert min(served.count("r0"), served.count("r1")) >= 5, served  # round robin, not one by chance
    assert [c["text"] for c in cluster.upstream_calls()] == [f"call-{n}" for n in range(20)]
    first = cluster.replicas[0]
    verified = first.cli("audit", "verify", "--config", str(cluster.replicas[1].config_path))
    assert verified.stdout.startswith("OK"), verified.stdout  # one chain, written by both replicas


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_a_call_is_answered_as_sse_through_the_balancer(cluster: Cluster, version: str) -> None:
    token = cluster.replicas[0].mint("sam", "resumable", "dev")
    with httpx2.Client(timeout=10) as http:
        session_id = open_session(http, cluster.balancer.url("resumable"), token, version=version)
        replicas = set()
        for n in range(4):
            call = rpc("tools/call", {"name": "echo", "arguments": {"text": f"sse-{n}"}}, rpc_id=n + 2)
            answer = http.post(cluster.balancer.url("resumable"), json=call, headers={
                "authorization": f"Bearer {token}", "mcp-session-id": session_id,
                "mcp-protocol-version": version, "accept": "application/json, text/event-stream"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert reply_message(answer)["result"]["content"][0]["text"] == f"sse-{n}"
            replicas.add(answer.headers[REPLICA_HEADER])
        assert replicas == {"r0", "r1"}


def test_the_event_stream_resumes_on_the_other_replica_when_its_replica_dies(cluster: Cluster) -> None:
    """The SDK client opens the session's GET stream through the balancer; the upstream announces on
    it. The replica holding it is killed (SIGKILL) and the upstream announces again at once (the SDK
    client waits a second before it reconnects); the client reconnects through the balancer (to the
    surviving replica) with ``Last-Event-ID``, is sent exactly what it missed, once and in order
    (replayed by the upstream, relayed by the other replica for the same session), and the stream
    goes on."""
    token = cluster.replicas[0].mint("sam", "resumable", "dev")
    arrived: list[tuple[str, int]] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        arrived.append((params.data["tag"], params.data["seq"]))

    def streams(seen: list[Seen]) -> list[Seen]:
        return [s for s in seen if s.method == "GET" and s.status == 200]

    async def until(probe: Callable[[], object], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not probe():
            assert time.monotonic() < deadline, arrived
            await asyncio.sleep(0.05)

    seen, hooks = _recording()

    async def drive() -> None:
        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30, event_hooks=hooks) as http,
            Client(streamable_http_client(cluster.balancer.url("resumable"), http_client=http),
                   mode="legacy", logging_callback=on_log) as client,
        ):  # fmt: skip
            await until(lambda: streams(seen))
            await client.call_tool("announce", {"tag": "before", "count": 3})
            await until(lambda: len(arrived) == 3)
            holder = cluster.replica(streams(seen)[0].replica or "")
            assert holder.proc is not None
            os.kill(holder.proc.pid, signal.SIGKILL)
            holder.proc.wait(10)
            await client.call_tool("announce", {"tag": "gap", "count": 3})  # reaches the other replica
            await until(lambda: len(arrived) == 6)
            await client.call_tool("announce", {"tag": "after", "count": 2})
            await until(lambda: len(arrived) == 8)

    asyncio.run(drive())
    tags = ["before"] * 3 + ["gap"] * 3 + ["after"] * 2
    assert arrived == [(tag, seq) for tag, seq in zip(tags, [0, 1, 2, 0, 1, 2, 0, 1], strict=True)]
    opened = streams(seen)
    assert len(opened) == 2, seen
    assert opened[0].last_event_id is None
    assert opened[1].last_event_id is not None  # the resumption
    assert opened[1].replica != opened[0].replica
    assert opened[0].session_id == opened[1].session_id


def test_a_token_revoked_on_one_replica_is_refused_by_every_replica_within_a_second(cluster: Cluster) -> None:
    first = cluster.replicas[0]
    token = first.mint("rita", "resumable", "dev")
    params = {"name": "echo", "arguments": {"text": "hello"}}

    def through_balancer(count: int) -> list[tuple[int, str]]:
        with httpx2.Client(timeout=10) as http:
            answers = [modern_post(http, cluster.balancer.url("resumable"), token, "tools/call", params)
                       for _ in range(count)]  # fmt: skip
        return [(a.status_code, a.headers[REPLICA_HEADER]) for a in answers]

    assert sorted(through_balancer(2)) == [(200, "r0"), (200, "r1")]
    jti = jwt_payload(token)["jti"]
    assert jti in first.cli("token", "revoke", jti, "--config", str(first.config_path)).stdout
    revoked = time.monotonic()
    wait_until(lambda: sorted(through_balancer(2)) == [(401, "r0"), (401, "r1")], timeout_s=1.0, interval_s=0.05)
    assert time.monotonic() - revoked < 1.5
    assert sorted(through_balancer(4)) == [(401, "r0")] * 2 + [(401, "r1")] * 2
    assert len(cluster.upstream_calls()) == 2  # nothing forwarded after the revocation


def test_a_stdio_route_runs_its_upstream_on_every_replica(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        health = httpx2.get(f"{replica.base_url}/healthz", timeout=5).json()
        assert health["routes"]["time"] == {"upstream": "stdio", "ready": True, "streams": 0}
    children = [child_processes(r.proc.pid) for r in cluster.replicas if r.proc is not None]
    servers = [[pid for pid, line in found.items() if "mcp-server-time" in line] for found in children]
    assert [len(pids) for pids in servers] == [1, 1], children  # one of its own on each replica
    token = cluster.replicas[0].mint("sam", "time", "dev")
    with httpx2.Client(timeout=10) as http:
        session_id = open_session(http, cluster.balancer.url("time"), token)
        served = []
        for n in range(4):
            call = rpc("tools/call", {"name": "get_current_time", "arguments": {"timezone": "UTC"}}, rpc_id=n + 2)
            answer = http.post(cluster.balancer.url("time"), json=call, headers={
                "authorization": f"Bearer {token}", "mcp-session-id": session_id,
                "mcp-protocol-version": "2025-11-25", "accept": "application/json, text/event-stream"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert "UTC" in reply_message(answer)["result"]["content"][0]["text"]
            served.append(answer.headers[REPLICA_HEADER])
    assert sorted(served) == ["r0", "r0", "r1", "r1"]


def test_a_call_whose_stream_died_with_its_replica_is_answered_by_the_other(cluster: Cluster) -> None:
    """A POST's event stream resumes on another replica. The call's stream is cut when its replica is
    killed (SIGKILL); the upstream finishes the call and keeps the answer; the client resumes with
    ``Last-Event-ID`` through the balancer, and the surviving replica finds the request in the ledger
    the killed one shared in Redis (before relaying the first event), so it relays the upstream's
    replay as the answer to that call, inspected: the email address in it is redacted (every class
    applies to an answer replayed on a GET stream). The same replay on another session of the same
    principal (the upstream's event store serves it to any session) finds no request there and is
    withheld: the event's id relayed without its data, audited as a denied ``response``
    (``unsolicited_response``)."""
    token = cluster.replicas[0].mint("sam", "resumable", "dev")
    url = cluster.balancer.url("resumable")
    with httpx2.Client(timeout=httpx2.Timeout(10, read=3)) as http:
        session_id, elsewhere = open_session(http, url, token), open_session(http, url, token)
        headers = {"authorization": f"Bearer {token}", "mcp-session-id": session_id,
                   "mcp-protocol-version": "2025-11-25", "accept": "application/json, text/event-stream"}  # fmt: skip
        text = "late: ask ops@example.com"
        call = rpc("tools/call", {"name": "slow", "arguments": {"text": text, "delay_s": 1}}, rpc_id=7)
        last_id = None
        with http.stream("POST", url, json=call, headers=headers) as stream:
            holder = cluster.replica(stream.headers[REPLICA_HEADER])
            for line in stream.iter_lines():
                last_id = line.removeprefix("id:").strip() if line.startswith("id:") else last_id
                if "working" in line:
                    break
            assert holder.proc is not None
            assert last_id is not None
            os.kill(holder.proc.pid, signal.SIGKILL)
        wait_until(lambda: cluster.upstream_calls() == [{"tool": "slow", "text": text}])  # answered upstream
        resume = {**headers, "accept": "text/event-stream", "last-event-id": last_id}
        resumed, other = _resume(cluster, http, resume)
        foreign, _ = _resume(cluster, http, {**resume, "mcp-session-id": elsewhere})
    assert other is not holder
    answers = [json.loads(line[5:]) for line in resumed if line.startswith("data:") and line[5:].strip()]
    assert [a["id"] for a in answers] == [7], resumed  # the answer, once
    assert answers[0]["result"]["content"][0]["text"] == "late: ask [REDACTED:email]"  # inspected on the way
    assert [line for line in foreign if line.startswith("id:")]  # the replay on the other session...
    assert not [line for line in foreign if line.startswith("data:") and line[5:].strip()], foreign  # ...withheld
    assert wait_until(lambda: _withheld(other), timeout_s=5) == [("response", "unsolicited_response", "7")]


def _resume(cluster: Cluster, http: httpx2.Client, headers: dict[str, str]) -> tuple[list[str], BastionProcess]:
    """The lines of the event stream a GET with ``headers`` opens through the balancer (read until it
    stays quiet: a replayed stream stays open), and the replica that served it."""
    lines: list[str] = []
    with http.stream("GET", cluster.balancer.url("resumable"), headers=headers) as resumed:
        assert resumed.status_code == 200
        with contextlib.suppress(httpx2.ReadTimeout):
            lines.extend(resumed.iter_lines())
        return lines, cluster.replica(resumed.headers[REPLICA_HEADER])


def _withheld(replica: BastionProcess) -> list[tuple[str, str, str | None]]:
    """``(method, reason, target)`` of the denied ``response`` records in the shared audit log."""
    found = replica.cli("audit", "search", "--config", str(replica.config_path), "--json", check=False)
    assert found.returncode == 0, found.stderr
    records = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    return [(r["method"], r["decision"]["reason"], r.get("target")) for r in records
            if r["kind"] == "decision" and r["method"] == "response"]  # fmt: skip
