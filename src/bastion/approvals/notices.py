"""The "approval decided" notification between replicas, on Redis pub/sub (``stores.redis``).

A held call waits on the replica its client reached; the person deciding may reach another one
(the portal, ``bastion approvals approve``, which goes through a gateway's API). The replica that
decided publishes the approval's id on the channel ``<prefix>approval-decided``; every replica's
``ApprovalDesk`` hears it and wakes the waiter of that request at once, which then reads the
decision from the approval store. The message is only a wake-up: it carries the id and nothing
else (no arguments, no principal), and nothing is decided from it.

Redis pub/sub is at-most-once, so the desk keeps polling the store as well: every
``approvals.poll`` seconds while this channel is down, every ``max(approvals.poll,
SUBSCRIBED_POLL_S)`` while it is subscribed. A lost message delays a release, never loses a
decision, and a Redis outage falls back to polling, never to approving. ``listen`` tells the desk
each time the subscription comes or goes (``on_change``), so held calls re-read the store then
(a message published while this replica was not subscribed is not missed for longer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from bastion.stores.redis_store import subscribe

__all__ = ["SUBSCRIBED_POLL_S", "DecisionNotices"]

logger = logging.getLogger(__name__)

SUBSCRIBED_POLL_S = 10.0
"""Seconds between a held call's reads of its request while the channel is subscribed (at least)."""

_RETRY_S = 1.0
_TIMEOUT_S = 2.0
_MAX_ID_CHARS = 64


class DecisionNotices:
    """The channel ``<prefix>approval-decided`` on the Redis at ``url`` (the resolved
    ``stores.redis`` URL). ``publish`` from the deciding replica, ``listen`` on every replica;
    ``subscribed`` says whether ``listen`` is subscribed now. ``aclose`` at shutdown."""

    def __init__(self, url: str, prefix: str, *, retry_s: float = _RETRY_S) -> None:
        self.channel = f"{prefix}approval-decided"
        self.subscribed = False
        self._url = url
        self._retry_s = retry_s
        self._client: Redis = Redis.from_url(url, socket_connect_timeout=_TIMEOUT_S, socket_timeout=_TIMEOUT_S)
        self._sending: set[asyncio.Task[None]] = set()

    def publish(self, approval_id: str) -> None:
        """Announce that ``approval_id`` was decided, in the background (needs a running loop);
        a failure is logged, never raised: the other replicas then see it at their next poll."""
        task = asyncio.get_running_loop().create_task(self._publish(approval_id))
        self._sending.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self._sending.discard)

    async def _publish(self, approval_id: str) -> None:
        try:
            await self._client.publish(self.channel, approval_id)
        except Exception as exc:  # noqa: BLE001 - a wake-up only: the others poll the store anyway
            logger.warning("announcing the decision of approval %s failed: %s", approval_id, exc)

    async def listen(self, on_notice: Callable[[str], None], on_change: Callable[[bool], None]) -> None:
        """Call ``on_notice(approval_id)`` for every id heard, and ``on_change(subscribed)`` each
        time the subscription is made or lost; subscribes again after a pause when the connection
        fails (``bastion.stores.redis_store.subscribe``). Runs until cancelled; never raises anything
        else."""

        async def heard(message: dict[str, Any]) -> None:
            approval_id = _approval_id(message)
            if approval_id is not None:
                on_notice(approval_id)

        await subscribe(self._url, self.channel, heard, lambda subscribed: self._changed(subscribed, on_change),
                        retry_s=self._retry_s, keepalive=True)  # fmt: skip

    def _changed(self, subscribed: bool, on_change: Callable[[bool], None]) -> None:
        if subscribed != self.subscribed:
            self.subscribed = subscribed
            on_change(subscribed)

    async def aclose(self) -> None:
        """Let the announcements under way finish (each bounded by the client's timeouts), then
        close the publishing connection."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await self._client.aclose()


def _approval_id(message: dict[str, Any]) -> str | None:
    """The id a ``message`` event carries (at most ``_MAX_ID_CHARS``, ASCII), else ``None``."""
    if message.get("type") != "message":
        return None
    data = message.get("data")
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
    return text if 0 < len(text) <= _MAX_ID_CHARS and text.isascii() else None
