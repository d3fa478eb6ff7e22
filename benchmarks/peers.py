#!/usr/bin/env python3
"""``make bench-peers``: ``tools/call`` directly against the echo upstream, through Bastion and through
the MCP gateways a user would pick instead, in the same interleaved rounds.

What it does, in one run (about four minutes with the defaults):

1. starts ``benchmarks/echo_upstream.py`` and Bastion in the default configuration of ``make bench``
   (``targets.Targets``, without its ``synchronous=normal`` variant), then the peers of
   ``peer_targets``, each from its own virtual environment under ``.bench/peers/`` (which ``make
   bench-peers`` installs from ``benchmarks/peers/*.txt``) and in front of the same upstream:
   ``fastmcp-default``, ``fastmcp-shared-jwt``, ``contextforge-stateful`` and ``contextforge-stateless``;
2. checks every target with the official MCP SDK client (initialize, list the tools, call the echo
   tool) and warms it up; a peer that fails to start, the check or the warm-up is reported with its
   error and left out, the others are still measured;
3. runs INTERLEAVED rounds (direct, bastion, each peer, direct, ...) of ``wrk -t1 -cN`` with
   ``benchmarks/mcp_session.lua`` (the script of ``make bench``, which serves any MCP gateway) at each
   concurrency (1 and 16; ``--concurrency 1 16 64`` adds 64): calls/s, p50/p99 latency, and CPU per
   request of each gateway's whole process tree (``load.measure`` with ``tree``);
4. prints the tables and the ratio target (Bastion at least 10 times less CPU per call than the best
   peer) and writes ``docs/benchmarks-peers.md`` and its chart ``docs/img/peers.png``.

Exits 1 when the echo upstream alone or Bastion fails its check, its warm-up or any run (the comparison
is void; nothing is written), 2 when a prerequisite is missing (wrk, the bastion script, a peer's
virtual environment). Options: ``--rounds``, ``--duration``, ``--quick``, ``--concurrency``, ``--output``.

The work is in sibling modules: ``peer_targets`` (the peers' processes), ``peer_check`` (the SDK
check), ``peer_results``, ``peer_report`` and ``peer_chart``; the echo upstream and Bastion come from
``targets``, the wrk runs and rounds from ``load``, the end of the run from ``render``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

from load import Endpoint, Run, measure, run_rounds
from peer_chart import CHART, draw
from peer_check import check, describe
from peer_report import bastion_version, markdown, text
from peer_results import DIRECT, PeerResults, Target
from peer_targets import PeerServer, peers
from processes import Prerequisite
from render import finish
from scenario import DEFAULT, REPO
from targets import BASTION, Targets

DIRECT_CONFIGURATION = "The echo upstream alone, no gateway: the floor every gateway adds to."
BASTION_CONFIGURATION = (
    "`bastion serve` in the default configuration `make bench` measures (`benchmarks/targets.py`): one HTTP "
    "route to the echo upstream, the benchmark's Cedar policy set (four policies), a bearer token minted by "
    "`bastion token mint`, the audit log on with `audit.synchronous: full` (the WAL fsynced at every commit), "
    "log level warning; see `docs/benchmarks.md`."
)


WARM_S = 3.0
"""Seconds of the warm-up run at c=16: long enough for the slowest peer (ContextForge stateless, cold)
to open its 16 sessions and complete calls."""


def prerequisites(peer_servers: list[PeerServer]) -> None:
    """Raise ``Prerequisite`` naming the first missing one: wrk, the bastion script, a peer's venv."""
    if shutil.which("wrk") is None:
        raise Prerequisite("wrk is not installed: run `bash scripts/install-debian-package.sh wrk /usr/bin/wrk`")
    if not Path(BASTION).exists():
        raise Prerequisite(f"{BASTION} not found: install the project into this venv (make bench-peers does)")
    for peer in peer_servers:
        peer.require_venv()


def ready(endpoint: Endpoint) -> str | None:
    """The SDK check, then a warm-up run at c=16; None when both passed, else the error."""
    error = check(endpoint)
    if error is not None:
        return f"MCP SDK check: {error}"
    warm = measure(endpoint, 16, WARM_S, 0, tree=True)
    if warm.errors:
        return f"warm-up at c=16: {warm.errors} errors, the first: {warm.first_error}"
    if not warm.calls:
        return f"warm-up at c=16: no call completed in {WARM_S:g} s ({warm.requests} requests answered)"
    return None


def start_peer(peer: PeerServer, upstream_url: str, echo_pid: int) -> tuple[Endpoint | None, Target]:
    """Start ``peer``, check and warm it up: its endpoint (None when it failed) and its description."""
    print(f"starting {peer.name}", flush=True)
    endpoint: Endpoint | None = None
    try:
        peer.start(upstream_url)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the peer is reported failed with it
        error: str | None = f"did not start: {describe(exc)}"
    else:
        endpoint = peer.endpoint(echo_pid)
        error = ready(endpoint)
    if error is not None:
        print(f"{peer.name} FAILED, left out: {error}", flush=True)
        endpoint = None
    return endpoint, Target(peer.name, peer.versions(), peer.configuration(), error)


def main() -> int:
    parser = argparse.ArgumentParser(description="tools/call directly, through Bastion and its peers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs (smoke test)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="wrk connections (default 1 16)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks-peers.md")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2.0

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bastion-bench-peers-") as tmp:
        workdir = Path(tmp)
        targets = Targets(workdir, normal=False)  # Bastion in the default configuration only
        peer_servers = peers(workdir)
        try:
            prerequisites(peer_servers)
            targets.start()
            bastion = targets.default
            print(f"echo upstream on :{targets.echo_port}, bastion on :{bastion.port}", flush=True)
            described = [
                Target(DIRECT, "`benchmarks/echo_upstream.py` of this checkout", DIRECT_CONFIGURATION),
                Target(DEFAULT, bastion_version(), BASTION_CONFIGURATION),
            ]
            endpoints = [targets.endpoint(DIRECT), targets.endpoint(DEFAULT)]
            for endpoint in endpoints:
                error = ready(endpoint)
                if error is not None:
                    print(f"{endpoint.name} is not usable: {error}\n{targets.logs()}", file=sys.stderr)
                    return 1
            for peer in peer_servers:
                started_peer, target = start_peer(peer, targets.direct_url, targets.echo_pid)
                described.append(target)
                if started_peer is not None:
                    endpoints.append(started_peer)
            runs = list(run_rounds(endpoints, args.concurrency, args.rounds, args.duration, tree=True))
        except Prerequisite as exc:
            print(exc, file=sys.stderr)
            return 2
        finally:
            for peer in peer_servers:
                peer.stop()
            targets.stop()
    results = PeerResults(
        runs=runs,
        targets=described,
        concurrencies=tuple(args.concurrency),
        rounds=args.rounds,
        duration_s=args.duration,
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        elapsed_s=time.monotonic() - t0,
        quick=args.quick,
    )
    return finish(results, args.output, text, markdown, CHART, draw)


if __name__ == "__main__":
    sys.exit(main())
