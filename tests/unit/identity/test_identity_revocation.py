"""RevocationList: persistence, visibility across connections and processes, pruning, shared file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.identity import RevocationList


def test_revoke_and_check(revocations: RevocationList) -> None:
    assert not revocations.is_revoked("abc")
    revocations.revoke("abc", expires_at=2000, now=1000)
    assert revocations.is_revoked("abc")
    assert not revocations.is_revoked("abd")


def test_schema_and_wal_mode(revocations: RevocationList) -> None:
    db = sqlite3.connect(revocations.path)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        columns = [(row[1], row[2], row[5]) for row in db.execute("PRAGMA table_info(revoked_tokens)")]
    finally:
        db.close()
    assert mode == "wal"
    assert columns == [("jti", "TEXT", 1), ("expires_at", "INTEGER", 0), ("revoked_at", "INTEGER", 0)]


def test_revoke_twice_keeps_first_time_and_later_expiry(revocations: RevocationList) -> None:
    revocations.revoke("abc", expires_at=2000, now=1000)
    revocations.revoke("abc", expires_at=1500, now=1200)
    revocations.revoke("abc", expires_at=3000, now=1300)
    db = sqlite3.connect(revocations.path)
    try:
        row = db.execute("SELECT expires_at, revoked_at FROM revoked_tokens WHERE jti='abc'").fetchone()
    finally:
        db.close()
    assert row == (3000, 1000)


def test_revocation_from_second_connection_is_seen_at_once(revocations: RevocationList) -> None:
    assert not revocations.is_revoked("jti-1")
    with RevocationList(revocations.path) as other:  # its own connection, as `bastion token revoke` has
        other.revoke("jti-1", expires_at=2000, now=1000)
    assert revocations.is_revoked("jti-1")


def test_a_row_written_behind_the_lists_back_is_seen_after_the_next_revoke(revocations: RevocationList) -> None:
    assert not revocations.is_revoked("jti-raw")
    other = sqlite3.connect(revocations.path)
    try:
        other.execute("INSERT INTO revoked_tokens VALUES ('jti-raw', 2000, 1000)")
        other.commit()
    finally:
        other.close()
    assert not revocations.is_revoked("jti-raw")  # documented: only revoke() announces a change
    revocations.revoke("jti-other", expires_at=2000, now=1000)
    assert revocations.is_revoked("jti-raw")


def test_revocation_from_another_process_is_seen_at_once(revocations: RevocationList) -> None:
    assert not revocations.is_revoked("jti-2")
    script = (
        "import sys; from pathlib import Path; from bastion.identity import RevocationList\n"
        "with RevocationList(Path(sys.argv[1])) as r: r.revoke('jti-2', expires_at=4102444800)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(revocations.path)], check=True, timeout=60)
    assert revocations.is_revoked("jti-2")


def test_prune_removes_only_expired(revocations: RevocationList) -> None:
    revocations.revoke("old", expires_at=1000, now=500)
    revocations.revoke("new", expires_at=3000, now=500)
    assert revocations.prune(now=2000) == 1
    assert not revocations.is_revoked("old")
    assert revocations.is_revoked("new")


def test_leaves_other_tables_alone(tmp_path: Path) -> None:
    path = tmp_path / "bastion.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY)")
    db.execute("INSERT INTO sessions VALUES ('s1')")
    db.commit()
    db.close()
    with RevocationList(path) as revocations:
        revocations.revoke("x", expires_at=10)
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("SELECT id FROM sessions").fetchall() == [("s1",)]
    finally:
        db.close()
    assert tables == {"sessions", "revoked_tokens"}


def test_refuses_empty_jti(revocations: RevocationList) -> None:
    with pytest.raises(ValueError, match="jti"):
        revocations.revoke("", expires_at=10)


def test_with_recheck_interval_another_process_revocation_is_seen_after_it(tmp_path: Path) -> None:
    with RevocationList(tmp_path / "r.db", recheck_s=0.2) as gateway, RevocationList(tmp_path / "r.db") as cli:
        assert not gateway.is_revoked("jti-late")
        cli.revoke("jti-late", expires_at=4102444800)
        assert not gateway.is_revoked("jti-late")  # within the interval: the list may be stale
        time.sleep(0.25)
        assert gateway.is_revoked("jti-late")
        gateway.revoke("jti-own", expires_at=4102444800)
        assert gateway.is_revoked("jti-own")  # its own revocation: at once
