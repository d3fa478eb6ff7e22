#!/usr/bin/env python3
"""``make bench``: ``tools/call`` directly against a fast echo upstream and through Bastion.

What it does, in one run (about three minutes):

1. starts ``benchmarks/echo_upstream.py`` (a raw asyncio MCP server, >10,000 calls/s here)
   and two real ``bastion serve`` processes, each with one HTTP route to it, a realistic
   Cedar policy set (a group permit, a broad permit, a forbid on destructive tools, an
   argument rule), authentication by a minted token, the audit log on (it always is) and
   log level warning. The two differ only in ``audit.synchronous``: ``bastion`` runs the
   default configuration (``full``: the WAL is fsynced at every commit), ``bastion-normal``
   the same configuration plus ``audit: {synchronous: normal}`` (no fsync per commit),
   each with its own data directory and port;
2. warms all three up, then runs INTERLEAVED rounds (direct, bastion, bastion-normal,
   direct, ...) of ``wrk -t1 -cN`` with ``benchmarks/mcp_session.lua`` (MCP sessions opened
   first, each call timed by the script itself) at concurrency 1, 16 and 64;
3. per run: calls/s, p50/p99 latency (the script's own timing), and the CPU time per
   request of the server (``utime + stime`` of the process from ``/proc/<pid>/stat``
   over the requests wrk completed), of the upstream and of wrk itself;
4. profiles the default Bastion with py-spy (native frames too) during one more run at c=1
   and at c=16 and attributes its CPU to libraries (aiohttp, uvicorn, cedarpy, SQLite and
   the audit writer, Bastion's own pipeline, the event loop), pipeline steps and frames;
5. times in-process what the request path does besides I/O: the policy decision
   (``PolicyEngine.decide`` with the same policies), the token verification (Bastion's own
   token cached and uncached, an external issuer's ES256 token, the revocation-list check
   alone), the whole authenticate stage (``AuthenticateStage.run``), the audit record bodies
   (``bastion.audit.build.decision_body`` / ``outcome_body``), the writer's seal, and one
   committed append with each ``synchronous`` setting;
6. prints the figures side by side and writes ``docs/benchmarks.md``. The targets are
   judged on the default configuration; ``synchronous=normal`` is shown for comparison.

``--baseline REF`` (``make bench BASELINE=REF``) also measures an earlier Bastion in the same
run: the commit REF names (any git ref) has its ``src/`` extracted with ``git archive`` into the
working directory, and a third ``bastion serve``, target ``baseline``, runs it (this Python with
``PYTHONPATH`` set to that tree, checked to import it; its tokens minted by its own CLI) in the
default configuration, with its own data directory and port. Its config is the default Bastion's,
checked by its own ``bastion check``; a commit older than the route keys
``routes[].http.allow_http``/``allow`` rejects them, so they are left out for it, and the report
says so. It is measured in every round after the others (direct, bastion, bastion-normal,
baseline) and compared with the current default Bastion in a table of its own ("Against the
baseline"); the profile and the in-process timings are of the current code only.

Exits 1 when any run had errors (the run is invalid; the document is not written), 2
when a prerequisite is missing (wrk, the bastion script, or with ``--baseline`` a commit
whose Bastion can be extracted, imported and configured). Options: ``--rounds``,
``--duration``, ``--quick``, ``--no-profile``, ``--output``, ``--baseline``.
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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
LUA = BENCH / "mcp_session.lua"
BIN = Path(sys.executable).parent
BASTION = str(BIN / "bastion")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONCURRENCIES = (1, 16, 64)
ROUTE = "echo"
GROUP = "bench"
BENCH_IDP = "https://idp.bench.invalid"
"""The issuer of the in-process external token; no identity provider runs (its JWKS is served in-process)."""
TARGET_ADDED_P50_MS = 1.0
TARGET_CPU_MS = 0.5
DEFAULT = "bastion"
NORMAL = "bastion-normal"
BASELINE = "baseline"
TARGETS = ("direct", DEFAULT, NORMAL, BASELINE)
"""Measured in this order in every round: the upstream alone, Bastion as configured by default
(``audit.synchronous: full``), the same Bastion with ``audit.synchronous: normal`` and, with
``--baseline REF`` only, the Bastion of commit REF in the default configuration."""
COMPARED = ("direct", DEFAULT, NORMAL)
"""The columns of the main results table; the baseline is compared in a table of its own."""
SYNCHRONOUS = {DEFAULT: "full", NORMAL: "normal"}
CLI_MAIN = "import sys; from bastion.cli import main; sys.exit(main())"
"""``python -c`` source running the ``bastion`` CLI of whichever ``bastion`` package is first on sys.path."""
TITLE_CHARS = 60
"""A baseline commit's subject line is cut to about this many characters in table headers."""

sys.path.insert(0, str(BENCH))
from echo_upstream import ECHO_TOOL  # noqa: E402

if TYPE_CHECKING:
    from bastion.config import BastionConfig
    from bastion.identity import RevocationList, SigningKeys, TokenVerifier
    from bastion.pipeline.context import Exchange
    from bastion.policy import PolicyEngine
    from bastion.principal import Principal
    from bastion.transport.routes import RouteRuntime

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


class Prerequisite(Exception):
    """Something the benchmark needs is missing or unusable: reported, and the run exits 2."""


