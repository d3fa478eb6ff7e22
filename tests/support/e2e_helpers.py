"""Helpers for the end-to-end tests: MCP clients, raw MCP requests, /proc lookups, JWT pieces.

Nothing here fakes a component: the clients are the official ``mcp`` SDK
client and plain ``httpx2`` requests against a real ``bastion serve``.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

__all__ = [
    "ENV_SERVER",
    "LEGACY",
    "LEGACY_VERSION",
    "MODERN",
    "PROTOCOLS",
    "audit_records",
    "child_processes",
    "connect",
    "envelope",
    "initialize_params",
    "is_gone",
    "jwt_header",
    "jwt_payload",
    "legacy_post",
    "make_git_repo",
    "modern_post",
    "open_session",
    "raw_headers",
    "reply_message",
    "rpc",
    "wait_until",
]

LEGACY = "legacy"
MODERN = "2026-07-28"
PROTOCOLS = (LEGACY, MODERN)
LEGACY_VERSION = "2025-11-25"
ENV_SERVER = Path(__file__).resolve().with_name("e2e_env_server.py")

T = TypeVar("T")


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str) -> AsyncIterator[Client]:
    """The official SDK client on ``url`` with ``Authorization: Bearer token`` (``mode``: legacy or 2026-07-28)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def envelope(version: str = MODERN) -> dict[str, Any]:
    """The 2026-07-28 per-request ``_meta`` envelope."""
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bastion-e2e", "version": "0"},
    }


def raw_headers(token: str | None = None, **extra: str) -> dict[str, str]:
    """Headers of a plain MCP POST: JSON body, JSON or SSE answer, optional bearer token."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


def rpc(method: str, params: dict[str, Any] | None = None, *, rpc_id: int | str | None = 1) -> dict[str, Any]:
    """A JSON-RPC 2.0 request (or a notification when ``rpc_id`` is None)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if rpc_id is not None:
        message["id"] = rpc_id
    if params is not None:
        message["params"] = params
    return message


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt_header(token: str) -> dict[str, Any]:
    """The decoded (unverified) JOSE header of a compact JWS."""
    result: dict[str, Any] = json.loads(_b64(token.split(".")[0]))
    return result


def jwt_payload(token: str) -> dict[str, Any]:
    """The decoded (unverified) claims of a compact JWS."""
    result: dict[str, Any] = json.loads(_b64(token.split(".")[1]))
    return result


def make_git_repo(path: Path) -> Path:
    """A small git repository with one commit."""
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is needed for the mcp-server-git route")
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("# e2e repository\n", encoding="utf-8")
    ident = ["-c", "user.name=e2e", "-c", "user.email=e2e@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], [*ident, "commit", "-q", "-m", "first commit"]):
        subprocess.run([git, *args], cwd=path, check=True, capture_output=True, timeout=30)
    return path


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` from /proc/<pid>/stat, or None when the process does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def child_processes(parent: int) -> dict[int, str]:
    """The live children of ``parent`` as ``{pid: command line}`` (read from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != parent or stat[0] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found[int(entry.name)] = cmdline
    return found


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie awaiting its reaper)."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def wait_until(probe: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.1) -> T:
    """Call ``probe`` until it returns something truthy; return it, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


def reply_message(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a reply, whether sent as JSON or as a ``text/event-stream``.

    For a stream, the last event carrying a ``result`` or ``error`` is returned.
    """
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        found: dict[str, Any] | None = None
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():  # a priming event (id only) has empty data
                message = json.loads(line[5:].strip())
                if isinstance(message, dict) and ("result" in message or "error" in message):
                    found = message
        if found is None:
            raise AssertionError(f"no JSON-RPC answer in the event stream: {response.text[:500]!r}")
        return found
    result: dict[str, Any] = response.json()
    return result


def initialize_params(version: str = LEGACY_VERSION) -> dict[str, Any]:
    """``initialize`` params of the session protocol (2025-11-25 unless ``version`` says otherwise)."""
    return {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "bastion-e2e", "version": "0"},
    }


def open_session(http: httpx2.Client, url: str, token: str, *, version: str = LEGACY_VERSION) -> str:
    """Open a 2025-11-25 (or ``version``) session on ``url`` with raw requests; return its ``Mcp-Session-Id``."""
    response = http.post(url, json=rpc("initialize", initialize_params(version)), headers=raw_headers(token))
    assert response.status_code == 200, response.text
    assert "result" in reply_message(response), response.text
    session_id = response.headers["mcp-session-id"]
    done = http.post(
        url,
        json=rpc("notifications/initialized", rpc_id=None),
        headers=raw_headers(token, mcp_session_id=session_id, mcp_protocol_version=version),
    )
    assert done.status_code in (200, 202), done.text
    return session_id


def legacy_post(
    http: httpx2.Client,
    url: str,
    token: str | None,
    session_id: str | None,
    message: dict[str, Any],
    *,
    version: str = LEGACY_VERSION,
) -> httpx2.Response:
    """POST ``message`` on a 2025-11-25 (or ``version``) session (headers: version, session id, token when given)."""
    extra = {"mcp_protocol_version": version}
    if session_id:
        extra["mcp_session_id"] = session_id
    return http.post(url, json=message, headers=raw_headers(token, **extra))


def modern_post(
    http: httpx2.Client,
    url: str,
    token: str | None,
    method: str,
    params: dict[str, Any] | None = None,
    **header_overrides: str,
) -> httpx2.Response:
    """POST one stateless 2026-07-28 request with a correct envelope and mirrored headers.

    ``header_overrides`` (``mcp_method=...``, ``mcp_name=...``) replace the mirrored values.
    """
    body_params = {**(params or {}), "_meta": envelope()}
    extra = {"mcp_protocol_version": MODERN, "mcp_method": method}
    name = (params or {}).get("uri" if method == "resources/read" else "name")
    if method in ("tools/call", "prompts/get", "resources/read") and name is not None:
        extra["mcp_name"] = str(name)
    extra.update(header_overrides)
    return http.post(url, json=rpc(method, body_params), headers=raw_headers(token, **extra))


def audit_records(database: Path, method: str) -> list[dict[str, Any]]:
    """Every audit record (decoded) of ``method`` in Bastion's SQLite audit log, oldest first."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT record FROM audit_events WHERE json_extract(record, '$.method') = ? ORDER BY seq", (method,)
        ).fetchall()
    return [json.loads(row[0]) for row in rows]
