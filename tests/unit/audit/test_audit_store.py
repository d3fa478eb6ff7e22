"""SQLiteAuditLog: durable group commit, failure handling; verify after raw tampering.

What every ``AuditLog`` does is in ``tests/unit/stores/test_contract_audit.py``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from audit_helpers import decision, outcome, raw

from bastion.audit.chain import seal
from bastion.audit.query import iter_events, verify
from bastion.audit.record import event_body
from bastion.audit.schema import INSERT, index_columns
from bastion.audit.store import AuditLog
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.errors import AuditUnavailable


async def _fill(db: Path, n: int) -> None:
    async with SQLiteAuditLog(db) as log:
        for i in range(n):
            await log.append(decision(i))


def _seqs(db: Path) -> list[int]:
    return [e["seq"] for e in iter_events(db)]


async def test_append_is_committed_before_it_returns(db: Path) -> None:
    log: AuditLog = SQLiteAuditLog(db)
    async with log:
        await log.append(decision(1))
        with raw(db) as conn:  # another connection sees it at once
            row = conn.execute("SELECT kind, subject, target, effect, record FROM audit_events").fetchone()
        assert row[:4] == ("decision", "alice", "create_issue", "allow")
        record = json.loads(row[4])
        assert (record["seq"], record["prev_hash"]) == (1, "0" * 64)
        assert record["arguments"]["token"] == "[REDACTED:secret_field]"
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_appends_share_transactions_and_keep_the_chain(db: Path) -> None:
    log = SQLiteAuditLog(db)
    async with log:
        await asyncio.gather(*(log.append(decision(i)) for i in range(200)))
        assert log.commits < 200  # group commit happened
    assert _seqs(db) == list(range(1, 201))
    assert verify(db).ok


async def test_failed_commit_refuses_every_waiting_append_and_keeps_the_queued_ones(db: Path) -> None:
    await _fill(db, 2)
    log = SQLiteAuditLog(db, busy_timeout_ms=20)
    async with log:
        with raw(db) as conn:
            conn.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
            results = await asyncio.gather(
                *(log.append(decision(i)) for i in range(5)), return_exceptions=True
            )
            queued = outcome(decision(9))
            log.append_nowait(queued)
            with pytest.raises(AuditUnavailable):
                await log.append(decision(10))  # committed after the queued outcome: same failure
            assert log.queued == 1  # the outcome, kept for another try
            conn.execute("ROLLBACK")
        assert all(isinstance(r, AuditUnavailable) for r in results)
        assert _seqs(db) == [1, 2]
        assert log.failures >= 1
        await log.append(decision(11))  # the chain state did not advance on failure
    events = list(iter_events(db))
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[2]["id"] == queued.id  # the kept outcome went first, once the lock was free
    assert verify(db).ok


async def test_queued_events_are_tried_again_on_their_own_once_the_database_is_free(db: Path) -> None:
    await _fill(db, 1)
    async with SQLiteAuditLog(db, busy_timeout_ms=20) as log:
        with raw(db) as conn:
            conn.execute("BEGIN EXCLUSIVE")
            log.append_nowait(outcome(decision(1)))
            for _ in range(100):  # its first try fails on the lock
                if log.failures:
                    break
                await asyncio.sleep(0.02)
            assert log.failures >= 1
            conn.execute("ROLLBACK")
        for _ in range(150):  # no other event comes: tried again alone within a second or so
            if len(_seqs(db)) == 2:
                break
            await asyncio.sleep(0.02)
        assert _seqs(db) == [1, 2]


async def test_a_batch_failing_halfway_is_rolled_back_whole(db: Path) -> None:
    await _fill(db, 2)
    async with SQLiteAuditLog(db) as log:
        with raw(db) as conn:
            conn.execute("BEGIN EXCLUSIVE")  # a foreign writer takes seq 5 and holds the lock meanwhile
            forged, text = seal(event_body(decision(99)), seq=5, prev_hash="f" * 64)
            conn.execute(INSERT, (*index_columns(forged), text, forged["hash"]))
            blocker = asyncio.create_task(log.append(decision(0)))  # will be seq 3, alone in its batch
            await asyncio.sleep(0.1)  # the writer now waits for the lock with it
            batch = [asyncio.create_task(log.append(decision(i))) for i in range(1, 4)]  # seq 4, 5, 6
            await asyncio.sleep(0.05)
            conn.execute("COMMIT")
        await blocker
        results = await asyncio.gather(*batch, return_exceptions=True)
        assert all(isinstance(r, AuditUnavailable) for r in results)
        assert _seqs(db) == [1, 2, 3, 5]  # seq 4 of the failed batch is not there
        await log.append(decision(9))  # the head was re-read from the table
    assert _seqs(db) == [1, 2, 3, 5, 6]


async def test_start_fails_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "bastion.db").mkdir()
    with pytest.raises(AuditUnavailable):
        await SQLiteAuditLog(tmp_path / "bastion.db").start()


async def test_only_the_audit_table_is_created(db: Path) -> None:
    await _fill(db, 1)
    with raw(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"audit_events"}


# --- tampering with a second raw connection ------------------------------------------------


def _record(conn: sqlite3.Connection, seq: int) -> dict[str, object]:
    return dict(
        json.loads(conn.execute("SELECT record FROM audit_events WHERE seq = ?", (seq,)).fetchone()[0])
    )


async def test_modified_record_is_reported(db: Path) -> None:
    await _fill(db, 5)
    with raw(db) as conn:
        conn.execute("UPDATE audit_events SET record = replace(record, '\"n\":2', '\"n\":7') WHERE seq = 3")
    result = verify(db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "modified", 3)


async def test_deleted_record_is_reported(db: Path) -> None:
    await _fill(db, 5)
    with raw(db) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 3")
    result = verify(db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "deleted", 3)


async def test_forged_row_with_valid_hash_over_wrong_prev_is_reported(db: Path) -> None:
    await _fill(db, 5)
    with raw(db) as conn:
        body = {k: v for k, v in _record(conn, 3).items() if k not in {"seq", "prev_hash", "hash"}}
        conn.execute("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3")  # make room at 3
        conn.execute("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
        forged, text = seal({**body, "target": "delete_repo"}, seq=3, prev_hash="f" * 64)
        conn.execute(INSERT, (*index_columns(forged), text, forged["hash"]))
    result = verify(db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "inserted", 3)


async def test_swapped_rows_are_reported(db: Path) -> None:
    await _fill(db, 5)
    with raw(db) as conn:
        a, b = (
            conn.execute("SELECT record, hash FROM audit_events WHERE seq = ?", (s,)).fetchone()
            for s in (2, 4)
        )
        conn.execute("UPDATE audit_events SET record = ?, hash = ? WHERE seq = 2", b)
        conn.execute("UPDATE audit_events SET record = ?, hash = ? WHERE seq = 4", a)
    result = verify(db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "reordered", 2)


async def test_edited_search_column_is_reported(db: Path) -> None:
    await _fill(db, 5)
    with raw(db) as conn:
        conn.execute("UPDATE audit_events SET subject = 'mallory' WHERE seq = 4")
    result = verify(db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "modified", 4)


async def test_unparsable_record_is_reported(db: Path) -> None:
    await _fill(db, 3)
    with raw(db) as conn:
        conn.execute("UPDATE audit_events SET record = '{not json' WHERE seq = 2")
    result = verify(db)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "modified", 2)


async def test_truncated_tail_is_not_detectable_by_the_chain_alone(db: Path) -> None:
    await _fill(db, 5)
    before = verify(db)
    with raw(db) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq >= 4")
    after = verify(db)
    assert after.ok  # documented limitation: compare last_seq/last_hash with a kept value
    assert (before.last_seq, after.last_seq) == (5, 3)


@pytest.mark.parametrize(("setting", "pragma"), [("full", 2), ("normal", 1)])
async def test_synchronous_setting_reaches_sqlite(tmp_path: Path, setting: str, pragma: int) -> None:
    log = SQLiteAuditLog(tmp_path / "a.db", synchronous=setting)  # type: ignore[arg-type]
    await log.start()
    try:
        level = await asyncio.to_thread(lambda: log._connect().execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await log.close()
    assert level == pragma


async def test_outcome_events_share_the_next_durable_commit(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with SQLiteAuditLog(db, linger_ms=5000) as log:
        first = decision(1)
        await log.append(first)
        commits = log.commits
        log.append_nowait(outcome(first))  # nobody waits on it: it lingers for company
        await asyncio.sleep(0.1)
        assert [e["kind"] for e in iter_events(db)] == ["decision"]
        await log.append(decision(2))  # the durable append takes the outcome along
        assert log.commits == commits + 1
        assert [e["kind"] for e in iter_events(db)] == ["decision", "outcome", "decision"]


async def test_lingering_outcomes_are_committed_on_their_own_after_the_linger(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with SQLiteAuditLog(db, linger_ms=50) as log:
        first = decision(1)
        await log.append(first)
        log.append_nowait(outcome(first))
        await asyncio.sleep(0.5)
        assert [e["kind"] for e in iter_events(db)] == ["decision", "outcome"]
