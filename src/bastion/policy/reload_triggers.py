"""What starts a reload (of the policy sets and the routes) besides SIGHUP: a changed file
(``policy.watch``; the routes are in the configuration file, which is watched) and another replica.

``watch_files`` follows the configuration file, the policy files (and directories) and the
schema with ``watchfiles`` (inotify; the directories are watched, so an editor's save by rename
counts) and calls ``PolicyReloader.reload("file change")``. ``ReplicaReloads`` keeps the replicas
of a shared deployment (``stores.redis``) on one policy set: a replica whose reload was applied
publishes ``{"origin": ..., "version": ...}`` on the Redis channel ``<prefix>policy-reload``, and
every other replica reloads from its own files when it hears it (each records its own
``policy/reload``, so the log shows which replicas took which version). Redis pub/sub is
at-most-once: a replica that was disconnected at that moment misses it and keeps its set until
its next reload; each replica's version is in every decision record it writes.

Both loops never raise (except ``CancelledError``); a failure is logged and retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import watchfiles
from redis.asyncio import Redis

from bastion.policy.reloading import PolicyReloader, ReloadResult, ReloadTrigger
from bastion.stores.redis_store import subscribe

__all__ = ["ReplicaReloads", "watch_files"]

logger = logging.getLogger(__name__)

_RETRY_S = 1.0
_DEBOUNCE_MS = 300


async def watch_files(reloader: PolicyReloader, replicas: ReplicaReloads | None = None) -> None:
    """Reload when one of ``reloader.watched_files`` changes (``policy.watch``), then tell ``replicas``."""
    while True:
        watched, folders = _targets(reloader.watched_files)
        try:
            async for changes in watchfiles.awatch(*folders, debounce=_DEBOUNCE_MS, recursive=False):
                touched = [Path(name) for _, name in changes]  # under folders, which are resolved
                if any(path in watched or path.parent in watched for path in touched):
                    await reload_and_tell(reloader, "file change", replicas)
                    break  # the watched files may have changed with the configuration: watch them anew
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - watching again after a pause
            logger.warning("watching the policy files failed: %s; trying again", exc)
            await asyncio.sleep(_RETRY_S)


async def reload_and_tell(
    reloader: PolicyReloader, trigger: ReloadTrigger, replicas: ReplicaReloads | None
) -> ReloadResult:
    """``reloader.reload(trigger)``, then, when it was applied, the other replicas told (never raises)."""
    result = await reloader.reload(trigger)
    if result.applied and replicas is not None:
        await replicas.announce(result.version)
    return result


def _targets(files: tuple[Path, ...]) -> tuple[set[Path], set[Path]]:
    """The watched paths, resolved, and the folders to watch for them (a directory itself, else a
    file's parent: an editor saving by rename replaces the file)."""
    watched = {path.resolve() for path in files}
    return watched, {path if path.is_dir() else path.parent for path in watched}


class ReplicaReloads:
    """The replicas' reload notifications on Redis (module docstring). ``url`` is the resolved
    ``stores.redis`` URL; ``prefix`` its key prefix; ``origin`` this replica's id (host and pid)."""

    def __init__(self, url: str, prefix: str, reloader: PolicyReloader, *, origin: str | None = None) -> None:
        self.channel = f"{prefix}policy-reload"
        self.origin = origin or f"{os.uname().nodename}:{os.getpid()}"
        self._url = url
        self._reloader = reloader
        self.ready = asyncio.Event()  # set once subscribed (tests wait for it)

    async def announce(self, version: str) -> None:
        """Publish that this replica now enforces ``version`` (logged, never raised, on failure)."""
        try:
            async with Redis.from_url(self._url, socket_connect_timeout=5) as client:
                await client.publish(self.channel, json.dumps({"origin": self.origin, "version": version}))
        except Exception as exc:  # noqa: BLE001 - the others keep their sets until their next reload
            logger.warning("telling the other replicas of the policy reload failed: %s", exc)

    async def listen(self) -> None:
        """Reload whenever another replica announces one; resubscribes after a lost connection."""
        await subscribe(self._url, self.channel, self._heard, self._subscribed, retry_s=_RETRY_S)

    def _subscribed(self, subscribed: bool) -> None:
        if subscribed:
            self.ready.set()
        else:
            self.ready.clear()

    async def _heard(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            news = json.loads(message["data"])
            origin = str(news["origin"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed message on %s", self.channel)
            return
        if origin != self.origin:
            await self._reloader.reload(f"replica {origin[:200]}")
