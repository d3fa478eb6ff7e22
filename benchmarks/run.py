#!/usr/bin/env python3
"""``make bench``: ``tools/call`` directly against a fast echo upstream and through Bastion.

What it does, in one run (about two minutes):

1. starts ``benchmarks/echo_upstream.py`` (a raw asyncio MCP server, >10,000 calls/s here)
   and a real ``bastion serve`` with one HTTP route to it, a realistic Cedar policy set
   (a group permit, a broad permit, a forbid on destructive tools, an argument rule),
   authentication by a minted token, the audit log on (it always is) and log level warning;
2. warms both up, then runs INTERLEAVED rounds (direct, bastion, direct, bastion, ...) of
   ``wrk -t1 -cN`` with ``benchmarks/mcp_session.lua`` (MCP sessions opened first, each
   call timed by the script itself) at concurrency 1, 16 and 64;
3. per run: calls/s, p50/p99 latency (the script's own timing), and the CPU time per
   request of the server (``utime + stime`` of the process from ``/proc/<pid>/stat``
   over the requests wrk completed), of the upstream and of wrk itself;
4. profiles Bastion with py-spy (native frames too) during one more run at c=1 and at c=16
   and attributes its CPU to the pipeline steps, the hottest frames and the modules;
5. times the policy decision alone in-process (``PolicyEngine.decide`` with the same
   policies), plus the cached token verification and the audit record work;
6. prints the figures side by side and writes ``docs/benchmarks.md``.

Exits 1 when any run had errors (the run is invalid; the document is not written), 2
when a prerequisite is missing. Options: ``--rounds``, ``--duration``, ``--quick``,
``--no-profile``, ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import importlib.metadata
import json
import linecache
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
LUA = BENCH / "mcp_session.lua"
BIN = Path(sys.executable).parent
BASTION = str(BIN / "bastion")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONCURRENCIES = (1, 16, 64)
ROUTE = "echo"
GROUP = "bench"
TARGET_ADDED_P50_MS = 1.0
TARGET_CPU_MS = 0.5

sys.path.insert(0, str(BENCH))
from echo_upstream import ECHO_TOOL  # noqa: E402

POLICIES = """\
// The benchmark's policy set: realistic, not minimal. The benchmark principal is in
// Group::"bench"; its call is permitted by bench-echo and checked against both forbids.

@id("bench-echo")
permit (principal in Group::"bench", action == Action::"tools/call", resource == Tool::"echo/echo");

@id("engineering-all-tools")
permit (principal in Group::"engineering", action == Action::"tools/call", resource in Server::"echo");

// Nobody runs a destructive tool, whoever else permits it.
@id("no-destructive")
forbid (principal, action == Action::"tools/call", resource)
when { resource.risk == "destructive" };

