"""The report's profile section ("What limits Bastion"): where the default Bastion's CPU per call
goes, by library, pipeline step, function and frame, scaled by its measured CPU per call."""

from __future__ import annotations

from collections import defaultdict

from profiling import GROUPS
from results import Results
from scenario import DEFAULT, NORMAL


def _per_call(results: Results, levels: list[int]) -> dict[tuple[str, int], float]:
    """Default Bastion's CPU ms per call by thread kind ("main", "other") at each profiled level."""
    attrs = {"main": "main_cpu_ms", "other": "other_cpu_ms"}
    return {(kind, c): results.med(DEFAULT, c, attr) for kind, attr in attrs.items() for c in levels}


def _group_us(results: Results, c: int, per_call: dict[tuple[str, int], float]) -> dict[str, float]:
    """µs of CPU per call by library at ``c``: each thread's busy-sample share x its CPU per call."""
    p = results.profiles[c]
    us: dict[str, float] = defaultdict(float)
    for kind in ("main", "other"):
        busy = p.samples[kind]
        for group, n in p.groups[kind].items():
            us[group] += n / busy * per_call[kind, c] * 1000 if busy else 0.0
    return us


def _waits_text(results: Results, conns: int) -> str:
    p = results.profiles[conns]
    parts = []
    for kind, name in (("main", "event loop"), ("other", "audit writer")):
        total = p.samples[kind] + sum(p.waits[kind].values())
        if total:
            top = ", ".join(f"{w} {100 * n / total:.0f}%" for w, n in p.waits[kind].most_common(3))
            parts.append(f"{name} {top or 'none'}")
    return f"c={conns}: " + ", ".join(parts)


def _summary(results: Results, levels: list[int], per_call: dict[tuple[str, int], float]) -> list[str]:
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
    us = {c: _group_us(results, c, per_call) for c in levels}
    total = {c: sum(us[c].values()) or 1.0 for c in levels}
    for key, label in GROUPS:
        if not any(us[c].get(key) for c in levels):
            continue
        cells = " | ".join(f"{100 * us[c][key] / total[c]:.1f}% | {us[c][key]:.0f}" for c in levels)
        add_row = f"| {label} | {cells} |"
        out.append(add_row)
    out.append("| **total** (measured CPU per call) | " + " | ".join(f"100% | {total[c]:.0f}" for c in levels) + " |")
    out.append("")
    out.append("**In short:**")
    out.append("")
    for c in levels:
        ranked = sorted(us[c].items(), key=lambda item: -item[1])
        parts = ", ".join(f"{names[k].split(' (')[0]} {v:.0f} µs" for k, v in ranked if v >= 1)
        out.append(f"- c={c}, {total[c] / 1000:.3f} ms of CPU per call: {parts}.")
    d1 = results.med("direct", 1, "p50_ms")
    b1, n1 = results.med(DEFAULT, 1, "p50_ms"), results.med(NORMAL, 1, "p50_ms")
    cpu_b, cpu_n = results.med(DEFAULT, 1, "server_cpu_ms"), results.med(NORMAL, 1, "server_cpu_ms")
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


def profile_markdown(results: Results) -> str:
    """The section "What limits Bastion": the profiles of ``results`` scaled by the default Bastion's measured
    CPU per call, or ``results.profile_note`` when there is no profile."""
    if not results.profiles:
        return results.profile_note or "No profile."
    names = {"main": "event-loop thread", "other": "audit writer thread"}
    short = {"sqlite": "sqlite3/audit", "bastion": "bastion", "loop": "event loop", "other": "other"}
    out: list[str] = []
    add = out.append
    levels = sorted(results.profiles)
    runs = ", ".join(
        f"c={c}: {sum(results.profiles[c].samples.values()):,} busy samples"
        + (f" at {results.profile_runs[c].throughput:,.0f} calls/s" if c in results.profile_runs else "")
        for c in levels
    )
    native = all(results.profiles[c].native for c in levels)
    per_call = _per_call(results, levels)
    split = "; ".join(
        f"c={c}: event loop {per_call['main', c]:.3f} ms + audit writer {per_call['other', c]:.3f} ms "
        f"(kernel part: {results.med(DEFAULT, c, 'server_sys_ms'):.3f} ms of the total, "
        f"{results.med(DEFAULT, c, 'other_sys_ms'):.3f} ms of the audit writer's)"
        for c in levels
    )
    add(
        f"py-spy `record --rate 200 --threads{' --native' if native else ''}` of the default Bastion "
        f"(`audit.synchronous: full`) while wrk drove it ({runs}; sampling slows it down). Bastion is one "
        "Python process; CPU per call by thread, from `/proc/<pid>/task/*/stat` in the measured rounds: "
        f"{split}. Shares are of each thread's busy samples and µs/call = share x that thread's CPU per call."
        + (
            " Samples whose native leaf is a wait (epoll, futex/GIL/queue waits, fdatasync) are left out: "
            + "; ".join(_waits_text(results, c) for c in levels)
            + "."
            if native
            else " Without native frames some waiting is counted as busy."
        )
    )
    add("")
    out.extend(_summary(results, levels, per_call))
    add("")
    for kind in names:
        if not any(results.profiles[c].samples[kind] for c in levels):
            continue
        counts = ", ".join(f"c={c} {results.profiles[c].samples[kind]:,}" for c in levels)
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
            total = results.profiles[c].samples[kind] or 1
            for step, n in results.profiles[c].steps[kind].items():
                order[step] += n / total
        for step in sorted(order, key=lambda s: -order[s])[:16]:
            cells = []
            for c in levels:
                total = results.profiles[c].samples[kind] or 1
                share = results.profiles[c].steps[kind][step] / total
                cells.append(
                    f"{100 * share:.1f}% | {share * per_call[kind, c] * 1000:.0f}" if timed else f"{100 * share:.1f}%"
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
                for function, n in results.profiles[c].total[kind].items():
                    rank[function] += n / (results.profiles[c].samples[kind] or 1)
            for function in sorted(rank, key=lambda f: -rank[f])[:20]:
                group = next(
                    (
                        results.profiles[c].total_group[function]
                        for c in levels
                        if function in results.profiles[c].total_group
                    ),
                    "other",
                )
                cells = []
                for c in levels:
                    share = results.profiles[c].total[kind][function] / (results.profiles[c].samples[kind] or 1)
                    cells.append(f"{100 * share:.1f}% | {share * per_call[kind, c] * 1000:.0f}")
                add(f"| {function} | {short.get(group, group)} | " + " | ".join(cells) + " |")
            add("")
        for c in levels if kind == "main" else levels[-1:]:
            p = results.profiles[c]
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
