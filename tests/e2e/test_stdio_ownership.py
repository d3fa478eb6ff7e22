"""stdio ownership: Bastion starts the server process, scrubs its environment, logs its
stderr, restarts it when it dies and ends it when Bastion itself stops.

The server is ``tests/support/e2e_env_server.py`` (an ``mcp`` SDK ``MCPServer``):
its ``environment`` tool returns ``dict(os.environ)`` as the child sees it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx2
import pytest
from mcp.types import TextContent
from tests.e2e.conftest import (
    CANARY,
    ROUTE_LITERAL,
    SECRET_SOURCE,
    SECRET_VALUE,
    Gateway,
    bastion_env,
    env_route,
)
from tests.support.bastion_process import BastionProcess
from tests.support.e2e_env_server import STARTUP_MARKER
from tests.support.e2e_helpers import (
    ENV_SERVER,
    PROTOCOLS,
    child_processes,
    connect,
    is_gone,
    wait_until,
)

pytestmark = pytest.mark.e2e

PERMIT_ALICE = """
@id("alice-envdump")
permit (principal == User::"alice", action == Action::"tools/call", resource in Server::"envdump");
"""


def _structured(result: object) -> object:
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return structured.get("result", structured) if isinstance(structured, dict) else structured
    content = getattr(result, "content", [])
    return json.loads(next(c.text for c in content if isinstance(c, TextContent)))


def _env_child(bastion_pid: int) -> int | None:
    """The pid of the envdump server process Bastion runs, if exactly one is running."""
    found = [pid for pid, cmd in child_processes(bastion_pid).items() if str(ENV_SERVER) in cmd]
    return found[0] if len(found) == 1 else None


async def _whoami(gateway: Gateway) -> int:
    async with connect(gateway.url("envdump"), gateway.token("alice", "envdump"), "legacy") as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error
    pid = _structured(result)
    assert isinstance(pid, int)
    return pid


@pytest.mark.parametrize("mode", PROTOCOLS)
async def test_child_environment_is_scrubbed_to_what_the_route_names(gateway: Gateway, mode: str) -> None:
    async with connect(gateway.url("envdump"), gateway.token("alice", "envdump"), mode) as client:
        result = await client.call_tool("environment", {})
    assert not result.is_error
    env = _structured(result)
    assert isinstance(env, dict)
    # Set on the Bastion process, never named by the route: not visible.
    assert CANARY not in env
    assert SECRET_SOURCE not in env
    # A literal value from the route: visible. A {env: NAME} reference: resolved.
    assert env.get(ROUTE_LITERAL[0]) == ROUTE_LITERAL[1]
    assert env.get("UPSTREAM_API_TOKEN") == SECRET_VALUE
    # Nothing else of Bastion's (the test runner's) environment: only PATH and HOME are passed.
    assert set(env) - {"PATH", "HOME", "LC_CTYPE"} == {ROUTE_LITERAL[0], "UPSTREAM_API_TOKEN"}


async def test_child_stderr_lines_appear_in_bastion_log(gateway: Gateway) -> None:
    nonce = f"stderr-line-{uuid.uuid4().hex}"
    assert STARTUP_MARKER in gateway.bastion.log()
    async with connect(gateway.url("envdump"), gateway.token("alice", "envdump"), "legacy") as client:
        result = await client.call_tool("shout", {"text": nonce})
    assert not result.is_error
    for _ in range(100):
        if nonce in gateway.bastion.log():
            break
        await asyncio.sleep(0.05)
    line = next((ln for ln in gateway.bastion.log().splitlines() if nonce in ln), "")
    assert line, "the child's stderr line never reached Bastion's log"
    assert "envdump" in line  # attributed to the route's logger


async def test_killed_child_is_restarted_and_calls_work_again(gateway: Gateway) -> None:
    proc = gateway.bastion.proc
    assert proc is not None
    old = wait_until(lambda: _env_child(proc.pid))
    assert await _whoami(gateway) == old

    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 20
    new: int | None = None
    while time.monotonic() < deadline:
        new = _env_child(proc.pid)
        if new is not None and new != old:
            break
        await asyncio.sleep(0.1)
    assert new is not None
    assert new != old, "Bastion did not restart the stdio server"
    assert is_gone(old)
    # The restarted server answers through Bastion (allow for the handshake to finish).
    for _ in range(50):
        try:
            pid = await _whoami(gateway)
            break
        except Exception:  # noqa: BLE001 - retried until the new process finished its handshake
            await asyncio.sleep(0.2)
    else:
        pid = await _whoami(gateway)
    assert pid == new
    assert "restarting" in gateway.bastion.log()
    health = httpx2.get(f"{gateway.bastion.base_url}/healthz", timeout=5).json()
    assert health["routes"]["envdump"]["upstream"] == "stdio"
    assert health["routes"]["envdump"]["ready"] is True


def test_sigterm_on_bastion_ends_the_child(tmp_path: Path) -> None:
    (tmp_path / "policy.cedar").write_text(PERMIT_ALICE, encoding="utf-8")
    config = {"policy": {"files": [str(tmp_path / "policy.cedar")]}, "routes": [env_route()]}
    bastion = BastionProcess(tmp_path, config).start(env=bastion_env())
    try:
        assert bastion.proc is not None
        child = wait_until(lambda: _env_child(bastion.proc.pid) if bastion.proc else None)
        assert not is_gone(child)
        bastion.proc.send_signal(signal.SIGTERM)
        returncode = bastion.proc.wait(20)
    finally:
        bastion.stop()
    # A graceful stop: uvicorn re-raises SIGTERM after its shutdown, so -SIGTERM is a clean exit too.
    assert returncode in (0, -signal.SIGTERM), bastion.log()[-2000:]
    assert "Application shutdown complete" in bastion.log()
    wait_until(lambda: is_gone(child), timeout_s=10)