// An argument-level rule: no secrets through echo.
@id("echo-no-secrets")
forbid (principal, action == Action::"tools/call", resource == Tool::"echo/echo")
when { context.arguments has message && context.arguments.message like "*password*" };
"""


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll ``GET path`` until it answers 200; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before :{port}{path} came up")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise TimeoutError(f":{port}{path} did not come up in {timeout_s}s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stat_ticks(path: str, *, system_only: bool = False) -> int:
    """``utime + stime`` (or ``stime`` alone) in clock ticks from a /proc stat file."""
    with open(path, encoding="ascii") as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[12]) if system_only else int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """CPU time (user + system, or system alone; all threads) of process ``pid`` in seconds."""
    return _stat_ticks(f"/proc/{pid}/stat", system_only=system_only) / CLK_TCK


def thread_cpu_seconds(pid: int) -> tuple[float, float, float]:
    """``(main thread, other threads, other threads' system part)`` CPU seconds of ``pid`` (threads alive now)."""
    main = other = other_sys = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/stat"
        try:
            ticks = _stat_ticks(path)
            system = _stat_ticks(path, system_only=True)
        except (OSError, ValueError):
            continue
        if int(task) == pid:
            main += ticks
        else:
            other += ticks
            other_sys += system
    return main / CLK_TCK, other / CLK_TCK, other_sys / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- one wrk run ----------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run against one target."""

    target: str  # "direct" or "bastion"
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

    @property
    def throughput(self) -> float:
        return self.calls / self.duration_s if self.duration_s else 0.0


def run_wrk(url: str, conns: int, duration_s: float, token: str | None) -> dict[str, Any]:
    """Run wrk with the MCP session script; return its ``MCPBENCH`` summary (+ ``wrk_cpu_s``)."""
    env = {**os.environ, "BENCH_TOKEN": token or ""}
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


class Targets:
    """The echo upstream and Bastion, running; knows how to measure one run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.echo_port = free_port()
        self.bastion_port = free_port()
        self.echo: subprocess.Popen[bytes] | None = None
        self.bastion: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / "bastion.yaml"
        self.token = ""

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.echo_port}/mcp"

    @property
    def bastion_url(self) -> str:
        return f"http://127.0.0.1:{self.bastion_port}/mcp/{ROUTE}"

    def write_config(self) -> None:
        (self.workdir / "policies.cedar").write_text(POLICIES, encoding="utf-8")
        config = f"""\
# Written by benchmarks/run.py
data_dir: {self.workdir / "data"}
server:
  host: 127.0.0.1
  port: {self.bastion_port}
identity:
  max_token_ttl: 1h
policy:
  files: [{self.workdir / "policies.cedar"}]
audit:
  store_arguments: true
routes:
  - name: {ROUTE}
    title: Benchmark echo server
    http:
      url: {self.direct_url}
"""
        self.config_path.write_text(config, encoding="utf-8")

    def start(self) -> None:
        self.write_config()
        echo_log = (self.workdir / "echo.log").open("wb")
        self.echo = subprocess.Popen(
            [sys.executable, str(BENCH / "echo_upstream.py"), "--port", str(self.echo_port)],
            stdout=echo_log,
            stderr=subprocess.STDOUT,
        )
        echo_log.close()
        wait_http(self.echo_port, "/healthz", self.echo)
        log = (self.workdir / "bastion.log").open("wb")
        self.bastion = subprocess.Popen(
            [BASTION, "serve", "--config", str(self.config_path), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        try:
            wait_http(self.bastion_port, "/healthz", self.bastion)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- bastion log ---\n{self.bastion_log()}") from exc
        self.token = self.mint()

    def mint(self) -> str:
        args = [
            BASTION,
            "token",
            "mint",
            "--config",
            str(self.config_path),
            "--sub",
            "bench-user",
            "--route",
            ROUTE,
            "--group",
            GROUP,
            "--email",
            "bench@example.com",
            "--ttl",
            "1h",
        ]
        done = subprocess.run(args, capture_output=True, text=True, check=True, cwd=self.workdir, timeout=60)
        return done.stdout.strip()

    def bastion_log(self) -> str:
        path = self.workdir / "bastion.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in (self.bastion, self.echo):
            if proc is not None:
                stop(proc)

    @property
    def bastion_pid(self) -> int:
        if self.bastion is None:
            raise RuntimeError("Bastion is not running")
        return self.bastion.pid

    @property
    def echo_pid(self) -> int:
        if self.echo is None:
            raise RuntimeError("the echo upstream is not running")
        return self.echo.pid

    def measure(self, target: str, conns: int, duration_s: float, round_no: int) -> Run:
        """One wrk run against ``target``; CPU deltas over the requests it completed."""
        via_bastion = target == "bastion"
        server_pid = self.bastion_pid if via_bastion else self.echo_pid
        server0, echo0 = cpu_seconds(server_pid), cpu_seconds(self.echo_pid)
        sys0 = cpu_seconds(server_pid, system_only=True)
        threads0 = thread_cpu_seconds(self.bastion_pid) if via_bastion else (0.0, 0.0, 0.0)
        summary = run_wrk(
            self.bastion_url if via_bastion else self.direct_url,
            conns,
            duration_s,
            self.token if via_bastion else None,
        )
        time.sleep(0.3)  # let the audit writer commit the last outcome records
        server1, echo1 = cpu_seconds(server_pid), cpu_seconds(self.echo_pid)
        sys1 = cpu_seconds(server_pid, system_only=True)
        threads1 = thread_cpu_seconds(self.bastion_pid) if via_bastion else (0.0, 0.0, 0.0)
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
        )


# --- profile --------------------------------------------------------------------------

PROFILED = (1, 16)
"""Concurrencies at which Bastion is profiled: latency-bound and throughput-bound."""

STEP_RULES: tuple[tuple[str, str], ...] = (
    # Bastion's event-loop thread: the deepest frame matching a rule names the step.
    ("RevocationList.is_revoked", "authenticate: revocation lookup (SQLite SELECT)"),
    ("AuthenticateStage.run", "authenticate: token (cached verify)"),
    ("TransportStage.run", "transport: checks + JSON parse"),
    ("SessionStage.run", "session: lookup"),
    ("ClassifyStage.run", "classify"),
    ("AuthorizeStage.run", "authorize: Cedar decision"),
    ("AuditStage.run", "audit: decision record (build, enqueue, await commit)"),
    ("AuditStage.record_outcome", "audit: outcome record (build, enqueue)"),
    ("AsyncConnectionPool._assign_requests_to_connections", "forward: httpcore2 pool scan (poll() per pooled conn)"),
    ("HttpUpstream.send", "forward: httpx2/httpcore2/anyio request (rest)"),
    ("HttpForwardStage.run", "forward: session mapping + reply"),
    ("InspectStage.run", "inspect"),
    ("send_reply", "reply: write to uvicorn"),
    ("read_request", "request: headers + body"),
    ("McpEndpoint.__call__", "endpoint + runner glue (Exchange, uuid4, ...)"),
    ("Starlette.__call__", "Starlette routing + middleware"),
    ("httptools_impl.py", "uvicorn HTTP/1.1 protocol (httptools)"),
    ("Runner.run", "event loop: uvloop, epoll, socket I/O (native)"),
    # the audit writer thread
    ("seal (bastion/audit/chain.py", "audit writer: seal (canonical JSON + SHA-256)"),
    ("index_columns", "audit writer: index columns"),
    ("SQLiteAuditLog._settle", "audit writer: wake the waiting appends"),
    ('conn.execute("COMMIT")', "audit writer: SQLite COMMIT (WAL fsync)"),
    ("executemany", "audit writer: SQLite INSERT"),
    ("SQLiteAuditLog._commit", "audit writer: batch bookkeeping"),
    ("SQLiteAuditLog._serve", "audit writer: queue get (wake-up)"),
)


WAIT_LEAVES = frozenset(
    {
        "epoll_pwait", "epoll_pwait2", "epoll_wait", "select", "pselect", "nanosleep", "clock_nanosleep",
        "sem_wait", "sem_timedwait", "sem_clockwait", "pthread_cond_wait", "pthread_cond_timedwait",
        "pthread_cond_clockwait", "__futex_abstimed_wait_common", "__lll_lock_wait", "fdatasync", "fsync",
    }
)  # fmt: skip
"""Native leaf functions where a thread waits (idle poll, GIL/lock/queue waits, disk flush), not computes."""


def _wait(leaf: str) -> str | None:
    """The name of the wait when a native ``leaf`` frame is one (see ``WAIT_LEAVES``), else None."""
    if _is_python(leaf):
        return None
    name = leaf.split(" (")[0]
    if name in WAIT_LEAVES:
        return name
    if name.startswith("0x") and "libc.so" in _where(leaf):
        return "futex wait (GIL, lock, queue; unresolved libc)"
    return None


INCLUSIVE = (
    ("HttpUpstream.send", "bastion `HttpUpstream.send` (the whole upstream round trip)"),
    ("BaseClient.build_request", "  httpx2 `build_request`"),
    ("AsyncConnectionPool._assign_requests_to_connections", "  httpcore2 pool scan (`has_expired` per pooled conn)"),
    ("AsyncHTTP11Connection._send_request_headers", "  httpcore2/h11 send request headers"),
    ("AsyncHTTP11Connection._send_request_body", "  httpcore2/h11 send request body"),
    ("AsyncHTTP11Connection._receive_response_headers", "  httpcore2/h11 receive response headers"),
    ("HttpUpstream._read_capped", "  read the response body (`aiter_bytes` + close)"),
    ("AnyIOStream.write", "  anyio socket write (incl. the `write` syscall)"),
    ("CancelScope.", "  anyio cancel scopes / timeouts"),
    ("getpid", "  `getpid` syscalls (asyncio `get_running_loop`, via anyio/sniffio)"),
    ("PolicyEngine.decide", "bastion `PolicyEngine.decide`"),
    ("is_authorized_batch", "  cedarpy `is_authorized_batch`"),
    ("DecisionEvent.create", "bastion audit `DecisionEvent.create` (pydantic)"),
    ("event_body", "bastion audit `event_body` (pydantic `model_dump`)"),
    ("SQLiteAuditLog._put", "bastion audit enqueue (`SimpleQueue.put`, wakes the writer)"),
    ("RevocationList.is_revoked", "bastion `RevocationList.is_revoked` (SQLite SELECT)"),
    ("RequestResponseCycle.send", "uvicorn `send` (response to the client, incl. `write`)"),
    ("HttpToolsProtocol.data_received", "uvicorn `data_received` (request parsing, task creation)"),
    ("gc_collect_main", "CPython garbage collector"),
)  # fmt: skip
"""Functions whose inclusive share of the event-loop thread is reported (frame substring, label)."""


def _where(frame: str) -> str:
    """``path:line`` (Python), ``file.c:line`` or ``lib.so`` (native) of a py-spy frame."""
    try:
        return frame[frame.rindex("(") + 1 : frame.rindex(")")]
    except ValueError:
        return ""


def _is_python(frame: str) -> bool:
    return ".py:" in _where(frame) or "<frozen" in frame


def _source_line(frame: str) -> str:
    """The source text of ``func (path.py:line)`` when the file can be found on sys.path."""
    path, _, line = _where(frame).rpartition(":")
    if not path.endswith(".py") or not line.isdigit():
        return ""
    for base in sys.path:
        candidate = Path(base) / path
        if candidate.is_file():
            return linecache.getline(str(candidate), int(line)).strip()
    return ""


def _library(frame: str) -> str:
    """The module (Python) or binary (native) a frame belongs to, for the own-time summary."""
    where = _where(frame)
    if not _is_python(frame):
        name = where.rpartition(":")[0] or where
        if ".so" in name:
            return "native " + name.split(".so")[0].split("/")[-1].split(".")[0]
        return "native C (CPython/uvloop)"
    path = where.rpartition(":")[0]
    parts = path.split("/")
    if parts[0] == "bastion" and len(parts) > 1:
        return "bastion." + parts[1].removesuffix(".py")
    return parts[0].removesuffix(".py")


@dataclass
class Profile:
    """A py-spy profile of Bastion: samples per thread kind, by step, by own frame, by module."""

    samples: Counter[str] = field(default_factory=Counter)  # busy samples, "main" / "other"
    waits: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    steps: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    own: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    libraries: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    inclusive: Counter[str] = field(default_factory=Counter)  # event-loop thread, by INCLUSIVE label
    native: bool = False
    note: str = ""


def parse_profile(raw: Path, *, native: bool) -> Profile:
    """Read py-spy's ``--format raw`` output (``thread;frame;...;leaf count`` per line)."""
    profile = Profile(native=native)
    sources: dict[str, str] = {}

    def source(frame: str) -> str:
        if frame not in sources:
            sources[frame] = _source_line(frame)
        return sources[frame]

    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        kind = "main" if "MainThread" in frames[0] else "other"
        n = int(count)
        leaf = frames[-1]
        wait = _wait(leaf) if native else None
        if wait is not None:
            profile.waits[kind][wait] += n
            continue
        profile.samples[kind] += n
        step = "other"
        for frame in reversed(frames[1:]):
            text = f"{frame} {source(frame)}"
            label = next((name for key, name in STEP_RULES if key in text), None)
            if label is not None:
                step = label
                break
        profile.steps[kind][step] += n
        if _is_python(leaf):
            own = f"{leaf} `{source(leaf)}`" if source(leaf) else leaf
        else:  # a native leaf: name its nearest Python caller
            caller = next((f for f in reversed(frames) if _is_python(f)), "")
            own = f"{leaf} ← {caller}" if caller else leaf
        profile.own[kind][own] += n
        profile.libraries[kind][_library(leaf)] += n
        if kind == "main":
            for key, label in INCLUSIVE:
                if key in stack:
                    profile.inclusive[label] += n
    return profile


def find_py_spy() -> str | None:
    for candidate in (BIN / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    print("py-spy is missing: installing it into this venv (pip install py-spy)", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "py-spy"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0 and (BIN / "py-spy").exists():
        return str(BIN / "py-spy")
    print(f"py-spy could not be installed: {done.stderr.strip()[-300:]}", flush=True)
    return None


def profile_bastion(targets: Targets, conns: int, duration_s: float, out: Path) -> tuple[Profile, Run | None]:
    """py-spy record (native frames when possible) of Bastion while wrk drives it at ``conns``."""
    py_spy = find_py_spy()
    if py_spy is None:
        return Profile(note="py-spy unavailable: no profile"), None
    errors = ""
    for native in (True, False):
        out.unlink(missing_ok=True)
        cmd = [
            py_spy,
            "record",
            "--pid",
            str(targets.bastion_pid),
            "--duration",
            f"{duration_s:g}",
            "--rate",
            "200",
            "--threads",
            "--format",
            "raw",
            "-o",
            str(out),
        ]
        record = subprocess.Popen(
            [*cmd, "--native"] if native else cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        time.sleep(0.5)
        run = targets.measure("bastion", conns, duration_s + 1.0, 0)
        output = record.communicate(timeout=60)[0].decode(errors="replace")
        if record.returncode == 0 and out.exists() and out.stat().st_size:
            return parse_profile(out, native=native), run
        errors = f"py-spy failed ({record.returncode}): {output.strip()[-300:]}"
    return Profile(note=errors), None


# --- in-process microbenchmarks -------------------------------------------------------


def per_call_us(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` batches of the time per call of ``fn`` in microseconds."""
    fn()
    batches = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(batches)


def microbench(targets: Targets) -> dict[str, float]:
    """Policy decision, cached token verification and audit record work, in µs (append in ms)."""
    from bastion import audit
    from bastion.audit.chain import GENESIS_HASH, seal
    from bastion.audit.record import event_body
    from bastion.config import load_config
    from bastion.identity import RevocationList, SigningKeys, TokenVerifier
    from bastion.policy import PolicyEngine, ResourceRef

    config = load_config(targets.config_path)
    keys = SigningKeys.load_or_create(config.data_dir, verify_window_s=config.identity.max_token_ttl)
    revocations = RevocationList(config.data_dir / "bastion.db")
    figures: dict[str, float] = {}
    try:
        verifier = TokenVerifier(
            issuer=config.issuer, keys=keys, revocations=revocations, leeway_s=config.identity.leeway_s
        )
        audience = config.resource_uri(config.route(ROUTE))
        start = time.perf_counter_ns()
        principal = verifier.verify(targets.token, audience)
        figures["verify_uncached_us"] = (time.perf_counter_ns() - start) / 1000
        figures["verify_cached_us"] = per_call_us(lambda: verifier.verify(targets.token, audience), 2000)
        figures["revocation_lookup_us"] = per_call_us(lambda: revocations.is_revoked("no-such-jti"), 2000)

        engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
        tool = ResourceRef.from_tool(ROUTE, ECHO_TOOL)
        context = {
            "arguments": {"message": "hello from wrk 1"},
            "client_id": principal.client_id or "",
            "session": "s" * 43,
            "time": int(time.time()),
            "ip": "127.0.0.1",
            "approved": False,
        }
        allowed = engine.decide(principal, "tools/call", tool, context)
        denied = engine.decide(principal, "tools/call", tool, {**context, "arguments": {"message": "my password"}})
        if allowed.effect != "allow" or denied.effect != "deny":
            raise RuntimeError(f"the benchmark policies decide wrongly: {allowed} / {denied}")
        figures["decide_us"] = per_call_us(lambda: engine.decide(principal, "tools/call", tool, context), 2000)

        decision = audit.Decision(
            effect="allow", policy_ids=allowed.policy_ids, obligations={}, policy_version=engine.version
        )

        def build() -> audit.DecisionEvent:
            return audit.DecisionEvent.create(
                route=ROUTE,
                method="tools/call",
                decision=decision,
                arguments=context["arguments"],
                principal=principal,
                target="echo",
                session="s" * 43,
                decision_id=uuid.uuid4().hex,
            )

        event = build()
        figures["audit_build_us"] = per_call_us(lambda: event_body(build()), 1000)

        def outcome() -> dict[str, Any]:
            return event_body(
                event.outcome(
                    result=audit.Result(error=False, request_bytes=120, response_bytes=110),
                    upstream=audit.Upstream(credential_kind="none", status=200, duration_ms=0.5),
                )
            )

        figures["audit_outcome_us"] = per_call_us(outcome, 1000)
        body = event_body(event)
        figures["audit_seal_us"] = per_call_us(lambda: seal(body, seq=1, prev_hash=GENESIS_HASH), 1000)
        figures["audit_append_ms"] = asyncio.run(_append_latency(targets.workdir / "micro-audit.db", build))
    finally:
        revocations.close()
    return figures


async def _append_latency(path: Path, build: Callable[[], Any]) -> float:
    """Wall ms per ``await log.append`` one at a time (each its own committed transaction)."""
    from bastion.audit import SQLiteAuditLog

    async with SQLiteAuditLog(path) as log:
        await log.append(build())
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            await log.append(build())
        return (time.perf_counter() - start) / n * 1000


# --- reporting ------------------------------------------------------------------------


def median(runs: list[Run], attr: str) -> float:
    values = [getattr(r, attr) for r in runs]
    return statistics.median(values) if values else 0.0


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).splitlines()[0].split(" [")[0] if (wrk.stdout or wrk.stderr) else "?"

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "cpu": model,
        "nproc": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "wrk": wrk_version,
        "libs": ", ".join(
            f"{n} {version(n)}"
            for n in ("uvicorn", "uvloop", "httptools", "starlette", "httpx2", "cedarpy", "pydantic")
        ),
    }


@dataclass
class Report:
    runs: list[Run]
    micro: dict[str, float]
    profiles: dict[int, Profile]
    profile_runs: dict[int, Run]
    profile_note: str
    rounds: int
    duration_s: float
    started: str
    elapsed_s: float = 0.0

    def pick(self, target: str, conns: int) -> list[Run]:
        return [r for r in self.runs if r.target == target and r.conns == conns]

    def rows(self) -> list[tuple[str, str, str, str]]:
        rows: list[tuple[str, str, str, str]] = []
        d1, b1 = self.pick("direct", 1), self.pick("bastion", 1)
        for label, attr in (("latency p50, c=1 (ms)", "p50_ms"), ("latency p99, c=1 (ms)", "p99_ms")):
            d, b = median(d1, attr), median(b1, attr)
            rows.append((label, f"{d:.3f}", f"{b:.3f}", f"+{b - d:.3f} ms ({b / d:.1f}x)" if d else "-"))
        for conns in CONCURRENCIES:
            d, b = median(self.pick("direct", conns), "throughput"), median(self.pick("bastion", conns), "throughput")
            rows.append((f"throughput, c={conns} (calls/s)", f"{d:,.0f}", f"{b:,.0f}", f"{b / d:.3f}x" if d else "-"))
        for conns in CONCURRENCIES:
            d = median(self.pick("direct", conns), "server_cpu_ms")
            b = median(self.pick("bastion", conns), "server_cpu_ms")
            rows.append(
                (
                    f"server CPU per request, c={conns} (ms)",
                    f"{d:.3f} (echo)",
                    f"{b:.3f} (Bastion)",
                    f"{b / d:.1f}x" if d else "-",
                )
            )
        b16 = self.pick("bastion", 16)
        rows.append(
            (
                "  Bastion CPU split, c=16: event loop / audit thread / kernel part (ms)",
                "",
                f"{median(b16, 'main_cpu_ms'):.3f} / {median(b16, 'other_cpu_ms'):.3f} / "
                f"{median(b16, 'server_sys_ms'):.3f}",
                "",
            )
        )
        rows.append(
            (
                "upstream (echo) CPU per request, c=16 (ms)",
                f"{median(self.pick('direct', 16), 'upstream_cpu_ms'):.3f}",
                f"{median(b16, 'upstream_cpu_ms'):.3f}",
                "",
            )
        )
        rows.append(
            (
                "wrk CPU per request, c=16 (ms)",
                f"{median(self.pick('direct', 16), 'wrk_cpu_ms'):.3f}",
                f"{median(b16, 'wrk_cpu_ms'):.3f}",
                "",
            )
        )
        m = self.micro
        if m:
            rows.append(("policy decision alone, `PolicyEngine.decide` (µs)", "", f"{m['decide_us']:.1f}", ""))
            rows.append(
                (
                    "token verify, cached / uncached (µs)",
                    "",
                    f"{m['verify_cached_us']:.1f} / {m['verify_uncached_us']:.0f}",
                    "",
                )
            )
            rows.append(
                (
                    "audit records built: decision / outcome (µs)",
                    "",
                    f"{m['audit_build_us']:.1f} / {m['audit_outcome_us']:.1f}",
                    "",
                )
            )
            rows.append(("audit seal per record, writer thread (µs)", "", f"{m['audit_seal_us']:.1f}", ""))
            rows.append(("audit append committed, one at a time (ms)", "", f"{m['audit_append_ms']:.3f}", ""))
        return rows

    def targets(self) -> list[tuple[str, str, bool]]:
        d, b = median(self.pick("direct", 1), "p50_ms"), median(self.pick("bastion", 1), "p50_ms")
        out = [
            (f"added latency p50 at c=1 < {TARGET_ADDED_P50_MS:g} ms", f"{b - d:.3f} ms", b - d < TARGET_ADDED_P50_MS)
        ]
        for conns in CONCURRENCIES:
            cpu = median(self.pick("bastion", conns), "server_cpu_ms")
            out.append(
                (f"Bastion CPU per tools/call < {TARGET_CPU_MS:g} ms (c={conns})", f"{cpu:.3f} ms", cpu < TARGET_CPU_MS)
            )
        return out

    def invalid(self) -> list[Run]:
        return [r for r in self.runs if r.errors or r.calls == 0]

    # text for the terminal
    def text(self) -> str:
        rows = [("", "direct", "through Bastion", "ratio / added"), *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r))
            for r in rows
        ]
        lines.append("")
        if self.invalid():
            lines.append("INVALID RUN (errors): targets not evaluated")
        else:
            lines.extend(f"{'MET ' if ok else 'MISS'}  {name}: {value}" for name, value, ok in self.targets())
        return "\n".join(lines)

    # the document
    def markdown(self, info: dict[str, str]) -> str:
        out: list[str] = []
        add = out.append
        add("# Benchmarks")
        add("")
        add("Generated by `make bench` (`benchmarks/run.py`); rerun it rather than editing this file.")
        add("")
        add(f"- **Date:** {self.started} (whole run {self.elapsed_s:.0f} s)")
        add("- **Command:** `make bench` (= `bash benchmarks/install-wrk.sh && .venv/bin/python benchmarks/run.py`)")
        add(f"- **Machine:** {info['cpu']}, nproc {info['nproc']} (shared), Linux {info['kernel']}")
        add(f"- **Software:** {info['python']}; {info['libs']}; {info['wrk']} (Debian)")
        add(
            f"- **Method:** {self.rounds} interleaved rounds (direct, Bastion, direct, Bastion, ...) at "
            f"concurrency {', '.join(map(str, CONCURRENCIES))}, {self.duration_s:g} s per run, `wrk -t1 -cN` with "
            "`benchmarks/mcp_session.lua`; figures are medians over the rounds."
        )
        add("")
        add("## Setup")
        add("")
        add(
            "- **Upstream:** `benchmarks/echo_upstream.py`, a raw asyncio + httptools + uvloop Streamable HTTP "
            "MCP server (not the SDK) answering `tools/call` of `echo` with JSON; measured directly in the same run "
            "(the throughput rows), so it is not the bottleneck."
        )
        add(
            "- **Bastion:** `bastion serve`, one HTTP route `echo` to that upstream, log level warning, the bearer "
            'token of a `User` in `Group::"bench"` (minted with `bastion token mint`), these Cedar policies, and '
            "the audit log on (two hash-chained records per call in SQLite, WAL, `synchronous=FULL`; the decision "
            "record is committed before forwarding)."
        )
        add(
            "- **Client:** each wrk connection opens an MCP session (`initialize`, `notifications/initialized`), then "
            "sends `tools/call` with `Authorization` and `Mcp-Session-Id`; the Lua script times every call itself "
            "(`clock_gettime(CLOCK_MONOTONIC)`, matched by JSON-RPC id), checks status 200 and a JSON-RPC result, "
            "and counts anything else as an error (a run with errors is invalid). wrk's own latency figures are not "
            "used: it corrects them for coordinated omission."
        )
        add(
            "- **CPU per request:** `utime + stime` of the process (all threads) from `/proc/<pid>/stat`, over the "
            "run plus 0.3 s for the audit writer to finish, divided by the requests wrk completed; the steadiest "
            "figure on a shared 2-core machine, where throughput depends on what else runs."
        )
        add("")
        add("```cedar")
        add(POLICIES.rstrip())
        add("```")
        add("")
        add("## Results")
        add("")
        add("| | direct | through Bastion | ratio / added |")
        add("|---|---:|---:|---:|")
        add("\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows()))
        add("")
        add("Targets of this issue:")
        add("")
        for name, value, ok in self.targets():
            add(f"- {'**met**' if ok else '**not met**'}: {name} — measured {value}")
        add("")
        add(
            "For scale, measured on this machine kind: the best FastMCP proxy configuration (session reuse, JWT) "
            "spends 2.4 ms of CPU per call and adds 2.1 ms p50; IBM ContextForge spends 18-48 ms per call."
        )
        add("")
        add("### Every run")
        add("")
        add(
            "Server CPU is the echo upstream's for direct runs and Bastion's for Bastion runs (split into its "
            "event-loop thread, audit writer thread and the kernel part of the total)."
        )
        add("")
        add(
            "| round | c | target | calls/s | p50 ms | p99 ms | server CPU ms/req | loop / audit / kernel | "
            "echo CPU ms/req | wrk CPU ms/req |"
        )
        add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(self.runs, key=lambda r: (r.conns, r.round, r.target != "direct")):
            split = (
                f"{r.main_cpu_ms:.3f} / {r.other_cpu_ms:.3f} / {r.server_sys_ms:.3f}" if r.target == "bastion" else ""
            )
            add(
                f"| {r.round} | {r.conns} | {r.target} | {r.throughput:,.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
                f"{r.server_cpu_ms:.3f} | {split} | {r.upstream_cpu_ms:.3f} | {r.wrk_cpu_ms:.3f} |"
            )
        add("")
        add("## What limits Bastion")
        add("")
        add(self.profile_markdown())
        return "\n".join(out) + "\n"

    def _summary(self, levels: list[int], per_call: dict[tuple[str, int], float]) -> str:
        """The short answer, from the profiles: where Bastion's CPU per call goes."""

        def inc(c: int, label_start: str) -> tuple[float, float]:
            p = self.profiles[c]
            n = sum(v for k, v in p.inclusive.items() if k.strip().startswith(label_start))
            share = n / (p.samples["main"] or 1)
            return share, share * per_call["main", c] * 1000

        def step(c: int, prefix: str) -> tuple[float, float]:
            p = self.profiles[c]
            n = sum(v for k, v in p.steps["main"].items() if k.startswith(prefix))
            share = n / (p.samples["main"] or 1)
            return share, share * per_call["main", c] * 1000

        lines = ["**In short** (event-loop thread; share of its CPU and µs per call):", ""]
        for c in levels:
            total = per_call["main", c] + per_call["other", c]
            fwd, pool, cedar = (
                inc(c, "bastion `HttpUpstream.send`"),
                inc(c, "httpcore2 pool"),
                inc(c, "bastion `Policy"),
            )
            audit, uv = step(c, "audit:"), step(c, "uvicorn")
            reply, star = step(c, "reply:"), step(c, "Starlette")
            other_sys = median(self.pick("bastion", c), "other_sys_ms") * 1000
            lines.append(
                f"- c={c}, {total:.2f} ms of CPU per call: upstream HTTP client (httpx2 + httpcore2 + anyio + h11) "
                f"{100 * fwd[0]:.0f}% ≈ {fwd[1]:.0f} µs (of which httpcore2's pool scan {pool[1]:.0f} µs); "
                f"Cedar decision {100 * cedar[0]:.0f}% ≈ {cedar[1]:.0f} µs; audit records on the loop "
                f"{100 * audit[0]:.0f}% ≈ {audit[1]:.0f} µs; uvicorn + Starlette "
                f"{100 * (uv[0] + reply[0] + star[0]):.0f}% ≈ {uv[1] + reply[1] + star[1]:.0f} µs; plus the audit "
                f"writer thread, {per_call['other', c] * 1000:.0f} µs ({other_sys:.0f} µs of it in the kernel: "
                "SQLite writes, fdatasync, futex wake-ups and GIL hand-offs)."
            )
        lines.append("")
        lines.append(
            "One event loop does all of it, so throughput is about 1 / (event-loop CPU per call) whatever the "
            "concurrency, and at c=1 the added latency is mostly that same CPU time plus the durable audit commit "
            "the call waits for (see `audit append committed` above)."
        )
        if any(inc(c, "httpcore2 pool")[0] > 0.05 for c in levels):
            lines.append("")
            lines.append(
                "httpcore2 re-checks every pooled upstream connection whenever a request is queued or a response is "
                "closed (`_assign_requests_to_connections` -> `has_expired` -> anyio `extra()` + `select.poll()` "
                "per connection), so its cost grows with the number of pooled connections, i.e. with concurrency "
                "(Bastion keeps up to 64, `bastion/upstream/http.py`)."
            )
        return "\n".join(lines)

    def _waits_text(self, conns: int) -> str:
        p = self.profiles[conns]
        parts = []
        for kind, name in (("main", "event loop"), ("other", "audit writer")):
            total = p.samples[kind] + sum(p.waits[kind].values())
            if total:
                top = ", ".join(f"{w} {100 * n / total:.0f}%" for w, n in p.waits[kind].most_common(3))
                parts.append(f"{name} {top or 'none'}")
        return f"c={conns}: " + ", ".join(parts)

    def profile_markdown(self) -> str:
        if not self.profiles:
            return self.profile_note or "No profile."
        names = {"main": "event-loop thread", "other": "audit writer thread"}
        attrs = {"main": "main_cpu_ms", "other": "other_cpu_ms"}
        out: list[str] = []
        add = out.append
        levels = sorted(self.profiles)
        runs = ", ".join(
            f"c={c}: {sum(self.profiles[c].samples.values()):,} samples"
            + (f" at {self.profile_runs[c].throughput:,.0f} calls/s" if c in self.profile_runs else "")
            for c in levels
        )
        native = all(self.profiles[c].native for c in levels)
        per_call = {(kind, c): median(self.pick("bastion", c), attrs[kind]) for kind in names for c in levels}
        split = "; ".join(
            f"c={c}: event loop {per_call['main', c]:.3f} ms + audit writer {per_call['other', c]:.3f} ms "
            f"(kernel part: {median(self.pick('bastion', c), 'server_sys_ms'):.3f} ms of the total, "
            f"{median(self.pick('bastion', c), 'other_sys_ms'):.3f} ms of the audit writer's)"
            for c in levels
        )
        add(
            f"py-spy `record --rate 200 --threads{' --native' if native else ''}` while wrk drove Bastion "
            f"({runs}; sampling slows it down). Bastion is one Python process; CPU per call by thread, from "
            f"`/proc/<pid>/task/*/stat` in the measured rounds: {split}. Shares are of each thread's busy samples "
            "and µs/call = share x that thread's CPU per call."
            + (
                " Samples whose native leaf is a wait (epoll, futex/GIL/queue waits, fdatasync) are left out: "
                + "; ".join(self._waits_text(c) for c in levels)
                + "."
                if native
                else " Without native frames some waiting is counted as busy."
            )
        )
        add("")
        add(self._summary(levels, per_call))
        add("")
        for kind in names:
            if not any(self.profiles[c].samples[kind] for c in levels):
                continue
            counts = ", ".join(f"c={c} {self.profiles[c].samples[kind]:,}" for c in levels)
            timed = kind == "main"  # the audit writer is mostly waiting: too few busy samples to scale to µs
            add(
                f"**{names[kind]}, by pipeline step** (the deepest frame that names a step; busy samples {counts}"
                + ("" if timed else "; few, so indicative only: see the in-process audit figures above")
                + ")"
            )
            add("")
            if timed:
                add("| step | " + " | ".join(f"c={c} share | c={c} µs/call" for c in levels) + " |")
                add("|---|" + "---:|---:|" * len(levels))
            else:
                add("| step | " + " | ".join(f"c={c} share" for c in levels) + " |")
                add("|---|" + "---:|" * len(levels))
            order: Counter[str] = Counter()
            for c in levels:
                total = self.profiles[c].samples[kind] or 1
                for step, n in self.profiles[c].steps[kind].items():
                    order[step] += n / total
            for step, _ in order.most_common(14):
                cells = []
                for c in levels:
                    total = self.profiles[c].samples[kind] or 1
                    share = self.profiles[c].steps[kind][step] / total
                    cells.append(
                        f"{100 * share:.1f}% | {share * per_call[kind, c] * 1000:.0f}"
                        if timed
                        else f"{100 * share:.1f}%"
                    )
                add(f"| {step} | " + " | ".join(cells) + " |")
            add("")
            if kind == "main":
                add("**event-loop thread, inclusive time of selected functions** (a function and all it calls)")
                add("")
                add("| function | " + " | ".join(f"c={c} share | c={c} µs/call" for c in levels) + " |")
                add("|---|" + "---:|---:|" * len(levels))
                for _, label in INCLUSIVE:
                    cells = []
                    for c in levels:
                        share = self.profiles[c].inclusive[label] / (self.profiles[c].samples[kind] or 1)
                        cells.append(f"{100 * share:.1f}% | {share * per_call[kind, c] * 1000:.0f}")
                    add(f"| {label.replace('  ', '&nbsp;&nbsp;')} | " + " | ".join(cells) + " |")
                add("")
            for c in levels if kind == "main" else levels[-1:]:
                p = self.profiles[c]
                total = p.samples[kind] or 1
                add(f"**{names[kind]}, hottest frames by own time, c={c}**")
                add("")
                add("| frame | share |")
                add("|---|---:|")
                for frame, n in p.own[kind].most_common(12 if kind == "main" else 6):
                    add(f"| {frame.replace('|', '/')} | {100 * n / total:.1f}% |")
                add("")
                if kind == "main":
                    libs = ", ".join(f"{lib} {100 * n / total:.0f}%" for lib, n in p.libraries[kind].most_common(12))
                    add(f"Own time by module, c={c}: {libs}.")
                    add("")
        return "\n".join(out)


# --- main -----------------------------------------------------------------------------


def run_rounds(targets: Targets, rounds: int, duration_s: float) -> Iterator[Run]:
    for round_no in range(1, rounds + 1):
        for conns in CONCURRENCIES:
            for target in ("direct", "bastion"):
                run = targets.measure(target, conns, duration_s, round_no)
                flag = f"  ERRORS {run.errors}: {run.first_error}" if run.errors or not run.calls else ""
                print(
                    f"round {round_no} c={conns:<2} {target:7}  {run.throughput:9,.0f} calls/s  "
                    f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  server CPU {run.server_cpu_ms:.3f} ms/req"
                    f"{flag}",
                    flush=True,
                )
                yield run


def main() -> int:
    parser = argparse.ArgumentParser(description="tools/call directly and through Bastion (make bench)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--profile-duration", type=float, default=6.0)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs, short profile (smoke test)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.profile_duration = 1, 2.0, 3.0
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `bash benchmarks/install-wrk.sh` (make bench does)", file=sys.stderr)
        return 2
    if not Path(BASTION).exists():
        print(f"{BASTION} not found: install the project into this venv (make bench does)", file=sys.stderr)
        return 2

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        workdir = Path(tmp)
        targets = Targets(workdir)
        try:
            targets.start()
            print(f"echo upstream on :{targets.echo_port}, Bastion on :{targets.bastion_port}; warming up", flush=True)
            for target in ("direct", "bastion"):
                warm = targets.measure(target, 16, 2.0, 0)
                if warm.errors or not warm.calls:
                    print(
                        f"warm-up against {target} failed: {warm.first_error}\n{targets.bastion_log()}", file=sys.stderr
                    )
                    return 1
            runs = list(run_rounds(targets, args.rounds, args.duration))
            valid = not any(r.errors or not r.calls for r in runs)
            profiles: dict[int, Profile] = {}
            profile_runs: dict[int, Run] = {}
            profile_note = "Profiling skipped (--no-profile)."
            if not valid:
                args.no_profile, profile_note = True, "Profiling skipped: the run is invalid."
            if not args.no_profile:
                # httpcore2 checks every pooled connection on each request: let the c=64 connections of the
                # last round expire (keep-alive 5 s) so the profiles see the pool of their own concurrency.
                print("letting Bastion's idle upstream connections expire before profiling", flush=True)
                time.sleep(5.5)
            for conns in () if args.no_profile else PROFILED:
                print(f"profiling Bastion with py-spy at c={conns}", flush=True)
                raw = workdir / f"profile-c{conns}.txt"
                profile, profile_run = profile_bastion(targets, conns, args.profile_duration, raw)
                if profile.samples and profile_run is not None:
                    profiles[conns], profile_runs[conns] = profile, profile_run
                    kept = Path(tempfile.gettempdir()) / f"bastion-bench-profile-c{conns}.txt"
                    shutil.copyfile(raw, kept)
                    print(f"raw py-spy stacks kept in {kept}", flush=True)
                else:
                    profile_note = profile.note
                    print(profile.note, flush=True)
            micro: dict[str, float] = {}
            if valid:
                print("timing the policy decision, token verification and audit records in-process", flush=True)
                micro = microbench(targets)
        finally:
            targets.stop()
    report = Report(
        runs=runs,
        micro=micro,
        profiles=profiles,
        profile_runs=profile_runs,
        profile_note=profile_note,
        rounds=args.rounds,
        duration_s=args.duration,
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        elapsed_s=time.monotonic() - t0,
    )
    print()
    print(report.text())
    bad = report.invalid()
    if bad:
        print(
            f"\nINVALID RUN: {len(bad)} wrk run(s) had errors, e.g. {bad[0].target} c={bad[0].conns} round "
            f"{bad[0].round}: {bad[0].first_error}; {args.output} not written",
            file=sys.stderr,
        )
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report.markdown(machine()), encoding="utf-8")
    print(f"\nwritten {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
