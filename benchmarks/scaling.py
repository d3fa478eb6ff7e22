"""The scaling rows of ``make bench`` (issue 16): Bastion's cost against the size of a call's
arguments, the number of open MCP sessions, the number of routes and the size of the policy set.

Measured after the main rounds, on this checkout's Bastion in the default configuration only:

- **argument size:** wrk at c=16 (CPU per call is judged under load) with a ``message`` argument of
  1 KB, 100 KB and 1 MB (``BENCH_ARG_BYTES``), directly against the echo upstream and through the
  default Bastion, interleaved; the echo sends the message back, so the answer is as large. Bastion's
  defaults admit 1 MB as they stand: ``server.max_body_bytes`` is 4 MiB,
  ``server.argument_limits.max_string_chars`` 1,048,576 characters (the arguments, stored by the
  default ``audit.store_arguments``, go into the audit log too);
- **open sessions:** a fresh Bastion, ``bastion-sessions``: one wrk run at c=16 and its resident
  memory (``VmRSS`` of ``/proc/<pid>/status``) after it, then the same after opening sessions up
  to 1,000 and 10,000 (``initialize``, ``notifications/initialized`` and one ``tools/call``, as a
  client does, left open: a session lives until it is idle for ``server.session_idle_s``, an hour);
- **routes:** two fresh Bastions, one with 1 route and one with 100 (99 others to paths of the
  same echo upstream first, the measured one last), interleaved at c=16, and the RSS of each;
- **the floor:** ``benchmarks/floor_app.py`` (Bastion's HTTP server, upstream client and durable
  audit log around each call, none of its checks) and the default Bastion, interleaved at c=1 and
  c=16, CPU per call split into the event loop and the audit writer: what the libraries alone cost,
  and what Bastion's checks add to them;
- **shared stores:** one more Bastion in the default configuration plus ``stores.postgres`` (the audit
  log and revocations in the PostgreSQL on loopback, a schema of its own) and ``stores.redis`` (the
  sessions in the Redis on loopback), against the default Bastion at c=1 and c=16: what replicas'
  shared state costs one of them (the PostgreSQL and Redis servers' own CPU is not counted);
- **replicas:** ``replicas.measure_replicas``: two such Bastions behind HAProxy (round robin) against
  one, at c=16 and c=64 (see ``benchmarks/replicas.py``);
- **policy-set size:** ``policy_scale.measure`` (in this process, no server) at 10, 100, 1,000
  and 3,000 policies: ``PolicyEngine.decide`` p50/p99 uncached and cached (the decision memo), what
  the policies that cannot apply add to it, a 100-tool list's time and its longest stall of the event
  loop, and the load time.

Two interleaved rounds of the argument-size, route, floor and shared-stores rows, one run per session count; ``--quick``
measures one round of each, with 300 calls and one list per policy-set size (1,000 calls and three
lists otherwise). ``--no-scaling`` leaves all of them out.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from echo_upstream import PROTOCOL_VERSION
from load import Endpoint, Run, measure, progress
from results import Verdict, median
from scenario import DEFAULT

if TYPE_CHECKING:
    from replicas import ReplicaRun
    from targets import Targets

CONNS = 16
ARG_SIZES = (1_000, 100_000, 1_000_000)
SESSION_COUNTS = (0, 1_000, 10_000)
ROUTE_COUNTS = (1, 100)
FLOOR = "floor"
FLOOR_CONNS = (1, 16)
SHARED = "bastion-shared"
SHARED_POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SHARED_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
"""Where the shared-stores row keeps its state (the services every machine of ours runs on loopback)."""
POLICY_SIZES = (10, 100, 1_000, 3_000)
TARGET_DECIDE_P99_US = 50.0
TARGET_LIST100_MS = 20.0
"""Issue 16's targets with 1,000 policies (``decide`` p99 uncached)."""
POLICY_COLUMNS = (
    ("decide p50 µs", "decide_p50_us", "{:.1f}"),
    ("decide p99 µs", "decide_p99_us", "{:.1f}"),
    ("cached p50 µs", "cached_p50_us", "{:.1f}"),
    ("cached p99 µs", "cached_p99_us", "{:.1f}"),
    ("unrelated µs", "unrelated_us", "{:+.1f}"),
    ("100-tool list ms", "list100_ms", "{:.1f}"),
    ("longest stall ms", "list_stall_ms", "{:.1f}"),
    ("load s", "load_s", "{:.2f}"),
)
"""The policy-set table's columns after the size: header, ``policy_scale.measure``'s key, format."""


