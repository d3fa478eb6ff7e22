"""The chart of ``make bench`` (``docs/img/bench.png``), drawn with matplotlib (Agg, no display)
from the run's own figures, in four panels:

- calls/s per target and concurrency (grouped bars, medians over the rounds), log scale;
- server CPU per call per target and concurrency (the echo upstream's for ``direct``), ms, log scale;
- the policy-count curve: ``PolicyEngine.decide`` p50 and p99 uncached and p50 cached (µs), a
  100-tool list and its longest stall of the event loop (ms) against the number of policies,
  log-log, with issue 16's targets at 1,000 policies;
- the argument-size curve: CPU per call at c=16 against the size of the argument, through Bastion
  and of the echo upstream alone, log-log.

The two scaling panels say "not measured" when the run had no scaling rows (``--no-scaling``).
:func:`bars` draws ``make bench-peers``'s chart too (``peer_chart``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from results import Medians, Results
from scaling import ARG_SIZES, TARGET_DECIDE_P99_US, TARGET_LIST100_MS, Scaling, size_label
from scenario import CONCURRENCIES, DEFAULT, TARGETS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CHART = Path("img") / "bench.png"
"""Where the chart goes, relative to the folder of the document that links it."""


def draw(results: Results, path: Path) -> None:
    """Write the four-panel chart of ``results`` to ``path`` (PNG; its folder is created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((calls, cpu), (policies, arguments)) = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    fig.suptitle(f"make bench, {results.started}: Bastion and the echo upstream alone (direct)")
    targets = [t for t in TARGETS if any(r.target == t for r in results.runs)]
    bars(calls, results, targets, CONCURRENCIES, "throughput", "calls/s", "Throughput (calls/s, higher is better)")
    cpu_title = "Server CPU per call (ms, lower is better)"
    bars(cpu, results, targets, CONCURRENCIES, "server_cpu_ms", "CPU per call (ms)", cpu_title)
    scaling = results.scaling
    if scaling is not None and scaling.policies:
        policy_curve(policies, scaling)
    else:
        not_measured(policies, "Policy evaluation against policy count")
    if scaling is not None and scaling.arguments:
        argument_curve(arguments, scaling)
    else:
        not_measured(arguments, "CPU per call against argument size")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def value_label(value: float) -> str:
    """A figure as the chart writes it: ``38,659``, ``0.562``."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def log_axis(ax: Axes, which: Literal["x", "y"]) -> None:
    """Put the ``which`` axis of ``ax`` on a log scale ticked at 1, 2 and 5 times powers of ten and
    labelled in plain numbers (``0.02``, ``1,000``), minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if which == "x":
        ax.set_xscale("log")
    else:
        ax.set_yscale("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


LEGEND_COLUMNS = 4
"""Targets per row of a bar panel's legend."""


def bars(
    ax: Axes, results: Medians, targets: Sequence[str], concurrencies: Sequence[int], attr: str, ylabel: str, title: str
) -> None:
    """Grouped bars on ``ax`` (log scale): one group per concurrency, one bar per target, each the median
    of ``attr`` over the rounds (:meth:`Medians.med`) labelled with its value."""
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        values = [results.med(target, conns, attr) for conns in concurrencies]
        xs = [c + (i - (len(targets) - 1) / 2) * width for c in range(len(concurrencies))]
        drawn = ax.bar(xs, values, width, label=target)
        ax.bar_label(drawn, labels=[value_label(v) for v in values], fontsize=7)
    log_axis(ax, "y")
    rows = -(-len(targets) // LEGEND_COLUMNS)
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * 3**rows)  # room for the legend above the bars
    ax.set_xticks(range(len(concurrencies)), [f"c={c}" for c in concurrencies])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncols=min(len(targets), LEGEND_COLUMNS))


def policy_curve(ax: Axes, scaling: Scaling) -> None:
    """``decide`` p50/p99 uncached and p50 cached (µs, left axis), the 100-tool list and its longest
    stall of the event loop (ms, right axis) against policy count."""
    sizes = list(scaling.policies)
    figures = list(scaling.policies.values())
    ax.plot(sizes, [f["decide_p50_us"] for f in figures], "o-", label="decide p50, uncached (µs)")
    ax.plot(sizes, [f["decide_p99_us"] for f in figures], "s-", label="decide p99, uncached (µs)")
    ax.plot(sizes, [f["cached_p50_us"] for f in figures], "D-", color="C4", label="decide p50, cached (µs)")
    ax.axhline(TARGET_DECIDE_P99_US, color="C1", linestyle=":", label=f"target p99 {TARGET_DECIDE_P99_US:g} µs")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
    ax.set_xlabel("policies")
    ax.set_ylabel("decide (µs)")
    listing = ax.twinx()
    listing.plot(sizes, [f["list100_ms"] for f in figures], "^--", color="C2", label="100-tool list (ms)")
    listing.plot(sizes, [f["list_stall_ms"] for f in figures], "v--", color="C3", label="its longest stall (ms)")
    listing.axhline(TARGET_LIST100_MS, color="C2", linestyle=":", label=f"target list {TARGET_LIST100_MS:g} ms")
    log_axis(listing, "y")
    listing.set_ylabel("100-tool list, longest stall (ms)")
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = listing.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, fontsize=8, loc="upper left")
    ax.set_title("Policy evaluation against policy count (targets at 1,000)")


def argument_curve(ax: Axes, scaling: Scaling) -> None:
    """CPU per call at c=16 through Bastion and of the echo upstream alone against argument size."""
    for target, label in ((DEFAULT, "through Bastion"), ("direct", "echo upstream alone")):
        values = [scaling.argument_med(target, size, "server_cpu_ms") for size in ARG_SIZES]
        ax.plot(ARG_SIZES, values, "o-", label=label)
        for size, value in zip(ARG_SIZES, values, strict=True):
            ax.annotate(value_label(value), (size, value), textcoords="offset points", xytext=(0, 6), fontsize=7,
                        ha="center")  # fmt: skip
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set_xticks(ARG_SIZES, [size_label(size) for size in ARG_SIZES])
    ax.set_xlabel("size of the call's argument (the answer is as large)")
    ax.set_ylabel("CPU per call (ms)")
    ax.set_title("CPU per call against argument size (c=16)")
    ax.legend(fontsize=8)


def not_measured(ax: Axes, title: str) -> None:
    """An empty panel saying the run had no scaling rows."""
    ax.set_title(title)
    ax.text(0.5, 0.5, "not measured (--no-scaling)", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
