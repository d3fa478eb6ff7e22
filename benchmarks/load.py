"""Load: wrk with ``benchmarks/mcp_session.lua`` against one target, the CPU it cost each process,
and the interleaved rounds over every target and concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processes import children_cpu_seconds, cpu_seconds, thread_cpu_seconds
from scenario import BENCH, CONCURRENCIES

if TYPE_CHECKING:
    from targets import Targets

LUA = BENCH / "mcp_session.lua"


@dataclass
class Run:
    """One wrk run against one target."""

    target: str  # one of TARGETS
    conns: int
    round: int
    calls: int = 0
    requests: int = 0
    errors: int = 0
    duration_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    server_cpu_ms: float = 0.0  # per request, the process wrk talks to
    server_sys_ms: float = 0.0  # per request, of which in the kernel (stime)
    upstream_cpu_ms: float = 0.0  # per request, the echo upstream
    wrk_cpu_ms: float = 0.0  # per request, the load generator
    main_cpu_ms: float = 0.0  # per request, Bastion's main (event loop) thread
    other_cpu_ms: float = 0.0  # per request, Bastion's other threads (audit writer)
    other_sys_ms: float = 0.0  # per request, of which in the kernel
    first_error: str = ""
    arg_bytes: int = 0  # the size of each call's ``message`` argument; 0: ``hello from wrk <id>``

    @property
    def throughput(self) -> float:
        return self.calls / self.duration_s if self.duration_s else 0.0


def run_wrk(url: str, conns: int, duration_s: float, token: str | None, arg_bytes: int = 0) -> dict[str, Any]:
    """Run wrk with the MCP session script; return its ``MCPBENCH`` summary (+ ``wrk_cpu_s``).
    ``arg_bytes`` > 0 makes each call's ``message`` argument that many bytes (``BENCH_ARG_BYTES``)."""
    env = {**os.environ, "BENCH_TOKEN": token or "", "BENCH_ARG_BYTES": str(arg_bytes)}
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration_s:g}s", "--timeout", "10s", "-s", str(LUA), url, "--", str(conns)]
    before = children_cpu_seconds()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60, check=False)
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


def measure(targets: Targets, target: str, conns: int, duration_s: float, round_no: int, arg_bytes: int = 0) -> Run:
    """One wrk run against ``target`` (``"direct"`` or a name in ``targets.bastions``); CPU deltas over
    the requests it completed. ``arg_bytes``: see :func:`run_wrk`."""
    bastion = targets.bastions.get(target)
    server_pid = bastion.pid if bastion is not None else targets.echo_pid
    server0, echo0 = cpu_seconds(server_pid), cpu_seconds(targets.echo_pid)
    sys0 = cpu_seconds(server_pid, system_only=True)
    threads0 = thread_cpu_seconds(server_pid) if bastion is not None else (0.0, 0.0, 0.0)
    summary = run_wrk(
        bastion.url if bastion is not None else targets.direct_url,
        conns,
        duration_s,
        bastion.token if bastion is not None else None,
        arg_bytes,
    )
    time.sleep(0.3)  # let the audit writer commit the last outcome records
    server1, echo1 = cpu_seconds(server_pid), cpu_seconds(targets.echo_pid)
    sys1 = cpu_seconds(server_pid, system_only=True)
    threads1 = thread_cpu_seconds(server_pid) if bastion is not None else (0.0, 0.0, 0.0)
    requests = max(int(summary.get("requests", 0)), 1)
    errors = int(summary.get("errors", 0)) + int(summary.get("socket_errors", 0))
    errors += int(summary.get("status_errors", 0))
    return Run(
        target=target,
        conns=conns,
        round=round_no,
        calls=int(summary.get("calls", 0)),
        requests=int(summary.get("requests", 0)),
        errors=errors,
        duration_s=float(summary.get("duration_s", 0.0)),
        p50_ms=float(summary.get("p50_us", 0.0)) / 1000,
        p99_ms=float(summary.get("p99_us", 0.0)) / 1000,
        mean_ms=float(summary.get("mean_us", 0.0)) / 1000,
        server_cpu_ms=(server1 - server0) / requests * 1000,
        server_sys_ms=(sys1 - sys0) / requests * 1000,
        upstream_cpu_ms=(echo1 - echo0) / requests * 1000,
        wrk_cpu_ms=float(summary.get("wrk_cpu_s", 0.0)) / requests * 1000,
        main_cpu_ms=(threads1[0] - threads0[0]) / requests * 1000,
        other_cpu_ms=(threads1[1] - threads0[1]) / requests * 1000,
        other_sys_ms=(threads1[2] - threads0[2]) / requests * 1000,
        first_error=str(summary.get("first_error", "")),
        arg_bytes=arg_bytes,
    )


def run_rounds(targets: Targets, rounds: int, duration_s: float) -> Iterator[Run]:
    for round_no in range(1, rounds + 1):
        for conns in CONCURRENCIES:
            for target in targets.names:
                run = measure(targets, target, conns, duration_s, round_no)
                print(f"round {round_no} c={conns:<2} {target:14}  {progress(run)}", flush=True)
                yield run


def progress(run: Run) -> str:
    """One run's figures for the terminal: calls/s, p50 and p99, server CPU per request, errors."""
    flag = f"  ERRORS {run.errors}: {run.first_error}" if run.errors or not run.calls else ""
    return (
        f"{run.throughput:9,.0f} calls/s  p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  "
        f"server CPU {run.server_cpu_ms:.3f} ms/req{flag}"
    )