def size_label(n: int) -> str:
    """``1_000`` -> ``1 KB``, ``1_000_000`` -> ``1 MB`` (decimal units, as the sizes are chosen)."""
    return f"{n / 1e6:g} MB" if n >= 1_000_000 else f"{n / 1e3:g} KB"


def vm_rss_kib(status: str) -> int:
    """The ``VmRSS`` line of a ``/proc/<pid>/status`` text, in KiB; ValueError if it has none."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line (a kernel thread, or the process has exited)")


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return vm_rss_kib(handle.read()) / 1024


@dataclass
class SessionPoint:
    """Bastion with ``sessions`` sessions opened besides wrk's: its RSS after one run at c=16, and the run."""

    sessions: int
    rss_mib: float
    run: Run


@dataclass
class Scaling:
    """The figures of the scaling rows; ``rows`` methods give their tables (strings, for both reports)."""

    arguments: list[Run] = field(default_factory=list)
    """Runs at c=16 with ``arg_bytes`` set; target ``direct`` or ``DEFAULT``."""
    sessions: list[SessionPoint] = field(default_factory=list)
    routes: dict[int, list[Run]] = field(default_factory=dict)
    routes_rss_mib: dict[int, float] = field(default_factory=dict)
    """Per route count: the Bastion's RSS after its last run."""
    policies: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per policy-set size: ``policy_scale.measure``'s figures."""
    floor: list[Run] = field(default_factory=list)
    """Runs at :data:`FLOOR_CONNS` of target :data:`FLOOR` and ``DEFAULT``, interleaved."""
    shared: list[Run] = field(default_factory=list)
    """Runs at :data:`FLOOR_CONNS` of target :data:`SHARED` and ``DEFAULT``, interleaved."""
    replicas: list[ReplicaRun] = field(default_factory=list)
    """The replica rows' runs (``replicas.measure_replicas``)."""

    def runs(self) -> list[Run]:
        """Every wrk run of the scaling rows (a run with errors makes the whole run invalid)."""
        routes = (r for runs in self.routes.values() for r in runs)
        replicas = (r.run for r in self.replicas)
        return [*self.arguments, *(p.run for p in self.sessions), *routes, *self.floor, *self.shared, *replicas]

    def floor_rows(self) -> list[tuple[str, ...]]:
        """Per concurrency: CPU per call (total, event loop / audit writer) of the floor and of Bastion,
        their difference, and each one's p50 latency; medians over the rounds."""
        return _versus(self.floor, FLOOR, "floor")

    def shared_rows(self) -> list[tuple[str, ...]]:
        """The same columns for Bastion on PostgreSQL + Redis (``shared``) against the embedded default;
        empty when they were not measured (no PostgreSQL or Redis to use)."""
        return _versus(self.shared, SHARED, "shared") if self.shared else []

    def replica_rows(self) -> list[tuple[str, ...]]:
        """Two replicas behind HAProxy against one (``replicas.replica_rows``); empty when not measured."""
        from replicas import replica_rows

        return replica_rows(self.replicas)

    def argument_med(self, target: str, size: int, attr: str) -> float:
        """Median of ``attr`` over the argument-size runs of ``target`` with ``size``-byte arguments."""
        return median([r for r in self.arguments if r.target == target and r.arg_bytes == size], attr)

    def argument_rows(self) -> list[tuple[str, ...]]:
        """(argument, direct calls/s, echo CPU per call ms, Bastion calls/s, p50 ms, CPU per call ms)."""
        head = ("argument", "direct calls/s", "echo CPU/call ms", "Bastion calls/s", "Bastion p50 ms")
        rows: list[tuple[str, ...]] = [(*head, "Bastion CPU/call ms")]
        for size in ARG_SIZES:
            direct, bastion = (
                {attr: self.argument_med(target, size, attr) for attr in ("throughput", "p50_ms", "server_cpu_ms")}
                for target in ("direct", DEFAULT)
            )
            rows.append((size_label(size), f"{direct['throughput']:,.0f}", f"{direct['server_cpu_ms']:.3f}",
                         f"{bastion['throughput']:,.0f}", f"{bastion['p50_ms']:.2f}",
                         f"{bastion['server_cpu_ms']:.3f}"))  # fmt: skip
        return rows

    def session_rows(self) -> list[tuple[str, ...]]:
        """(sessions open, RSS MiB, added KiB per session, calls/s, CPU per call ms)."""
        rows: list[tuple[str, ...]] = [("sessions open", "RSS MiB", "added KiB/session", "calls/s", "CPU/call ms")]
        base = self.sessions[0].rss_mib if self.sessions else 0.0
        for point in self.sessions:
            added = f"{(point.rss_mib - base) * 1024 / point.sessions:.1f}" if point.sessions else "-"
            rows.append((f"{point.sessions:,}", f"{point.rss_mib:.0f}", added, f"{point.run.throughput:,.0f}",
                         f"{point.run.server_cpu_ms:.3f}"))  # fmt: skip
        return rows

    def route_rows(self) -> list[tuple[str, ...]]:
        """(routes, RSS MiB, calls/s, p50 ms, CPU per call ms), medians over the rounds."""
        rows: list[tuple[str, ...]] = [("routes", "RSS MiB", "calls/s", "p50 ms", "CPU/call ms")]
        for count, runs in self.routes.items():
            rows.append((str(count), f"{self.routes_rss_mib[count]:.0f}", f"{median(runs, 'throughput'):,.0f}",
                         f"{median(runs, 'p50_ms'):.3f}", f"{median(runs, 'server_cpu_ms'):.3f}"))  # fmt: skip
        return rows

    def policy_rows(self) -> list[tuple[str, ...]]:
        """(policies, then every figure of :data:`POLICY_COLUMNS`) per policy-set size."""
        rows: list[tuple[str, ...]] = [("policies", *(header for header, _, _ in POLICY_COLUMNS))]
        for size, f in self.policies.items():
            rows.append((f"{size:,}", *(form.format(f[key]) for _, key, form in POLICY_COLUMNS)))
        return rows

    def targets(self) -> list[Verdict]:
        """Issue 16's policy targets at 1,000 policies, judged (uncached ``decide`` p99, the 100-tool list)
        or given as figures (what unrelated policies add, the longest stall); empty if not measured."""
        found = self.policies.get(1_000)
        if found is None:
            return []
        p99, listing = found["decide_p99_us"], found["list100_ms"]
        return [
            (f"decide p99 (uncached) <= {TARGET_DECIDE_P99_US:g} µs with 1,000 policies", f"{p99:.1f} µs",
             p99 <= TARGET_DECIDE_P99_US),
            (f"100-tool list <= {TARGET_LIST100_MS:g} ms with 1,000 policies", f"{listing:.1f} ms",
             listing <= TARGET_LIST100_MS),
            ("unrelated policies near zero: what 1,000 policies that cannot apply add to decide",
             f"{found['unrelated_us']:+.1f} µs", None),
            ("longest stall of the event loop in a 100-tool list with 1,000 policies",
             f"{found['list_stall_ms']:.1f} ms", None),
        ]  # fmt: skip


