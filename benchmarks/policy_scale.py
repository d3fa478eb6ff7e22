"""How the policy decision scales with the size of the policy set (issue 16).

Run: ``.venv/bin/python benchmarks/policy_scale.py [--sizes 10,100,1000,3000]``. For each size N it
generates N policies of four ordinary shapes, in equal shares, over 50 groups, 20 routes (each route
gets every shape) and 100 tools per route:

- a group's permit on one tool: ``permit (principal in Group::"g7", action == Action::"tools/call",
  resource == Tool::"r3/t42");``
- an argument forbid on a server: ``forbid (...) resource in Server::"r3") when { context.arguments
  has p13 && context.arguments.p13 like "/etc/*" };``
- an email-domain permit on a server: ``permit (...) resource in Server::"r5") when { principal has
  email && principal.email like "*@team9.example" };``
- a risk forbid on a server for a group: ``forbid (principal in Group::"g2", ...) resource in
  Server::"r1") when { resource.risk == "destructive" };``

so about N/20 of them apply to a call on one route (its server-wide policies), the rest name other
routes, tools or groups. It prints, in-process on this machine, for one ``tools/call`` of a person in
three groups on route ``r0``: ``PolicyEngine.decide``'s median and 99th percentile in microseconds
**uncached** (every call carries a new value of an argument a policy reads, so Cedar evaluates the
slice each time) and **cached** (the same call again: the engine's decision memo); the cost of
**unrelated policies** (uncached ``decide`` on a route of its own with 8 policies, with the N others
loaded minus with none: what the N policies that cannot apply add); and for a 100-tool
``tools/list`` of ``r0``: ``filter_listable``'s time in milliseconds (median of a few lists) and the
**longest stall**: the longest stretch of policy work between two yields to the event loop as the
list filter runs it (``bastion.pipeline.stages.inspect``, slices of ``LIST_SLICE_SECONDS``).
Issue 16's targets: ``decide`` p99 at most 50 µs with 1,000 policies, the 100-tool list at most
20 ms with 1,000, unrelated policies near zero.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from bastion.pipeline.stages.inspect import LIST_SLICE_SECONDS
from bastion.policy import PolicyEngine, ResourceRef
from bastion.principal import Principal

GROUPS, ROUTES, TOOLS = 50, 20, 100
PERSON = Principal(kind="User", sub="dana", issuer="https://b.test", auth_method="bastion_jwt", expires_at=0,
                   idp="local", groups=("g1", "g17", "g33"), email="dana@team9.example")  # fmt: skip


def policy_text(n: int, *, route: str | None = None, prefix: str = "p") -> str:
    """``n`` policies of the four shapes of the module docstring, each with its own ``@id``
    (``prefix`` and a number), spread over the 20 routes or all on ``route``."""
    out = []
    for i in range(n):
        group, server, tool = f"g{i % GROUPS}", route or f"r{(i // 4) % ROUTES}", f"t{(i * 7) % TOOLS}"
        call = 'action == Action::"tools/call"'
        shape = i % 4
        if shape == 0:
            body = f'permit (principal in Group::"{group}", {call}, resource == Tool::"{server}/{tool}");'
        elif shape == 1:
            body = (f'forbid (principal, {call}, resource in Server::"{server}") when {{ context.arguments has p{i} '
                    f'&& context.arguments.p{i} like "/etc/*" }};')  # fmt: skip
        elif shape == 2:
            body = (f'permit (principal, {call}, resource in Server::"{server}") when {{ principal has email '
                    f'&& principal.email like "*@team{i % 97}.example" }};')  # fmt: skip
        else:
            body = (f'forbid (principal in Group::"{group}", {call}, resource in Server::"{server}") '
                    'when { resource.risk == "destructive" };')  # fmt: skip
        out.append(f'@id("{prefix}{i}")\n{body}')
    return "\n\n".join(out) + "\n"


def tool(route: str, name: str) -> ResourceRef:
    """A read-only tool of ``route`` as the route's catalog would build it."""
    return ResourceRef.from_tool(route, {"name": name}, risk="read")


HOME = policy_text(8, route="home", prefix="home")
"""Eight policies (two of each shape) on route ``home``, which no generated policy names."""


