"""Start real processes on loopback for end-to-end tests: Bastion itself and MCP servers.

``BastionProcess`` writes a configuration file, runs ``bastion serve`` as a
child process, waits for ``/healthz`` and mints tokens with the ``bastion
token mint`` CLI (the same keys the server uses, from the shared data
directory). Everything listens on 127.0.0.1 on free ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import yaml

from bastion.oauth.users import hash_password

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASTION = str(BIN / "bastion")
#: The demo's policy (alice in ``engineering`` may call every tool, bob in ``support`` fewer).
DEMO_CEDAR = REPO / "src" / "bastion" / "demo" / "demo.cedar"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``url`` until it answers (any status); raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} came up")
        with contextlib.suppress(httpx2.HTTPError):
            httpx2.get(url, timeout=1.0)
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout_s}s")


def stop(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def notes_server() -> Iterator[str]:
    """The demo's Streamable HTTP MCP server (records request headers at /debug/requests)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.demo.notes_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/debug/requests", proc=proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


def write_users_file(workdir: Path, users: Mapping[str, tuple[str, Sequence[str]]]) -> str:
    """Write ``workdir/users.yaml`` (Bastion's local users file, argon2id hashes) for
    ``{username: (password, groups)}``; returns its name, relative to ``workdir``."""
    entries = [
        {"username": name, "password_hash": hash_password(password), "groups": list(groups)}
        for name, (password, groups) in users.items()
    ]
    (workdir / "users.yaml").write_text(yaml.safe_dump({"users": entries}), encoding="utf-8")
    return "users.yaml"


class BastionProcess:
    """A real ``bastion serve`` child process with its own config and data directory."""

    def __init__(self, workdir: Path, config: Mapping[str, Any]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = {"data_dir": str(workdir / "data"), **config}
        self.config.setdefault("server", {})
        self.config["server"] = {"host": "127.0.0.1", "port": self.port, **self.config["server"]}
        self.config_path = workdir / "bastion.yaml"
        self.write_config()
        self.log_path = workdir / "bastion.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        """Write ``self.config`` to ``config_path`` (again, after a test changed it before ``start``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, route: str) -> str:
        return f"{self.base_url}/mcp/{route}"

    @property
    def database(self) -> Path:
        return self.workdir / "data" / "bastion.db"

    def start(self, env: Mapping[str, str] | None = None) -> BastionProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [BASTION, "serve", "--config", str(self.config_path), "--log-level", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=self.workdir,
        )
        log.close()
        try:
            wait_http(f"{self.base_url}/healthz", proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- bastion log ---\n{self.log()}") from exc
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``bastion ARGS --config <this config>``-style commands (args include the subcommand)."""
        return subprocess.run(
            [BASTION, *args], capture_output=True, text=True, check=check, cwd=self.workdir, timeout=60
        )

    def mint(
        self, sub: str, route: str, *groups: str, ttl: str = "15m", email: str | None = None,
        client_id: str | None = None,
    ) -> str:  # fmt: skip
        args = ["token", "mint", "--config", str(self.config_path), "--sub", sub, "--route", route, "--ttl", ttl]
        if client_id:
            args += ["--client-id", client_id]
        for group in groups:
            args += ["--group", group]
        if email:
            args += ["--email", email]
        return self.cli(*args).stdout.strip()

    def audit_rows(self, method: str) -> list[tuple[str, str | None, str | None]]:
        """``(effect, reason, target)`` of every audit record of ``method``, oldest first (for
        ``oauth/...`` records the target is the client id)."""
        with sqlite3.connect(self.database) as db:
            rows = db.execute(
                "SELECT json_extract(record, '$.decision.effect'), json_extract(record, '$.decision.reason'), target "
                "FROM audit_events WHERE json_extract(record, '$.method') = ? ORDER BY seq",
                (method,),
            ).fetchall()
        return [(str(r[0]), r[1], r[2]) for r in rows]

    def __enter__(self) -> BastionProcess:
        """Start the server unless it is running already (``with bastion.start():`` starts one, not two)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
