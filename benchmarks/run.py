#!/usr/bin/env python3
"""``make bench``: ``tools/call`` directly against a fast echo upstream and through Bastion.

What it does, in one run (about five minutes):

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
   committed append with each ``synchronous`` setting; and what metrics and tracing add per call,
   on and off (``benchmarks/observability.py``: ``metrics_cost.py`` in a child process, also against
   the baseline's ``src`` with ``--baseline``);
6. measures the scaling rows (``benchmarks/scaling.py``, about two minutes): CPU per call
   at c=16 against the size of a call's argument (1 KB, 100 KB, 1 MB; direct and through the
   default Bastion), Bastion's resident memory with 0, 1,000 and 10,000 open sessions (and a run
   with them open), CPU per call with 1 and 100 routes (fresh Bastions), the floor
   (``benchmarks/floor_app.py``: Bastion's HTTP server, upstream client and durable audit log around
   each call with none of its checks, against the default Bastion at c=1 and c=16), and
   ``PolicyEngine.decide`` p50/p99 and a 100-tool list against policy sets of 10 to 3,000 policies
   (``benchmarks/policy_scale.py``'s ``measure``);
7. prints the figures side by side, writes ``docs/benchmarks.md`` and draws its chart,
   ``docs/img/bench.png`` (``benchmarks/charts.py``; beside ``--output``, in ``img/``). The
   targets are judged on the default configuration; ``synchronous=normal`` is shown for comparison.

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
``--duration``, ``--quick``, ``--no-profile``, ``--no-scaling`` (skip step 6: the chart's scaling
panels say "not measured"; for a quick look at the hot path or a baseline comparison),
``--output``, ``--baseline``.

This file is the command line; the work is in its sibling modules, imported by name (this
directory is first on ``sys.path`` when the script runs): ``scenario`` (what is measured and the
policy set), ``processes`` (ports, readiness, stopping, CPU time from ``/proc``), ``baseline``
(``--baseline``: the commit and its extracted ``src``), ``targets`` (the echo upstream and the
``bastion serve`` processes), ``load`` (wrk runs and rounds), ``profiling`` (py-spy),
``timers``, ``inprocess`` and ``inprocess_auth`` (the in-process rows), ``scaling`` (the scaling
rows), ``results`` (the figures and their tables), ``report`` and ``profile_report`` (the terminal
summary and the document), ``charts`` (its chart), ``render`` (what this report and ``make
bench-peers``'s render alike, and writing them). ``make bench-peers`` (``benchmarks/peers.py``) reuses
the echo upstream, the default Bastion, the wrk script and rounds, and measures the peers beside them.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

from baseline import resolve_baseline
from charts import CHART, draw
from inprocess import microbench
from load import Run, measure, run_rounds
from observability import Observability, measure_observability
from processes import Prerequisite
from profiling import Profile, profile_bastion
from render import finish
from report import markdown, text
from results import Results
from scaling import Scaling, measure_scaling
from scenario import BASELINE, CONCURRENCIES, PROFILED, REPO
from targets import BASTION, Targets


def main() -> int:
    parser = argparse.ArgumentParser(description="tools/call directly and through Bastion (make bench)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--profile-duration", type=float, default=6.0)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling rows (issue 16)")
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
                warm = measure(targets.endpoint(target), 16, 2.0, 0)
                if warm.errors or not warm.calls:
                    print(f"warm-up against {target} failed: {warm.first_error}\n{targets.logs()}", file=sys.stderr)
                    return 1
            endpoints = [targets.endpoint(target) for target in targets.names]
            runs = list(run_rounds(endpoints, CONCURRENCIES, args.rounds, args.duration))
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
            observability: Observability | None = None
            if valid:
                print("timing what metrics and tracing add per call, in-process", flush=True)
                source = workdir / BASELINE / "src" if baseline is not None else None  # targets.start extracted it
                observability = measure_observability(source, baseline.short if baseline else "baseline",
                                                      quick=args.quick)  # fmt: skip
            scaling: Scaling | None = None
            if valid and not args.no_scaling:
                print("measuring the scaling rows: argument size, open sessions, routes, policy-set size", flush=True)
                scaling = measure_scaling(targets, args.duration, quick=args.quick)
        except Prerequisite as exc:  # from targets.start(): the baseline cannot be run
            print(exc, file=sys.stderr)
            return 2
        finally:
            targets.stop()
    results = Results(
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
        scaling=scaling,
        observability=observability,
    )
    return finish(results, args.output, text, markdown, CHART, draw)


if __name__ == "__main__":
    sys.exit(main())
