"""The in-memory volume store: baselines kept for the life of the object (tests, one-off processes).

It survives nothing; a test that restarts a gateway on one ``MemoryVolumeStore`` sees what a
restart on the SQLite file would (``tests/unit/stores/test_contract_volume.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

from bastion.stores.volume import BaselineKey, Sample

__all__ = ["MemoryVolumeStore"]


class MemoryVolumeStore:
    """``VolumeStore`` in memory. ``start`` and ``close`` do nothing (it keeps its baselines)."""

    def __init__(self) -> None:
        self._baselines: dict[BaselineKey, tuple[Sample, ...]] = {}

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release; the baselines stay for the next ``load``."""

    async def __aenter__(self) -> Self:
        """``start`` and return the store."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

    async def load(self) -> dict[BaselineKey, tuple[Sample, ...]]:
        """See ``VolumeStore.load``."""
        return dict(self._baselines)

    async def save(self, baselines: Mapping[BaselineKey, Sequence[Sample]]) -> None:
        """See ``VolumeStore.save``."""
        for key, samples in baselines.items():
            self._baselines[key] = tuple((int(b), int(n), int(i)) for b, n, i in samples)
