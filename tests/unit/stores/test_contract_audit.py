"""The audit store contract: ``AuditLog`` (write) and ``AuditReader`` (read), run against every
backend: SQLite (``SQLiteAuditLog`` and ``SQLiteAuditReader`` on one file) and PostgreSQL
(``PostgresAuditLog`` and ``PostgresAuditReader`` on one schema of the PostgreSQL on loopback).

``backend`` opens writers on ONE log (a restart is a second writer after the first closed; for
PostgreSQL, writers open together are replicas) and reads it; a shared backend joins by adding
an entry to ``BACKENDS``. The tests at the end are for shared backends: replicas writing at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from stores_support import CLEANUPS, POSTGRES_URL, postgres_schema
from tests.support.audit_events import decision, fill_six, outcome

from bastion.audit import AuditLog, AuditReader, EventFilter, SQLiteAuditLog, SQLiteAuditReader
from bastion.audit.store_postgres import PostgresAuditLog, PostgresAuditReader
from bastion.errors import AuditUnavailable
from bastion.stores.postgres import PostgresDatabase


@dataclass
class Backend:
    """Writers on one log (each started, all closed after the test) and a reader of it."""

    open_log: Callable[[], AuditLog]
    reader: AuditReader


#: Every backend: given ``tmp_path``, a factory of writers on one log and a reader of it.
BACKENDS: dict[str, Callable[[Path], tuple[Callable[[], AuditLog], AuditReader]]] = {
    "sqlite": lambda tmp: (
        lambda: SQLiteAuditLog(tmp / "data" / "bastion.db", linger_ms=0),
        SQLiteAuditReader(tmp / "data" / "bastion.db"),
    ),
    "postgres": lambda tmp: (
        lambda: PostgresAuditLog(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp)), linger_ms=0),
        PostgresAuditReader(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp))),
    ),
}
SHARED = ("postgres",)


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    make_log, reader = BACKENDS[request.param](tmp_path)
    async with AsyncExitStack() as stack:
        cleanup = CLEANUPS.get(request.param)
        if cleanup is not None:
            stack.push_async_callback(cleanup, tmp_path)  # last: after the logs closed

        def open_log() -> AuditLog:
            log = make_log()
            stack.push_async_callback(log.close)
            return log

        yield Backend(open_log, reader)


def seqs(reader: AuditReader, filters: EventFilter | None = None) -> list[Any]:
    return [e["seq"] for e in reader.events(filters)]


# --- writing --------------------------------------------------------------------------------


async def test_an_append_is_readable_when_it_returns(backend: Backend) -> None:
    async with backend.open_log() as log:
        event = decision(1)
        await log.append(event)
        (record,) = backend.reader.events()
        assert (record["seq"], record["prev_hash"], record["id"]) == (1, "0" * 64, event.id)
        assert (record["kind"], record["target"]) == ("decision", "create_issue")
        assert backend.reader.verify().ok


async def test_concurrent_appends_are_all_kept_in_one_chain(backend: Backend) -> None:
    async with backend.open_log() as log:
        await asyncio.gather(*(log.append(decision(i)) for i in range(200)))
    assert seqs(backend.reader) == list(range(1, 201))
    assert backend.reader.verify().ok


async def test_each_transaction_is_timed_and_the_queue_is_empty_once_written(backend: Backend) -> None:
    """``on_commit`` (the metrics' ``bastion_audit_write_duration_seconds``) hears every committed
    transaction with its seconds; a hook that raises changes nothing; ``queued`` is 0 once written."""
    timed: list[float] = []
    async with backend.open_log() as log:
        log.on_commit = timed.append  # type: ignore[attr-defined]
        await asyncio.gather(*(log.append(decision(i)) for i in range(20)))
        assert 1 <= len(timed) <= 20
        assert all(0 < seconds < 10 for seconds in timed)
        assert log.queued == 0  # type: ignore[attr-defined]

        def broken(seconds: float) -> None:
            raise RuntimeError("a metric failed")

        log.on_commit = broken  # type: ignore[attr-defined]
        await log.append(decision(21))  # committed, and told so, whatever the hook does
    assert seqs(backend.reader) == list(range(1, 22))


async def test_queued_events_are_chained_and_flushed_on_close(backend: Backend) -> None:
    async with backend.open_log() as log:
        first = decision(1)
        await log.append(first)
        log.append_nowait(outcome(first))
        log.append_nowait(outcome(first))
    events = list(backend.reader.events())
    assert [e["kind"] for e in events] == ["decision", "outcome", "outcome"]
    assert {e["decision_id"] for e in events} == {first.decision_id}
    assert backend.reader.verify().ok


async def test_a_restart_continues_the_chain(backend: Backend) -> None:
    for count in (3, 2):
        async with backend.open_log() as log:
            for i in range(count):
                await log.append(decision(i))
    events = list(backend.reader.events())
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[3]["prev_hash"] == events[2]["hash"]
    assert backend.reader.verify().ok


async def test_appends_outside_start_and_close_are_refused(backend: Backend) -> None:
    log = backend.open_log()
    with pytest.raises(AuditUnavailable):
        await log.append(decision())
    with pytest.raises(AuditUnavailable):
        log.append_nowait(decision())
    await log.start()
    await log.close()
    with pytest.raises(AuditUnavailable):
        await log.append(decision())
    with pytest.raises(AuditUnavailable):
        log.append_nowait(decision())
    await log.close()  # idempotent
    assert seqs(backend.reader) == []


# --- reading ----------------------------------------------------------------------------------


@pytest.fixture
async def filled(backend: Backend) -> AuditReader:
    """Six events: alice allow + outcome and bob deny on github; carol allow x2 and alice deny on jira."""
    async with backend.open_log() as log:
        await fill_six(log)
    return backend.reader


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (EventFilter(), [1, 2, 3, 4, 5, 6]),
        (EventFilter(subject="alice"), [1, 2, 6]),
        (EventFilter(route="jira"), [4, 5, 6]),
        (EventFilter(tool="create_ticket"), [4, 5]),
        (EventFilter(decision="deny"), [3, 6]),
        (EventFilter(subject="alice", decision="deny"), [6]),
        (EventFilter(kind="outcome"), [2]),
        (EventFilter(route="github", limit=2), [1, 2]),  # the first matches
        (EventFilter(route="github", limit=2, newest_first=True), [2, 3]),  # the newest matches, oldest first
        (EventFilter(subject="nobody"), []),
    ],
)
async def test_events_are_filtered_in_seq_order(filled: AuditReader, filters: EventFilter, expected: list[int]) -> None:
    assert seqs(filled, filters) == expected


async def test_time_bounds_must_be_timezone_aware(filled: AuditReader) -> None:
    times = [e["time"] for e in filled.events()]
    assert times == sorted(times)
    assert seqs(filled, EventFilter(since=times[0])) == [1, 2, 3, 4, 5, 6]
    assert seqs(filled, EventFilter(until=times[0])) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        list(filled.events(EventFilter(since="2026-05-09T10:00:00")))


async def test_a_log_is_readable_while_it_is_written(backend: Backend) -> None:
    async with backend.open_log() as log:
        await log.append(decision(1))
        assert seqs(backend.reader) == [1]
        assert backend.reader.verify().ok
        await log.append(decision(2))
    assert seqs(backend.reader) == [1, 2]


# --- replicas (shared backends) -----------------------------------------------------------------


@pytest.fixture(params=SHARED)
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A shared backend only (replicas appending at once)."""
    make_log, reader = BACKENDS[request.param](tmp_path)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(CLEANUPS[request.param], tmp_path)

        def open_log() -> AuditLog:
            log = make_log()
            stack.push_async_callback(log.close)
            return log

        yield Backend(open_log, reader)


async def test_replicas_appending_at_once_keep_one_chain(shared: Backend) -> None:
    logs = [shared.open_log() for _ in range(3)]
    for log in logs:
        await log.start()
    firsts = [decision(i) for i in range(90)]
    await asyncio.gather(*(logs[i % 3].append(event) for i, event in enumerate(firsts)))
    for i, event in enumerate(firsts[:30]):
        logs[i % 3].append_nowait(outcome(event))
    for log in logs:
        await log.close()
    events = list(shared.reader.events())
    assert [e["seq"] for e in events] == list(range(1, 121))  # no gap, no duplicate
    assert {e["id"] for e in events} == {e.id for e in firsts} | {e["id"] for e in events if e["kind"] == "outcome"}
    assert shared.reader.verify().ok


async def test_an_event_the_database_cannot_store_is_refused_alone(shared: Backend) -> None:
    async with shared.open_log() as log:
        await log.append(decision(1))
        with pytest.raises(AuditUnavailable, match="not serializable"):
            await log.append({**decision(2).model_dump(mode="json"), "route": "bad\x00route"})
        await log.append(decision(3))
    assert [e["seq"] for e in shared.reader.events()] == [1, 2]
    assert shared.reader.verify().ok


@pytest.mark.parametrize(
    ("tamper", "problem", "seq"),
    [
        ("UPDATE audit_events SET record = replace(record, 'alice', 'mallory') WHERE seq = 2", "modified", 2),
        ("UPDATE audit_events SET subject = 'mallory' WHERE seq = 3", "modified", 3),
        ("DELETE FROM audit_events WHERE seq = 2", "deleted", 2),
    ],
)
async def test_verify_finds_a_change_made_in_the_database(
    shared: Backend, tmp_path: Path, tamper: str, problem: str, seq: int
) -> None:
    async with shared.open_log() as log:
        for i in range(4):
            await log.append(decision(i))
    assert shared.reader.verify().ok
    connection = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": postgres_schema(tmp_path)})
    try:
        await connection.execute(tamper)
    finally:
        await connection.close()
    result = shared.reader.verify()
    assert (result.ok, result.problem, result.first_bad_seq) == (False, problem, seq)
