#!/usr/bin/env python3
"""The replica rows of ``make bench`` (issue 17): two Bastion replicas behind HAProxy against one.

Two more Bastions of this checkout in the default configuration plus ``stores.postgres`` (a schema
of their own) and ``stores.redis`` (a key prefix of their own) on the PostgreSQL and Redis on
loopback, with one ``server.public_url`` (the tokens' audience) and one signing key (the second is
given the first's), and HAProxy from Debian (``make haproxy``) in front of them, round robin, no
stickiness: every call of a wrk session may reach either replica, which is what the shared sessions
are for. Three setups, interleaved at c=16 and c=64:

- ``one replica``: the first replica, called directly;
- ``one replica behind HAProxy``: the same through a balancer with it alone (what the balancer costs);
- ``two replicas behind HAProxy``: both through the balancer.

Per setup: calls/s, p50/p99, the CPU per call of the replicas and HAProxy together (``utime + stime``
from ``/proc``; PostgreSQL, Redis, the echo upstream and wrk not counted), how busy the machine's
cores were during the run (``/proc/stat``: every process, the measured ones and any other), and what
the calls asked of PostgreSQL: its write transactions per call (the next transaction id before and
after, every client's: nothing else writes there during ``make bench``) and the CPU per call of its
processes (every ``postgres`` process of the machine). These say why a second replica costs
CPU per call: the audit log's transactions serialize on the chain's head row, so two replicas each
commit smaller batches, more transactions per call, each one round trips and Python work. On a
machine with two cores, one replica at c=16 already keeps most of one core busy, and the second
replica shares the two cores with the first, HAProxy, PostgreSQL, Redis, the echo upstream and wrk:
the cores set the limit, not Bastion.

``python benchmarks/replicas.py`` measures these rows alone (``--rounds``, ``--duration``) and prints
them; ``make bench`` measures them with the scaling rows.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from load import Endpoint, Run, measure, progress
from processes import Server, cpu_seconds, free_port
from scaling import SHARED_POSTGRES, SHARED_REDIS, _forget_shared

if TYPE_CHECKING:
    from targets import BastionServer, Targets

REPLICA_CONNS = (16, 64)
ONE, ONE_BALANCED, TWO = "one replica", "one replica behind HAProxy", "two replicas behind HAProxy"
SETUPS = (ONE, ONE_BALANCED, TWO)
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass(frozen=True)
class ReplicaRun:
    """One wrk run of one setup: the run, the CPU per call of the replicas and HAProxy together and of
    HAProxy alone (ms), and the share of the machine's CPU time that was busy during it (0 to 1)."""

    setup: str
    run: Run
    cpu_ms: float
    haproxy_cpu_ms: float
    busy: float
    pg_xacts: float = 0.0
    pg_cpu_ms: float = 0.0


@dataclass
class Balancer(Server):
    """HAProxy on ``port``, round robin over the Bastions on ``backends`` (no stickiness); with
    ``host``, the ``Host`` header it forwards is that (the replicas' public URL), whatever the port
    the client called."""

    name: str
    workdir: Path
    port: int
    backends: Sequence[int]
    host: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.workdir / f"{self.name}.cfg"
        config.write_text(haproxy_config(self.port, self.backends, self.host), encoding="utf-8")
        self.spawn([HAPROXY, "-f", str(config), "-db"])
        self.wait_ready("/healthz")


def haproxy_config(port: int, backends: Sequence[int], host: str = "") -> str:
    """HAProxy's configuration: HTTP on 127.0.0.1:``port``, round robin over 127.0.0.1:``backends``,
    each request balanced on its own; ``host``: see :class:`Balancer`."""
    servers = "".join(f"    server r{n} 127.0.0.1:{backend}\n" for n, backend in enumerate(backends))
    rewrite = f"    http-request set-header host {host}\n" if host else ""
    return (
        "global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 2s\n"
        "    timeout client 1h\n    timeout server 1h\n    timeout http-keep-alive 30s\n\n"
        f"frontend bastion\n    bind 127.0.0.1:{port}\n{rewrite}    default_backend replicas\n\n"
        f"backend replicas\n    balance roundrobin\n{servers}"
    )


