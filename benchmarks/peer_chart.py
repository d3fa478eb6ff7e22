"""The chart of ``make bench-peers`` (``docs/img/peers.png``), drawn with matplotlib (Agg, no display)
from the run's own figures in two panels of ``charts.bars``, one group of bars per concurrency and one
bar per measured target (medians over the rounds), both on a log scale because the targets differ by
orders of magnitude: calls/s, and CPU per call of the gateway's process tree (the echo upstream's for
``direct``)."""

from __future__ import annotations

from pathlib import Path

from charts import bars
from peer_results import PeerResults

CHART = Path("img") / "peers.png"
"""Where the chart goes, relative to the folder of the document that links it."""


def draw(results: PeerResults, path: Path) -> None:
    """Write the two-panel chart of ``results`` to ``path`` (PNG; its folder is created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (calls, cpu) = plt.subplots(1, 2, figsize=(14, 6), layout="constrained")
    fig.suptitle(f"make bench-peers, {results.started}: tools/call of an echo tool through each gateway")
    targets, concurrencies = results.measured, results.concurrencies
    bars(calls, results, targets, concurrencies, "throughput", "calls/s", "Throughput (calls/s, higher is better)")
    cpu_title = "Gateway CPU per call, children included (ms, lower is better)"
    bars(cpu, results, targets, concurrencies, "server_cpu_ms", "CPU per call (ms)", cpu_title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
