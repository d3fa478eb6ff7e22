"""How the policy decision scales with the size of the policy set (issue 16's starting figures).

Run: ``.venv/bin/python benchmarks/policy_scale.py [--sizes 10,100,1000,3000]``. For each size N it
generates N policies of four ordinary shapes, in equal shares, over 50 groups, 20 routes and 100
tools per route:

- a group's permit on one tool: ``permit (principal in Group::"g7", action == Action::"tools/call",
  resource == Tool::"r3/t42");``
- an argument forbid on a server: ``forbid (...) resource in Server::"r3") when { context.arguments
  has path && context.arguments.path like "/etc/*" };``
- an email-domain permit on a server: ``permit (...) resource in Server::"r5") when { principal has
  email && principal.email like "*@team9.example" };``
- a risk forbid on a server for a group: ``forbid (principal in Group::"g2", ...) resource in
  Server::"r1") when { resource.risk == "destructive" };``

and prints, in-process on this machine: the median and 99th percentile of ``PolicyEngine.decide``
for one ``tools/call`` (a person in three groups, a tool most policies have nothing to do with),
in microseconds, and the time of ``filter_listable`` on a 100-tool ``tools/list`` of one route, in
milliseconds (median of a few lists; Cedar runs on the calling thread, so this is how long one
list holds the event loop). Issue 16's targets: ``decide`` p99 at most 50 µs with 1,000 policies,
the 100-tool list at most 20 ms with 1,000.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bastion.policy import PolicyEngine, ResourceRef
from bastion.principal import Principal

GROUPS, ROUTES, TOOLS = 50, 20, 100
PERSON = Principal(kind="User", sub="dana", issuer="https://b.test", auth_method="bastion_jwt", expires_at=0,
                   idp="local", groups=("g1", "g17", "g33"), email="dana@team9.example")  # fmt: skip


def policy_text(n: int) -> str:
    """``n`` policies of the four shapes of the module docstring, each with its own ``@id``."""
    out = []
    for i in range(n):
        group, route, tool = f"g{i % GROUPS}", f"r{i % ROUTES}", f"t{(i * 7) % TOOLS}"
        call = 'action == Action::"tools/call"'
        shape = i % 4
        if shape == 0:
            body = f'permit (principal in Group::"{group}", {call}, resource == Tool::"{route}/{tool}");'
        elif shape == 1:
            body = (f'forbid (principal, {call}, resource in Server::"{route}") when {{ context.arguments has p{i} '
                    f'&& context.arguments.p{i} like "/etc/*" }};')  # fmt: skip
        elif shape == 2:
            body = (f'permit (principal, {call}, resource in Server::"{route}") when {{ principal has email '
                    f'&& principal.email like "*@team{i % 97}.example" }};')  # fmt: skip
        else:
            body = (f'forbid (principal in Group::"{group}", {call}, resource in Server::"{route}") '
                    'when { resource.risk == "destructive" };')  # fmt: skip
        out.append(f'@id("p{i}")\n{body}')
    return "\n\n".join(out) + "\n"


def tool(route: str, name: str) -> ResourceRef:
    """A read-only tool of ``route`` as the route's catalog would build it."""
    return ResourceRef.from_tool(route, {"name": name}, risk="read")


def measure(size: int, calls: int, lists: int) -> dict[str, float]:
    """``decide_p50_us``, ``decide_p99_us`` and ``list100_ms`` for a set of ``size`` policies."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scale.cedar"
        path.write_text(policy_text(size), encoding="utf-8")
        started = time.perf_counter()
        engine = PolicyEngine.load([path])
        load_s = time.perf_counter() - started
    target = tool("r19", "t99")
    context = {"arguments": {"message": "hello"}, "client_id": "agent", "time": int(time.time())}
    engine.decide(PERSON, "tools/call", target, context)  # warm the caches
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        engine.decide(PERSON, "tools/call", target, context)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    listing = [tool("r3", f"t{n}") for n in range(TOOLS)]
    times = []
    for _ in range(lists):
        start = time.perf_counter()
        engine.filter_listable(PERSON, "tools/call", listing, context)
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "load_s": load_s,
        "decide_p50_us": statistics.median(samples),
        "decide_p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "list100_ms": statistics.median(times),
    }


def main() -> None:
    """Print one line per policy-set size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,3000")
    args = parser.parse_args()
    for size in (int(part) for part in args.sizes.split(",")):
        calls, lists = (2000, 5) if size <= 1000 else (300, 2)
        found = measure(size, calls, lists)
        print(f"{size:>5} policies: decide p50 {found['decide_p50_us']:8.1f} us  p99 {found['decide_p99_us']:8.1f} us  "
              f"100-tool list {found['list100_ms']:8.1f} ms  (load {found['load_s']:.1f} s)")


if __name__ == "__main__":
    main()
