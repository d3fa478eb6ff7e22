"""The replicas writing one shared audit log, and the calls a lost one left without an outcome.

A call is two events (``bastion.audit.record``): its decision, durable before anything is
forwarded, and its outcome, written after the upstream answered. A replica killed between the two
(SIGKILL, out of memory, its machine gone) leaves allowed decisions without an outcome, and the
outcome events still queued in it die with it. In a deployment whose replicas share the PostgreSQL
log, ``ReplicaRegistry`` closes those records so that every allowed call has its outcome, even
when that outcome is "unknown":

- each replica has a row in ``gateway_replicas`` (migration ``0009_replicas.sql``) and moves its
  ``seen_at`` every ``lost_after_s / 6`` seconds (the database's clock, so replicas' clocks need
  not agree); the audit writer names the replica in the ``replica`` column of each row it inserts;
- a replica whose heartbeat has been silent ``lost_after_s`` is lost. A live replica claims it
  (one statement that pushes its ``seen_at`` a lease of ``lost_after_s`` into the future, under
  ``FOR UPDATE SKIP LOCKED``, so one replica at a time sweeps it, and another takes over if that
  one dies too), appends, for each allowed decision it wrote that has no outcome, an outcome event
  with ``result.error_code`` ``"replica_lost"`` and the flag ``"outcome_unknown"`` (whether the
  upstream ran the call is not known: that is what the record says), then deletes the row;
- a replica that stops gracefully deletes its own row after its audit queue is flushed;
- a replica sweeps only once its own heartbeat has succeeded for ``lost_after_s`` without a
  break: after a database outage every replica's ``seen_at`` is old, and each gets that long to
  beat again before anyone may call it lost.

A replica merely paused longer than ``lost_after_s`` (a stopped process, a frozen VM) is declared
lost like a dead one; when it resumes, its heartbeat finds its row gone, registers again and logs
an error, and the outcomes it then writes follow the ``replica_lost`` ones (two outcomes of one
decision; the first says it was not known).

The embedded (SQLite) log has one process and no registry: a decision without an outcome there
stays as it is, itself the evidence of a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from bastion.audit.build import as_model
from bastion.audit.record import DecisionEvent, Result, event_body
from bastion.audit.store import AuditLog
from bastion.errors import AuditUnavailable
from bastion.stores.postgres import PostgresDatabase

__all__ = ["OUTCOME_UNKNOWN", "REPLICA_LOST", "ReplicaRegistry", "lost_outcome", "replica_name"]

logger = logging.getLogger(__name__)

REPLICA_LOST = "replica_lost"
"""``result.error_code`` of the outcome written for a call whose replica was lost."""
OUTCOME_UNKNOWN = "outcome_unknown"
"""The ``result.flags`` entry saying the outcome (whether the upstream ran the call) is not known."""

_REGISTER = "INSERT INTO gateway_replicas (replica) VALUES ($1) ON CONFLICT (replica) DO UPDATE SET seen_at = now()"
_BEAT = "UPDATE gateway_replicas SET seen_at = now() WHERE replica = $1"
_CLAIM = (
    "UPDATE gateway_replicas SET seen_at = now() + make_interval(secs => $1) WHERE replica IN ("
    " SELECT replica FROM gateway_replicas WHERE seen_at < now() - make_interval(secs => $1) AND replica <> $2"
    " FOR UPDATE SKIP LOCKED) RETURNING replica"
)
_OPEN = (
    "SELECT d.record FROM audit_events d WHERE d.replica = $1 AND d.kind = 'decision' AND d.effect = 'allow'"
    " AND NOT EXISTS (SELECT 1 FROM audit_events o WHERE o.decision_id = d.decision_id AND o.kind = 'outcome')"
    " ORDER BY d.seq"
)
_FORGET = "DELETE FROM gateway_replicas WHERE replica = $1"


def replica_name() -> str:
    """A name for this process as a replica: ``<host>:<pid>:<8 random hex>`` (unique even when a
    pid is reused, readable in the ``replica`` column)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ReplicaRegistry:
    """This replica's heartbeat in ``database`` and the sweep of lost replicas into ``log`` (see the
    module docstring). ``replica`` is the name the audit writer puts in its rows (``replica_name``);
    ``lost_after_s`` (seconds) is the silence after which a replica is lost; ``clock`` is monotonic
    seconds (tests inject one). ``start``/``close``; ``beat`` and ``sweep`` are what the background
    task runs, public for tests.
    """

    def __init__(
        self,
        database: PostgresDatabase,
        log: AuditLog,
        replica: str,
        *,
        lost_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica = replica
        self._database = database
        self._log = log
        self._lost_after_s = lost_after_s
        self._clock = clock
        self._healthy_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.swept = 0  # outcome records this replica wrote for lost ones

    async def start(self) -> None:
        """Register this replica and start beating. Raises ``AuditUnavailable`` when the database cannot
        be reached."""
        try:
            await self._database.start()
            await self._database.pool.execute(_REGISTER, self.replica)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise AuditUnavailable(f"cannot register this replica in PostgreSQL: {exc}") from exc
        self._healthy_since = self._clock()
        self._task = asyncio.create_task(self._run(), name="bastion-replica-heartbeat")

    async def close(self) -> None:
        """Stop beating and delete this replica's row (call after the audit log is flushed: the row
        gone, nobody sweeps this replica's calls). Best effort; idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self._database.pool.execute(_FORGET, self.replica)
        except Exception as exc:  # noqa: BLE001 - another replica sweeps it: nothing is left open
            logger.warning("replica %s: could not remove its row at stop: %s", self.replica, exc)
        await self._database.close()

    async def _run(self) -> None:
        interval = self._lost_after_s / 6
        while True:
            await asyncio.sleep(interval)
            if await self.beat():
                await self.sweep()

    async def beat(self) -> bool:
        """Move this replica's heartbeat; True when it has been healthy ``lost_after_s`` in a row
        (so it may sweep). A missing row (this replica was declared lost) is registered again with
        an error logged. Never raises (except ``CancelledError``)."""
        try:
            status = await self._database.pool.execute(_BEAT, self.replica)
            if status == "UPDATE 0":
                logger.error(
                    "replica %s was declared lost by another replica (no heartbeat for %.0f s): the calls it "
                    "had open got 'replica_lost' outcomes; registering again", self.replica, self._lost_after_s,
                )  # fmt: skip
                await self._database.pool.execute(_REGISTER, self.replica)
        except Exception as exc:  # noqa: BLE001 - the database away: no sweeping until it is back
            if self._healthy_since is not None:
                logger.warning("replica %s: heartbeat failed: %s", self.replica, exc)
            self._healthy_since = None
            return False
        now = self._clock()
        if self._healthy_since is None:
            self._healthy_since = now
        return now - self._healthy_since >= self._lost_after_s

    async def sweep(self) -> int:
        """Close the open calls of every lost replica this one can claim; returns the outcome records
        written. A failure is logged and left to the next sweep (the claim's lease runs out); never
        raises (except ``CancelledError``)."""
        written = 0
        try:
            lost = await self._database.pool.fetch(_CLAIM, self._lost_after_s, self.replica)
            for row in lost:
                replica = str(row["replica"])
                records = await self._database.pool.fetch(_OPEN, replica)
                bodies = [lost_outcome(json.loads(record["record"])) for record in records]
                await asyncio.gather(*(self._log.append(body) for body in bodies))
                await self._database.pool.execute(_FORGET, replica)
                written += len(bodies)
                logger.error(
                    "replica %s was lost (no heartbeat for %.0f s): %d calls it allowed got 'replica_lost' outcomes",
                    replica, self._lost_after_s, len(bodies),
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - retried when the lease runs out
            logger.warning("sweeping lost replicas failed: %s", exc)
        self.swept += written
        return written


def lost_outcome(decision: dict[str, Any]) -> dict[str, Any]:
    """The outcome body closing ``decision`` (a stored decision record, chain keys included) whose
    replica was lost: same decision id, route, session, principal, method, target and approval;
    ``result`` an error ``replica_lost`` flagged ``outcome_unknown``, sizes 0, no ``upstream``.
    Raises ``pydantic.ValidationError`` for a record that is not a decision."""
    event = as_model(decision)
    if not isinstance(event, DecisionEvent):
        raise ValueError("not a decision record")
    result = Result(error=True, error_code=REPLICA_LOST, request_bytes=0, response_bytes=0, flags=(OUTCOME_UNKNOWN,))
    return event_body(event.outcome(result=result))