def busy_ticks() -> tuple[int, int]:
    """``(busy, total)`` CPU ticks of the whole machine so far (``/proc/stat``, idle and iowait idle)."""
    with open("/proc/stat", encoding="ascii") as handle:
        ticks = [int(v) for v in handle.readline().split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every ``postgres`` process of the machine, by pid."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text(encoding="ascii").strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


def next_transaction_id() -> int:
    """The shared PostgreSQL's next transaction id (``xmax`` of a snapshot; it takes none itself):
    every transaction that writes, of any client, takes one, so the difference of two readings is
    how many write transactions committed or failed between them, exactly and at once (the
    statistics views lag by up to seconds)."""
    import asyncpg

    async def read() -> int:
        connection = await asyncpg.connect(SHARED_POSTGRES)
        try:
            return int(await connection.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))
        finally:
            await connection.close()

    return asyncio.run(read())


def measure_setup(
    setup: str, endpoint: Endpoint, replicas: Sequence[int], haproxy: int | None, conns: int, duration_s: float,
    round_no: int,
) -> ReplicaRun:  # fmt: skip
    """One wrk run of ``endpoint``, with the CPU of the ``replicas`` and ``haproxy`` pids, PostgreSQL's
    processes and its committed transactions around it."""
    pids = [*replicas, *([haproxy] if haproxy is not None else [])]
    xacts0, pg0 = next_transaction_id(), postgres_cpu()
    before, machine0 = [cpu_seconds(pid) for pid in pids], busy_ticks()
    run = measure(endpoint, conns, duration_s, round_no)
    after, machine1 = [cpu_seconds(pid) for pid in pids], busy_ticks()
    xacts1, pg1 = next_transaction_id(), postgres_cpu()
    requests = max(run.requests, 1)
    spent = [(b - a) / requests * 1000 for a, b in zip(before, after, strict=True)]
    total = max(machine1[1] - machine0[1], 1)
    pg_spent = sum(seconds - pg0.get(pid, 0.0) for pid, seconds in pg1.items())  # new backends from 0
    return ReplicaRun(setup, run, sum(spent), spent[-1] if haproxy is not None else 0.0,
                      (machine1[0] - machine0[0]) / total, (xacts1 - xacts0) / requests,
                      pg_spent / requests * 1000)  # fmt: skip


def measure_replicas(targets: Targets, rounds: int, duration_s: float) -> list[ReplicaRun]:
    """The replica rows (see the module docstring) next to the running ``targets``; every process
    they start is stopped afterwards and the stores' schema and keys removed. Empty, with a message,
    when the replicas or HAProxy cannot start (no PostgreSQL, Redis or haproxy)."""
    tag = f"bench_{uuid.uuid4().hex[:12]}"
    stores = (f"stores:\n  postgres: {{url: '{SHARED_POSTGRES}', schema: {tag}}}\n"
              f"  redis: {{url: '{SHARED_REDIS}', prefix: '{tag}:'}}\n")  # fmt: skip
    two_port, one_port = free_port(), free_port()
    public_url = f"http://127.0.0.1:{two_port}"
    started: list[BastionServer] = []
    balancers = [Balancer("haproxy-one", targets.workdir, one_port, [], host=f"127.0.0.1:{two_port}"),
                 Balancer("haproxy-two", targets.workdir, two_port, [])]  # fmt: skip
    found: list[ReplicaRun] = []
    try:
        started.append(targets.add_bastion("replica-1", extra=stores, public_url=public_url))
        data = targets.workdir / "data-replica-2"
        data.mkdir(mode=0o700)
        shutil.copy2(targets.workdir / "data-replica-1" / "signing-keys.json", data)
        started.append(targets.add_bastion("replica-2", extra=stores, public_url=public_url))
        balancers[0].backends, balancers[1].backends = [started[0].port], [b.port for b in started]
        for balancer in balancers:
            balancer.start()
        first, token, echo = started[0], started[0].token, targets.echo_pid
        path = first.url.removeprefix(f"http://127.0.0.1:{first.port}")
        setups = {
            ONE: (Endpoint(ONE, first.url, first.pid, echo, token), [first.pid], None),
            ONE_BALANCED: (Endpoint(ONE_BALANCED, f"http://127.0.0.1:{one_port}{path}", balancers[0].pid, echo, token),
                           [first.pid], balancers[0].pid),
            TWO: (Endpoint(TWO, f"http://127.0.0.1:{two_port}{path}", balancers[1].pid, echo, token),
                  [b.pid for b in started], balancers[1].pid),
        }  # fmt: skip
        for round_no in range(1, rounds + 1):
            for conns in REPLICA_CONNS:
                for setup, (endpoint, replicas, haproxy) in setups.items():
                    row = measure_setup(setup, endpoint, replicas, haproxy, conns, duration_s, round_no)
                    print(f"replicas round {round_no} c={conns:<2} {setup:28}  {progress(row.run)}  "
                          f"replicas+HAProxy CPU {row.cpu_ms:.3f} ms/call, machine {row.busy:.0%} busy, "
                          f"PostgreSQL {row.pg_xacts:.3f} xact/call {row.pg_cpu_ms:.3f} ms/call",
                          flush=True)  # fmt: skip
                    found.append(row)
    except RuntimeError as exc:
        print(f"replica rows skipped: {exc}".splitlines()[0], flush=True)
        return []
    finally:
        for balancer in balancers:
            balancer.stop()
        for bastion in started:
            targets.stop_bastion(bastion.name)
        asyncio.run(_forget_shared(tag))
    return found


