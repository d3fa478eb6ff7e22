"""Counts and observations kept in plain Python objects on the request path, added to the Prometheus
metrics in one go (``flush``).

prometheus-client takes a lock per ``inc`` and per ``observe`` and resolves ``labels(...)`` under
another: about 1-2.5 µs each, 55 µs per ``tools/call`` for the 15 steps and a few counters when
used directly (``benchmarks/metrics_cost.py``). Here each series is a cell found by one dictionary
lookup (``count``, ``histogram``; a caller may keep the cell) and an increment is one addition, an
observation one ``bisect`` more; ``flush`` adds what the cells gathered since the last one, once
per series. Under ``bastion serve --workers N`` a worker's counts since its last flush are in its
cells, not yet in its file (``MetricsObserver`` schedules a flush a second after a request; a
scrape of a single process flushes first, so it is exact).

A histogram is added to through its child's per-bucket values (``_buckets``, ``_sum``), the
attributes ``Histogram.observe`` itself updates: prometheus-client has no public way to add many
observations at once. ``tests/unit/metrics/test_metrics_tally.py`` pins that the exposition is the
same as with ``observe``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from prometheus_client import Counter, Histogram

__all__ = ["Count", "Observations", "Tally"]


class Count:
    """One counter series' count since the last flush (``n``)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0.0


class Observations:
    """One histogram series' observations since the last flush: per-bucket counts (not cumulative;
    the last is +Inf's) and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds  # the finite upper bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        """Observe ``value`` (seconds)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound >= value
        self.total += value


class Tally:
    """The cells of every series counted or observed, by metric and label values (bounded: the
    label values are)."""

    __slots__ = ("_counts", "_observed")

    def __init__(self) -> None:
        self._counts: dict[tuple[Counter, tuple[str, ...]], Count] = {}
        self._observed: dict[tuple[Histogram, tuple[str, ...]], Observations] = {}

    def count(self, counter: Counter, labels: tuple[str, ...]) -> Count:
        """The cell of ``counter``'s series ``labels`` (its label values in order)."""
        key = (counter, labels)
        cell = self._counts.get(key)
        if cell is None:
            cell = self._counts[key] = Count()
        return cell

    def histogram(self, histogram: Histogram, labels: tuple[str, ...]) -> Observations:
        """The cell of ``histogram``'s series ``labels``."""
        key = (histogram, labels)
        cell = self._observed.get(key)
        if cell is None:
            cell = self._observed[key] = Observations(histogram._upper_bounds[:-1])  # the last is +Inf
        return cell

    def flush(self) -> None:
        """Add what every cell gathered to the metrics and empty the cells."""
        for (counter, labels), count in self._counts.items():
            if count.n:
                amount, count.n = count.n, 0.0
                (counter.labels(*labels) if labels else counter).inc(amount)
        for (histogram, labels), cell in self._observed.items():
            if not cell.total and not any(cell.counts):
                continue
            counts, total = cell.counts, cell.total
            cell.counts, cell.total = [0] * len(counts), 0.0
            child = histogram.labels(*labels) if labels else histogram
            child._sum.inc(total)
            for bucket, observed in zip(child._buckets, counts, strict=True):
                if observed:
                    bucket.inc(observed)