@dataclass
class BastionServer:
    """One ``bastion serve`` process: its own config, data directory, port and token.

    It runs this checkout's Bastion (the ``bastion`` script of this venv) unless ``source`` is
    set: then the ``src`` directory of an earlier commit's extracted tree, whose CLI runs as this
    Python with ``PYTHONPATH=source`` (see :attr:`command` and :attr:`env`)."""

    name: str  # DEFAULT, NORMAL or BASELINE
    workdir: Path
    port: int
    synchronous: str
    source: Path | None = None
    route_egress_keys: bool = True
    """Whether the config sets ``routes[].http.allow_http`` and ``allow``; cleared by
    :meth:`write_checked_config` for a commit older than those keys (its config rejects unknown keys)."""
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp/{ROUTE}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    @property
    def command(self) -> list[str]:
        """The ``bastion`` CLI of this server, to which its arguments are appended."""
        return [BASTION] if self.source is None else [sys.executable, "-c", CLI_MAIN]

    @property
    def env(self) -> dict[str, str] | None:
        """The environment of this server's processes: this one (None), or with ``PYTHONPATH=source``."""
        return None if self.source is None else {**os.environ, "PYTHONPATH": str(self.source)}

    def write_config(self, upstream_url: str) -> None:
        # The default configuration leaves ``audit.synchronous`` out (it is ``full``); the
        # variant sets it, and nothing else differs.
        audit = "  store_arguments: true\n" + (
            f"  synchronous: {self.synchronous}\n" if self.synchronous != "full" else ""
        )
        egress = (
            "      allow_http: true                 # the echo upstream is plain http on loopback, on purpose\n"
            "      allow: [127.0.0.1]\n"
            if self.route_egress_keys
            else ""
        )
        config = f"""\
# Written by benchmarks/run.py
data_dir: {self.workdir / f"data-{self.name}"}
server:
  host: 127.0.0.1
  port: {self.port}
identity:
  max_token_ttl: 1h
policy:
  files: [{self.workdir / "policies.cedar"}]
audit:
{audit}routes:
  - name: {ROUTE}
    title: Benchmark echo server
    http:
      url: {upstream_url}
{egress}"""
        self.config_path.write_text(config, encoding="utf-8")

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``args`` to completion in this server's working directory and environment, output captured."""
        return subprocess.run(
            args, capture_output=True, text=True, check=False, cwd=self.workdir, env=self.env, timeout=60
        )

    def check_config(self) -> subprocess.CompletedProcess[str]:
        """``bastion check --config`` of this server's own CLI on its config file."""
        return self.run([*self.command, "check", "--config", str(self.config_path)])

    def write_checked_config(self, upstream_url: str) -> None:
        """:meth:`write_config`, checked by this server's own ``bastion check``: a commit older than
        ``routes[].http.allow_http``/``allow`` rejects them, so on a refusal the config is written
        again without them (see :attr:`route_egress_keys`). Raises ``Prerequisite`` if that fails too."""
        self.route_egress_keys = True
        self.write_config(upstream_url)
        if self.check_config().returncode == 0:
            return
        self.route_egress_keys = False
        self.write_config(upstream_url)
        check = self.check_config()
        if check.returncode != 0:
            raise Prerequisite(
                f"{self.name}: `bastion check` refuses the benchmark config, with and without "
                f"routes[].http.allow_http/allow ({self.config_path}):\n{(check.stdout + check.stderr).strip()}"
            )

    def verify_source(self) -> None:
        """Check that this server's processes import ``bastion`` from ``source`` (PYTHONPATH takes
        precedence over the venv's editable install); raise ``Prerequisite`` if they do not."""
        if self.source is None:
            return
        probe = self.run([sys.executable, "-c", "import bastion; print(bastion.__file__)"])
        imported = probe.stdout.strip()
        if probe.returncode != 0 or not Path(imported).resolve().is_relative_to(self.source.resolve()):
            raise Prerequisite(
                f"{self.name}: with PYTHONPATH={self.source}, Python imports bastion from "
                f"{imported or '(nothing)'} instead of {self.source}: {probe.stderr.strip()[-500:]}"
            )

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--config", str(self.config_path), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self.env,
        )
        log.close()
        try:
            wait_http(self.port, "/healthz", self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- {self.name} log ---\n{self.log()}") from exc
        self.token = self.mint()

    def mint(self) -> str:
        args = [
            *self.command,
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
        done = self.run(args)
        done.check_returncode()
        return done.stdout.strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


# --- an earlier commit (--baseline) ----------------------------------------------------


@dataclass(frozen=True)
class BaselineCommit:
    """The commit ``--baseline REF`` names: measured as one more Bastion, in the default configuration."""

    ref: str
    commit: str  # full hash
    subject: str

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def title(self) -> str:
        """``Bastion at <short> (<subject>)``, the subject cut to about ``TITLE_CHARS`` characters."""
        subject = self.subject if len(self.subject) <= TITLE_CHARS else self.subject[: TITLE_CHARS - 1].rstrip() + "…"
        return f"Bastion at {self.short} ({subject})"

    def config_note(self, *, route_egress_keys: bool) -> str:
        """Which configuration the baseline ran: the default Bastion's, or that without the route keys
        its commit does not know (see :meth:`BastionServer.write_checked_config`)."""
        if route_egress_keys:
            return "the same config as the default Bastion"
        return f"config without routes[].http.allow_http/allow, which {self.short} does not know"


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False, timeout=60)


def resolve_baseline(ref: str) -> BaselineCommit:
    """The commit ``ref`` names and its subject line; raises ``Prerequisite`` if it names none."""
    if ref.startswith("-"):  # git would read it as an option
        raise Prerequisite(f"--baseline {ref}: not a git ref")
    resolved = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise Prerequisite(f"--baseline {ref}: not a commit in {REPO}")
    commit = resolved.stdout.strip()
    return BaselineCommit(ref=ref, commit=commit, subject=git("log", "-1", "--format=%s", commit).stdout.strip())


def extract_source(commit: str, dest: Path) -> Path:
    """``git archive <commit> src | tar -x -C dest``; returns the extracted ``dest/src``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", commit, "src"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    untar = subprocess.Popen(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, stderr=subprocess.PIPE)
    if archive.stdout is not None:
        archive.stdout.close()  # tar holds the pipe now: git gets SIGPIPE if tar stops reading
    tar_errors = untar.communicate(timeout=120)[1]
    archive_errors = archive.communicate(timeout=120)[1]
    if archive.returncode != 0 or untar.returncode != 0:
        raise Prerequisite(
            f"git archive {commit} src | tar -x failed ({archive.returncode}/{untar.returncode}): "
            f"{(archive_errors + tar_errors).decode(errors='replace').strip()[-500:]}"
        )
    return dest / "src"


class Targets:
    """The echo upstream and the Bastions (two of this checkout, and with ``baseline`` one of an
    earlier commit), running; knows how to measure one run."""

    def __init__(self, workdir: Path, baseline: BaselineCommit | None = None) -> None:
        self.workdir = workdir
        self.echo_port = free_port()
        self.echo: subprocess.Popen[bytes] | None = None
        self.bastions = {
            name: BastionServer(name, workdir, free_port(), synchronous) for name, synchronous in SYNCHRONOUS.items()
        }
        self.baseline = baseline
        if baseline is not None:
            source = workdir / BASELINE / "src"  # extracted by start()
            self.bastions[BASELINE] = BastionServer(BASELINE, workdir, free_port(), "full", source=source)

    @property
    def names(self) -> tuple[str, ...]:
        """The targets measured in every round, in ``TARGETS`` order."""
        return tuple(name for name in TARGETS if name == "direct" or name in self.bastions)

    @property
    def baseline_route_egress_keys(self) -> bool:
        """Whether the baseline's config has ``routes[].http.allow_http``/``allow`` (True without a baseline)."""
        baseline = self.bastions.get(BASELINE)
        return baseline is None or baseline.route_egress_keys

    @property
    def default(self) -> BastionServer:
        """The Bastion in the default configuration: the one profiled and judged against the targets."""
        return self.bastions[DEFAULT]

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.echo_port}/mcp"

    def start(self) -> None:
        """Start the echo upstream and every Bastion. For the baseline, first extract its commit's
        ``src``, check that it is what its processes import and fit its config to what it knows."""
        if self.baseline is not None:
            extract_source(self.baseline.commit, self.workdir / BASELINE)
            self.bastions[BASELINE].verify_source()
        (self.workdir / "policies.cedar").write_text(POLICIES, encoding="utf-8")
        echo_log = (self.workdir / "echo.log").open("wb")
        self.echo = subprocess.Popen(
            [sys.executable, str(BENCH / "echo_upstream.py"), "--port", str(self.echo_port)],
            stdout=echo_log,
            stderr=subprocess.STDOUT,
        )
        echo_log.close()
        wait_http(self.echo_port, "/healthz", self.echo)
        for bastion in self.bastions.values():
            if bastion.source is None:
                bastion.write_config(self.direct_url)
            else:
                bastion.write_checked_config(self.direct_url)
            bastion.start()

    def logs(self) -> str:
        return "\n".join(f"--- {b.name} log ---\n{b.log()}" for b in self.bastions.values())

    def stop(self) -> None:
        """Stop every Bastion (the baseline's too) and the echo upstream."""
        for proc in (*(b.proc for b in self.bastions.values()), self.echo):
            if proc is not None:
                stop(proc)

    @property
    def echo_pid(self) -> int:
        if self.echo is None:
            raise RuntimeError("the echo upstream is not running")
        return self.echo.pid

    def measure(self, target: str, conns: int, duration_s: float, round_no: int) -> Run:
        """One wrk run against ``target``; CPU deltas over the requests it completed."""
        bastion = self.bastions.get(target)
        server_pid = bastion.pid if bastion is not None else self.echo_pid
        server0, echo0 = cpu_seconds(server_pid), cpu_seconds(self.echo_pid)
        sys0 = cpu_seconds(server_pid, system_only=True)
        threads0 = thread_cpu_seconds(server_pid) if bastion is not None else (0.0, 0.0, 0.0)
        summary = run_wrk(
            bastion.url if bastion is not None else self.direct_url,
            conns,
            duration_s,
            bastion.token if bastion is not None else None,
        )
        time.sleep(0.3)  # let the audit writer commit the last outcome records
        server1, echo1 = cpu_seconds(server_pid), cpu_seconds(self.echo_pid)
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
        )


# --- profile --------------------------------------------------------------------------

PROFILED = (1, 16)
"""Concurrencies at which Bastion is profiled: latency-bound and throughput-bound."""

