"""The shared ``RevocationStore``: revoked access-token ids in PostgreSQL, every replica's view kept
current by ``LISTEN``/``NOTIFY``.

``is_revoked`` runs on every request and must not wait for the network, so each process keeps the
revoked ids in memory (``RevocationStore``'s contract):

- at ``start`` it reads the table ``revoked_tokens`` whole, and opens a connection of its own that
  ``LISTEN``s on the channel ``bastion_revocations``;
- ``revoke`` inserts the row and, in the same transaction, ``NOTIFY``s the id (PostgreSQL delivers a
  notification when its transaction commits, to every listening connection, in commit order); each
  replica adds it to its view when it arrives, a few milliseconds later (the contract test waits at
  most ``PROPAGATION_S``). The revoking process sees its own revocation at once;
- ``prune`` deletes expired rows and notifies ``*``: every replica re-reads the table;
- the table is re-read every ``refresh_s`` seconds as well, which heals anything a replica missed.

If the listening connection is lost (the database restarted, the network broke, or it stopped
answering the check made at each re-read), the store reconnects every ``reconnect_s`` seconds and
re-reads the table once it has. Until then its view may be missing revocations made elsewhere, so
after ``max_stale_s`` seconds without a listening connection
``is_revoked`` raises ``RevocationsUnavailable`` (503; every token refused) instead of answering from
a view that may be out of date (fail closed). Writes raise the driver's error
(``asyncpg.PostgresError``, ``OSError``) when the database cannot be reached.

The table is created by migration ``0001_revocations.sql`` (``stores.postgres.PostgresDatabase``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Self

import asyncpg

from bastion.errors import RevocationsUnavailable
from bastion.stores.postgres import PostgresDatabase

__all__ = ["CHANNEL", "PostgresRevocationStore"]

logger = logging.getLogger(__name__)

CHANNEL = "bastion_revocations"
"""The ``NOTIFY`` channel: the payload is a revoked ``jti``, or ``*`` for "re-read the table"."""
_RELOAD = "*"
_INSERT = (
    "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (jti) DO UPDATE SET expires_at = GREATEST(revoked_tokens.expires_at, excluded.expires_at)"
)


class PostgresRevocationStore:
    """``RevocationStore`` in table ``revoked_tokens`` of ``database`` (see the module docstring).

    ``refresh_s`` is how often the table is re-read whole (seconds); ``max_stale_s`` how long the
    view may go without a listening connection before ``is_revoked`` refuses to answer;
    ``reconnect_s`` how often a lost listening connection is tried again.
    ``start``/``close`` or ``async with``; ``start`` raises the driver's error when the database
    cannot be reached.
    """

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        refresh_s: float = 30.0,
        max_stale_s: float = 5.0,
        reconnect_s: float = 1.0,
    ) -> None:
        self._database = database
        self._reconnect_s = reconnect_s
        self._refresh_s = refresh_s
        self._max_stale_s = max_stale_s
        self._revoked: frozenset[str] = frozenset()
        self._listener: asyncpg.Connection | None = None
        self._lost_at: float | None = None  # monotonic time the listening connection was lost
        self._task: asyncio.Task[None] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        """Open the database (migrating it), read the table and start listening."""
        if self._started:
            return
        await self._database.start()
        try:
            await self._listen()
            await self._reload()
        except BaseException:
            await self._drop_listener()
            await self._database.close()
            raise
        self._started = True
        self._task = asyncio.create_task(self._maintain(), name="bastion-revocations")

    async def close(self) -> None:
        """Stop listening and release the database (idempotent)."""
        if not self._started:
            return
        self._started = False
        for task in (self._task, self._reloading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._reloading = None
        await self._drop_listener()
        await self._database.close()

    async def revoke(self, jti: str, expires_at: int, *, now: float | None = None) -> None:
        """Record ``jti`` as revoked until ``expires_at`` (epoch s) and tell every replica.

        Idempotent: revoking again keeps the first ``revoked_at`` and the later ``expires_at``.
        Raises ``ValueError`` for an empty ``jti``.
        """
        if not isinstance(jti, str) or not jti:
            raise ValueError("jti must be a non-empty string")
        revoked_at = int(time.time() if now is None else now)
        async with self._database.pool.acquire() as connection, connection.transaction():
            await connection.execute(_INSERT, jti, int(expires_at), revoked_at)
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, jti)
        self._revoked = self._revoked | {jti}  # this process sees its own revocation at once

    def is_revoked(self, jti: str) -> bool:
        """True if any replica revoked ``jti`` (RFC 7009 section 2.2), from this process's view.

        Raises ``RevocationsUnavailable`` when the view has gone without its change feed for longer
        than ``max_stale_s`` (or the store is not started)."""
        lost_at = self._lost_at
        if not self._started or (lost_at is not None and time.monotonic() - lost_at > self._max_stale_s):
            raise RevocationsUnavailable("the revocation list cannot be kept current: tokens are refused")
        return jti in self._revoked

    async def prune(self, now: float) -> int:
        """Delete revocations whose token expired before ``now`` (epoch s); returns how many.
        Every replica re-reads the table when something was deleted."""
        async with self._database.pool.acquire() as connection, connection.transaction():
            pruned = await connection.fetch("DELETE FROM revoked_tokens WHERE expires_at < $1 RETURNING jti", int(now))
            if pruned:
                await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, _RELOAD)
        if pruned:
            self._revoked = self._revoked - {row["jti"] for row in pruned}
        return len(pruned)

    async def _reload(self) -> None:
        """Read the table whole into the view."""
        async with self._database.pool.acquire() as connection:
            rows = await connection.fetch("SELECT jti FROM revoked_tokens")
        self._revoked = frozenset(row["jti"] for row in rows)

    async def _listen(self) -> None:
        """Open the listening connection (its loss is noticed by ``_on_lost``)."""
        listener = await self._database.connect()
        try:
            await listener.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await listener.close()
            raise
        listener.add_termination_listener(self._on_lost)
        self._listener = listener

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == _RELOAD:
            if self._reloading is None or self._reloading.done():
                self._reloading = asyncio.create_task(self._reload_logged(), name="bastion-revocations-reload")
        elif isinstance(payload, str) and payload:
            self._revoked = self._revoked | {payload}

    def _on_lost(self, _connection: object) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            logger.warning("the revocation list's change feed was lost; reconnecting")

    async def _reload_logged(self) -> None:
        try:
            await self._reload()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("re-reading the revocation list failed: %s", exc)

    async def _maintain(self) -> None:
        """Re-read the table every ``refresh_s``; reconnect the listener every second while it is lost."""
        next_refresh = time.monotonic() + self._refresh_s
        while True:
            await asyncio.sleep(self._reconnect_s if self._lost_at is not None else min(self._refresh_s, 1.0))
            try:
                if self._lost_at is not None:
                    await self._drop_listener()
                    await self._listen()
                    await self._reload()  # what was revoked while nobody listened
                    self._lost_at = None
                    logger.warning("the revocation list's change feed is back")
                    next_refresh = time.monotonic() + self._refresh_s
                elif time.monotonic() >= next_refresh:
                    if self._listener is not None:  # a connection that died silently answers nothing
                        await self._listener.fetchval("SELECT 1", timeout=5.0)
                    await self._reload()
                    next_refresh = time.monotonic() + self._refresh_s
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if self._lost_at is None:
                    self._on_lost(None)
                logger.debug("the revocation list could not be refreshed: %s", exc)

    async def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            listener.remove_termination_listener(self._on_lost)
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await listener.close(timeout=2.0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
