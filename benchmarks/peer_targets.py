"""The peers ``make bench-peers`` measures beside Bastion: MCP gateways a user would pick instead, each
run by the Python of its own virtual environment (``.bench/peers/<venv>``, which ``make bench-peers``
installs from ``benchmarks/peers/<venv>.txt``) in front of the echo upstream over Streamable HTTP.

- :class:`FastMCPProxy`: ``benchmarks/peers/fastmcp_proxy.py``, FastMCP's ``create_proxy`` with its
  defaults (``fastmcp-default``) or with one shared upstream session and its JWT verifier
  (``fastmcp-shared-jwt``);
- :class:`ContextForge`: IBM ContextForge's ``mcpgateway`` (one uvicorn process) on SQLite with an
  in-process cache (no Redis), rate limiting, the admin UI and the admin API off, loopback upstreams
  allowed (``SSRF_ALLOW_LOCALHOST``), stateful or stateless Streamable HTTP sessions; the echo upstream
  is registered as a gateway through its REST API (``POST /gateways``), which names its tool
  ``<gateway slug>-echo``, and the token is minted by ``python -m mcpgateway.utils.create_jwt_token``.

Starting a peer raises :class:`~processes.Prerequisite` when its virtual environment is missing, and
``RuntimeError``/``TimeoutError`` (its log appended) when it does not come up.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx2
from load import Endpoint
from processes import Prerequisite, Server, free_port
from scenario import BENCH, REPO

VENVS = REPO / ".bench" / "peers"
PEERS = BENCH / "peers"
READY_TIMEOUT_S = 180.0
"""ContextForge migrates its SQLite database at first start: tens of seconds on a busy machine."""


@dataclass
class PeerServer(Server, ABC):
    """One peer gateway process: where it listens, and the tool name and bearer token its clients use."""

    name: str  # the target's name in the results
    workdir: Path
    port: int = field(default_factory=free_port)
    tool: str = "echo"
    token: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    venv: ClassVar[str]
    packages: ClassVar[tuple[str, ...]]
    """The distributions whose installed versions the report gives, the peer's first."""

    @property
    def python(self) -> Path:
        return VENVS / self.venv / "bin" / "python"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @abstractmethod
    def configuration(self) -> str:
        """How this peer is configured, one markdown paragraph for the report."""

    @abstractmethod
    def start(self, upstream_url: str) -> None:
        """Start the peer in front of ``upstream_url`` and wait until it serves."""

    def versions(self) -> str:
        """``"fastmcp 4.1.2, mcp 2.3.0"``: the installed versions of :attr:`packages` in this peer's venv."""
        code = "import sys, importlib.metadata as m; print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))"
        done = subprocess.run(
            [str(self.python), "-c", code, *self.packages], capture_output=True, text=True, check=True, timeout=60
        )
        return done.stdout.strip()

    def require_venv(self) -> None:
        if not self.python.exists():
            raise Prerequisite(
                f"{self.python} not found: `make bench-peers` installs {self.name} into {VENVS / self.venv}"
            )

    def endpoint(self, upstream_pid: int) -> Endpoint:
        """What wrk measures, started: this peer in front of the echo upstream of pid ``upstream_pid``."""
        return Endpoint(self.name, self.url, self.pid, upstream_pid, self.token, self.tool)


@dataclass
class FastMCPProxy(PeerServer):
    """``benchmarks/peers/fastmcp_proxy.py`` in ``mode`` ``default`` or ``shared-jwt``."""

    mode: str = "default"

    venv: ClassVar[str] = "fastmcp"
    packages: ClassVar[tuple[str, ...]] = ("fastmcp", "mcp", "uvicorn")

    def configuration(self) -> str:
        common = (
            "Streamable HTTP as FastMCP serves it by default (SSE answers, stateful sessions), uvicorn at log "
            "level warning; `benchmarks/peers/fastmcp_proxy.py`."
        )
        if self.mode == "default":
            return (
                "`create_proxy(URL)` with its defaults: a new upstream session per request, no authentication. "
                + common
            )
        return (
            "`create_proxy(Client)` with one upstream session, connected at start and shared by every request, "
            "and FastMCP's `JWTVerifier` (RS256, issuer and audience checked) on a token minted by its "
            f"`RSAKeyPair.create_token` with a key generated at start. {common}"
        )

    def start(self, upstream_url: str) -> None:
        self.require_venv()
        token_file = self.workdir / f"{self.name}.token"
        script, port = str(PEERS / "fastmcp_proxy.py"), str(self.port)
        self.spawn([str(self.python), script, "--upstream", upstream_url, "--port", port, "--mode", self.mode,
                    "--token-file", str(token_file)])  # fmt: skip
        self.wait_ready("/healthz", READY_TIMEOUT_S)
        if self.mode == "shared-jwt":
            self.token = token_file.read_text(encoding="utf-8").strip()


