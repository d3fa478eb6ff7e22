"""The audit store: ``AuditLog`` (the writer the gateway uses) and ``AuditReader`` (the CLI's reads).

``AuditLog`` is async: ``append`` returns once the event is durably committed (the request
path refuses a call when it raises ``AuditUnavailable``); ``append_nowait`` queues an outcome
event that ``close`` flushes. Records are chained (``bastion.audit.chain``): the log assigns
``seq`` and ``prev_hash`` in commit order. ``AuditReader`` is synchronous, for the CLI:
records in ``seq`` order, filtered by ``EventFilter``, and the chain verified.

The embedded backend is SQLite: ``bastion.audit.store_sqlite.SQLiteAuditLog`` writes and
``bastion.audit.query.SQLiteAuditReader`` reads the ``audit_events`` table. The contract
suite is ``tests/unit/stores/test_contract_audit.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from bastion.audit.chain import VerifyResult
from bastion.audit.record import AuditEvent
from bastion.errors import AuditUnavailable
from bastion.stores.lifecycle import Lifecycle

__all__ = [
    "RETRY_LIMIT",
    "RETRY_S",
    "ActivityReader",
    "AuditLog",
    "AuditReader",
    "EventFilter",
    "Queued",
    "keep_queued",
    "report_commit",
    "settle_appends",
]

logger = logging.getLogger("bastion.audit")

RETRY_S = 1.0
"""How long a writer's queued events whose transaction failed wait for company before they are tried
again alone (seconds)."""
RETRY_LIMIT = 100_000
"""Queued events a writer keeps for another try while its database cannot take them; past this, newer
ones are logged as lost."""


class Queued(Protocol):
    """An event in a writer's queue: ``future`` is what its ``append`` waits on (``None``:
    ``append_nowait``)."""

    future: asyncio.Future[None] | None


Q = TypeVar("Q", bound=Queued)


class AuditLog(Lifecycle, Protocol):
    """Where audit events go. ``start`` before use (``AuditUnavailable`` when the store cannot be
    opened), ``close`` to write every queued event and release the store; or ``async with``."""

    @property
    def running(self) -> bool:
        """Whether appends are accepted now (started, not closing, the writer alive)."""
        ...

    async def head(self) -> tuple[int, str]:
        """The chain's head: the ``seq`` and ``hash`` of the newest committed record (``0`` and the
        genesis hash for an empty log). Raises the backend's error when it cannot be read."""
        ...

    async def append(self, event: AuditEvent | dict[str, Any]) -> None:
        """Return once ``event`` is durably committed; raise ``AuditUnavailable`` otherwise."""
        ...

    def append_nowait(self, event: AuditEvent | dict[str, Any]) -> None:
        """Queue ``event`` to be committed soon; raise ``AuditUnavailable`` if the log is not running."""
        ...


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Conditions an event must meet; ``None`` means any.

    ``subject`` is ``principal.sub``; ``tool`` matches ``target``; ``decision`` matches
    the effect of decision events (outcome events have none, so they never match);
    ``since`` (inclusive) and ``until`` (exclusive) are timezone-aware datetimes or
    RFC 3339 UTC strings; ``limit`` keeps the first (or, with ``newest_first``, the
    last) ``limit`` matches.
    """

    subject: str | None = None
    route: str | None = None
    tool: str | None = None
    decision: Literal["allow", "deny"] | None = None
    kind: Literal["decision", "outcome"] | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None
    limit: int | None = None
    newest_first: bool = False


class AuditReader(Protocol):
    """Reads a log another process may be writing (read-only; never changes it)."""

    def events(self, filters: EventFilter | None = None) -> Iterator[dict[str, Any]]:
        """Yield matching records (dicts with the keys of ``record.RECORD_KEYS``) in ascending
        ``seq``; an empty log yields nothing. Raises ``FileNotFoundError`` when there is no log."""
        ...

    def verify(self) -> VerifyResult:
        """Verify the whole chain (and whatever the backend keeps beside each record)."""
        ...

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of record ``seq``, or None when there is none (to hold against a checkpoint)."""
        ...


class ActivityReader(AuditReader, Protocol):
    """An ``AuditReader`` that also pairs decision records with their outcomes (the portal's activity
    page): ``SQLiteAuditReader`` and ``PostgresAuditReader``."""

    def calls(
        self, methods: Collection[str], filters: EventFilter | None = None, *, issuer: str | None = None
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """The decision records whose ``method`` is one of ``methods`` matching ``filters`` (its ``kind``
        and ``newest_first`` ignored) and, when given, of principals of ``issuer``, NEWEST first, at
        most ``filters.limit``, each with the outcome record of the same ``decision_id`` or ``None``."""
        ...


def report_commit(on_commit: Callable[[float], None] | None, seconds: float) -> None:
    """Tell ``on_commit`` (a writer's metrics hook, or ``None``) that a transaction took ``seconds``;
    what it raises is logged, never raised: the records are committed whatever a metric does."""
    if on_commit is None:
        return
    try:
        on_commit(seconds)
    except Exception:
        logger.exception("reporting an audit transaction's time failed")


def keep_queued(
    failed: Iterable[Q], retry: list[Q], settle: Callable[[list[Q], str], None], exc: BaseException
) -> None:
    """After a transaction of ``failed`` failed with ``exc``: the waiting appends fail now (``settle``:
    their calls are refused), and the queued ones (``append_nowait``, outcome records) join ``retry``,
    to be tried again first, up to ``RETRY_LIMIT`` (past it they are settled as lost: logged)."""
    failed = list(failed)
    settle([pending for pending in failed if pending.future is not None], f"audit record not written: {exc}")
    queued = [pending for pending in failed if pending.future is None]
    room = max(0, RETRY_LIMIT - len(retry))
    retry.extend(queued[:room])
    settle(queued[room:], f"audit record not written, {RETRY_LIMIT} queued already: {exc}")


def settle_appends(futures: Iterable[asyncio.Future[None]], error: str | None) -> None:
    """Resume the ``append`` calls waiting on ``futures``: committed (``error`` is None), or failed with
    ``AuditUnavailable(error)``. Futures already done are left alone. Call on their event loop."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(AuditUnavailable(error))