STEP_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    # The deepest frame of a sample that matches a rule (frame text + its source line) names the step.
    "main": (
        ("RevocationList.is_revoked", "authenticate: revocation check (in memory, stamp file every 50 ms)"),
        ("AuthenticateStage.run", "authenticate: token (cached verify)"),
        ("TransportStage.run", "transport: checks + JSON parse"),
        ("SessionStage.run", "session: lookup"),
        ("ClassifyStage.run", "classify"),
        ("AuthorizeStage.run", "authorize: Cedar decision (context, entities, cedarpy)"),
        ("SQLiteAuditLog._put", "audit: enqueue (SimpleQueue.put, wakes the writer)"),
        ("AuditStage.run", "audit: decision record (decision_body, await the commit)"),
        ("AuditStage.record_outcome", "audit: outcome record (outcome_body)"),
        ("_settle (bastion/audit/store.py", "audit: resume the waiting append (callback from the writer)"),
        ("HttpUpstream._read_capped", "forward: aiohttp, read the response body"),
        ("HttpUpstream.send", "forward: aiohttp request (build, write, await response headers)"),
        ("aiohttp/client_proto.py", "forward: aiohttp response parsing (protocol callback)"),
        ("HttpForwardStage.run", "forward: session mapping + reply JSON parse"),
        ("InspectStage.run", "inspect"),
        ("send_reply", "reply: write to uvicorn"),
        ("read_request", "request: headers + body"),
        ("Pipeline.", "pipeline runner glue"),
        ("McpEndpoint.__call__", "endpoint glue (Exchange, ...)"),
        ("GatewayApp.__call__", "app dispatch (GatewayApp)"),
        ("httptools_impl.py", "uvicorn: HTTP/1.1 protocol (httptools), incl. the response write"),
        ("Runner.run", "event loop: uvloop, epoll, socket I/O (native)"),
    ),
    "other": (  # the audit writer thread
        ("seal (bastion/audit/chain.py", "audit writer: seal (canonical JSON + SHA-256)"),
        ("index_columns", "audit writer: index columns"),
        ("SQLiteAuditLog._settle", "audit writer: wake the waiting appends (call_soon_threadsafe)"),
        ('conn.execute("COMMIT")', "audit writer: SQLite COMMIT (WAL write, fsync when synchronous=full)"),
        ('conn.execute("BEGIN IMMEDIATE")', "audit writer: SQLite BEGIN"),
        ("executemany", "audit writer: SQLite INSERT"),
        ("SQLiteAuditLog._commit", "audit writer: batch bookkeeping"),
        ("SQLiteAuditLog._next_batch", "audit writer: queue get (wake-up)"),
        ("SQLiteAuditLog._serve", "audit writer: loop"),
    ),
}


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


GROUPS: tuple[tuple[str, str], ...] = (
    ("aiohttp", "aiohttp (upstream HTTP client; with yarl, multidict, propcache)"),
    ("uvicorn", "uvicorn + httptools (downstream HTTP server)"),
    ("cedarpy", "cedarpy (the Cedar policy decision)"),
    ("sqlite", "sqlite3 / audit writer thread (seal, INSERT, COMMIT)"),
    ("bastion", "our pipeline (`bastion.*`, with the stdlib it calls: json, hashlib, ...)"),
    ("loop", "event loop (uvloop/libuv dispatch, epoll, asyncio)"),
    ("other", "other (CPython runtime: the cyclic garbage collector, unattributed native code)"),
)
"""The libraries Bastion's CPU is attributed to (key, label), in display order."""

_PY_GROUPS = {
    "aiohttp": "aiohttp", "yarl": "aiohttp", "multidict": "aiohttp", "propcache": "aiohttp",
    "aiohappyeyeballs": "aiohttp", "aiosignal": "aiohttp", "frozenlist": "aiohttp",
    "uvicorn": "uvicorn", "httptools": "uvicorn", "starlette": "uvicorn",
    "cedarpy": "cedarpy", "sqlite3": "sqlite", "bastion": "bastion", "asyncio": "loop", "uvloop": "loop",
}  # fmt: skip
"""Python packages (first path component of a py-spy frame) -> group."""

_NATIVE_FILES = {
    # uvloop (Cython) and the libuv it embeds; CPython's _asyncio
    "loop.c": "loop", "core.c": "loop", "linux.c": "loop", "stream.c": "loop", "loop-watcher.c": "loop",
    "queue.h": "loop", "uv-common.c": "loop", "timer.c": "loop", "async.c": "loop", "poll.c": "loop",
    "tcp.c": "loop", "_asynciomodule.c": "loop", "_asynciomodule.c.h": "loop",
    # httptools (llhttp)
    "parser.c": "uvicorn", "llhttp.c": "uvicorn", "url_parser.c": "uvicorn", "api.c": "uvicorn", "http.c": "uvicorn",
    # aiohttp's C parser and writer, multidict, yarl, propcache
    "_http_parser.c": "aiohttp", "_http_writer.c": "aiohttp", "_multidict.c": "aiohttp", "hashtable.h": "aiohttp",
    "_helpers_c.c": "aiohttp", "_quoting_c.c": "aiohttp",
    # CPython's _sqlite3 module
    "cursor.c": "sqlite", "connection.c": "sqlite", "connection.c.h": "sqlite", "statement.c": "sqlite",
    "cursor.c.h": "sqlite",
}  # fmt: skip
"""Native source files (as py-spy names them with debug info) -> group; a heuristic."""

_NATIVE_LIBS = (
    ("libsqlite3", "sqlite"), ("cedarpy", "cedarpy"), ("aiohttp", "aiohttp"), ("multidict", "aiohttp"),
    ("yarl", "aiohttp"), ("propcache", "aiohttp"), ("httptools", "uvicorn"), ("uvloop", "loop"), ("libuv", "loop"),
)  # fmt: skip
"""Native shared objects (substring of the path py-spy shows) -> group."""

_ENTRY = (
    "bastion/cli/", "uvicorn/server.py", "uvicorn/_compat.py", "uvicorn/main.py", "asyncio/runners.py",
    "typer/", "click/", "threading.py", "(bastion:",
)  # fmt: skip
"""Frames below the event loop (process entry point, thread bootstrap): never a sample's owner."""


def _frame_group(frame: str) -> str | None:
    """The group of one frame ("entry" for an entry-point frame), or None when it names none."""
    if any(marker in frame for marker in _ENTRY):
        return "entry"
    where = _where(frame)
    if _is_python(frame):
        return _PY_GROUPS.get(where.rpartition(":")[0].split("/")[0].removesuffix(".py"))
    if ".so" in where:
        return next((group for key, group in _NATIVE_LIBS if key in where), None)
    return _NATIVE_FILES.get(where.rpartition(":")[0] or where)


def sample_group(frames: list[str], kind: str) -> str:
    """The library a busy sample is charged to: everything on the audit writer thread is "sqlite";
    on the event loop, the innermost frame of a listed library. Event-loop frames are transparent
    (a socket write uvloop makes for aiohttp is aiohttp's); a sample that reaches the entry point
    through them alone is the loop's; garbage collection is "other" wherever it was triggered."""
    if kind != "main":
        return "sqlite"
    through_loop = False
    for frame in reversed(frames):
        if frame.startswith("gc_collect"):  # the cyclic GC runs wherever an allocation triggers it
            return "other"
        group = _frame_group(frame)
        if group == "entry":
            break
        if group == "loop":
            through_loop = True
        elif group is not None:
            return group
    return "loop" if through_loop else "other"


def _where(frame: str) -> str:
    """``path:line`` (Python), ``file.c:line`` or ``lib.so`` (native) of a py-spy frame."""
    try:
        return frame[frame.rindex("(") + 1 : frame.rindex(")")]
    except ValueError:
        return ""


def _is_python(frame: str) -> bool:
    return ".py:" in _where(frame) or "<frozen" in frame


def _function(frame: str) -> str:
    """``func (path.py)``: a Python frame without its line number."""
    where = _where(frame)
    return f"{frame[: frame.rindex('(')].strip()} ({where.rpartition(':')[0] or where})"


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


@dataclass
class Profile:
    """A py-spy profile of Bastion: busy samples per thread kind ("main" / "other"), by group,
    by pipeline step, by own frame and by function on the stack (total time)."""

    samples: Counter[str] = field(default_factory=Counter)
    waits: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    groups: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    steps: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    own: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    own_group: dict[str, str] = field(default_factory=dict)
    total: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    total_group: dict[str, str] = field(default_factory=dict)
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
        group = sample_group(frames[1:], kind)
        profile.groups[kind][group] += n
        step = "other"
        for frame in reversed(frames[1:]):
            text = f"{frame} {source(frame)}"
            label = next((name for key, name in STEP_RULES[kind] if key in text), None)
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
        profile.own_group.setdefault(own, group)
        seen: set[str] = set()
        for frame in frames[1:]:  # total time: each Python function on the stack once
            if not _is_python(frame) or _frame_group(frame) == "entry":
                continue
            function = _function(frame)
            if function not in seen:
                seen.add(function)
                profile.total[kind][function] += n
                profile.total_group.setdefault(function, _frame_group(frame) or "stdlib")
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
    """py-spy record (native frames when possible) of the default Bastion while wrk drives it at ``conns``."""
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
            str(targets.default.pid),
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
        run = targets.measure(DEFAULT, conns, duration_s + 1.0, 0)
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


