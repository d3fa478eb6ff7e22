"""The JSON-lines file sink (``bastion.audit.export_file``): every record once, in ``seq`` order, across
rotations, restarts and a crash between writing and moving the cursor; a torn last line repaired."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.audit.export import ExportRecord
from bastion.audit.export_file import FileSink


def _records(first: int, last: int, pad: int = 100) -> list[ExportRecord]:
    return [ExportRecord(n, f"{n:064x}", json.dumps({"seq": n, "hash": f"{n:064x}", "pad": "x" * pad}))
            for n in range(first, last + 1)]  # fmt: skip


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _seqs(*paths: Path) -> list[int]:
    return [json.loads(line)["seq"] for p in paths if p.exists() for line in p.read_text().splitlines()]


async def test_lines_are_the_stored_records_in_order_private_to_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    sink = FileSink(path, max_bytes=1_000_000, keep=3)
    records = _records(1, 5)
    await sink.send(records)
    await sink.aclose()
    assert path.read_text().splitlines() == [r.text for r in records]
    assert path.stat().st_mode & 0o777 == 0o600


async def test_rotation_keeps_keep_files_and_never_splits_a_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    line = len(_records(20, 20)[0].text) + 1  # the longest line
    sink = FileSink(path, max_bytes=line * 4, keep=2)  # four records a file
    for n in range(1, 21, 3):  # batches of three: rotation falls inside batches
        await sink.send(_records(n, min(n + 2, 20)))
    await sink.aclose()
    rotated = [path.with_name(f"audit.jsonl.{n}") for n in (2, 1)]
    assert not path.with_name("audit.jsonl.3").exists()  # beyond keep: deleted
    assert _seqs(*rotated, path) == list(range(9, 21))  # the newest twelve, in order, once each
    for p in (*rotated, path):
        assert p.stat().st_size <= line * 4
        assert all(json.loads(text) for text in p.read_text().splitlines())
    assert sink.rotations == 4


async def test_keep_zero_starts_over_without_old_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    line = len(_records(1, 1)[0].text) + 1
    sink = FileSink(path, max_bytes=line * 2, keep=0)
    await sink.send(_records(1, 5))
    await sink.aclose()
    assert _seqs(path) == [5]
    assert _names(tmp_path) == ["audit.jsonl"]


async def test_a_resend_after_a_crash_writes_no_line_twice(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = FileSink(path, max_bytes=1_000_000, keep=1)
    await first.send(_records(1, 6))  # written; then the process dies before the cursor moved to 6
    await first.aclose()
    second = FileSink(path, max_bytes=1_000_000, keep=1)  # the next start resends from seq 3
    await second.send(_records(3, 9))
    await second.aclose()
    assert _seqs(path) == list(range(1, 10))


async def test_after_a_rotation_the_last_record_is_found_in_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.with_name("audit.jsonl.1").write_text("".join(r.text + "\n" for r in _records(1, 4)))
    path.write_text("")
    sink = FileSink(path, max_bytes=1_000_000, keep=1)
    await sink.send(_records(3, 6))
    await sink.aclose()
    assert _seqs(path) == [5, 6]


async def test_a_torn_last_line_is_cut_and_its_record_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = _records(1, 3)
    path.write_text(records[0].text + "\n" + records[1].text + "\n" + records[2].text[:20])  # crash mid-write
    sink = FileSink(path, max_bytes=1_000_000, keep=1)
    await sink.send(records[2:])  # the cursor stayed at 2
    await sink.aclose()
    assert path.read_text().splitlines() == [r.text for r in records]
