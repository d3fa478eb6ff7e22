"""Load: wrk with ``benchmarks/mcp_session.lua`` against one target (an :class:`Endpoint`), the CPU it
cost the server, the upstream behind it and wrk, and the interleaved rounds over every target and
concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import children_cpu_seconds, cpu_seconds, thread_cpu_seconds, tree_cpu_seconds
from scenario import BENCH

LUA = BENCH / "mcp_session.lua"


@dataclass(frozen=True)
class Endpoint:
    """One target as wrk sees it: its MCP URL, bearer token (None: no ``Authorization``) and echo tool's
    name, the pid of the server process whose CPU is measured and that of the echo upstream behind
    it (the same process for ``direct``, the upstream alone)."""

    name: str
    url: str
    pid: int
    upstream_pid: int
    token: str | None = None
    tool: str = "echo"


@dataclass
class Run:
    """One wrk run against one target."""

    target: str  # the endpoint's name
    conns: int
    round: int
    calls: int = 0
    requests: int = 0
    errors: int = 0
    duration_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    server_cpu_ms: float = 0.0  # per request, the process wrk talks to (its process tree: ``measure(tree=True)``)
    server_sys_ms: float = 0.0  # per request, of which in the kernel (stime)
    upstream_cpu_ms: float = 0.0  # per request, the echo upstream
    wrk_cpu_ms: float = 0.0  # per request, the load generator
    main_cpu_ms: float = 0.0  # per request, the server's main thread (Bastion's event loop)
    other_cpu_ms: float = 0.0  # per request, the server's other threads (Bastion's audit writer)
    other_sys_ms: float = 0.0  # per request, of which in the kernel
    first_error: str = ""
    arg_bytes: int = 0  # the size of each call's ``message`` argument; 0: ``hello from wrk <id>``

    @property
    def throughput(self) -> float:
        return self.calls / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    conns: int,
    duration_s: float,
    token: str | None,
    arg_bytes: int = 0,
    *,
    script: Path = LUA,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``wrk -t1 -c<conns>`` with the MCP session ``script``; return its ``MCPBENCH`` summary (+
    ``wrk_cpu_s``), or one with an error when wrk printed none. ``arg_bytes`` > 0 makes each call's
    ``message`` argument that many bytes (``BENCH_ARG_BYTES``); ``env`` is added to wrk's environment
    (``BENCH_TOOL``: the tool called, see ``mcp_session.lua``)."""
    environment = {**os.environ, "BENCH_TOKEN": token or "", "BENCH_ARG_BYTES": str(arg_bytes), **(env or {})}
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration_s:g}s", "--timeout", "10s", "-s", str(script), url, "--",
           str(conns)]  # fmt: skip
    before = children_cpu_seconds()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=environment, timeout=duration_s + 60, check=False)
    wrk_cpu = children_cpu_seconds() - before
    for line in proc.stdout.splitlines():
        if line.startswith("MCPBENCH "):
            summary: dict[str, Any] = json.loads(line[len("MCPBENCH ") :])
            summary["wrk_cpu_s"] = wrk_cpu
            return summary
    return {
        "calls": 0,
        "errors": 1,
        "socket_errors": 0,
        "status_errors": 0,
        "requests": 0,
        "duration_s": 0.0,
        "first_error": f"wrk exited {proc.returncode} without a summary: {(proc.stderr or proc.stdout)[-500:]}",
        "wrk_cpu_s": wrk_cpu,
    }


def measure(
    endpoint: Endpoint, conns: int, duration_s: float, round_no: int, arg_bytes: int = 0, *, tree: bool = False
) -> Run:
    """One wrk run against ``endpoint``; CPU deltas over the requests it completed. The server's CPU is
    that of its process (``processes.cpu_seconds``) or, with ``tree``, of its whole process tree
    (``processes.tree_cpu_seconds``: a gateway may run workers as child processes); the thread split
    is of its process. ``arg_bytes``: see :func:`run_wrk`."""
    server_cpu = tree_cpu_seconds if tree else cpu_seconds
    pid, upstream_pid = endpoint.pid, endpoint.upstream_pid
    server0, sys0, echo0 = server_cpu(pid), server_cpu(pid, system_only=True), cpu_seconds(upstream_pid)
    threads0 = thread_cpu_seconds(pid)
    env = {"BENCH_TOOL": endpoint.tool}
    summary = run_wrk(endpoint.url, conns, duration_s, endpoint.token, arg_bytes, env=env)
    time.sleep(0.3)  # let Bastion's audit writer commit the last outcome records
    server1, sys1, echo1 = server_cpu(pid), server_cpu(pid, system_only=True), cpu_seconds(upstream_pid)
    threads1 = thread_cpu_seconds(pid)
    requests = max(int(summary.get("requests", 0)), 1)

    def per_request_ms(before: float, after: float) -> float:
        return (after - before) / requests * 1000

    errors = int(summary.get("errors", 0)) + int(summary.get("socket_errors", 0))
    errors += int(summary.get("status_errors", 0))
    return Run(
        target=endpoint.name,
        conns=conns,
        round=round_no,
        calls=int(summary.get("calls", 0)),
        requests=int(summary.get("requests", 0)),
        errors=errors,
        duration_s=float(summary.get("duration_s", 0.0)),
        p50_ms=float(summary.get("p50_us", 0.0)) / 1000,
        p99_ms=float(summary.get("p99_us", 0.0)) / 1000,
        mean_ms=float(summary.get("mean_us", 0.0)) / 1000,
        server_cpu_ms=per_request_ms(server0, server1),
        server_sys_ms=per_request_ms(sys0, sys1),
        upstream_cpu_ms=per_request_ms(echo0, echo1),
        wrk_cpu_ms=float(summary.get("wrk_cpu_s", 0.0)) / requests * 1000,
        main_cpu_ms=per_request_ms(threads0[0], threads1[0]),
        other_cpu_ms=per_request_ms(threads0[1], threads1[1]),
        other_sys_ms=per_request_ms(threads0[2], threads1[2]),
        first_error=str(summary.get("first_error", "")),
        arg_bytes=arg_bytes,
    )


def run_rounds(
    endpoints: Sequence[Endpoint], concurrencies: Sequence[int], rounds: int, duration_s: float, *, tree: bool = False
) -> Iterator[Run]:
    """``rounds`` rounds; in each, every concurrency; at each, one run per endpoint in turn (interleaved),
    printed as it ends. ``tree``: see :func:`measure`."""
    width = max(len(endpoint.name) for endpoint in endpoints)
    for round_no in range(1, rounds + 1):
        for conns in concurrencies:
            for endpoint in endpoints:
                run = measure(endpoint, conns, duration_s, round_no, tree=tree)
                print(f"round {round_no} c={conns:<2} {endpoint.name:{width}}  {progress(run)}", flush=True)
                yield run


def progress(run: Run) -> str:
    """One run's figures for the terminal: calls/s, p50 and p99, server CPU per request, errors."""
    flag = f"  ERRORS {run.errors}: {run.first_error}" if run.errors or not run.calls else ""
    return (
        f"{run.throughput:9,.0f} calls/s  p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  "
        f"server CPU {run.server_cpu_ms:.3f} ms/req{flag}"
    )
