"""Shared fixtures of the end-to-end suite: ONE real Bastion in front of four real MCP servers.

``gateway`` (package scope) is a ``bastion serve`` process with the routes

- ``time``: the official ``mcp-server-time`` over stdio;
- ``git``: the official ``mcp-server-git`` over stdio, confined to a temp repository;
- ``notes``: the demo notes server over Streamable HTTP (a separate process);
- ``envdump``: ``tests/support/e2e_env_server.py`` over stdio (reports its environment);

and the demo policy (``src/bastion/demo/demo.cedar``): alice is in ``engineering``,
bob in ``support``. Every route trusts its server's tool annotations (``trust_annotations``), as
the demo does: the policy's ``resource.risk`` comes from them. Tokens are minted with the
``bastion token mint`` CLI and cached.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, notes_server
from tests.support.databases import drop_postgres_schema, postgres_schema
from tests.support.e2e_helpers import ENV_SERVER, make_git_repo

BIN = Path(sys.executable).parent
CANARY = "E2E_CANARY_MUST_NOT_LEAK"
CANARY_VALUE = "canary-7c1f"
SECRET_SOURCE = "E2E_UPSTREAM_SECRET"
SECRET_VALUE = "s3cret-from-env-ref-91d2"
ROUTE_LITERAL = ("ROUTE_VISIBLE", "visible-to-child")
MAX_BODY = 65536
GROUPS = {"alice": ("engineering",), "bob": ("support",)}
TOKEN_REUSE_S = 600
"""How long a cached token is handed out again (s): well inside its 15 minutes."""


@dataclass
class Gateway:
    """The running gateway and what the tests need to know about it."""

    bastion: BastionProcess
    notes_url: str
    repo: Path
    _tokens: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    def token(self, sub: str, route: str) -> str:
        """A 15-minute token for ``sub`` (alice or bob, with their groups) on ``route``, cached for
        ``TOKEN_REUSE_S``: the gateway serves the whole e2e package, which runs longer than a token lives."""
        key = (sub, route)
        cached = self._tokens.get(key)
        if cached is None or time.monotonic() - cached[0] > TOKEN_REUSE_S:
            token = self.bastion.mint(sub, route, *GROUPS.get(sub, ()), email=f"{sub}@example.com")
            self._tokens[key] = cached = (time.monotonic(), token)
        return cached[1]

    def url(self, route: str) -> str:
        return self.bastion.url(route)

    @property
    def notes_debug(self) -> str:
        return self.notes_url.removesuffix("/mcp") + "/debug/requests"


def gateway_config(workdir: Path, notes_url: str, repo: Path) -> dict[str, object]:
    """The configuration of the shared gateway (also used by tests that start their own)."""
    policies = workdir / "policies"
    policies.mkdir(exist_ok=True)
    shutil.copy(DEMO_CEDAR, policies / "demo.cedar")
    return {
        "identity": {"leeway_s": 0},
        "server": {"max_body_bytes": MAX_BODY},
        "policy": {"files": [str(policies / "demo.cedar")]},
        "routes": [
            {
                "name": "time",
                "stdio": {"command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"]},
                "trust_annotations": True,
            },
            {
                "name": "git",
                "stdio": {"command": str(BIN / "mcp-server-git"), "args": ["--repository", str(repo)]},
                "trust_annotations": True,
            },
            {
                "name": "notes",
                "http": {"url": notes_url, "allow_http": True, "allow": ["127.0.0.1"]},
                "trust_annotations": True,
            },
            env_route(),
        ],
    }


def env_route(name: str = "envdump") -> dict[str, object]:
    """A stdio route running the environment-reporting test server. Its results are not redacted
    (``results.redact: []``): the tests read the secret the child was given back from its answer,
    which the default redaction of secrets would replace."""
    return {
        "name": name,
        "stdio": {
            "command": sys.executable,
            "args": [str(ENV_SERVER)],
            "env": {ROUTE_LITERAL[0]: ROUTE_LITERAL[1], "UPSTREAM_API_TOKEN": {"env": SECRET_SOURCE}},
            "restart_backoff_s": 0.2,
        },
        "trust_annotations": True,
        "results": {"redact": []},
    }


def bastion_env() -> dict[str, str]:
    """Extra environment of the Bastion process: a canary and the secret the route references."""
    return {CANARY: CANARY_VALUE, SECRET_SOURCE: SECRET_VALUE}


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("bastion-e2e")
    repo = make_git_repo(workdir / "repo")
    with notes_server() as notes_url:
        bastion = BastionProcess(workdir, gateway_config(workdir, notes_url, repo))
        bastion.start(env=bastion_env())
        try:
            yield Gateway(bastion, notes_url, repo)
        finally:
            bastion.stop()


@pytest.fixture
def schema(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL schema of the test's own in the test database (``stores.postgres.schema``), dropped
    afterwards with everything in it."""
    yield postgres_schema(tmp_path)
    asyncio.run(drop_postgres_schema(tmp_path))