async def per_await_us(make: Callable[[], Awaitable[object]], n: int, repeats: int = 5) -> float:
    """:func:`per_call_us` for coroutines, on the running event loop: median over ``repeats`` batches
    of the time per ``await make()`` in microseconds (``make`` creates the awaitable, as a caller does)."""
    await make()
    batches = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            await make()
        batches.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(batches)


def microbench(targets: Targets) -> dict[str, float]:
    """What the request path computes besides I/O, in-process, as the gateway calls it: the policy
    decision, the token verification and the authenticate stage (see :func:`authentication_micro`),
    the two audit record bodies, the writer's seal, in µs; one committed append with each
    ``audit.synchronous`` setting, in ms; the CPU of one upstream call through ``HttpUpstream`` and
    through plain aiohttp (see :func:`_upstream_send_us`), in µs. Needs the default Bastion's
    configuration file and token, not its process, and the echo upstream running."""
    import uvloop

    from bastion.audit.build import decision_body, outcome_body
    from bastion.audit.chain import GENESIS_HASH, seal
    from bastion.config import load_config
    from bastion.identity import RevocationList, SigningKeys, TokenVerifier
    from bastion.ids import new_id
    from bastion.policy import PolicyEngine, ResourceRef

    bastion = targets.default
    config = load_config(bastion.config_path)
    keys = SigningKeys.load_or_create(config.data_dir, verify_window_s=config.identity.max_token_ttl)
    revocations = RevocationList(config.data_dir / "bastion.db", recheck_s=0.05)  # as the gateway opens it
    figures: dict[str, float] = {}
    try:
        verifier = TokenVerifier(
            issuer=config.issuer, keys=keys, revocations=revocations, leeway_s=config.identity.leeway_s
        )
        audience = config.resource_uri(config.route(ROUTE))
        principal = verifier.verify(bastion.token, audience)

        def uncached() -> object:
            verifier.clear_cache()
            return verifier.verify(bastion.token, audience)

        figures["verify_uncached_us"] = per_call_us(uncached, 300)
        figures["verify_cached_us"] = per_call_us(lambda: verifier.verify(bastion.token, audience), 2000)
        figures.update(authentication_micro(config, verifier, keys, revocations, bastion.token))

        engine = PolicyEngine.load(config.policy.files, config.policy.schema_file)
        tool = ResourceRef.from_tool(ROUTE, ECHO_TOOL)
        arguments = {"message": "hello from wrk 1"}
        context = {
            "arguments": arguments,
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
        figures.update(large_argument_ms(config, engine, principal))

        def decision() -> dict[str, Any]:  # as AuditStage._body builds it for an allowed tools/call
            return decision_body(
                route=ROUTE,
                method="tools/call",
                effect="allow",
                policy_ids=allowed.policy_ids,
                obligations=allowed.obligations,
                reason=None,
                policy_version=engine.version,
                arguments=arguments,
                principal=principal,
                target=str(ECHO_TOOL["name"]),
                session="s" * 43,
                decision_id=new_id(),
                store_arguments=config.audit.store_arguments,
            )

        body = decision()

        def outcome() -> dict[str, Any]:  # as AuditStage.record_outcome builds it
            return outcome_body(
                body,
                error=False,
                error_code=None,
                request_bytes=120,
                response_bytes=110,
                credential_kind="none",
                status=200,
                duration_ms=0.5,
            )

        figures["audit_build_us"] = per_call_us(decision, 2000)
        figures["audit_outcome_us"] = per_call_us(outcome, 2000)
        figures["audit_seal_us"] = per_call_us(lambda: seal(body, seq=1, prev_hash=GENESIS_HASH), 1000)
        for synchronous in ("full", "normal"):
            path = targets.workdir / f"micro-audit-{synchronous}.db"
            figures[f"audit_append_{synchronous}_ms"] = asyncio.run(_append_latency(path, decision, synchronous))
        figures.update(uvloop.run(_upstream_send_us(targets.direct_url)))  # the loop `bastion serve` runs on
    finally:
        asyncio.run(revocations.close())
    return figures


async def _upstream_send_us(url: str) -> dict[str, float]:
    """CPU µs of this process per ``tools/call`` sent to the echo upstream at ``url`` and read back,
    one at a time on one kept-alive connection: through ``HttpUpstream.send`` (what the forward stage
    calls: the egress guard as the connector's resolver, header filtering, capped read) and through
    a plain ``aiohttp`` session with a default connector (no guard, nothing of Bastion). Interleaved
    batches; the median of each. ``upstream_guarded_us`` - ``upstream_plain_us`` bounds what the
    guarded connector and Bastion's wrapper cost per call."""
    import aiohttp

    from bastion.egress import EgressGuard
    from bastion.egress.allowlist import AllowList
    from bastion.upstream.http import HttpUpstream

    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-11-25",
    }
    initialize = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
    call = json.dumps(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}}
    ).encode()
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1"])) as guard:
        upstream = HttpUpstream(url, guard=guard, allow_http=True)
        plain = aiohttp.ClientSession(trust_env=False, skip_auto_headers=("User-Agent",))
        try:
            opened = await upstream.send(
                "POST",
                headers=headers,
                body=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize}).encode(),
            )
            await opened.aclose()
            session = opened.session_id

            async def guarded() -> None:
                response = await upstream.send("POST", headers=headers, body=call, session_id=session)
                await response.aclose()

            async def unguarded() -> None:
                sent = {**headers, "mcp-session-id": session or ""}
                async with plain.post(url, headers=sent, data=call, allow_redirects=False) as response:
                    await response.read()

            batches: dict[str, list[float]] = {"upstream_guarded_us": [], "upstream_plain_us": []}
            n = 500
            for _ in range(5):
                for key, send in (("upstream_guarded_us", guarded), ("upstream_plain_us", unguarded)):
                    await send()  # the connection is open and kept alive before timing
                    start = time.process_time()
                    for _ in range(n):
                        await send()
                    batches[key].append((time.process_time() - start) / n * 1e6)
        finally:
            await plain.close()
            await upstream.aclose()
    return {key: statistics.median(values) for key, values in batches.items()}


def large_argument_ms(config: BastionConfig, engine: PolicyEngine, principal: Principal) -> dict[str, float]:
    """CPU ms per ``tools/call`` whose arguments hold 1 MB, through every step that touches the
    arguments, called as the stages call them: parse the body (``parse_message``), the argument
    limits (``check_arguments``), the policy decision (``PolicyEngine.decide``) and the decision
    record (``decision_body``: canonical digest and redaction). ``large_text_ms``: one 1 MB string;
    ``large_records_ms``: 12,000 small objects (about 1 MB). Median of 5 batches of process CPU."""
    from bastion.audit.build import decision_body
    from bastion.policy import ResourceRef
    from bastion.transport.checks import parse_message
    from bastion.transport.sizes import check_arguments

    tool = ResourceRef.from_tool(ROUTE, ECHO_TOOL)
    name = str(ECHO_TOOL["name"])
    words = ("alpha", "beta", "note", "2024-05-01", "id=42", "path/to/file.txt", "Quick brown fox.")
    text = " ".join(words[i % len(words)] for i in range(150_000))[:1_000_000]
    rows = [{"id": i, "name": f"row {i}", "email": f"u{i}@example.com", "tags": ["a", "b"]} for i in range(12_000)]
    figures: dict[str, float] = {}
    for key, arguments in (("large_text_ms", {"message": text}), ("large_records_ms", {"message": "hi", "rows": rows})):
        params = {"name": name, "arguments": arguments}
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}).encode()

        def call(body: bytes = body) -> None:
            arguments = parse_message(body)["params"]["arguments"]
            check_arguments(arguments, config.server.argument_limits)
            context = {"arguments": arguments, "client_id": principal.client_id or "", "session": "s" * 43,
                       "time": int(time.time()), "ip": "127.0.0.1", "approved": False}  # fmt: skip
            decision = engine.decide(principal, "tools/call", tool, context)
            denied = decision.effect != "allow"
            decision_body(
                route=ROUTE, method="tools/call", effect=decision.effect, policy_ids=decision.policy_ids,
                obligations=decision.obligations, reason="policy_denied" if denied else None,
                policy_version=engine.version, arguments=arguments, principal=principal, target=name,
                session="s" * 43, decision_id="d" * 32, store_arguments=config.audit.store_arguments,
            )  # fmt: skip

        call()
        batches = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(10):
                call()
            batches.append((time.process_time() - start) / 10 * 1000)
        figures[key] = statistics.median(batches)
    return figures