def replica_rows(found: list[ReplicaRun]) -> list[tuple[str, ...]]:
    """Per setup and concurrency: calls/s, its ratio to one replica's, p50, p99, CPU per call
    (replicas + HAProxy, and HAProxy alone) and the machine's busy share; medians over the rounds.
    Empty when not measured."""
    if not found:
        return []
    rows: list[tuple[str, ...]] = [("setup", "c", "calls/s", "vs one", "p50 ms", "p99 ms", "CPU/call ms",
                                    "HAProxy ms", "machine busy", "PG write xact/call", "PG CPU/call ms")]  # fmt: skip

    def med(setup: str, conns: int, figure: Callable[[ReplicaRun], float]) -> float:
        return statistics.median([figure(r) for r in found if r.setup == setup and r.run.conns == conns] or [0.0])

    for conns in REPLICA_CONNS:
        one = med(ONE, conns, lambda r: r.run.throughput)
        for setup in SETUPS:
            calls = med(setup, conns, lambda r: r.run.throughput)
            rows.append((setup, str(conns), f"{calls:,.0f}", f"{calls / one:.2f}x" if one else "-",
                         f"{med(setup, conns, lambda r: r.run.p50_ms):.2f}",
                         f"{med(setup, conns, lambda r: r.run.p99_ms):.2f}",
                         f"{med(setup, conns, lambda r: r.cpu_ms):.3f}",
                         f"{med(setup, conns, lambda r: r.haproxy_cpu_ms):.3f}",
                         f"{med(setup, conns, lambda r: r.busy):.0%}",
                         f"{med(setup, conns, lambda r: r.pg_xacts):.3f}",
                         f"{med(setup, conns, lambda r: r.pg_cpu_ms):.3f}"))  # fmt: skip
    return rows


def main() -> int:
    """Measure the replica rows alone, next to the echo upstream and the default Bastion, and print them."""
    from render import aligned
    from targets import Targets

    parser = argparse.ArgumentParser(description="two Bastion replicas behind HAProxy against one")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None or not Path(HAPROXY).exists():
        print("wrk and haproxy are needed: make haproxy; bash scripts/install-debian-package.sh wrk /usr/bin/wrk",
              file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory(prefix="bastion-bench-replicas-") as tmp:
        targets = Targets(Path(tmp), normal=False)
        try:
            targets.start()
            found = measure_replicas(targets, args.rounds, args.duration)
        finally:
            targets.stop()
    if not found or any(r.run.errors or not r.run.calls for r in found):
        print("the run is invalid (errors, or nothing measured)", file=sys.stderr)
        return 1
    print("\n".join(aligned(replica_rows(found))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
