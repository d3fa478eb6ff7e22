"""The embedded ``AuditLog``: the writer side of the SQLite audit store.

``SQLiteAuditLog`` keeps the log in the ``audit_events`` table of ``<data_dir>/bastion.db``
(WAL, ``synchronous=FULL``); ``bastion.audit.query.SQLiteAuditReader`` reads it.

Writing. One dedicated thread owns the ``sqlite3`` connection. ``append`` puts the event
on a queue and waits; the thread takes everything queued, assigns ``seq`` and
``prev_hash`` (it keeps the last ``seq``/``hash`` in memory, read from the table at
start), seals each record and commits the whole batch in one transaction (group
commit: events that arrive while a commit runs go into the next one). Each waiting
``append`` is resumed, through ``loop.call_soon_threadsafe``, only after ITS
transaction committed. If the transaction fails, every ``append`` in it raises
``AuditUnavailable``, nothing of the batch is stored, and the in-memory chain state
stays at the last committed record. ``append_nowait`` (for outcome events) queues the
same way without waiting; such events are chained like the others, committed with the
next batch (a batch of only such events lingers up to ``linger_ms`` for a durable append
to share its fsync with) and flushed by ``close``. If their batch fails because of the database's
state (``sqlite3.OperationalError``: locked past ``busy_timeout_ms``, disk full, I/O), they are kept
(up to ``RETRY_LIMIT``) and tried again first, every ``RETRY_S`` seconds or with the next event,
as the PostgreSQL writer does: an outcome recorded while the disk was full is written once there is
room. After any other error, and those still kept when the writer stops, they are lost and logged
(``bastion.audit`` logger, ``failures`` counter).

A cancelled ``append`` may still be written: cancellation does not take an event back.
One process writes a given file; a second writer's rows would collide on ``seq``
(its appends then fail and it re-reads the table's last record).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from bastion.audit.chain import GENESIS_HASH, seal
from bastion.audit.record import AuditEvent, event_body
from bastion.audit.schema import DDL, INSERT, index_columns
from bastion.audit.store import RETRY_S, keep_queued, report_commit, settle_appends
from bastion.errors import AuditUnavailable

__all__ = ["SQLiteAuditLog"]

logger = logging.getLogger("bastion.audit")


@dataclass(slots=True)
class _Pending:
    body: dict[str, Any]
    future: asyncio.Future[None] | None
    loop: asyncio.AbstractEventLoop | None


class SQLiteAuditLog:
    """``AuditLog`` on one SQLite file (see the module docstring for the write path).

    ``busy_timeout_ms`` bounds how long a transaction waits for a lock held by another
    connection before the batch fails; ``max_batch`` caps events per transaction;
    ``synchronous`` is ``"full"`` (fsync every commit: durable across power loss) or
    ``"normal"`` (durable across a crash of this process only);
    ``linger_ms`` is how long a batch of queued (``append_nowait``) events may wait for
    company before it is committed on its own (0: commit at once).
    ``commits`` and ``failures`` count transactions committed and failed;
    ``on_commit`` (optional, the metrics) is called from the writer thread with each committed
    transaction's seconds (``BEGIN`` to ``COMMIT``, fsync included; thread-safe, what it raises is
    logged); ``queued`` is how many events wait for their transaction.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = 5000,
        max_batch: int = 1024,
        linger_ms: float = 20.0,
        synchronous: Literal["full", "normal"] = "full",
    ) -> None:
        self.path = path
        self._synchronous = synchronous.upper()
        self._linger_s = linger_ms / 1000
        self.commits = 0
        self.failures = 0
        self.on_commit: Callable[[float], None] | None = None
        self._busy_timeout = busy_timeout_ms / 1000
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._retry: list[_Pending] = []  # the writer thread's: queued events to try again first
        self._lock = threading.Lock()
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._head: tuple[int, str] = (0, GENESIS_HASH)  # (seq, hash) committed; replaced whole, read by head()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the writer thread, open the database, load the chain head; ``AuditUnavailable`` if not."""
        if self._thread is not None:
            raise RuntimeError("the audit log is already started")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name="bastion-audit", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except AuditUnavailable:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    async def close(self) -> None:
        """Commit everything queued, stop the thread, close the connection."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._lock:
            self._accepting = False
            self._queue.put(None)
        await asyncio.to_thread(thread.join)

    @property
    def running(self) -> bool:
        """See ``AuditLog.running``."""
        return self._accepting

    @property
    def queued(self) -> int:
        """Events waiting for their transaction, those of a failed one to be tried again included
        (approximate: the writer takes them meanwhile)."""
        return self._queue.qsize() + len(self._retry)

    async def head(self) -> tuple[int, str]:
        """See ``AuditLog.head``: the newest record this writer committed (it is the only writer of
        its file while it runs; after ``close``, still the last one)."""
        return self._head

    async def append(self, event: AuditEvent | dict[str, Any]) -> None:
        """Append ``event`` and return after its transaction committed (fsync'ed WAL).

        ``event`` is a model or an already built body (``bastion.audit.build``).
        Raises ``AuditUnavailable`` if the log is not running or the commit failed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._put(_Pending(_body(event), future, loop))
        await future

    def append_nowait(self, event: AuditEvent | dict[str, Any]) -> None:
        """Queue ``event`` for the next transaction and return at once (outcome events)."""
        self._put(_Pending(_body(event), None, None))

    def _put(self, item: _Pending) -> None:
        with self._lock:
            if not self._accepting:
                raise AuditUnavailable("the audit log is not running")
            self._queue.put(item)

    # --- the writer thread -------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            loop.call_soon_threadsafe(settle_appends, [ready], f"cannot open audit log {self.path}: {exc}")
            return
        with self._lock:
            self._accepting = True
        loop.call_soon_threadsafe(settle_appends, [ready], None)
        try:
            self._serve(conn)
        finally:
            with self._lock:
                self._accepting = False
                leftover = _drain(self._queue)
            leftover[:0], self._retry = self._retry, []
            self._settle(leftover, "the audit writer stopped")
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(DDL)
            self._load_head(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _load_head(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
        self._head = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            batch, stop = self._next_batch()
            try:
                self._commit(conn, batch)
            except Exception:  # the writer must outlive any one bad batch
                logger.exception("audit batch of %d events failed", len(batch))
                self._rollback(conn)
                self._reload_head(conn)
                self._settle(batch, "internal error in the audit writer")
            except BaseException:
                self._settle(batch, "internal error in the audit writer")
                raise
            if stop:
                return

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """Block for the next batch; the flag is True when the stop sentinel was read.

        A batch nobody waits on (only ``append_nowait`` events) lingers up to
        ``linger_s`` for one more event, so that it shares the next durable
        commit instead of paying an fsync of its own.
        """
        if self._retry:  # queued events whose transaction failed go first (counted in ``queued`` meanwhile)
            try:
                item = self._queue.get(timeout=RETRY_S)
            except queue.Empty:
                batch, self._retry = self._retry, []
                return batch, False
        else:
            item = self._queue.get()
        batch, self._retry = self._retry, []
        deadline = time.monotonic() + self._linger_s
        while item is not None:
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or any(p.future is not None for p in batch):
                    return batch, False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return batch, False
        return batch, True

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        seq, prev = self._head
        rows: list[tuple[Any, ...]] = []
        sealed: list[_Pending] = []
        for pending in batch:
            try:
                record, text = seal(pending.body, seq=seq + 1, prev_hash=prev)
                row = (*index_columns(record), text, record["hash"])
                for value in row:  # text SQLite cannot store (lone surrogates) fails this event only
                    if isinstance(value, str):
                        value.encode("utf-8")
            except (TypeError, ValueError) as exc:  # not a JSON value: refuse this event only
                self._settle([pending], f"audit record not serializable: {exc}")
                continue
            seq, prev = seq + 1, record["hash"]
            rows.append(row)
            sealed.append(pending)
        if not rows:
            return
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, ValueError) as exc:  # ValueError: e.g. text SQLite cannot encode
            self.failures += 1
            logger.error("audit batch of %d events not written: %s", len(sealed), exc)
            self._reload_head(conn)
            self._keep_queued(sealed, exc)
            return
        self._head = (seq, prev)
        self.commits += 1
        report_commit(self.on_commit, time.perf_counter() - started)
        self._settle(sealed, None)

    def _keep_queued(self, sealed: list[_Pending], exc: Exception) -> None:
        """After a failed transaction: the waiting appends fail now (their calls are refused); the
        queued events (outcome records) are kept to be tried again first (``keep_queued``), when
        the failure is the database's state (``OperationalError``: locked, disk full, I/O), which
        passes; after any other error (a constraint, text it cannot take) they are lost, logged, as a
        retry would fail again and hold every later record back."""
        if isinstance(exc, sqlite3.OperationalError):
            keep_queued(sealed, self._retry, self._settle, exc)
        else:
            self._settle(sealed, f"audit record not written: {exc}")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            logger.error("audit rollback failed: %s", exc)

    def _reload_head(self, conn: sqlite3.Connection) -> None:
        try:
            self._load_head(conn)
        except sqlite3.Error as exc:
            logger.error("audit chain head not re-read, keeping the last committed one: %s", exc)

    def _settle(self, items: list[_Pending], error: str | None) -> None:
        """Resume the waiting appends of ``items``, one callback per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for item in items:
            if item.future is None or item.loop is None:
                if error:
                    logger.error("queued audit event %s lost: %s", item.body.get("id"), error)
                continue
            by_loop.setdefault(item.loop, []).append(item.future)
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(settle_appends, futures, error)
            except RuntimeError:  # the loop is closed; nobody is waiting any more
                continue


def _body(event: AuditEvent | dict[str, Any]) -> dict[str, Any]:
    return event if isinstance(event, dict) else event_body(event)


def _drain(q: queue.SimpleQueue[_Pending | None]) -> list[_Pending]:
    items: list[_Pending] = []
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return items
        if item is not None:
            items.append(item)
