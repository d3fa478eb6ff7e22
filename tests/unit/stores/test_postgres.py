"""The PostgreSQL foundation of the shared stores (``bastion.stores.postgres``) and what the shared
revocation list does when its change feed breaks, against the PostgreSQL on loopback. The
``RevocationStore`` contract itself is ``test_contract_revocations.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from stores_support import POSTGRES_URL, drop_postgres_schema, eventually, postgres_schema

from bastion.errors import RevocationsUnavailable
from bastion.stores import postgres
from bastion.stores.postgres import PostgresDatabase, migrations
from bastion.stores.postgres_revocations import PostgresRevocationStore

NOW = 1_700_000_000


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh schema for the test, dropped afterwards."""
    yield postgres_schema(tmp_path)
    await drop_postgres_schema(tmp_path)


async def test_replicas_starting_together_migrate_once(schema: str) -> None:
    databases = [PostgresDatabase(POSTGRES_URL, schema=schema) for _ in range(4)]
    await asyncio.gather(*(database.start() for database in databases))
    try:
        rows = await databases[0].pool.fetch("SELECT version, name FROM bastion_migrations ORDER BY version")
        assert [(row["version"], row["name"]) for row in rows] == [(v, n) for v, n, _ in migrations()]
        assert await databases[1].pool.fetchval("SELECT count(*) FROM revoked_tokens") == 0
    finally:
        await asyncio.gather(*(database.close() for database in databases))
    again = PostgresDatabase(POSTGRES_URL, schema=schema)  # a restart applies nothing twice
    async with again:
        assert await again.pool.fetchval("SELECT count(*) FROM bastion_migrations") == len(migrations())


async def test_the_pool_is_shared_by_its_users_and_closed_after_the_last(schema: str) -> None:
    database = PostgresDatabase(POSTGRES_URL, schema=schema)
    await database.start()
    await database.start()
    pool = database.pool
    await database.close()
    assert database.pool is pool
    await database.close()
    await database.close()  # idempotent past the last user
    with pytest.raises(RuntimeError, match="not started"):
        _ = database.pool


def test_migrations_are_numbered_without_gaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [version for version, _, _ in migrations()] == list(range(1, len(migrations()) + 1))
    (tmp_path / "0001_first.sql").write_text("SELECT 1;", encoding="utf-8")
    (tmp_path / "0003_third.sql").write_text("SELECT 1;", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a migration", encoding="utf-8")
    monkeypatch.setattr(postgres.resources, "files", lambda _package: tmp_path)
    with pytest.raises(ValueError, match=r"without gaps: \[1, 3\]"):
        migrations()


def test_a_schema_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        PostgresDatabase(POSTGRES_URL, schema='x"; DROP TABLE y; --')


async def test_an_unreachable_database_fails_at_start() -> None:
    store = PostgresRevocationStore(PostgresDatabase("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=2))
    with pytest.raises(OSError, match=r"Connect call failed|Connection refused"):
        await store.start()
    with pytest.raises(RevocationsUnavailable):
        store.is_revoked("jti")  # never answered from a view it never had
    await store.close()


async def test_a_lost_change_feed_refuses_every_token_until_it_is_back(schema: str) -> None:
    """The listening connection is killed: ``is_revoked`` raises (no stale answers), a revocation
    made meanwhile on another replica is missed by the feed, and once the store reconnected it is
    seen (the table re-read) and answers are given again."""
    gateway = PostgresRevocationStore(PostgresDatabase(POSTGRES_URL, schema=schema), max_stale_s=0.0,
                                      reconnect_s=0.2)  # fmt: skip
    other = PostgresRevocationStore(PostgresDatabase(POSTGRES_URL, schema=schema))
    async with gateway, other:
        assert not gateway.is_revoked("jti-1")
        listener = gateway._listener
        assert listener is not None
        admin = await asyncpg.connect(POSTGRES_URL)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
        finally:
            await admin.close()

        def refused() -> bool:
            try:
                gateway.is_revoked("jti-1")
            except RevocationsUnavailable:
                return True
            return False

        assert await eventually(refused, 2.0)
        await other.revoke("jti-1", expires_at=NOW + 600, now=NOW)
        assert await eventually(lambda: not refused() and gateway.is_revoked("jti-1"), 5.0)
        assert gateway._listener is not listener  # a new connection listens
