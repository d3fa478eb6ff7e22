"""A session's GET event stream on a stdio route: opened, counted, and released when the client leaves.

uvicorn silently drops what is sent after a client disconnects, so a stream
that never noticed would hold its subscription (and for HTTP routes its
upstream stream) forever; ``/healthz`` counts the open streams per stdio route, and ``/readyz``
says the gateway is ready once its stdio upstreams run.
"""

from __future__ import annotations

import httpx2
import pytest
from tests.e2e.conftest import Gateway
from tests.support.e2e_helpers import LEGACY_VERSION, open_session, raw_headers, wait_until

pytestmark = pytest.mark.e2e


def _streams(gateway: Gateway, route: str) -> int:
    health = httpx2.get(f"{gateway.bastion.base_url}/healthz").json()
    return int(health["routes"][route]["streams"])


def test_a_get_stream_is_released_when_the_client_disconnects(gateway: Gateway) -> None:
    url, token = gateway.url("time"), gateway.token("alice", "time")
    before = _streams(gateway, "time")
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, url, token)
        headers = raw_headers(token, mcp_session_id=session, mcp_protocol_version=LEGACY_VERSION)
        headers["accept"] = "text/event-stream"
        with http.stream("GET", url, headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            wait_until(lambda: _streams(gateway, "time") == before + 1 or None)
    wait_until(lambda: _streams(gateway, "time") == before or None)


def test_the_embedded_gateway_is_ready_with_its_stdio_upstreams_running(gateway: Gateway) -> None:
    ready = httpx2.get(f"{gateway.bastion.base_url}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["upstream time"] == checks["upstream git"] == checks["audit log"] == "ok"
    assert "postgres" not in checks  # embedded stores: nothing shared to ask