def measure_scaling(targets: Targets, duration_s: float, *, quick: bool = False) -> Scaling:
    """Measure every scaling row (see the module docstring) against the running ``targets`` with wrk
    runs of ``duration_s``, printing each run."""
    scaling = Scaling()
    rounds = 1 if quick else 2
    for round_no in range(1, rounds + 1):
        for size in ARG_SIZES:
            for target in ("direct", DEFAULT):
                run = measure(targets.endpoint(target), CONNS, duration_s, round_no, arg_bytes=size)
                print(f"arguments {size_label(size):>6} round {round_no} {target:14}  {progress(run)}", flush=True)
                scaling.arguments.append(run)
    measure_sessions(targets, duration_s, scaling)
    measure_routes(targets, rounds, duration_s, scaling)
    measure_floor(targets, rounds, duration_s, scaling)
    measure_shared(targets, rounds, duration_s, scaling)
    from replicas import measure_replicas  # imported here: it imports this module

    scaling.replicas = measure_replicas(targets, rounds, duration_s)
    calls, lists = (300, 1) if quick else (1000, 3)
    for size in POLICY_SIZES:
        scaling.policies[size] = policy_figures(size, calls, lists)
        f = scaling.policies[size]
        print(f"policies {size:>5}: decide p50 {f['decide_p50_us']:.1f} µs p99 {f['decide_p99_us']:.1f} µs, "
              f"cached p50 {f['cached_p50_us']:.1f} µs, unrelated {f['unrelated_us']:+.1f} µs, "
              f"100-tool list {f['list100_ms']:.1f} ms (longest stall {f['list_stall_ms']:.1f} ms)",
              flush=True)  # fmt: skip
    return scaling


