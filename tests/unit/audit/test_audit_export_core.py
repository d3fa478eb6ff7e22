"""The audit exporter (``bastion.audit.export``): the cursor, batches in ``seq`` order, resending after a
crash or an outage without losing a record, and the SQLite feed on a real log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from tests.unit.audit.audit_helpers import decision, raw

from bastion.audit.export import Exporter, ExportRecord, MemorySink, finish
from bastion.audit.export_feed import ExportCursor, LocalSource, ReaderFeed
from bastion.audit.query import SQLiteAuditReader
from bastion.audit.store_sqlite import SQLiteAuditLog


async def _log_with(db: Path, n: int) -> None:
    async with SQLiteAuditLog(db) as log:
        for i in range(n):
            await log.append(decision(i))


def _source(db: Path, name: str = "test") -> LocalSource:
    return LocalSource(ReaderFeed(SQLiteAuditReader(db)), ExportCursor.load(db.parent, name))


def _exporter(db: Path, sink: MemorySink, *, batch: int = 500) -> Exporter:
    return Exporter("test", _source(db), sink, batch=batch, poll_s=0.01, backoff_s=0.01, max_backoff_s=0.05)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class _CrashAfterSend(MemorySink):
    """A sink that accepts a batch and then the process "dies" before the cursor is saved."""

    async def send(self, records: Sequence[ExportRecord]) -> None:
        await super().send(records)
        raise KeyboardInterrupt  # not an Exception: nothing in the exporter catches it


@pytest.mark.parametrize(("text", "parsed"), [
    ('{"seq": 1, "target": "\\ud800"}', {"seq": 1, "target": "\ud800"}),  # a lone surrogate, escaped
    ("not json", {}),
    ("[1, 2]", {}),
])  # fmt: skip
def test_an_odd_record_still_parses_or_reads_as_empty(text: str, parsed: dict[str, object]) -> None:
    assert ExportRecord(1, "ab" * 32, text).record == parsed


def test_a_missing_cursor_starts_at_zero_and_a_saved_one_survives(tmp_path: Path) -> None:
    cursor = ExportCursor.load(tmp_path, "syslog")
    assert (cursor.seq, cursor.path.name) == (0, "audit-export-syslog.cursor")
    cursor.save(ExportRecord(42, "ab" * 32, "{}"))
    again = ExportCursor.load(tmp_path, "syslog")
    assert (again.seq, again.hash) == (42, "ab" * 32)
    assert cursor.path.stat().st_mode & 0o777 == 0o600
    assert json.loads(cursor.path.read_text()) == {"seq": 42, "hash": "ab" * 32}


@pytest.mark.parametrize("text", ["", "not json", '{"seq": "1", "hash": "x"}', '{"seq": -1, "hash": "x"}', "[]"])
def test_a_corrupt_cursor_is_refused_rather_than_restarted(tmp_path: Path, text: str) -> None:
    (tmp_path / "audit-export-file.cursor").write_text(text)
    with pytest.raises(ValueError, match="not an export cursor"):
        ExportCursor.load(tmp_path, "file")


async def test_batches_go_out_in_seq_order_and_the_cursor_follows(db: Path) -> None:
    await _log_with(db, 10)
    sink = MemorySink()
    exporter = _exporter(db, sink, batch=3)
    assert await exporter.export_pending() == 10
    assert [r.seq for r in sink.records] == list(range(1, 11))
    assert sink.batches == 4  # 3 + 3 + 3 + 1
    assert all(r.record["seq"] == r.seq and r.record["hash"] == r.hash for r in sink.records)
    assert ExportCursor.load(db.parent, "test").seq == 10
    assert await exporter.export_pending() == 0  # nothing new
    await exporter.aclose()


async def test_a_crash_after_sending_resends_from_the_cursor_without_loss(db: Path) -> None:
    await _log_with(db, 7)
    crashing = _CrashAfterSend()
    first = _exporter(db, crashing, batch=4)
    with pytest.raises(KeyboardInterrupt):
        await first.export_pending()
    await first.aclose()
    assert [r.seq for r in crashing.records] == [1, 2, 3, 4]  # delivered, cursor not moved
    sink = MemorySink()
    second = _exporter(db, sink, batch=4)  # the next process: the cursor from the file
    assert ExportCursor.load(db.parent, "test").seq == 0
    assert await second.export_pending() == 7
    delivered = [r.seq for r in crashing.records] + [r.seq for r in sink.records]
    assert set(delivered) == set(range(1, 8))  # at least once: none missing
    assert [r.seq for r in sink.records] == list(range(1, 8))
    await second.aclose()


async def test_a_sink_that_is_down_holds_the_cursor_and_catches_up(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    await _log_with(db, 3)
    sink = MemorySink(down=True)
    exporter = _exporter(db, sink)
    caplog.set_level(logging.WARNING, "bastion.audit.export")
    task = asyncio.create_task(exporter.run())
    try:
        await _until(lambda: exporter.failures >= 3)
        assert ExportCursor.load(db.parent, "test").seq == 0
        assert sum("retrying from seq 1" in r.message for r in caplog.records) == 1  # logged once per outage
        async with SQLiteAuditLog(db) as log:  # the log goes on meanwhile
            await log.append(decision(99))
        sink.down = False
        await _until(lambda: exporter.position == 4)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.seq for r in sink.records] == [1, 2, 3, 4]
    assert any("delivering again" in r.message for r in caplog.records)
    await exporter.aclose()


async def test_finish_sends_what_is_pending_and_never_raises(db: Path) -> None:
    await _log_with(db, 2)
    good, down = MemorySink(), MemorySink(down=True)
    exporters = [_exporter(db, good), Exporter("down", _source(db, "down"), down)]
    await finish(exporters, timeout_s=2)
    assert [r.seq for r in good.records] == [1, 2]
    assert ExportCursor.load(db.parent, "down").seq == 0


async def test_the_feed_reads_a_log_being_written_and_sees_no_file_or_table_as_empty(db: Path) -> None:
    feed = ReaderFeed(SQLiteAuditReader(db))
    assert await feed.after(0, 10) == []  # no file yet
    db.parent.mkdir(parents=True)
    with raw(db):
        pass  # an empty file: no table
    assert await feed.after(0, 10) == []
    await _log_with(db, 5)
    assert [r.seq for r in await feed.after(2, 2)] == [3, 4]
    assert [r.seq for r in await feed.after(4, 10)] == [5]
    await feed.aclose()


async def test_a_gap_in_the_log_is_reported_and_export_goes_on(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    await _log_with(db, 5)
    with raw(db) as conn:
        conn.execute("DELETE FROM audit_events WHERE seq IN (2, 3)")
    sink = MemorySink()
    exporter = _exporter(db, sink, batch=1)
    caplog.set_level(logging.WARNING, "bastion.audit.export")
    await exporter.export_pending()
    assert [r.seq for r in sink.records] == [1, 4, 5]
    assert any("records 2 to 3 are missing" in r.message for r in caplog.records)
    await exporter.aclose()

