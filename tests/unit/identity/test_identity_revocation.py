"""RevocationList, the SQLite backend: its table, visibility across processes, the shared file.

What every ``RevocationStore`` does is in ``tests/unit/stores/test_contract_revocations.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

from bastion.identity import RevocationList


def test_schema_and_wal_mode(revocations: RevocationList) -> None:
    db = sqlite3.connect(revocations.path)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        columns = [(row[1], row[2], row[5]) for row in db.execute("PRAGMA table_info(revoked_tokens)")]
    finally:
        db.close()
    assert mode == "wal"
    assert columns == [("jti", "TEXT", 1), ("expires_at", "INTEGER", 0), ("revoked_at", "INTEGER", 0)]


async def test_revoke_twice_keeps_first_time_and_later_expiry(revocations: RevocationList) -> None:
    await revocations.revoke("abc", expires_at=2000, now=1000)
    await revocations.revoke("abc", expires_at=1500, now=1200)
    await revocations.revoke("abc", expires_at=3000, now=1300)
    db = sqlite3.connect(revocations.path)
    try:
        row = db.execute("SELECT expires_at, revoked_at FROM revoked_tokens WHERE jti='abc'").fetchone()
    finally:
        db.close()
    assert row == (3000, 1000)


async def test_a_row_written_behind_the_lists_back_is_seen_after_the_next_revoke(revocations: RevocationList) -> None:
    assert not revocations.is_revoked("jti-raw")
    other = sqlite3.connect(revocations.path)
    try:
        other.execute("INSERT INTO revoked_tokens VALUES ('jti-raw', 2000, 1000)")
        other.commit()
    finally:
        other.close()
    assert not revocations.is_revoked("jti-raw")  # documented: only revoke() announces a change
    await revocations.revoke("jti-other", expires_at=2000, now=1000)
    assert revocations.is_revoked("jti-raw")


def test_revocation_from_another_process_is_seen_at_once(revocations: RevocationList) -> None:
    assert not revocations.is_revoked("jti-2")
    script = (
        "import asyncio, sys; from pathlib import Path; from bastion.identity import RevocationList\n"
        "async def main():\n"
        "    async with RevocationList(Path(sys.argv[1])) as r: await r.revoke('jti-2', expires_at=4102444800)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(revocations.path)], check=True, timeout=60)
    assert revocations.is_revoked("jti-2")


async def test_pruning_deletes_the_rows(revocations: RevocationList) -> None:
    await revocations.revoke("old", expires_at=1000, now=500)
    await revocations.revoke("new", expires_at=3000, now=500)
    assert await revocations.prune(2000) == 1
    db = sqlite3.connect(revocations.path)
    try:
        assert db.execute("SELECT jti FROM revoked_tokens").fetchall() == [("new",)]
    finally:
        db.close()


async def test_leaves_other_tables_alone(tmp_path: Path) -> None:
    path = tmp_path / "bastion.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY)")
    db.execute("INSERT INTO sessions VALUES ('s1')")
    db.commit()
    db.close()
    async with RevocationList(path) as revocations:
        await revocations.revoke("x", expires_at=10)
        await revocations.prune(11)
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("SELECT id FROM sessions").fetchall() == [("s1",)]
    finally:
        db.close()
    assert tables == {"sessions", "revoked_tokens"}


async def test_with_recheck_interval_another_process_revocation_is_seen_after_it(tmp_path: Path) -> None:
    with RevocationList(tmp_path / "r.db", recheck_s=0.2) as gateway, RevocationList(tmp_path / "r.db") as cli:
        assert not gateway.is_revoked("jti-late")
        await cli.revoke("jti-late", expires_at=4102444800)
        assert not gateway.is_revoked("jti-late")  # within the interval: the list may be stale
        await asyncio.sleep(0.25)
        assert gateway.is_revoked("jti-late")
        await gateway.revoke("jti-own", expires_at=4102444800)
        assert gateway.is_revoked("jti-own")  # its own revocation: at once