@dataclass
class ContextForge(PeerServer):
    """IBM ContextForge's ``mcpgateway`` with ``USE_STATEFUL_SESSIONS=stateful``, its own SQLite database."""

    stateful: bool = True

    venv: ClassVar[str] = "contextforge"
    packages: ClassVar[tuple[str, ...]] = ("mcp-contextforge-gateway", "mcp", "uvicorn")
    ADMIN: ClassVar[str] = "admin@example.com"
    GATEWAY: ClassVar[str] = "echo-upstream"

    @property
    def settings(self) -> dict[str, str]:
        """The settings that differ from ContextForge's defaults (secrets aside; see :meth:`environment`)."""
        return {
            "DATABASE_URL": f"sqlite:///{self.workdir / self.name / 'mcp.db'}",
            "CACHE_TYPE": "memory",
            "RATE_LIMITING_ENABLED": "false",
            "MCPGATEWAY_UI_ENABLED": "false",
            "MCPGATEWAY_ADMIN_API_ENABLED": "false",
            "SSRF_ALLOW_LOCALHOST": "true",
            "USE_STATEFUL_SESSIONS": "true" if self.stateful else "false",
            "PLATFORM_ADMIN_EMAIL": self.ADMIN,
        }

    def environment(self) -> dict[str, str]:
        """This environment plus :attr:`settings` and freshly generated secrets."""
        generated = {
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(48),
            "PLATFORM_ADMIN_PASSWORD": f"Bench-{secrets.token_urlsafe(24)}-9",
        }
        return {**os.environ, **self.settings, **generated}

    def configuration(self) -> str:
        settings = " ".join(f"`{k}={v}`" for k, v in self.settings.items() if k != "DATABASE_URL")
        return (
            "`mcpgateway --host 127.0.0.1 --port PORT` (one uvicorn process), SQLite in the run's working "
            f"directory, {settings}, generated `JWT_SECRET_KEY`, `AUTH_ENCRYPTION_SECRET` and admin password, "
            f"other settings at their defaults (JSON answers). The echo upstream is registered with "
            f'`POST /gateways {{"name": "{self.GATEWAY}", "transport": "STREAMABLEHTTP"}}`; clients call '
            f"`{self.GATEWAY}-echo` at `/mcp` with a token from `python -m mcpgateway.utils.create_jwt_token "
            f"--username {self.ADMIN}`."
        )

    def start(self, upstream_url: str) -> None:
        self.require_venv()
        (self.workdir / self.name).mkdir(parents=True, exist_ok=True)
        env = self.environment()
        gateway = VENVS / self.venv / "bin" / "mcpgateway"
        self.spawn([str(gateway), "--host", "127.0.0.1", "--port", str(self.port)], env, self.workdir / self.name)
        self.wait_ready("/health", READY_TIMEOUT_S)
        self.token = self.mint(env)
        self.tool = self.register(upstream_url)

    def mint(self, env: dict[str, str]) -> str:
        """A bearer token for the platform admin from ContextForge's own CLI, valid two hours, signed with
        the ``JWT_SECRET_KEY`` of ``env`` (the gateway's environment, so its issuer and audience match)."""
        args = [str(self.python), "-m", "mcpgateway.utils.create_jwt_token", "--username", self.ADMIN, "--exp", "120"]
        done = subprocess.run(
            args, capture_output=True, text=True, check=False, env=env, cwd=self.workdir / self.name, timeout=120
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"{self.name}: create_jwt_token exited {done.returncode}: {done.stderr[-1000:]}")
        return done.stdout.strip().splitlines()[-1]

    def register(self, upstream_url: str) -> str:
        """Register ``upstream_url`` as a gateway; return the name ContextForge gave its ``echo`` tool."""
        base = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"name": self.GATEWAY, "url": upstream_url, "transport": "STREAMABLEHTTP"}
        with httpx2.Client(base_url=base, headers=headers, timeout=60.0) as http:
            created = http.post("/gateways", json=body)
            if created.status_code not in (200, 201):
                raise RuntimeError(f"{self.name}: POST /gateways answered {created.status_code}: {created.text[:500]}")
            gateway_id = created.json()["id"]
            listed = http.get("/tools")
            if listed.status_code != 200:
                raise RuntimeError(f"{self.name}: GET /tools answered {listed.status_code}: {listed.text[:500]}")
            tools = listed.json()
        for tool in tools:
            if tool.get("gatewayId") == gateway_id and tool.get("originalName") == "echo":
                name: str = tool["name"]
                return name
        raise RuntimeError(f"{self.name}: no echo tool among {json.dumps(tools)[:500]}")


def peers(workdir: Path) -> list[PeerServer]:
    """The peers of ``make bench-peers``, in the order they are measured in every round."""
    return [
        FastMCPProxy("fastmcp-default", workdir, mode="default"),
        FastMCPProxy("fastmcp-shared-jwt", workdir, mode="shared-jwt"),
        ContextForge("contextforge-stateful", workdir, stateful=True),
        ContextForge("contextforge-stateless", workdir, stateful=False),
    ]
