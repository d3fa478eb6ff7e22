"""Each (route, tool)'s usual result volume, and the rule that calls a result anomalous.

A baseline keeps the last ``samples`` results' ``Measures`` twice per measure: in arrival
order (a ring, to know which value leaves the window) and sorted (``bisect``), so adding a
result costs two binary searches and a short ``memmove`` per measure, and a percentile is one
index. Values are unsigned 32-bit (a measure past 4 GiB counts as 4 GiB), about 6 KB per
baseline at 200 samples.

The rule (``VolumeBaselines.observe``): once a baseline holds ``min_samples`` results, a result
is anomalous when, for any measure m, ``value_m > max(floor_m, factor x baseline_m)``, where
``baseline_m`` is the ``percentile``-th percentile of the window (nearest rank: the
``ceil(p/100 x n)``-th smallest of n). The result is checked against the window as it was
before it, then added to it, whether anomalous or not: one outlier does not move the 95th
percentile of 200 results (it takes more than 10 of them to), so a tool cannot be taught a
new normal by one large answer, while a lasting change (a table that really grew) is flagged
until it fills the top of the window and becomes the new normal, rather than forever.

``observe`` never awaits: on one event loop, checking and adding a result is atomic. Sans-IO:
``BaselineKeeper`` (``bastion.volume.keeper``) loads and saves the baselines through a store.
"""

from __future__ import annotations

import logging
import math
from array import array
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from bastion.config.volume import VolumeSettings
from bastion.stores.volume import BaselineKey, Sample
from bastion.volume.measure import MEASURES, Measures

__all__ = ["Verdict", "VolumeBaselines"]

logger = logging.getLogger(__name__)

_MAX_VALUE = 0xFFFF_FFFF
_TYPECODE = "I" if array("I").itemsize == 4 else "L"  # unsigned 32 bits


class Verdict(NamedTuple):
    """What ``VolumeBaselines.observe`` found for one result.

    ``baseline`` is the percentile of each measure over the ``samples`` results seen before this
    one, or ``None`` while there were fewer than ``min_samples`` (nothing is flagged then);
    ``exceeded`` names the measures over their threshold (empty: not anomalous).
    """

    measures: Measures
    baseline: Measures | None
    samples: int
    exceeded: tuple[str, ...] = ()

    @property
    def anomalous(self) -> bool:
        """Whether any measure was over its threshold."""
        return bool(self.exceeded)

    def worst(self) -> tuple[str, float]:
        """The exceeded measure furthest above its baseline and how many times the baseline it is
        (``inf`` for a baseline of 0). Only for an anomalous verdict (``ValueError`` otherwise)."""
        if self.baseline is None or not self.exceeded:
            raise ValueError("not an anomalous verdict")
        ratios = {
            name: value / usual if usual else math.inf
            for name, value, usual in zip(MEASURES, self.measures, self.baseline, strict=True)
            if name in self.exceeded
        }
        name = max(ratios, key=lambda n: ratios[n])
        return name, ratios[name]


class _Baseline:
    """The last ``size`` samples of one (route, tool): per measure a ring and a sorted array."""

    __slots__ = ("rings", "sorted", "start")

    def __init__(self) -> None:
        self.rings = (array(_TYPECODE), array(_TYPECODE), array(_TYPECODE))
        self.sorted = (array(_TYPECODE), array(_TYPECODE), array(_TYPECODE))
        self.start = 0  # index of the oldest sample once the rings are full

    def __len__(self) -> int:
        return len(self.rings[0])

    def add(self, sample: Sequence[int], size: int) -> None:
        rings, ordered = self.rings, self.sorted
        if len(rings[0]) < size:
            for index in (0, 1, 2):
                value = min(sample[index], _MAX_VALUE)
                rings[index].append(value)
                insort(ordered[index], value)
            return
        start = self.start
        for index in (0, 1, 2):
            value, ring, column = min(sample[index], _MAX_VALUE), rings[index], ordered[index]
            del column[bisect_left(column, ring[start])]  # the oldest leaves the window
            ring[start] = value
            insort(column, value)
        self.start = start + 1 if start + 1 < size else 0

    def percentile(self, rank: int) -> Measures:
        """The ``rank``-th smallest (1-based) of each measure."""
        return Measures(self.sorted[0][rank - 1], self.sorted[1][rank - 1], self.sorted[2][rank - 1])

    def samples(self) -> tuple[Sample, ...]:
        """The samples, oldest first."""
        start = self.start
        columns = [list(ring[start:]) + list(ring[:start]) for ring in self.rings]
        return tuple(zip(*columns, strict=True))