def measure_sessions(targets: Targets, duration_s: float, scaling: Scaling) -> None:
    """The open-sessions rows on a fresh Bastion (stopped afterwards): see the module docstring."""
    bastion = targets.add_bastion("bastion-sessions")
    try:
        opened = 0
        for count in SESSION_COUNTS:
            asyncio.run(open_sessions(bastion.url, bastion.token, count - opened))
            opened = count
            run = measure(targets.endpoint(bastion.name), CONNS, duration_s, 1)
            point = SessionPoint(count, rss_mib(bastion.pid), run)
            print(f"sessions {count:>6,}: RSS {point.rss_mib:6.1f} MiB  {progress(run)}", flush=True)
            scaling.sessions.append(point)
    finally:
        targets.stop_bastion(bastion.name)


def measure_routes(targets: Targets, rounds: int, duration_s: float, scaling: Scaling) -> None:
    """The routes rows on fresh Bastions (stopped afterwards): see the module docstring."""
    names = {count: targets.add_bastion(f"bastion-routes-{count}", routes=count).name for count in ROUTE_COUNTS}
    try:
        for round_no in range(1, rounds + 1):
            for count, name in names.items():
                run = measure(targets.endpoint(name), CONNS, duration_s, round_no)
                print(f"routes {count:>3} round {round_no}  {progress(run)}", flush=True)
                scaling.routes.setdefault(count, []).append(run)
        for count, name in names.items():
            scaling.routes_rss_mib[count] = rss_mib(targets.bastions[name].pid)
    finally:
        for name in names.values():
            targets.stop_bastion(name)


def measure_floor(targets: Targets, rounds: int, duration_s: float, scaling: Scaling) -> None:
    """The floor rows: ``benchmarks/floor_app.py`` (started here, stopped afterwards) and the default
    Bastion, interleaved at each of :data:`FLOOR_CONNS` (see the module docstring)."""
    floor = targets.start_floor(FLOOR)
    try:
        endpoints = (Endpoint(FLOOR, floor.url, floor.pid, targets.echo_pid), targets.endpoint(DEFAULT))
        scaling.floor.extend(_interleaved(endpoints, rounds, duration_s, "floor"))
    finally:
        floor.stop()


def _interleaved(endpoints: tuple[Endpoint, ...], rounds: int, duration_s: float, label: str) -> Iterator[Run]:
    """``rounds`` rounds of one run per endpoint at each of :data:`FLOOR_CONNS`, interleaved, printed."""
    for round_no in range(1, rounds + 1):
        for conns in FLOOR_CONNS:
            for endpoint in endpoints:
                run = measure(endpoint, conns, duration_s, round_no)
                print(f"{label} rows round {round_no} c={conns:<2} {endpoint.name:14}  {progress(run)}", flush=True)
                yield run


def _versus(runs: list[Run], other: str, label: str) -> list[tuple[str, ...]]:
    """Per concurrency of :data:`FLOOR_CONNS`: the CPU per call (total, event loop / audit writer thread)
    and p50 of target ``other`` (shown as ``label``) and of the default Bastion, and their difference;
    medians over the rounds."""
    rows: list[tuple[str, ...]] = [("c", f"{label} CPU/call ms", "loop / audit", "Bastion CPU/call ms", "loop / audit",
                                    f"Bastion - {label} ms", f"{label} p50 ms", "Bastion p50 ms")]  # fmt: skip
    for conns in FLOOR_CONNS:
        them, bastion = (
            {attr: median([r for r in runs if r.target == target and r.conns == conns], attr)
             for attr in ("server_cpu_ms", "main_cpu_ms", "other_cpu_ms", "p50_ms")}
            for target in (other, DEFAULT)
        )  # fmt: skip
        rows.append((str(conns), f"{them['server_cpu_ms']:.3f}",
                     f"{them['main_cpu_ms']:.3f} / {them['other_cpu_ms']:.3f}",
                     f"{bastion['server_cpu_ms']:.3f}",
                     f"{bastion['main_cpu_ms']:.3f} / {bastion['other_cpu_ms']:.3f}",
                     f"{bastion['server_cpu_ms'] - them['server_cpu_ms']:+.3f}",
                     f"{them['p50_ms']:.3f}", f"{bastion['p50_ms']:.3f}"))  # fmt: skip
    return rows