def load(text: str) -> tuple[PolicyEngine, float]:
    """An engine of ``text`` and its load time in seconds. What was loaded is then kept out of the
    garbage collector's work (``gc.freeze``), as ``bastion serve`` does once started
    (``Gateway.start``): otherwise a full collection in the middle of a measurement walks the
    parsed policies too (here 100-200 ms, which is the collector's pause, not the policy work)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scale.cedar"
        path.write_text(text, encoding="utf-8")
        started = time.perf_counter()
        engine = PolicyEngine.load([path])
        load_s = time.perf_counter() - started
    gc.freeze()
    return engine, load_s


def decide_us(engine: PolicyEngine, target: ResourceRef, calls: int, *, cached: bool) -> list[float]:
    """Sorted ``decide`` times (µs) of ``calls`` calls on ``target``; uncached: a new value of the
    argument ``p1`` (read by a generated forbid) each call."""
    now = int(time.time())
    engine.decide(PERSON, "tools/call", target, {"arguments": {"message": "hi", "p1": "/srv/x"}, "time": now})
    samples = []
    for n in range(calls):
        context = {"arguments": {"message": "hi", "p1": "/srv/x" if cached else f"/srv/{n}"}, "client_id": "agent",
                   "time": now}  # fmt: skip
        start = time.perf_counter()
        engine.decide(PERSON, "tools/call", target, context)
        samples.append((time.perf_counter() - start) * 1e6)
    return sorted(samples)


def p99(samples: list[float]) -> float:
    """The 99th percentile of sorted ``samples``."""
    return samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def list_times(engine: PolicyEngine, lists: int) -> tuple[float, float]:
    """(median time of a 100-tool list in ms, longest stall in ms): the list run as the list filter
    runs it, timed from item to item, a yield whenever ``LIST_SLICE_SECONDS`` of work is done."""
    listing = [tool("r0", f"t{n}") for n in range(TOOLS)]
    context = {"arguments": {}, "client_id": "agent", "time": int(time.time())}
    times, stall = [], 0.0
    for _ in range(lists):
        start = slice_start = time.perf_counter()
        for _listed in engine.iter_listable(PERSON, "tools/call", listing, context):
            now = time.perf_counter()
            if now - slice_start > LIST_SLICE_SECONDS:
                stall, slice_start = max(stall, now - slice_start), now
        now = time.perf_counter()
        stall = max(stall, now - slice_start)
        times.append((now - start) * 1e3)
    return statistics.median(times), stall * 1e3


def measure(size: int, calls: int, lists: int) -> dict[str, float]:
    """The figures of the module docstring for a set of ``size`` policies: ``decide_p50_us``,
    ``decide_p99_us`` (uncached), ``cached_p50_us``, ``cached_p99_us``, ``unrelated_us``,
    ``list100_ms``, ``list_stall_ms`` and ``load_s``."""
    engine, load_s = load(policy_text(size))
    target = tool("r0", "t0")
    uncached = decide_us(engine, target, calls, cached=False)
    cached = decide_us(engine, target, calls, cached=True)
    listing, stall = list_times(engine, lists)
    alone, _ = load(HOME)
    crowded, _ = load(HOME + "\n" + policy_text(size))
    home = tool("home", "t0")
    unrelated = statistics.median(decide_us(crowded, home, calls, cached=False)) - statistics.median(
        decide_us(alone, home, calls, cached=False)
    )
    return {
        "load_s": load_s,
        "decide_p50_us": statistics.median(uncached),
        "decide_p99_us": p99(uncached),
        "cached_p50_us": statistics.median(cached),
        "cached_p99_us": p99(cached),
        "unrelated_us": unrelated,
        "list100_ms": listing,
        "list_stall_ms": stall,
    }


def main() -> None:
    """Print one line per policy-set size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,3000")
    args = parser.parse_args()
    for size in (int(part) for part in args.sizes.split(",")):
        calls, lists = (2000, 5) if size <= 1000 else (1000, 3)
        f = measure(size, calls, lists)
        print(f"{size:>5} policies: decide p50 {f['decide_p50_us']:6.1f} us p99 {f['decide_p99_us']:6.1f} us  "
              f"cached p50 {f['cached_p50_us']:4.1f} us p99 {f['cached_p99_us']:5.1f} us  "
              f"unrelated {f['unrelated_us']:+5.1f} us  100-tool list {f['list100_ms']:6.1f} ms "
              f"(longest stall {f['list_stall_ms']:4.1f} ms)  load {f['load_s']:.1f} s")


if __name__ == "__main__":
    main()