async def _append_latency(path: Path, build: Callable[[], dict[str, Any]], synchronous: str) -> float:
    """Wall ms per ``await log.append`` one at a time (each its own committed transaction)."""
    from bastion.audit import SQLiteAuditLog

    async with SQLiteAuditLog(path, synchronous="normal" if synchronous == "normal" else "full") as log:
        await log.append(build())
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            await log.append(build())
        return (time.perf_counter() - start) / n * 1000


def authentication_micro(
    config: BastionConfig, verifier: TokenVerifier, keys: SigningKeys, revocations: RevocationList, token: str
) -> dict[str, float]:
    """The authenticate stage's parts and whole, in µs: the revocation-list check alone, an external
    issuer's token (cached / uncached) and ``AuthenticateStage.run`` on a request bearing ``token``,
    one of Bastion's own (cached / uncached). ``verifier`` and ``revocations`` are built and opened
    as the gateway builds and opens them; no server runs. Raises ``RuntimeError`` if a token is refused."""
    principal = verifier.verify(token, config.resource_uri(config.route(ROUTE)))
    jti = principal.token_id
    if jti is None or revocations.is_revoked(jti):
        raise RuntimeError(f"the benchmark token has no jti or is revoked: {principal}")
    figures = {"revocation_check_us": per_call_us(lambda: revocations.is_revoked(jti), 5000)}
    figures.update(asyncio.run(_authentication_async(config, verifier, keys, revocations, token)))
    return figures


async def _authentication_async(
    config: BastionConfig, verifier: TokenVerifier, keys: SigningKeys, revocations: RevocationList, token: str
) -> dict[str, float]:
    """The async part of :func:`authentication_micro`, all on one event loop."""
    stage_cached, stage_uncached = await _authenticate_stage_us(config, verifier, token)
    external_cached, external_uncached = await _external_verify_us(config, keys, revocations)
    return {
        "stage_cached_us": stage_cached,
        "stage_uncached_us": stage_uncached,
        "verify_external_cached_us": external_cached,
        "verify_external_uncached_us": external_uncached,
    }


def _bench_route(config: BastionConfig) -> RouteRuntime:
    """The benchmark route as ``Gateway._route`` builds it, for what the authenticate stage reads."""
    from bastion.transport.routes import RouteRuntime

    settings = config.route(ROUTE)
    return RouteRuntime(
        settings=settings,
        resource_uri=config.resource_uri(settings),
        metadata_url=f"{config.server.base_url}/.well-known/oauth-protected-resource{settings.public_path}",
    )


