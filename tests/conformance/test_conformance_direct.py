"""The conformance harness itself, run DIRECTLY against the fixture server (no Bastion in between).

Covers, for both installed suite lines (0.1.16 and 0.2.0-alpha.12): the suite is installed and
lists its server scenarios (and 0.2.0 its 2026-07-28 requirement set); the fixture passes every
scenario of each run in ``harness.SUITE_RUNS``; the harness reports failures and timeouts (the
0.2.0 CLI's own per-scenario timeout included, and a batch gives up on a dead server); extra
headers reach the server on every request (fetch-, undici- and node:http-based scenarios alike)
and only the target origin gets them.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.support.pki import Leaf, make_pki

pytestmark = pytest.mark.conformance

CORE_SERVER_SCENARIOS = {
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-sampling",
    "tools-call-elicitation",
    "resources-read-text",
    "prompts-get-simple",
    "dns-rebinding-protection",
}
SERVER_SCENARIO_COUNTS = {"0.1.16": 32, "0.2.0": 65}
"""How many server scenarios each pinned line lists (scripts/install-node-tools.sh pins them)."""

TOOLS_LIST_RESULT = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}


class _Recorder:
    """Loopback HTTP(S) server that records each request's headers and JSON-RPC id and method.

    By default it answers 401. ``answer_jsonrpc=True``: every JSON-RPC request gets 200 with a
    ``tools/list``-shaped result (one tool), so scenarios that first discover tools go on to send
    their probes. ``tls``: serve HTTPS with that certificate.
    """

    def __init__(self, *, answer_jsonrpc: bool = False, tls: Leaf | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                message = body if isinstance(body, dict) else {}
                recorder.requests.append(
                    {
                        "method": self.command,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "id": message.get("id"),
                        "rpc_method": message.get("method"),
                    }
                )
                if answer_jsonrpc and "id" in message:
                    status = 200
                    payload: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"], "result": TOOLS_LIST_RESULT}
                else:
                    status, payload = 401, {"error": "unauthorized"}
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.certfile, tls.keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/mcp"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    with _Recorder() as rec:
        yield rec


@pytest.mark.parametrize("line", ["0.1.16", "0.2.0"])
def test_lists_server_scenarios(conformance_cli: Path, harness: ModuleType, line: str) -> None:
    names = harness.list_server_scenarios(line)
    assert set(names) >= CORE_SERVER_SCENARIOS
    assert len(names) == len(set(names)) == SERVER_SCENARIO_COUNTS[line]


def test_requirement_set_2026_07_28(conformance_cli: Path, harness: ModuleType) -> None:
    required = harness.requirement_set("2026-07-28")
    assert {"server-stateless", "dns-rebinding-protection", "caching"} <= set(required.scored)
    assert "server-initialize" not in required.scored  # the 2026-07-28 wire is stateless
    assert required.not_scored["tasks-lifecycle"] == "extension"
    assert required.not_scored["http-header-validation"] == "pending"
    assert not set(required.scored) & set(required.not_scored)
    assert set(required.scenarios) <= set(harness.list_server_scenarios("0.2.0"))
    assert harness.list_server_scenarios("0.2.0", "2026-07-28") == required.scenarios
    with pytest.raises(ValueError, match="no requirement sets"):
        harness.run_server_scenarios("http://127.0.0.1:9/mcp", line="0.1.16", requirements="2026-07-28")
    with pytest.raises(ValueError, match="unknown conformance suite line"):
        harness.list_server_scenarios("9.9")


def test_fixture_passes_every_server_scenario(
    harness: ModuleType, suite_run: Any, direct_results: dict[str, Any]
) -> None:
    print(f"\n{suite_run.label}, directly against the fixture:\n{harness.format_table(direct_results)}")
    assert list(direct_results) == harness.list_server_scenarios(suite_run.line, suite_run.requirements)
    failed = {name: f"{r.status}: {r.reason}" for name, r in direct_results.items() if not r.passed}
    assert not failed, f"{suite_run.label}: failing directly against the fixture: {json.dumps(failed, indent=2)}"
    assert all(r.checks for r in direct_results.values() if r.scenario != "server-sse-polling")
    if suite_run.requirements:
        assert direct_results["tasks-lifecycle"].not_scored == "extension"
        assert direct_results["dns-rebinding-protection"].not_scored is None


@pytest.mark.parametrize(
    ("line", "scenarios"),
    [
        ("0.1.16", ["tools-call-elicitation", "dns-rebinding-protection"]),
        ("0.2.0", ["http-header-validation", "dns-rebinding-protection"]),
    ],
)
def test_subset_with_headers_against_fixture(
    conformance_cli: Path, harness: ModuleType, fixture_server_url: str, line: str, scenarios: list[str]
) -> None:
    # The fixture ignores Authorization; the preload must not break anything.
    results = harness.run_server_scenarios(
        fixture_server_url, scenarios, line=line, headers={"Authorization": "Bearer ignored"}
    )
    assert {name: r.status for name, r in results.items()} == dict.fromkeys(scenarios, "passed"), {
        name: r.reason for name, r in results.items()
    }


def test_single_scenarios_of_a_requirement_set_run_at_its_wire(
    conformance_cli: Path, harness: ModuleType, fixture_server_url: str
) -> None:
    # One process per scenario cannot take --requirements; the harness passes
    # --spec-version REV --force, as the batch runs them: tools-list at the 2026-07-28 (draft)
    # wire instead of its default 2025-11-25, and the extension scenario not skipped.
    def wire(results: dict[str, Any]) -> list[str]:
        checks = results["tools-list"].checks
        return [c["specReferences"][0]["url"].split("/schema/")[1] for c in checks if c["id"] == "wire-schema-valid"]

    scenarios = ["tools-list", "tasks-capability-negotiation"]
    default = harness.run_server_scenarios(fixture_server_url, scenarios, line="0.2.0")
    required = harness.run_server_scenarios(fixture_server_url, scenarios, line="0.2.0", requirements="2026-07-28")
    assert wire(default) == ["2025-11-25/schema.json"]
    assert wire(required) == ["draft/schema.json"]
    assert [r.status for r in required.values()] == ["passed", "passed"], {n: r.reason for n, r in required.items()}
    assert [r.not_scored for r in required.values()] == [None, "extension"]
    assert required["tasks-capability-negotiation"].checks_passed > 0


def test_headers_reach_server_on_every_request(conformance_cli: Path, harness: ModuleType, recorder: _Recorder) -> None:
    headers = {"Authorization": "Bearer s3cret-token", "X-Bastion-Test": "yes"}
    results = harness.run_server_scenarios(
        recorder.url, ["server-initialize", "dns-rebinding-protection"], headers=headers
    )
    # Every request carried both headers, including undici.request() with a spoofed Host.
    assert recorder.requests
    for req in recorder.requests:
        assert req["headers"].get("authorization") == "Bearer s3cret-token", req
        assert req["headers"].get("x-bastion-test") == "yes", req
    hosts = {req["headers"]["host"] for req in recorder.requests}
    assert "evil.example.com" in hosts
    assert any(h.startswith("127.0.0.1:") for h in hosts)
    # The recorder answers 401, so the harness must report failures with a reason.
    init = results["server-initialize"]
    assert init.status == "failed"
    assert init.reason
    assert "ServerInitialize" in init.reason
    dns = results["dns-rebinding-protection"]
    assert dns.status == "failed"  # 401 for the rebinding request passes, for the valid one fails
    assert (dns.checks_passed, dns.checks_failed) == (1, 1)
    assert dns.reason
    assert "401" in dns.reason

    # 0.2.0's http-header-validation discovers tools with fetch(), then sends its probes with
    # node:http's request() (ids from 100 on, one per case: 8 with one tool listed).
    with _Recorder(answer_jsonrpc=True) as answering:
        results = harness.run_server_scenarios(answering.url, ["http-header-validation"], line="0.2.0", headers=headers)
    assert results["http-header-validation"].checks
    probes = [req for req in answering.requests if isinstance(req["id"], int) and req["id"] >= 100]
    assert len(probes) == 8, answering.requests
    assert any(req["headers"].get("mcp-name") == "wrong_tool_name" for req in probes)
    assert len(answering.requests) > len(probes)  # the fetch()-based discovery came first
    for req in answering.requests:
        assert req["headers"].get("authorization") == "Bearer s3cret-token", req
        assert req["headers"].get("x-bastion-test") == "yes", req


def test_no_headers_unless_asked(conformance_cli: Path, harness: ModuleType, recorder: _Recorder) -> None:
    harness.run_server_scenarios(recorder.url, ["ping"])
    with _Recorder(answer_jsonrpc=True) as answering:
        harness.run_server_scenarios(answering.url, ["http-header-validation"], line="0.2.0")
    assert recorder.requests
    assert any(isinstance(req["id"], int) and req["id"] >= 100 for req in answering.requests)
    for req in [*recorder.requests, *answering.requests]:
        assert "authorization" not in req["headers"], req


_NODE_CLIENT_CALLS = """
import http from 'node:http';
import https from 'node:https';
import { request, get } from 'node:http';
const [target, other, secure] = process.argv.slice(2);
const done = (req) => new Promise((resolve, reject) => {
  req.on('response', (res) => { res.resume(); res.on('end', resolve); });
  req.on('error', reject);
});
const sent = (req) => { req.end(); return done(req); };
const t = new URL(target);
await fetch(target);
await fetch(other);
await sent(http.request({ hostname: t.hostname, port: t.port, path: t.pathname, method: 'POST' }));
await sent(request(target, { method: 'POST', headers: { authorization: 'Bearer mine' } }));
await sent(request(target, { headers: ['X-Raw', '1'] }));
await done(get(new URL(target)));
await done(http.get(other));
await done(https.get(secure));
"""


def test_preload_only_adds_headers_for_target_origin(
    conformance_cli: Path, harness: ModuleType, tmp_path: Path
) -> None:
    node = conformance_cli.parent / "node"
    pki = make_pki(tmp_path)
    with _Recorder() as target, _Recorder() as other, _Recorder(tls=pki.localhost) as secure:
        env = dict(os.environ)
        env["NODE_OPTIONS"] = f"--import={harness.PRELOAD.as_uri()}"
        env["NODE_EXTRA_CA_CERTS"] = str(pki.ca_file)
        env["BASTION_CONFORMANCE_AUTH"] = "tok"  # bare token -> "Bearer tok"
        env["BASTION_CONFORMANCE_ORIGIN"] = target.url
        script = tmp_path / "calls.mjs"
        script.write_text(_NODE_CLIENT_CALLS)

        def run_calls() -> None:
            cmd = [str(node), str(script), target.url, other.url, secure.url]
            proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr

        run_calls()
        # fetch, http.request (options / named import with URL), http.get: all get it; a
        # header the request sets is kept, a raw header array is extended.
        assert [r["headers"].get("authorization") for r in target.requests] == [
            "Bearer tok",
            "Bearer tok",
            "Bearer mine",
            "Bearer tok",
            "Bearer tok",
        ]
        assert target.requests[3]["headers"].get("x-raw") == "1"
        assert [r["headers"].get("authorization") for r in other.requests] == [None, None]
        assert [r["headers"].get("authorization") for r in secure.requests] == [None]  # other origin

        # https.request/get are wrapped too: the same calls with the HTTPS recorder as target.
        env["BASTION_CONFORMANCE_ORIGIN"] = secure.url
        run_calls()
        assert [r["headers"].get("authorization") for r in secure.requests] == [None, "Bearer tok"]
        second_run = [r["headers"].get("authorization") for r in target.requests[5:]]
        assert second_run == [None, None, "Bearer mine", None, None]


@pytest.mark.parametrize(("line", "reason"), [("0.1.16", "CLI killed"), ("0.2.0", "did not complete within 2000ms")])
def test_unresponsive_server_times_out(conformance_cli: Path, harness: ModuleType, line: str, reason: str) -> None:
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        results = harness.run_server_scenarios(url, ["ping"], line=line, timeout_s=2)
    assert results["ping"].status == "timeout"
    assert not results["ping"].passed
    assert reason in (results["ping"].reason or "")


def test_batch_gives_up_on_a_dead_server(conformance_cli: Path, harness: ModuleType) -> None:
    # The 0.2.0 CLI times each scenario out itself and goes on; the harness stops it after
    # MAX_CONSECUTIVE_TIMEOUTS in a row instead of waiting out all 65.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        started = time.monotonic()
        results = harness.run_server_scenarios(url, line="0.2.0", timeout_s=1)
        elapsed = time.monotonic() - started
    statuses = [r.status for r in results.values()]
    n = harness.MAX_CONSECUTIVE_TIMEOUTS
    assert statuses[:n] == ["timeout"] * n
    assert set(statuses[n:]) == {"error"}
    assert all("not run" in (r.reason or "") for r in list(results.values())[n:])
    assert elapsed < 30
