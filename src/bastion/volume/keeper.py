"""The gateway's result-volume baselines and their store: loaded at start, written behind.

``BaselineKeeper.start`` opens the store and loads every saved baseline into
``VolumeBaselines``; the request path then checks and learns in memory only. ``flush`` saves
the baselines changed since the last flush (the gateway calls it on its periodic sweep), and
``close`` flushes once more and closes the store, so a restart continues with the baselines
learnt before it (a crash loses at most one sweep interval of samples).
"""

from __future__ import annotations

from bastion.config.volume import VolumeSettings
from bastion.stores.volume import VolumeStore
from bastion.volume.baseline import VolumeBaselines

__all__ = ["BaselineKeeper"]


class BaselineKeeper:
    """``baselines`` (``VolumeBaselines``) persisted in ``store``."""

    def __init__(self, store: VolumeStore, settings: VolumeSettings) -> None:
        self.store = store
        self.baselines = VolumeBaselines(settings)

    async def start(self) -> None:
        """Open the store and load the saved baselines. Raises the store's error."""
        await self.store.start()
        self.baselines.load(await self.store.load())

    async def flush(self) -> int:
        """Save the baselines changed since the last flush; returns how many. When the store
        fails they stay marked changed (the next flush tries again) and its error is raised."""
        changed = self.baselines.take_changed()  # a snapshot: results learnt meanwhile mark them again
        if not changed:
            return 0
        try:
            await self.store.save(changed)
        except BaseException:
            self.baselines.mark_changed(changed)
            raise
        return len(changed)

    async def close(self) -> None:
        """Flush, then close the store (closed even when the flush fails, which is raised)."""
        try:
            await self.flush()
        finally:
            await self.store.close()