def _bearer_exchanges(route: RouteRuntime, token: str, count: int) -> Iterator[Exchange]:
    """``count`` fresh exchanges of a ``tools/call`` POST with ``Authorization: Bearer token``, built now."""
    from bastion.pipeline.context import Exchange, HttpRequest

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}).encode()
    raw = (
        ("authorization", f"Bearer {token}"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    )
    request = HttpRequest("POST", route.path, dict(raw), raw, "127.0.0.1", body)
    return iter([Exchange(route=route, http=request) for _ in range(count)])


async def _authenticate_stage_us(config: BastionConfig, verifier: TokenVerifier, token: str) -> tuple[float, float]:
    """``await AuthenticateStage.run(exchange)`` as the gateway's pipeline calls it, on a fresh exchange
    each time (built before the timing), with the token's verification cached / uncached, in µs."""
    from bastion.pipeline.stages.authenticate import AuthenticateStage

    stage = AuthenticateStage(
        verifier, {item.issuer: frozenset(item.routes) for item in config.identity.external_issuers}
    )
    route = _bench_route(config)
    probe = next(_bearer_exchanges(route, token, 1))
    await stage.run(probe)
    if probe.principal is None or probe.principal.auth_method != "bastion_jwt":
        raise RuntimeError(f"the authenticate stage did not accept the benchmark token: {probe.principal}")
    n_cached, n_uncached, repeats = 2000, 300, 5
    cached = _bearer_exchanges(route, token, n_cached * repeats + 1)  # + 1: per_await_us's first call
    uncached = _bearer_exchanges(route, token, n_uncached * repeats + 1)

    async def run_uncached() -> None:
        verifier.clear_cache()
        await stage.run(next(uncached))

    return (
        await per_await_us(lambda: stage.run(next(cached)), n_cached, repeats),
        await per_await_us(run_uncached, n_uncached, repeats),
    )


async def _external_verify_us(
    config: BastionConfig, keys: SigningKeys, revocations: RevocationList
) -> tuple[float, float]:
    """``TokenVerifier.authenticate`` of an external issuer's ES256 token, cached / uncached, in µs.

    The issuer's JWKS is served in-process (a ``JWKSFetch`` answering the key set) and fetched once
    before the timing, so no identity provider runs and the figures are the per-request cost once
    the key set is cached (``jwks_cache_s``); a refetch is not timed."""
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from bastion.identity import ExternalIssuer, TokenVerifier
    from bastion.ids import new_id

    key = ECKey.generate_key("P-256", parameters={"kid": "bench-idp-1"}, private=True)
    jwks = {"keys": [dict(key.as_dict(private=False))]}
    idp = ExternalIssuer(
        issuer=BENCH_IDP,
        jwks_url=f"{BENCH_IDP}/jwks",
        audience="api://bastion-bench",
        algorithms=["ES256"],
        routes=(ROUTE,),
    )
    now = int(time.time())
    claims = {
        "iss": BENCH_IDP,
        "sub": "bench-ci",
        "aud": idp.audience,
        "iat": now,
        "exp": now + 3600,
        "jti": new_id(),
        "groups": [GROUP],
    }
    token = jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key)
    document = json.dumps(jwks).encode()

    async def jwks_fetch(url: str) -> bytes:
        return document

    verifier = TokenVerifier(
        issuer=config.issuer,
        keys=keys,
        revocations=revocations,
        external_issuers=[idp],
        leeway_s=config.identity.leeway_s,
        jwks_fetch=jwks_fetch,
    )
    principal = await verifier.authenticate(token, idp.audience)  # fetches the JWKS
    if principal.auth_method != "external_jwt":
        raise RuntimeError(f"the external token was not verified as external: {principal}")

    async def uncached() -> object:
        verifier.clear_cache()
        return await verifier.authenticate(token, idp.audience)

    return (
        await per_await_us(lambda: verifier.authenticate(token, idp.audience), 2000),
        await per_await_us(uncached, 300),
    )


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
            f"{n} {version(n)}" for n in ("uvicorn", "uvloop", "httptools", "starlette", "aiohttp", "cedarpy")
        )
        + f", SQLite {sqlite3.sqlite_version}",
    }


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """A table for the terminal: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)) for r in rows
    ]


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
    baseline: BaselineCommit | None = None
    baseline_route_egress_keys: bool = True
    """Whether the baseline's config had ``routes[].http.allow_http``/``allow`` (see ``BaselineCommit.config_note``)."""

    def pick(self, target: str, conns: int) -> list[Run]:
        return [r for r in self.runs if r.target == target and r.conns == conns]

    def med(self, target: str, conns: int, attr: str) -> float:
        return median(self.pick(target, conns), attr)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(label, direct, Bastion default, Bastion synchronous=normal, ratio or added: default / normal)."""
        rows: list[tuple[str, str, str, str, str]] = []
        for label, attr in (("latency p50, c=1 (ms)", "p50_ms"), ("latency p99, c=1 (ms)", "p99_ms")):
            d, b, n = (self.med(t, 1, attr) for t in COMPARED)
            rows.append((label, f"{d:.3f}", f"{b:.3f}", f"{n:.3f}", f"+{b - d:.3f} / +{n - d:.3f} ms"))
        for conns in CONCURRENCIES:
            d, b, n = (self.med(t, conns, "throughput") for t in COMPARED)
            ratio = f"{b / d:.3f}x / {n / d:.3f}x" if d else "-"
            rows.append((f"throughput, c={conns} (calls/s)", f"{d:,.0f}", f"{b:,.0f}", f"{n:,.0f}", ratio))
        for conns in CONCURRENCIES:
            d, b, n = (self.med(t, conns, "server_cpu_ms") for t in COMPARED)
            ratio = f"{b / d:.1f}x / {n / d:.1f}x" if d else "-"
            rows.append((f"server CPU per request, c={conns} (ms)", f"{d:.3f} (echo)", f"{b:.3f}", f"{n:.3f}", ratio))
        for conns in PROFILED:
            rows.append((self._split_label(conns), "", self._split(DEFAULT, conns), self._split(NORMAL, conns), ""))
        for label, attr in (("upstream (echo) CPU", "upstream_cpu_ms"), ("wrk CPU", "wrk_cpu_ms")):
            d, b, n = (self.med(t, 16, attr) for t in COMPARED)
            rows.append((f"{label} per request, c=16 (ms)", f"{d:.3f}", f"{b:.3f}", f"{n:.3f}", ""))
        m = self.micro
        if m:
            rows.append(("policy decision alone, `PolicyEngine.decide` (µs)", "", f"{m['decide_us']:.1f}", "same", ""))

            def cached_uncached(label: str, key: str) -> tuple[str, str, str, str, str]:
                """A row of ``{key}_cached_us`` / ``{key}_uncached_us``."""
                return (label, "", f"{m[f'{key}_cached_us']:.1f} / {m[f'{key}_uncached_us']:.0f}", "same", "")

            rows.append(cached_uncached("token verify, Bastion-issued, cached / uncached (µs)", "verify"))
            rows.append(
                cached_uncached(
                    "token verify, external issuer (ES256, JWKS fetched before), cached / uncached (µs)",
                    "verify_external",
                )
            )
            rows.append(
                (
                    "token verify, revocation-list check alone, `RevocationList.is_revoked` (µs)",
                    "",
                    f"{m['revocation_check_us']:.2f}",
                    "same",
                    "",
                )
            )
            rows.append(
                cached_uncached("authenticate stage whole, `AuthenticateStage.run`, cached / uncached (µs)", "stage")
            )
            rows.append(
                (
                    "audit bodies, `decision_body` / `outcome_body` (µs)",
                    "",
                    f"{m['audit_build_us']:.1f} / {m['audit_outcome_us']:.1f}",
                    "same",
                    "",
                )
            )
            rows.append(("audit seal per record, writer thread (µs)", "", f"{m['audit_seal_us']:.1f}", "same", ""))
            rows.append(
                (
                    "tools/call with 1 MB of arguments, CPU of parse, limits, decision, digest, redaction: "
                    "one string / 12,000 objects (ms)",
                    "",
                    f"{m['large_text_ms']:.1f} / {m['large_records_ms']:.1f}",
                    "same",
                    "",
                )
            )
            rows.append(
                (
                    "upstream call, CPU: `HttpUpstream.send` (guarded connector) / plain aiohttp (µs)",
                    "",
                    f"{m['upstream_guarded_us']:.0f} / {m['upstream_plain_us']:.0f}",
                    "same",
                    "",
                )
            )
            rows.append(
                (
                    "audit append committed, one at a time (ms)",
                    "",
                    f"{m['audit_append_full_ms']:.3f}",
                    f"{m['audit_append_normal_ms']:.3f}",
                    "",
                )
            )
        return rows

    @staticmethod
    def _split_label(conns: int) -> str:
        return f"  Bastion CPU split, c={conns}: event loop / audit thread / kernel part (ms)"

    def _split(self, target: str, conns: int) -> str:
        """A Bastion's CPU per request at ``conns``: event loop / audit thread / kernel part, in ms."""
        return (
            f"{self.med(target, conns, 'main_cpu_ms'):.3f} / {self.med(target, conns, 'other_cpu_ms'):.3f} / "
            f"{self.med(target, conns, 'server_sys_ms'):.3f}"
        )

    def baseline_header(self) -> tuple[str, str, str, str]:
        if self.baseline is None:
            raise RuntimeError("no baseline in this run")
        return ("", self.baseline.title, "Bastion now", "now vs baseline")

    def baseline_rows(self) -> list[tuple[str, str, str, str]]:
        """(label, Bastion at the baseline commit, Bastion now, now vs baseline): both in the default
        configuration, measured in the same rounds against the same upstream."""
        rows: list[tuple[str, str, str, str]] = []
        for label, attr in (("latency p50, c=1 (ms)", "p50_ms"), ("latency p99, c=1 (ms)", "p99_ms")):
            then, now = self.med(BASELINE, 1, attr), self.med(DEFAULT, 1, attr)
            rows.append((label, f"{then:.3f}", f"{now:.3f}", f"{now - then:+.3f} ms"))
        for conns in CONCURRENCIES:
            then, now = self.med(BASELINE, conns, "throughput"), self.med(DEFAULT, conns, "throughput")
            ratio = f"{now / then:.3f}x" if then else "-"
            rows.append((f"throughput, c={conns} (calls/s)", f"{then:,.0f}", f"{now:,.0f}", ratio))
        for conns in CONCURRENCIES:
            then, now = self.med(BASELINE, conns, "server_cpu_ms"), self.med(DEFAULT, conns, "server_cpu_ms")
            ratio = f"{now / then:.2f}x" if then else "-"
            rows.append((f"server CPU per request, c={conns} (ms)", f"{then:.3f}", f"{now:.3f}", ratio))
        for conns in PROFILED:
            rows.append((self._split_label(conns), self._split(BASELINE, conns), self._split(DEFAULT, conns), ""))
        then, now = self.med(BASELINE, 16, "upstream_cpu_ms"), self.med(DEFAULT, 16, "upstream_cpu_ms")
        ratio = f"{now / then:.2f}x" if then else "-"
        rows.append(("direct upstream CPU per request, c=16 (ms)", f"{then:.3f}", f"{now:.3f}", ratio))
        return rows

    def baseline_config(self) -> str:
        return self.baseline.config_note(route_egress_keys=self.baseline_route_egress_keys) if self.baseline else ""

    def targets(self, target: str = DEFAULT) -> list[tuple[str, str, bool]]:
        d, b = self.med("direct", 1, "p50_ms"), self.med(target, 1, "p50_ms")
        out = [
            (f"added latency p50 at c=1 < {TARGET_ADDED_P50_MS:g} ms", f"{b - d:.3f} ms", b - d < TARGET_ADDED_P50_MS)
        ]
        for conns in CONCURRENCIES:
            cpu = self.med(target, conns, "server_cpu_ms")
            out.append(
                (f"Bastion CPU per tools/call < {TARGET_CPU_MS:g} ms (c={conns})", f"{cpu:.3f} ms", cpu < TARGET_CPU_MS)
            )
        return out

    def invalid(self) -> list[Run]:
        return [r for r in self.runs if r.errors or r.calls == 0]

    HEADER = (
        "",
        "direct",
        "through Bastion (default: audit synchronous=full)",
        "Bastion, audit synchronous=normal",
        "Bastion vs direct: default / normal",
    )

    # text for the terminal
    def text(self) -> str:
        lines = aligned([self.HEADER, *self.rows()])
        lines.append("")
        if self.baseline is not None:
            lines.append(f"Against the baseline ({self.baseline.commit}; {self.baseline_config()}):")
            lines.extend(aligned([self.baseline_header(), *self.baseline_rows()]))
            lines.append("")
        if self.invalid():
            lines.append("INVALID RUN (errors): targets not evaluated")
        else:
            lines.extend(f"{'MET ' if ok else 'MISS'}  {name}: {value}" for name, value, ok in self.targets())
            lines.append("(judged on the default configuration; with audit synchronous=normal, for comparison:)")
            lines.extend(f"{'met ' if ok else 'miss'}  {name}: {value}" for name, value, ok in self.targets(NORMAL))
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
        baseline = self.baseline
        make, option = (
            ("make bench", "")
            if baseline is None
            else (f"make bench BASELINE={baseline.ref}", f" --baseline {baseline.ref}")
        )
        add(
            f"- **Command:** `{make}` (= `bash scripts/install-debian-package.sh wrk /usr/bin/wrk && "
            f".venv/bin/python benchmarks/run.py{option}`)"
        )
        add(f"- **Machine:** {info['cpu']}, nproc {info['nproc']} (shared), Linux {info['kernel']}")
        add(f"- **Software:** {info['python']}; {info['libs']}; {info['wrk']} (Debian)")
        at_baseline = f", Bastion at `{baseline.short}`" if baseline is not None else ""
        add(
            f"- **Method:** {self.rounds} interleaved rounds (direct, Bastion, Bastion with `audit.synchronous: "
            f"normal`{at_baseline}, direct, ...) at concurrency {', '.join(map(str, CONCURRENCIES))}, "
            f"{self.duration_s:g} s per run, `wrk -t1 -cN` with `benchmarks/mcp_session.lua`; figures are medians "
            "over the rounds."
            + (
                f" The baseline is commit `{baseline.commit}` ({baseline.subject}), in the default configuration."
                if baseline is not None
                else ""
            )
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
            "- **Bastion (default configuration):** `bastion serve`, one HTTP route `echo` to that upstream "
            '(aiohttp client), log level warning, the bearer token of a `User` in `Group::"bench"` (minted with '
            "`bastion token mint`), these Cedar policies, and the audit log on (two hash-chained records per call in "
            "SQLite, WAL; the decision record is committed before forwarding) with the default `audit.synchronous: "
            "full`: the WAL is fsynced at every commit, so a committed record survives a power loss. The targets "
            "are judged on this configuration."
        )
        add(
            "- **Bastion, audit synchronous=normal:** a second `bastion serve` in the same run with the same "
            "configuration plus `audit: {synchronous: normal}` (its own data directory and port): commits are not "
            "fsynced, so the log survives a crash of Bastion but not of the machine. Shown for comparison only."
        )
        if baseline is not None:
            add(
                f"- **Baseline:** a third `bastion serve`, of commit `{baseline.short}`: its `src/` extracted with "
                "`git archive` and run by the same Python with `PYTHONPATH` set to it (checked to import that tree), "
                f"in the default configuration ({self.baseline_config()}), with its own data directory, port and "
                "token (minted by its own CLI), against the same echo upstream. The profile and the in-process rows "
                "are of the current code only."
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
            "figure on a shared 2-core machine, where throughput depends on what else runs. The Bastions not "
            "being measured keep running, idle; idle, they use next to no CPU."
        )
        add("")
        add("```cedar")
        add(POLICIES.rstrip())
        add("```")
        add("")
        add("## Results")
        add("")
        add("| " + " | ".join(self.HEADER) + " |")
        add("|---|---:|---:|---:|---:|")
        add("\n".join("| " + " | ".join(row) + " |" for row in self.rows()))
        add("")
        add(
            "The in-process rows time, outside the server, what the request path computes besides I/O, called as "
            "the gateway calls it (the same code in both configurations; only the committed append differs). "
            "Token verification is timed on a token the verifier has cached (a repeat request: signature and "
            "static claims skipped) and uncached (its cache cleared first: a token's first request). The external "
            "issuer's token is ES256 and verified with its JWKS already fetched (served in-process, so the fetch "
            "is not timed). The authenticate stage row is the whole `AuthenticateStage.run` on a fresh exchange "
            "per call (built beforehand, not timed) with `Authorization: Bearer` and one of Bastion's own tokens: "
            "the header parse, the verification (including the revocation check, timed alone in its row with the "
            "revocation list opened as the gateway opens it, re-read at most every 50 ms) and the route check. "
            "The upstream call row is this process's CPU per `tools/call` sent to the echo upstream and read back "
            "on a kept-alive connection, one at a time on uvloop: through `HttpUpstream.send` (the forward stage's "
            "client: the egress guard as aiohttp's resolver, header filtering, capped read) and through a plain "
            "aiohttp session (no guard, nothing of Bastion), in interleaved batches."
        )
        add("")
        add("Targets, judged on the default configuration (`audit.synchronous: full`):")
        add("")
        for name, value, ok in self.targets():
            add(f"- {'**met**' if ok else '**not met**'}: {name} — measured {value}")
        add("")
        normal = "; ".join(
            f"{name}: {value} ({'met' if ok else 'not met'})" for name, value, ok in self.targets(NORMAL)
        )
        add(f"For comparison only, with `audit.synchronous: normal`: {normal}.")
        add("")
        add(
            "For scale, measured on this machine kind: the best FastMCP proxy configuration (session reuse, JWT) "
            "spends 2.4 ms of CPU per call and adds 2.1 ms p50; IBM ContextForge spends 18-48 ms per call."
        )
        add("")
        if baseline is not None:
            add("### Against the baseline")
            add("")
            add(
                f"Bastion at commit `{baseline.commit}` (`--baseline {baseline.ref}`) and Bastion now (this checkout), "
                f"both in the default configuration ({self.baseline_config()}), measured in the same interleaved "
                "rounds against the same echo upstream (its CPU per request in the last row). Ratios are now / "
                "baseline: below 1x is less CPU, above 1x more throughput."
            )
            add("")
            add("| " + " | ".join(cell.replace("|", "\\|") for cell in self.baseline_header()) + " |")
            add("|---|---:|---:|---:|")
            add("\n".join("| " + " | ".join(row) + " |" for row in self.baseline_rows()))
            add("")
        add("### Every run")
        add("")
        add(
            "Server CPU is the echo upstream's for direct runs and Bastion's for Bastion runs (split into its "
            "event-loop thread, audit writer thread and the kernel part of the total). `bastion` is the default "
            "configuration, `bastion-normal` the one with `audit.synchronous: normal`"
            + (f", `baseline` the default configuration at `{baseline.short}`." if baseline is not None else ".")
        )
        add("")
        add(
            "| round | c | target | calls/s | p50 ms | p99 ms | server CPU ms/req | loop / audit / kernel | "
            "echo CPU ms/req | wrk CPU ms/req |"
        )
        add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(self.runs, key=lambda r: (r.conns, r.round, TARGETS.index(r.target))):
            split = (
                f"{r.main_cpu_ms:.3f} / {r.other_cpu_ms:.3f} / {r.server_sys_ms:.3f}" if r.target != "direct" else ""
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

    # the profile
    def _per_call(self, levels: list[int]) -> dict[tuple[str, int], float]:
        """Default Bastion's CPU ms per call by thread kind ("main", "other") at each profiled level."""
        attrs = {"main": "main_cpu_ms", "other": "other_cpu_ms"}
        return {(kind, c): self.med(DEFAULT, c, attr) for kind, attr in attrs.items() for c in levels}

    def _group_us(self, c: int, per_call: dict[tuple[str, int], float]) -> dict[str, float]:
        """µs of CPU per call by library at ``c``: each thread's busy-sample share x its CPU per call."""
        p = self.profiles[c]
        us: dict[str, float] = defaultdict(float)
        for kind in ("main", "other"):
            busy = p.samples[kind]
            for group, n in p.groups[kind].items():
                us[group] += n / busy * per_call[kind, c] * 1000 if busy else 0.0
        return us

    def _waits_text(self, conns: int) -> str:
        p = self.profiles[conns]
        parts = []
        for kind, name in (("main", "event loop"), ("other", "audit writer")):
            total = p.samples[kind] + sum(p.waits[kind].values())
            if total:
                top = ", ".join(f"{w} {100 * n / total:.0f}%" for w, n in p.waits[kind].most_common(3))
                parts.append(f"{name} {top or 'none'}")
        return f"c={conns}: " + ", ".join(parts)

    def _summary(self, levels: list[int], per_call: dict[tuple[str, int], float]) -> list[str]:
        """The short answer: where the default Bastion's CPU per call goes, by library."""
        names = dict(GROUPS)
        out = [
            "**By library** (each busy sample is charged to the innermost frame of one of these libraries; "
            "event-loop frames are transparent, so a socket write uvloop makes for aiohttp or uvicorn is "
            "theirs, and only what reaches the entry point through the loop alone is the loop's; garbage "
            "collection is `other` wherever it was triggered; everything on the audit writer thread is "
            "`sqlite3 / audit writer`; % of Bastion's CPU per call):",
            "",
            "| library | " + " | ".join(f"c={c} share | c={c} µs/call" for c in levels) + " |",
            "|---|" + "---:|---:|" * len(levels),
        ]
        us = {c: self._group_us(c, per_call) for c in levels}
        total = {c: sum(us[c].values()) or 1.0 for c in levels}
        for key, label in GROUPS:
            if not any(us[c].get(key) for c in levels):
                continue
            cells = " | ".join(f"{100 * us[c][key] / total[c]:.1f}% | {us[c][key]:.0f}" for c in levels)
            add_row = f"| {label} | {cells} |"
            out.append(add_row)
        out.append(
            "| **total** (measured CPU per call) | " + " | ".join(f"100% | {total[c]:.0f}" for c in levels) + " |"
        )
        out.append("")
        out.append("**In short:**")
        out.append("")
        for c in levels:
            ranked = sorted(us[c].items(), key=lambda item: -item[1])
            parts = ", ".join(f"{names[k].split(' (')[0]} {v:.0f} µs" for k, v in ranked if v >= 1)
            out.append(f"- c={c}, {total[c] / 1000:.3f} ms of CPU per call: {parts}.")
        d1 = self.med("direct", 1, "p50_ms")
        b1, n1 = self.med(DEFAULT, 1, "p50_ms"), self.med(NORMAL, 1, "p50_ms")
        cpu_b, cpu_n = self.med(DEFAULT, 1, "server_cpu_ms"), self.med(NORMAL, 1, "server_cpu_ms")
        out.append(
            f"- At c=1 the default Bastion adds {b1 - d1:.3f} ms (p50): its event-loop CPU per call "
            f"({per_call['main', 1]:.3f} ms) plus the wait for the durable decision record, whose commit the call "
            f"awaits before it is forwarded. With `audit.synchronous: normal` the same Bastion adds {n1 - d1:.3f} ms "
            f"and spends {cpu_n:.3f} ms of CPU per call instead of {cpu_b:.3f} ms: the fsync per commit costs about "
            f"{b1 - n1:.3f} ms of latency and {cpu_b - cpu_n:.3f} ms of CPU per call here."
        )
        out.append(
            "- One event loop does all the request work, so throughput is about 1 / (event-loop CPU per call) "
            "whatever the concurrency; the audit writer thread runs beside it (on the other core) and batches "
            "commits, so its cost per call falls with concurrency."
        )
        return out

    def profile_markdown(self) -> str:
        if not self.profiles:
            return self.profile_note or "No profile."
        names = {"main": "event-loop thread", "other": "audit writer thread"}
        short = {"sqlite": "sqlite3/audit", "bastion": "bastion", "loop": "event loop", "other": "other"}
        out: list[str] = []
        add = out.append
        levels = sorted(self.profiles)
        runs = ", ".join(
            f"c={c}: {sum(self.profiles[c].samples.values()):,} busy samples"
            + (f" at {self.profile_runs[c].throughput:,.0f} calls/s" if c in self.profile_runs else "")
            for c in levels
        )
        native = all(self.profiles[c].native for c in levels)
        per_call = self._per_call(levels)
        split = "; ".join(
            f"c={c}: event loop {per_call['main', c]:.3f} ms + audit writer {per_call['other', c]:.3f} ms "
            f"(kernel part: {self.med(DEFAULT, c, 'server_sys_ms'):.3f} ms of the total, "
            f"{self.med(DEFAULT, c, 'other_sys_ms'):.3f} ms of the audit writer's)"
            for c in levels
        )
        add(
            f"py-spy `record --rate 200 --threads{' --native' if native else ''}` of the default Bastion "
            f"(`audit.synchronous: full`) while wrk drove it ({runs}; sampling slows it down). Bastion is one "
            "Python process; CPU per call by thread, from `/proc/<pid>/task/*/stat` in the measured rounds: "
            f"{split}. Shares are of each thread's busy samples and µs/call = share x that thread's CPU per call."
            + (
                " Samples whose native leaf is a wait (epoll, futex/GIL/queue waits, fdatasync) are left out: "
                + "; ".join(self._waits_text(c) for c in levels)
                + "."
                if native
                else " Without native frames some waiting is counted as busy."
            )
        )
        add("")
        out.extend(self._summary(levels, per_call))
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
            order: dict[str, float] = defaultdict(float)
            for c in levels:
                total = self.profiles[c].samples[kind] or 1
                for step, n in self.profiles[c].steps[kind].items():
                    order[step] += n / total
            for step in sorted(order, key=lambda s: -order[s])[:16]:
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
                add(
                    "**event-loop thread, hottest functions by total time** (a Python function and all it calls; "
                    "entry-point frames left out)"
                )
                add("")
                add("| function | library | " + " | ".join(f"c={c} share | c={c} µs/call" for c in levels) + " |")
                add("|---|---|" + "---:|---:|" * len(levels))
                rank: dict[str, float] = defaultdict(float)
                for c in levels:
                    for function, n in self.profiles[c].total[kind].items():
                        rank[function] += n / (self.profiles[c].samples[kind] or 1)
                for function in sorted(rank, key=lambda f: -rank[f])[:20]:
                    group = next(
                        (
                            self.profiles[c].total_group[function]
                            for c in levels
                            if function in self.profiles[c].total_group
                        ),
                        "other",
                    )
                    cells = []
                    for c in levels:
                        share = self.profiles[c].total[kind][function] / (self.profiles[c].samples[kind] or 1)
                        cells.append(f"{100 * share:.1f}% | {share * per_call[kind, c] * 1000:.0f}")
                    add(f"| {function} | {short.get(group, group)} | " + " | ".join(cells) + " |")
                add("")
            for c in levels if kind == "main" else levels[-1:]:
                p = self.profiles[c]
                total = p.samples[kind] or 1
                add(f"**{names[kind]}, hottest frames by own time, c={c}**")
                add("")
                add("| frame | library | share | µs/call |")
                add("|---|---|---:|---:|")
                for frame, n in p.own[kind].most_common(12 if kind == "main" else 6):
                    group = p.own_group.get(frame, "other")
                    add(
                        f"| {frame.replace('|', '/')} | {short.get(group, group)} | {100 * n / total:.1f}% | "
                        f"{n / total * per_call[kind, c] * 1000:.0f} |"
                    )
                add("")
        return "\n".join(out)


# --- main -----------------------------------------------------------------------------


def run_rounds(targets: Targets, rounds: int, duration_s: float) -> Iterator[Run]:
    for round_no in range(1, rounds + 1):
        for conns in CONCURRENCIES:
            for target in targets.names:
                run = targets.measure(target, conns, duration_s, round_no)
                flag = f"  ERRORS {run.errors}: {run.first_error}" if run.errors or not run.calls else ""
                print(
                    f"round {round_no} c={conns:<2} {target:14}  {run.throughput:9,.0f} calls/s  "
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
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure the Bastion of this git commit (default configuration) and compare it with this one",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.profile_duration = 1, 2.0, 3.0
    if shutil.which("wrk") is None:
        install = "bash scripts/install-debian-package.sh wrk /usr/bin/wrk"
        print(f"wrk is not installed: run `{install}` (make bench does)", file=sys.stderr)
        return 2
    if not Path(BASTION).exists():
        print(f"{BASTION} not found: install the project into this venv (make bench does)", file=sys.stderr)
        return 2

    try:
        baseline = resolve_baseline(args.baseline) if args.baseline is not None else None
    except Prerequisite as exc:
        print(exc, file=sys.stderr)
        return 2
    if baseline is not None:
        print(f"baseline: {baseline.commit} ({baseline.subject})", flush=True)

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        workdir = Path(tmp)
        targets = Targets(workdir, baseline)
        try:
            targets.start()
            ports = ", ".join(f"{b.name} on :{b.port}" for b in targets.bastions.values())
            print(f"echo upstream on :{targets.echo_port}, {ports}; warming up", flush=True)
            if baseline is not None:
                print(f"baseline: {baseline.config_note(route_egress_keys=targets.baseline_route_egress_keys)}")
            for target in targets.names:
                warm = targets.measure(target, 16, 2.0, 0)
                if warm.errors or not warm.calls:
                    print(f"warm-up against {target} failed: {warm.first_error}\n{targets.logs()}", file=sys.stderr)
                    return 1
            runs = list(run_rounds(targets, args.rounds, args.duration))
            valid = not any(r.errors or not r.calls for r in runs)
            profiles: dict[int, Profile] = {}
            profile_runs: dict[int, Run] = {}
            profile_note = "Profiling skipped (--no-profile)."
            if not valid:
                args.no_profile, profile_note = True, "Profiling skipped: the run is invalid."
            for conns in () if args.no_profile else PROFILED:
                print(f"profiling the default Bastion with py-spy at c={conns}", flush=True)
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
                print("timing the policy decision, authentication and audit work in-process", flush=True)
                micro = microbench(targets)
        except Prerequisite as exc:  # from targets.start(): the baseline cannot be run
            print(exc, file=sys.stderr)
            return 2
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
        baseline=baseline,
        baseline_route_egress_keys=targets.baseline_route_egress_keys,
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
