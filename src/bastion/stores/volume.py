"""Where result-volume baselines are kept between runs (issue 14, "Result volume").

A baseline is the last N results' measures of one (route, tool): a sequence of
``(bytes, blocks, items)`` samples, oldest first (``bastion.volume``). The gateway keeps the
baselines in memory and checks each result there (no I/O on the request path); the store
only loads them at start and saves the ones that changed, written behind: on the gateway's
periodic sweep and at stop. A crash loses at most the last sweep interval's samples.

Backends, run by one contract suite (``tests/unit/stores/test_contract_volume.py``):
``bastion.stores.sqlite_volume.SQLiteVolumeStore`` (the data directory's SQLite file, the
gateway's), ``bastion.stores.postgres_volume.PostgresVolumeStore`` (with ``stores.postgres``:
every replica's) and ``bastion.stores.memory_volume.MemoryVolumeStore`` (tests, one-off processes).
Several processes sharing one file or database each keep their own baselines (loaded from what was
saved when they start); the last to save a key wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from bastion.stores.lifecycle import Lifecycle

__all__ = ["BaselineKey", "Sample", "VolumeStore", "valid_samples"]

BaselineKey = tuple[str, str]
"""``(route, tool)``."""

Sample = tuple[int, int, int]
"""One result's ``(bytes, blocks, items)`` (``bastion.volume.Measures`` as a plain tuple)."""


class VolumeStore(Lifecycle, Protocol):
    """The saved baselines of every (route, tool)."""

    async def load(self) -> dict[BaselineKey, tuple[Sample, ...]]:
        """Every saved baseline: its samples, oldest first. A saved value that is not a sequence of
        three non-negative integers per sample is left out (and logged), never raised."""
        ...

    async def save(self, baselines: Mapping[BaselineKey, Sequence[Sample]]) -> None:
        """Replace the samples of each key of ``baselines`` (the others stay), all or none.
        Raises the backend's error when it cannot write (the caller keeps them to retry)."""
        ...


def valid_samples(value: object) -> tuple[Sample, ...] | None:
    """``value`` (decoded from storage) as samples, or ``None`` when it is not a list of
    ``[bytes, blocks, items]`` non-negative integers."""
    if not isinstance(value, list):
        return None
    samples: list[Sample] = []
    for sample in value:
        if not (isinstance(sample, list) and len(sample) == 3):
            return None
        if not all(type(n) is int and n >= 0 for n in sample):
            return None
        samples.append((sample[0], sample[1], sample[2]))
    return tuple(samples)