class VolumeBaselines:
    """The baselines of every (route, tool) of one gateway, by ``VolumeSettings``.

    At most ``max_baselines`` pairs are tracked; a result of a pair beyond them is not learned
    (and never flagged): evicting an older baseline instead would let anyone who can call
    made-up tool names wipe the baselines that matter. Not thread-safe: one event loop.
    """

    def __init__(self, settings: VolumeSettings) -> None:
        self.settings = settings
        self._size = settings.samples
        self._min = settings.min_samples
        self._percentile = settings.percentile
        self._factor = settings.factor
        self._floors = settings.floors
        self._baselines: dict[BaselineKey, _Baseline] = {}
        self._dirty: set[BaselineKey] = set()
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._baselines)

    def observe(
        self, route: str, tool: str, measures: Measures, *, learn: bool = True, learn_anomalous: bool = True
    ) -> Verdict:
        """Check ``measures`` against the (route, tool) baseline, then add them to it when ``learn``
        (and, for an anomalous result, ``learn_anomalous``).

        ``learn`` is false for a result seen a second time (an answer replayed on a resumed
        stream), so that it counts once; ``learn_anomalous`` is false where anomalous results are
        withheld, so that repeating a bulk read does not teach the baseline that it is usual.
        No await: atomic on the event loop.
        """
        key = (route, tool)
        baseline = self._baselines.get(key)
        if baseline is None:
            if not learn or not self._room():
                return Verdict(measures, None, 0)
            baseline = self._baselines[key] = _Baseline()
        count = len(baseline)
        usual: Measures | None = None
        exceeded: tuple[str, ...] = ()
        if count >= self._min:
            usual = baseline.percentile(max(1, math.ceil(self._percentile * count / 100)))
            factor, floors = self._factor, self._floors
            if (  # the usual case, decided without building anything
                (measures[0] > floors[0] and measures[0] > factor * usual[0])
                or (measures[1] > floors[1] and measures[1] > factor * usual[1])
                or (measures[2] > floors[2] and measures[2] > factor * usual[2])
            ):
                exceeded = tuple(
                    name
                    for name, value, base, floor in zip(MEASURES, measures, usual, floors, strict=True)
                    if value > floor and value > factor * base
                )
        if learn and (learn_anomalous or not exceeded):
            baseline.add(measures, self._size)
            self._dirty.add(key)
        return Verdict(measures, usual, count, exceeded)

    def _room(self) -> bool:
        if len(self._baselines) < self.settings.max_baselines:
            return True
        if not self._full_warned:
            self._full_warned = True
            logger.warning(
                "volume.max_baselines (%d) reached: results of further tools are not measured",
                self.settings.max_baselines,
            )
        return False

    def load(self, saved: Mapping[BaselineKey, Iterable[Sample]]) -> None:
        """Replace the baselines by ``saved`` (a store's ``load``): each keeps its last ``samples``
        samples; at most ``max_baselines`` pairs are taken. Nothing is marked changed."""
        self._baselines.clear()
        self._dirty.clear()
        for key, samples in saved.items():
            if len(self._baselines) >= self.settings.max_baselines:
                logger.warning("volume.max_baselines (%d) reached while loading", self.settings.max_baselines)
                break
            baseline = _Baseline()
            for sample in list(samples)[-self._size :]:
                baseline.add(sample, self._size)
            self._baselines[key] = baseline

    def samples(self, route: str, tool: str) -> tuple[Sample, ...]:
        """The (route, tool) baseline's samples, oldest first (empty when there is none)."""
        baseline = self._baselines.get((route, tool))
        return baseline.samples() if baseline is not None else ()

    def take_changed(self) -> dict[BaselineKey, tuple[Sample, ...]]:
        """The samples of every baseline changed since the last call, which are no longer marked
        changed (``mark_changed`` marks them again when saving them failed)."""
        changed = {key: self._baselines[key].samples() for key in self._dirty if key in self._baselines}
        self._dirty.clear()
        return changed

    def mark_changed(self, keys: Iterable[BaselineKey]) -> None:
        """Mark ``keys`` changed again (to be saved by the next ``take_changed``)."""
        self._dirty.update(key for key in keys if key in self._baselines)
