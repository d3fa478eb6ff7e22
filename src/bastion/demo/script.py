"""The demo's scripted session: real MCP SDK clients talking to Bastion over HTTP.

Each step states what should happen and checks that it did; ``run_script``
returns every step's outcome so ``bastion demo --once`` can exit non-zero when
any step misbehaves. Alice (group ``engineering``) uses the 2026-07-28
stateless protocol, Bob (group ``support``) the 2025-11-25 session protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import MCPError
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.demo.sign_in import MemoryTokenStorage, ScriptedSignIn, oauth_http_client

__all__ = ["DemoTarget", "StepResult", "connect", "run_script"]


@dataclass(frozen=True, slots=True)
class DemoTarget:
    """Where the demo gateway listens and the users' tokens per route."""

    base_url: str
    tokens: dict[str, dict[str, str]]  # user -> route -> token
    repo_path: str  # the git repository the git route's server may read
    passwords: dict[str, str]  # user -> password at Bastion's sign-in page


@dataclass(frozen=True, slots=True)
class StepResult:
    """One scripted step: ``ok`` when Bastion behaved as expected; ``detail`` says what was seen."""

    title: str
    ok: bool
    detail: str


@asynccontextmanager
async def connect(url: str, token: str | None, *, mode: str = "legacy") -> AsyncIterator[Client]:
    """An MCP SDK client on ``url`` presenting ``token`` (``mode``: "legacy" or "2026-07-28")."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


def _denial(exc: MCPError) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    return f"error {exc.code}: {exc.message} (policies: {', '.join(data.get('policies', [])) or 'none'})"


async def _expect_denied(call: Callable[[], Awaitable[Any]], policy: str | None) -> tuple[bool, str]:
    try:
        await call()
    except MCPError as exc:
        policies = (exc.data or {}).get("policies", []) if isinstance(exc.data, dict) else []
        ok = policy in policies if policy else not policies
        return ok, _denial(exc)
    return False, "the call was allowed"


async def run_script(target: DemoTarget) -> list[StepResult]:
    """Run every step against ``target``; never raises for a misbehaving step."""
    steps: list[StepResult] = []
    notes = f"{target.base_url}/mcp/notes"
    time_url = f"{target.base_url}/mcp/time"
    git_url = f"{target.base_url}/mcp/git"
    alice, bob = target.tokens["alice"], target.tokens["bob"]

    async def step(title: str, body: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        try:
            ok, detail = await body()
        except Exception as exc:  # noqa: BLE001 - a failed step is reported, not raised
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        steps.append(StepResult(title, ok, detail))

    async def lists() -> tuple[bool, str]:
        async with connect(notes, alice["notes"], mode="2026-07-28") as a:
            alice_tools = sorted(t.name for t in (await a.list_tools()).tools)
        async with connect(notes, bob["notes"]) as b:
            bob_tools = sorted(t.name for t in (await b.list_tools()).tools)
        ok = "delete_note" in alice_tools and "delete_note" not in bob_tools and "read_logs" in bob_tools
        return ok, f"alice sees {alice_tools}; bob sees {bob_tools}"

    async def allowed() -> tuple[bool, str]:
        async with connect(time_url, bob["time"]) as b:
            result = await b.call_tool("get_current_time", {"timezone": "UTC"})
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        return not result.is_error and "UTC" in text, f"bob: get_current_time -> {text[:80]}"

    async def git_status() -> tuple[bool, str]:
        async with connect(git_url, alice["git"], mode="2026-07-28") as a:
            tools = {t.name for t in (await a.list_tools()).tools}
            result = await a.call_tool("git_status", {"repo_path": target.repo_path})
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        return not result.is_error and "git_status" in tools, f"alice: git_status -> {text.splitlines()[0][:80]}"

    async def named_deny() -> tuple[bool, str]:
        async with connect(notes, bob["notes"]) as b:
            return await _expect_denied(
                lambda: b.call_tool("delete_note", {"name": "runbook"}), "support-no-destructive"
            )

    async def argument_deny() -> tuple[bool, str]:
        async with connect(notes, bob["notes"]) as b:
            dev = await b.call_tool("read_logs", {"env": "dev"})
            ok, detail = await _expect_denied(
                lambda: b.call_tool("read_logs", {"env": "prod"}), "support-logs-dev-only"
            )
        return ok and not dev.is_error, f"env=dev allowed; env=prod {detail}"

    async def no_token() -> tuple[bool, str]:
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(
                notes,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream"},
            )
        challenge = response.headers.get("www-authenticate", "")
        ok = response.status_code == 401 and "resource_metadata=" in challenge
        return ok, f"HTTP {response.status_code}, WWW-Authenticate: {challenge}"

    async def oauth_sign_in() -> tuple[bool, str]:
        person, storage = ScriptedSignIn("bob", target.passwords["bob"]), MemoryTokenStorage()
        async with (
            oauth_http_client(notes, person, storage) as http,
            Client(streamable_http_client(notes, http_client=http)) as client,
        ):
            result = await client.call_tool("search_notes", {"query": "runbook"})
        client_id = storage.client_info.client_id if storage.client_info else "?"
        ok = not result.is_error and storage.tokens is not None
        return ok, f"client {client_id} registered, bob signed in and consented; search_notes -> ok={ok}"

    await step("An MCP client signs in with OAuth (registration, PKCE, consent) and calls a tool", oauth_sign_in)
    await step("Each user sees only the tools policy lets them call", lists)
    await step("An allowed call goes through (stdio reference server)", allowed)
    await step("Another reference server over stdio, 2026-07-28 protocol", git_status)
    await step("A call denied by a named policy", named_deny)
    await step("An argument-level rule: read_logs only for env=dev", argument_deny)
    await step("A request without a token is refused", no_token)
    return steps
