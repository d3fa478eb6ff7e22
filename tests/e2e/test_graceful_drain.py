"""The graceful stop of a real ``bastion serve`` (issue 17, ``bastion.transport.drain``): on SIGTERM it stops
accepting connections at once, lets a call that is streaming its answer finish within ``server.drain_s``, cuts
one that cannot with a ``shutting_down`` JSON-RPC error in its stream, and exits with every record written.

Real processes on loopback: ``tests/support/leaky_server`` (an MCP server written with the official SDK whose
``stream_logs`` tool sends log notifications ``gap_s`` apart on the call's SSE stream, then its result) and
``bastion serve``; the client is raw HTTP (the events are read as they arrive, SIGTERM sent mid-stream).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_helpers import audit_records, open_session, raw_headers, rpc
from tests.support.leaky_server import leaky_server

pytestmark = pytest.mark.e2e

POLICY = '@id("ann-calls")\npermit (principal == User::"ann", action == Action::"tools/call", resource);\n'


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with leaky_server() as url:  # answers POSTs with SSE streams
        yield url


def _bastion(tmp_path: Path, upstream: str, drain_s: int) -> BastionProcess:
    (tmp_path / "policy.cedar").write_text(POLICY, encoding="utf-8")
    config = {
        "server": {"drain_s": drain_s},
        "policy": {"files": [str(tmp_path / "policy.cedar")]},
        "routes": [{"name": "leaky", "http": {"url": upstream, "allow_http": True, "allow": ["127.0.0.1"]}}],
    }
    return BastionProcess(tmp_path, config).start()


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def _stream_with_sigterm(bastion: BastionProcess, count: int, gap_s: float) -> tuple[list[dict[str, Any]], float, bool]:
    """Call ``stream_logs`` on a 2025-11-25 session, SIGTERM Bastion once the first event arrived and read the
    stream to its end: ``(messages, seconds from SIGTERM to the stream's end, new connections refused while
    the stream was still open)``."""
    url = bastion.url("leaky")
    token = bastion.mint("ann", "leaky")
    messages: list[dict[str, Any]] = []
    refused_meanwhile = False
    with httpx2.Client(timeout=30) as http:
        session = open_session(http, url, token)
        headers = raw_headers(token, mcp_session_id=session, mcp_protocol_version="2025-11-25")
        call = rpc("tools/call", {"name": "stream_logs", "arguments": {"count": count, "gap_s": gap_s}}, rpc_id=41)
        with http.stream("POST", url, json=call, headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            signalled = 0.0
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                messages.append(json.loads(line[5:]))
                if not signalled:
                    bastion.proc.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                elif not refused_meanwhile:
                    refused_meanwhile = _refused(bastion.port)
            took = time.monotonic() - signalled
    return messages, took, refused_meanwhile


def _exit(bastion: BastionProcess) -> int:
    returncode = bastion.proc.wait(timeout=30)
    assert returncode in (0, -signal.SIGTERM), bastion.log()[-3000:]
    return returncode


def _outcome(bastion: BastionProcess) -> dict[str, Any]:
    [decision, outcome] = audit_records(bastion.database, "tools/call")
    assert (decision["kind"], decision["decision"]["effect"]) == ("decision", "allow")
    assert (outcome["kind"], outcome["decision_id"]) == ("outcome", decision["decision_id"])
    return outcome


def test_a_call_streaming_at_sigterm_finishes_while_new_connections_are_refused(tmp_path: Path, upstream: str) -> None:
    bastion = _bastion(tmp_path, upstream, drain_s=20)
    try:
        messages, took, refused = _stream_with_sigterm(bastion, count=8, gap_s=0.3)
    finally:
        bastion.stop()
    _exit(bastion)
    *logs, answer = messages
    assert [m["method"] for m in logs] == ["notifications/message"] * 8
    assert (answer["id"], answer["result"]["isError"]) == (41, False)
    assert answer["result"]["content"][0]["text"].startswith("done")
    assert took < 10  # finished with the upstream, far from the 20 s drain
    assert refused, "a new connection was accepted after SIGTERM"
    outcome = _outcome(bastion)  # written before the process exited
    assert (outcome["result"]["error"], outcome["result"]["error_code"]) == (False, None)
    assert bastion.cli("audit", "verify", "--config", str(bastion.config_path)).returncode == 0


def test_a_call_unfinished_when_the_drain_ends_is_cut_with_an_error_and_recorded(tmp_path: Path, upstream: str) -> None:
    bastion = _bastion(tmp_path, upstream, drain_s=1)
    try:
        messages, took, _ = _stream_with_sigterm(bastion, count=300, gap_s=0.1)
    finally:
        with contextlib.suppress(Exception):
            bastion.stop()
    _exit(bastion)
    *logs, last = messages
    assert 3 <= len(logs) < 60  # relayed during the second of drain, then cut
    assert (last["id"], last["error"]["code"]) == (41, -32603)
    assert "drain_s" in last["error"]["message"]
    assert 0.8 <= took < 6
    outcome = _outcome(bastion)
    assert (outcome["result"]["error"], outcome["result"]["error_code"]) == (True, "shutting_down")
