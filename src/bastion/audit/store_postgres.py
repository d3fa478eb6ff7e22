"""The shared audit log: ``AuditLog`` and ``AuditReader`` on PostgreSQL, one hash chain for every replica.

Every replica appends to the same table, ``audit_events`` (migration ``0002_audit.sql``, the columns
of the embedded log: ``bastion.audit.schema``). The chain stays one sequence without gaps because
each writing transaction first locks the chain's head, the single row of ``audit_head``
(``SELECT ... FOR UPDATE``), seals its batch after it (``chain.seal``: ``seq`` and ``prev_hash`` from
the head, then the record's hash), inserts the rows and moves the head, and commits: a replica that
wants to append meanwhile waits for the lock, then continues from the new head. A failed transaction
rolls back whole, head included, so nothing is half written. PostgreSQL commits durably by default
(``synchronous_commit``, the WAL flushed), which is what ``append`` waits for.

The writer is a task on the caller's event loop (asyncpg is asynchronous): events queue in
process, and each transaction takes every event waiting, up to ``max_batch``; a batch nobody
waits on (only ``append_nowait`` events) lingers up to ``linger_ms`` for company, as the embedded
writer does. A pooled connection the server dropped (PostgreSQL restarted) fails at its first
statement, before anything of the batch is sent: the transaction is then tried once more on a new
connection and the pool's other connections are replaced, so a restart refuses no call. An event
that cannot be written as PostgreSQL text (lone surrogates, or NUL in a
search column) is refused alone. When a transaction fails (the database unreachable), the appends
waiting on it fail at once (their calls are refused), while the queued events in it are kept
(up to ``RETRY_LIMIT``) and tried again first, every ``RETRY_S`` seconds or with the next event:
an outcome recorded just as the database went away is written once it is back.

``PostgresAuditReader`` reads for the CLI, synchronously: each query runs on a private event loop
in a worker thread (so it can be called from inside a running loop too), ``events`` page by page.

Selected by ``stores.postgres`` (``bastion.stores.backends.audit_log`` and ``audit_reader``): the
gateway writes here, and ``bastion audit``, ``bastion policy shadow-report`` and the portal's
activity page (``calls``) read here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import asyncpg

from bastion.audit.chain import VerifyResult, seal
from bastion.audit.query import Call, verify_rows, where_clause
from bastion.audit.record import AuditEvent, event_body
from bastion.audit.schema import COLUMNS, index_columns
from bastion.audit.store import RETRY_S, EventFilter, keep_queued, report_commit, settle_appends
from bastion.errors import AuditUnavailable
from bastion.stores.postgres import PostgresDatabase

__all__ = ["PostgresAuditLog", "PostgresAuditReader"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_INSERT = (
    f"INSERT INTO audit_events ({', '.join(COLUMNS)}, replica) "  # noqa: S608 - constants only
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 2))})"
)
_PAGE = 1000
"""Rows per query when the reader walks the log."""


@dataclass(slots=True, eq=False)  # compared by identity (a batch's refused events)
class _Pending:
    body: dict[str, Any]
    future: asyncio.Future[None] | None  # None: append_nowait


class PostgresAuditLog:
    """``AuditLog`` in ``database`` (see the module docstring). ``max_batch`` caps the events of one
    transaction; ``linger_ms`` is how long a batch of queued events may wait for company.
    ``replica`` names the writing replica in each row's ``replica`` column (migration
    ``0009_replicas.sql``, outside the record: ``bastion.audit.replicas`` reads it when that replica
    is lost); ``None`` (the CLI) leaves it null. ``commits`` and ``failures`` count transactions
    committed and failed."""

    def __init__(
        self, database: PostgresDatabase, *, max_batch: int = 1024, linger_ms: float = 20.0, replica: str | None = None
    ) -> None:
        self._database = database
        self._replica = replica
        self._max_batch = max_batch
        self._linger_s = linger_ms / 1000
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._retry: list[_Pending] = []  # queued events whose transaction failed: tried again first
        self._accepting = False
        self.commits = 0
        self.failures = 0
        self.on_commit: Callable[[float], None] | None = None  # the metrics: each transaction's seconds

    async def start(self) -> None:
        """Open the database (migrating it) and start the writer; ``AuditUnavailable`` when it cannot."""
        if self._writer is not None:
            raise RuntimeError("the audit log is already started")
        try:
            await self._database.start()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise AuditUnavailable(f"cannot open the audit log in PostgreSQL: {exc}") from exc
        self._queue = asyncio.Queue()
        self._accepting = True
        self._writer = asyncio.create_task(self._run(), name="bastion-audit-postgres")

    async def close(self) -> None:
        """Commit everything queued, stop the writer and release the database (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._accepting = False
        self._queue.put_nowait(None)
        await writer
        await self._database.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        """See ``AuditLog.running``."""
        return self._accepting and self._writer is not None and not self._writer.done()

    @property
    def queued(self) -> int:
        """Events waiting for their transaction (those of a failed one, to be tried again, included)."""
        return self._queue.qsize() + len(self._retry)

    async def head(self) -> tuple[int, str]:
        """See ``AuditLog.head``: the global head (every replica's records)."""
        row = await self._database.pool.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
        if row is None:
            raise AuditUnavailable("the audit log's head row is missing")
        return int(row["seq"]), str(row["hash"])

    async def append(self, event: AuditEvent | dict[str, Any]) -> None:
        """See ``AuditLog.append``: returns once the transaction holding ``event`` committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(_Pending(_body(event), future))
        await future

    def append_nowait(self, event: AuditEvent | dict[str, Any]) -> None:
        """See ``AuditLog.append_nowait``."""
        self._put(_Pending(_body(event), None))

    def _put(self, pending: _Pending) -> None:
        if not self._accepting:
            raise AuditUnavailable("the audit log is not running")
        self._queue.put_nowait(pending)

    async def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = await self._next_batch()
            if batch:
                await self._commit(batch)
        if self._retry:
            logger.error("%d queued audit events lost at shutdown: the database did not take them", len(self._retry))

    async def _next_batch(self) -> tuple[list[_Pending], bool]:
        """The next batch (queued events that failed before, first), and whether the stop sentinel was
        read (the queue is empty then)."""
        if self._retry:  # kept in ``_retry`` (counted in ``queued``) while they wait for company
            try:
                item = await asyncio.wait_for(self._queue.get(), RETRY_S)
            except TimeoutError:
                batch, self._retry = self._retry, []
                return batch, False
        else:
            item = await self._queue.get()
        batch, self._retry = self._retry, []
        deadline = time.monotonic() + self._linger_s
        while item is not None:
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or any(p.future is not None for p in batch):
                    return batch, False
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    return batch, False
            else:
                item = self._queue.get_nowait()
        return batch, True

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        for attempt in (1, 2):
            written: list[_Pending] = []
            refused: list[_Pending] = []  # settled one by one (not serializable)
            began = False  # the head row was read: from here on a failure may follow a sent COMMIT
            try:
                async with self._database.pool.acquire() as connection, connection.transaction():
                    head = await connection.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
                    began = True
                    if head is None:
                        raise AuditUnavailable("the audit log's head row is missing")
                    seq, prev = int(head["seq"]), str(head["hash"])
                    rows: list[tuple[Any, ...]] = []
                    for pending in batch:
                        try:
                            record, text = seal(pending.body, seq=seq + 1, prev_hash=prev)
                            row = (*index_columns(record), text, record["hash"], self._replica)
                            _check_text(row)
                        except (TypeError, ValueError) as exc:  # not a JSON value, or not text PostgreSQL keeps
                            _settle([pending], f"audit record not serializable: {exc}")
                            refused.append(pending)
                            continue
                        seq, prev = seq + 1, record["hash"]
                        rows.append(row)
                        written.append(pending)
                    if rows:
                        await connection.executemany(_INSERT, rows)
                        await connection.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, prev)
            except Exception as exc:  # noqa: BLE001 - any failure refuses the batch (fail closed)
                if attempt == 1 and not began and _connection_lost(exc):
                    # A pooled connection the server dropped (a restart) fails at its first use, before
                    # anything of the batch was sent: try once more on a new one, and have every other
                    # pooled connection replaced, so that a restart refuses no call.
                    logger.warning("audit: a pooled PostgreSQL connection was gone (%s); trying a new one", exc)
                    await self._database.pool.expire_connections()
                    continue
                self._failed(batch, refused, exc)
                return
            break
        if written:
            self.commits += 1
            report_commit(self.on_commit, time.perf_counter() - started)
        _settle(written, None)

    def _failed(self, batch: list[_Pending], refused: list[_Pending], exc: Exception) -> None:
        """A transaction of ``batch`` failed with ``exc`` (``refused``: its events settled already)."""
        self.failures += 1
        unsettled = [pending for pending in batch if pending not in refused]  # sealed or not yet
        logger.error("audit batch of %d events not written: %s", len(unsettled), exc)
        # A waiting append fails now (its call is refused); a queued event is kept and tried again,
        # so an outcome recorded while the database was away is not lost when it comes back.
        keep_queued(unsettled, self._retry, _settle, exc)


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself failed (closed by the server, reset, refused)."""
    return isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError))


