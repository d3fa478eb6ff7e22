"""The conformance harness itself, run DIRECTLY against the fixture server (no Bastion in between).

Covers: the suite is installed and lists its server scenarios; the fixture passes every server
scenario; the harness reports failures and timeouts; extra headers reach the server on every
request (fetch- and undici-based scenarios alike) and only the target origin gets them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

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


class _Recorder:
    """Loopback HTTP server that records each request's headers and answers 401."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append(
                    {"method": self.command, "headers": {k.lower(): v for k, v in self.headers.items()}}
                )
                body = b'{"error":"unauthorized"}'
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
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


def test_lists_server_scenarios(conformance_cli: Path, harness: ModuleType) -> None:
    names = harness.list_server_scenarios()
    assert set(names) >= CORE_SERVER_SCENARIOS
    assert len(names) == len(set(names))


def test_fixture_passes_every_server_scenario(
    conformance_cli: Path, harness: ModuleType, fixture_server_url: str
) -> None:
    results = harness.run_server_scenarios(fixture_server_url)
    assert set(results) == set(harness.list_server_scenarios())
    failed = {name: f"{r.status}: {r.reason}" for name, r in results.items() if not r.passed}
    assert not failed, f"scenarios failing directly against the fixture: {json.dumps(failed, indent=2)}"
    assert all(r.checks for r in results.values() if r.scenario != "server-sse-polling")


def test_subset_with_headers_against_fixture(
    conformance_cli: Path, harness: ModuleType, fixture_server_url: str
) -> None:
    # The fixture ignores Authorization; the preload must not break anything.
    results = harness.run_server_scenarios(
        fixture_server_url,
        ["tools-call-elicitation", "dns-rebinding-protection"],
        headers={"Authorization": "Bearer ignored"},
    )
    assert [r.status for r in results.values()] == ["passed", "passed"]


def test_headers_reach_server_on_every_request(
    conformance_cli: Path, harness: ModuleType, recorder: _Recorder
) -> None:
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


def test_no_headers_unless_asked(conformance_cli: Path, harness: ModuleType, recorder: _Recorder) -> None:
    harness.run_server_scenarios(recorder.url, ["ping"])
    assert recorder.requests
    assert all("authorization" not in req["headers"] for req in recorder.requests)


def test_preload_only_adds_headers_for_target_origin(conformance_cli: Path, harness: ModuleType) -> None:
    node = conformance_cli.parent / "node"
    with _Recorder() as target, _Recorder() as other:
        env = dict(os.environ)
        env["NODE_OPTIONS"] = f"--import={harness.PRELOAD.as_uri()}"
        env["BASTION_CONFORMANCE_AUTH"] = "tok"  # bare token -> "Bearer tok"
        env["BASTION_CONFORMANCE_ORIGIN"] = target.url
        script = f"await fetch({json.dumps(target.url)}); await fetch({json.dumps(other.url)});"
        subprocess.run(
            [str(node), "--input-type=module", "-e", script],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert [r["headers"].get("authorization") for r in target.requests] == ["Bearer tok"]
        assert [r["headers"].get("authorization") for r in other.requests] == [None]


def test_unresponsive_server_times_out(conformance_cli: Path, harness: ModuleType) -> None:
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        results = harness.run_server_scenarios(url, ["ping"], timeout_s=2)
    assert results["ping"].status == "timeout"
    assert not results["ping"].passed
