"""A real load balancer in front of Bastion replicas: HAProxy from Debian (``make haproxy``).

``HAProxy`` writes a configuration (HTTP mode, ``balance roundrobin``, no stickiness: every request
is balanced on its own, whatever connection it came on), runs ``haproxy -f <cfg> -db`` on a free
port of 127.0.0.1 and stops it. Each answer names the replica that gave it in an
``x-bastion-replica`` header (``r0``, ``r1``, ... in the order of the ports given), set by HAProxy
itself, so a test can tell which replica served what without trusting the replicas.

Timeouts are long enough for event streams (``timeout server``/``tunnel``: an SSE stream is a
response that does not end); a replica that stops answering is taken out by the health check
(``GET /healthz`` every 200 ms) and a request whose connection was refused is sent to another one
(``option redispatch``), as a deployment would configure it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.bastion_process import free_port, stop, wait_http

__all__ = ["HAPROXY", "REPLICA_HEADER", "HAProxy"]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REPLICA_HEADER = "x-bastion-replica"
"""The answer header HAProxy sets to the name of the replica that gave the answer."""


def _config(port: int, replicas: Sequence[int]) -> str:
    servers = "\n".join(
        f"    server r{n} 127.0.0.1:{backend} check inter 200ms fall 1 rise 2" for n, backend in enumerate(replicas)
    )
    return f"""\
global
    maxconn 4096

defaults
    mode http
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 10s
    timeout http-keep-alive 30s

frontend bastion
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /healthz
    http-response set-header {REPLICA_HEADER} %[srv_name]
{servers}
"""


class HAProxy:
    """``haproxy`` balancing round robin over Bastion replicas on 127.0.0.1:``replicas``."""

    def __init__(self, workdir: Path, replicas: Sequence[int], port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_config(self.port, replicas), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, route: str) -> str:
        """The MCP endpoint of ``route``, through the balancer."""
        return f"{self.base_url}/mcp/{route}"

    def start(self) -> HAProxy:
        """Check the configuration, start HAProxy in the foreground and wait until it answers."""
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(self.config_path)], check=True, capture_output=True,
                       timeout=30)  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([HAPROXY, "-f", str(self.config_path), "-db"], stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_http(f"{self.base_url}/healthz", proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- haproxy log ---\n{self.log()}") from exc
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
