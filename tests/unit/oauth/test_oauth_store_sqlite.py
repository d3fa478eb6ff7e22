"""The SQLite authorization stores beyond the contract (``tests/unit/stores/test_contract_authorization.py``):
the combined store purges both kinds in one call; a closed store refuses calls."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bastion.oauth import SQLiteAuthorizationStore
from bastion.oauth.records import AuthorizationCode, Grant, UserIdentity, digest

NOW = 1_800_000_000.0
GRANT = Grant("cli", "echo", "http://127.0.0.1:8123/mcp/echo", ("mcp",), UserIdentity("alice", "local"))


async def test_the_combined_store_purges_flow_and_grant_records(store: SQLiteAuthorizationStore) -> None:
    await store.put_sign_in(digest("old"), GRANT.user, NOW - 1)
    await store.put_code(digest("ancient"), AuthorizationCode(GRANT, "http://127.0.0.1/cb", "c" * 43, NOW - 86401))
    await store.create_family("old", GRANT, NOW - 1, NOW - 100)
    await store.add_access_token("old", "jti-old", int(NOW) - 1)
    assert await store.purge(NOW) == 4
    assert await store.purge(NOW) == 0


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    closed = SQLiteAuthorizationStore(tmp_path / "x" / "bastion.db")
    await closed.start()
    await closed.close()
    await closed.close()
    with pytest.raises(sqlite3.ProgrammingError, match="not open"):
        await closed.get_client("dcr-1")
