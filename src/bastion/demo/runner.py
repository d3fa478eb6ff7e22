"""``bastion demo``: start the demo gateway, drive the scripted session, keep serving.

Everything runs on loopback: the notes server as a child process, the two
reference servers as children of the gateway, the gateway in this process
under uvicorn, and the scripted MCP clients against its HTTP port. However the
demo ends (done, an error, Ctrl-C, SIGTERM or SIGHUP: ``bastion.cli.demo_cmd``),
the gateway stops, the notes server is terminated and the temporary directory
(signing keys, users file, audit log) is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
from rich.console import Console

from bastion.audit import verify
from bastion.cli.serving import GatewayServer
from bastion.demo.script import DemoTarget, StepResult, run_script
from bastion.demo.workspace import DEMO_USERS, build_demo_config
from bastion.errors import ConfigError
from bastion.gateway import Gateway

__all__ = ["free_port", "run_demo"]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx2.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx2.HTTPError):
                await client.get(url)
                return
            await asyncio.sleep(0.1)
    raise ConfigError(f"{url} did not come up within {timeout_s:.0f}s")


@contextlib.asynccontextmanager
async def _notes_server(port: int) -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bastion.demo.notes_server", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_http(f"http://127.0.0.1:{port}/debug/requests")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def _serving(gateway: Gateway) -> AsyncIterator[asyncio.Task[None]]:
    """Serve ``gateway`` under uvicorn in a task; whatever ends the block (done, an error, a signal's
    cancellation), stop the server gracefully (the gateway stops its stdio servers) and wait for it."""
    server = GatewayServer(gateway, "warning")
    serving = asyncio.create_task(server.serve())
    try:
        yield serving
    finally:
        server.should_exit = True
        await serving


def _tokens(gateway: Gateway, ttl_s: int) -> dict[str, dict[str, str]]:
    tokens: dict[str, dict[str, str]] = {}
    for user, info in DEMO_USERS.items():
        tokens[user] = {
            route.name: gateway.issuer.mint(
                sub=user,
                audience=route.resource_uri,
                ttl_s=ttl_s,
                email=info["email"],
                groups=info["groups"],
                client_id="bastion-demo",
            ).token
            for route in gateway.routes
        }
    return tokens


def _print_steps(console: Console, steps: list[StepResult]) -> None:
    for number, step in enumerate(steps, 1):
        mark = "[bold green]PASS[/]" if step.ok else "[bold red]FAIL[/]"
        console.print(f"{mark} {number}. {step.title}")
        console.print(f"       {step.detail}", markup=False)


async def run_demo(*, port: int, once: bool, workdir: Path | None, console: Console) -> int:
    """Run the demo; return the process exit status (0 only if every step behaved)."""
    with tempfile.TemporaryDirectory(prefix="bastion-demo-") as scratch:
        root = workdir or Path(scratch)
        async with _notes_server(free_port()) as notes_url:
            passwords = {user: secrets.token_urlsafe(9) for user in DEMO_USERS}
            gateway = Gateway(build_demo_config(root, port=port, notes_url=notes_url, passwords=passwords))
            async with _serving(gateway) as serving:
                return await _script_then_serve(gateway, serving, root, passwords, once=once, console=console)


async def _script_then_serve(
    gateway: Gateway,
    serving: asyncio.Task[None],
    root: Path,
    passwords: dict[str, str],
    *,
    once: bool,
    console: Console,
) -> int:
    """Run the scripted session against the serving ``gateway`` and print it; unless ``once`` (or a
    step failed), print how to connect and serve until stopped. Returns the exit status."""
    base = gateway.config.server.base_url
    await _wait_http(f"{base}/healthz")
    console.print(f"[bold]Bastion demo[/] on {base}: routes " + ", ".join(r.path for r in gateway.routes))
    steps = await run_script(DemoTarget(base, _tokens(gateway, 900), str(root / "repo"), passwords))
    await asyncio.sleep(0.2)  # let the queued outcome records commit
    result = verify(gateway.database)
    steps.append(StepResult("bastion audit verify: the hash chain is intact", result.ok, result.message))
    _print_steps(console, steps)
    failed = sum(not s.ok for s in steps)
    if once or failed:
        console.print(f"{len(steps) - failed} passed, {failed} failed")
        return 1 if failed else 0
    token = gateway.issuer.mint(
        sub="alice", audience=gateway.routes[-1].resource_uri, ttl_s=3600,
        email="alice@example.com", groups=["engineering"], client_id="bastion-demo",
    ).token  # fmt: skip
    console.print(f"\nConnect your own MCP client to [bold]{gateway.routes[-1].resource_uri}[/]")
    console.print("It signs you in through Bastion (OAuth 2.1; development users file):")
    for user, info in DEMO_USERS.items():
        console.print(f"  {user} / {passwords[user]}  ({', '.join(info['groups'])})", markup=False)
    console.print("or send the header  Authorization: Bearer <token>  (alice, engineering, 1 hour):")
    console.print(token, soft_wrap=True, markup=False)
    console.print(f"Audit log: {gateway.database}   Press Ctrl-C to stop.")
    await serving
    return 0