class PostgresAuditReader:
    """``AuditReader`` on the audit log in ``database`` (not started: the reader opens its own
    connections, one per query). Read-only."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    def events(self, filters: EventFilter | None = None) -> Iterator[dict[str, Any]]:
        """See ``AuditReader.events``."""
        f = filters or EventFilter()
        where, params = where_clause(f, lambda n: f"${n}")
        if f.newest_first or f.limit is not None:
            order = "DESC" if f.newest_first else "ASC"
            sql = f"SELECT record FROM audit_events{where} ORDER BY seq {order}"  # noqa: S608 - fixed fragments
            if f.limit is not None:
                sql += f" LIMIT ${len(params) + 1}"
                params.append(int(f.limit))
            rows = self._run(self._fetch(sql, params))
            for row in reversed(rows) if f.newest_first else rows:
                yield json.loads(row[0])
            return
        after = 0
        joiner = " AND" if where else " WHERE"
        while True:
            page_sql = (
                f"SELECT seq, record FROM audit_events{where}{joiner} seq > ${len(params) + 1} "  # noqa: S608
                f"ORDER BY seq LIMIT {_PAGE}"
            )
            rows = self._run(self._fetch(page_sql, [*params, after]))
            for row in rows:
                yield json.loads(row[1])
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def calls(
        self, methods: Collection[str], filters: EventFilter | None = None, *, issuer: str | None = None
    ) -> list[Call]:
        """The decision records of ``methods`` matching ``filters`` and ``issuer``, newest first, each
        with its outcome: as ``SQLiteAuditReader.calls`` (the portal's activity page)."""
        if not methods:
            return []
        f = dataclasses.replace(filters or EventFilter(), kind="decision")
        where, params = where_clause(f, lambda n: f"${n}")
        params.append(list(methods))
        where += f" AND (record::jsonb ->> 'method') = ANY(${len(params)}::text[])"
        if issuer is not None:
            params.append(issuer)
            where += f" AND (record::jsonb -> 'principal' ->> 'issuer') = ${len(params)}"
        sql = f"SELECT record FROM audit_events{where} ORDER BY seq DESC"  # noqa: S608 - fixed fragments
        if f.limit is not None:
            params.append(int(f.limit))
            sql += f" LIMIT ${len(params)}"
        decisions = [json.loads(row[0]) for row in self._run(self._fetch(sql, params))]
        ids = list(dict.fromkeys(str(d.get("decision_id")) for d in decisions))
        outcomes: dict[str, dict[str, Any]] = {}
        if ids:
            rows = self._run(self._fetch(
                "SELECT record FROM audit_events WHERE kind = 'outcome' AND decision_id = ANY($1::text[]) ORDER BY seq",
                [ids],
            ))  # fmt: skip
            for row in rows:
                record = json.loads(row[0])
                outcomes.setdefault(str(record.get("decision_id")), record)
        return [(d, outcomes.get(str(d.get("decision_id")))) for d in decisions]

    def verify(self) -> VerifyResult:
        """See ``AuditReader.verify``: the chain, and that the search columns agree with each record
        (as ``SQLiteAuditReader.verify``)."""
        return verify_rows(self._rows())

    def hash_at(self, seq: int) -> str | None:
        """See ``AuditReader.hash_at``."""
        rows = self._run(self._fetch("SELECT hash FROM audit_events WHERE seq = $1", [seq]))
        return str(rows[0][0]) if rows else None

    def _rows(self) -> Iterator[tuple[Any, ...]]:
        after = 0
        while True:
            sql = f"SELECT {', '.join(COLUMNS)} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT {_PAGE}"  # noqa: S608
            rows = self._run(self._fetch(sql, [after]))
            yield from rows
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    async def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        connection = await self._database.connect()
        try:
            return [tuple(record) for record in await connection.fetch(sql, *params)]
        except asyncpg.UndefinedTableError:
            return []  # a database no gateway has migrated yet: an empty log
        finally:
            await connection.close()

    @staticmethod
    def _run(coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on a private event loop in a worker thread and wait for it."""
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bastion-audit-read") as pool:
            return pool.submit(asyncio.run, coroutine).result()


def _check_text(row: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` for a value PostgreSQL text cannot hold (a lone surrogate, NUL)."""
    for value in row:
        if isinstance(value, str):
            value.encode("utf-8")  # UnicodeEncodeError is a ValueError
            if "\x00" in value:
                raise ValueError("NUL in a search column")


def _body(event: AuditEvent | dict[str, Any]) -> dict[str, Any]:
    return event if isinstance(event, dict) else event_body(event)


def _settle(items: list[_Pending], error: str | None) -> None:
    """Resume the appends waiting on ``items``; log a queued event that was lost."""
    if error:
        for item in items:
            if item.future is None:
                logger.error("queued audit event %s lost: %s", item.body.get("id"), error)
    settle_appends((item.future for item in items if item.future is not None), error)