def measure_shared(targets: Targets, rounds: int, duration_s: float, scaling: Scaling) -> None:
    """The shared-stores rows: one more Bastion, :data:`SHARED`, in the default configuration plus
    ``stores.postgres`` (a schema of its own, dropped afterwards) and ``stores.redis`` (a key prefix of
    its own, deleted afterwards), against the default Bastion, interleaved at each of
    :data:`FLOOR_CONNS`. Skipped, with a message, when it cannot start (no PostgreSQL or Redis)."""
    tag = f"bench_{uuid.uuid4().hex[:12]}"
    stores = (f"stores:\n  postgres: {{url: '{SHARED_POSTGRES}', schema: {tag}}}\n"
              f"  redis: {{url: '{SHARED_REDIS}', prefix: '{tag}:'}}\n")  # fmt: skip
    try:
        bastion = targets.add_bastion(SHARED, extra=stores)
    except RuntimeError as exc:
        print(f"shared-stores rows skipped: {exc}".splitlines()[0], flush=True)
        return
    try:
        scaling.shared.extend(_interleaved((targets.endpoint(SHARED), targets.endpoint(DEFAULT)), rounds, duration_s,
                                           "shared"))  # fmt: skip
    finally:
        targets.stop_bastion(bastion.name)
        asyncio.run(_forget_shared(tag))


async def _forget_shared(tag: str) -> None:
    """Drop the shared-stores row's PostgreSQL schema and delete its Redis keys."""
    import asyncpg
    from redis.asyncio import Redis

    connection = await asyncpg.connect(SHARED_POSTGRES)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
    finally:
        await connection.close()
    async with Redis.from_url(SHARED_REDIS) as client:
        keys = [key async for key in client.scan_iter(match=f"{tag}:*")]
        if keys:
            await client.delete(*keys)


def policy_figures(size: int, calls: int, lists: int) -> dict[str, float]:
    """``policy_scale.measure(size, calls, lists)``, imported here: it loads Bastion's policy engine."""
    from policy_scale import measure as measure_policies

    return measure_policies(size, calls, lists)


async def open_sessions(url: str, token: str, count: int, concurrency: int = 16) -> None:
    """Open ``count`` MCP sessions at ``url`` with bearer ``token`` and use each once, as a client does
    (``initialize``; ``notifications/initialized`` and one ``tools/call`` of ``echo`` with the
    ``Mcp-Session-Id`` it got back), ``concurrency`` at a time on kept-alive connections, and leave them
    open. RuntimeError on the first ``initialize`` not answered 200 with a session id, notification not
    answered 202 or call not answered 200 with a JSON-RPC result."""
    import aiohttp

    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "authorization": f"Bearer {token}",
    }
    params = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
    initialize = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}).encode()
    initialized = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    call = {"name": "echo", "arguments": {"message": "hello"}}
    called = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}).encode()
    pending = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as client:

        async def open_one() -> None:
            async with client.post(url, data=initialize, headers=headers) as response:
                body = await response.read()
                session = response.headers.get("mcp-session-id")
            if response.status != 200 or session is None:
                raise RuntimeError(f"initialize answered {response.status}: {body[:200]!r}")
            ready = {**headers, "mcp-session-id": session, "mcp-protocol-version": PROTOCOL_VERSION}
            async with client.post(url, data=initialized, headers=ready) as response:
                body = await response.read()
            if response.status != 202:
                raise RuntimeError(f"notifications/initialized answered {response.status}: {body[:200]!r}")
            async with client.post(url, data=called, headers=ready) as response:
                body = await response.read()
            if response.status != 200 or b'"result"' not in body:
                raise RuntimeError(f"tools/call answered {response.status}: {body[:200]!r}")

        async def worker() -> None:
            for _ in pending:
                await open_one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
