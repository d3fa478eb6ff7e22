"""What the PostgreSQL backends of approvals, pins and volume baselines do when the database is not
there: they raise (the callers fail closed) and answer again once it is, without a restart. Their
contracts are ``test_contract_approvals.py``, ``test_contract_pins.py`` and ``test_contract_volume.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from stores_support import POSTGRES_URL, drop_postgres_schema, postgres_schema

from bastion.approvals import ApprovalBinding
from bastion.approvals.store_postgres import PostgresApprovalStore
from bastion.catalog.pins_postgres import PostgresPinStore
from bastion.stores.postgres import PostgresDatabase
from bastion.stores.postgres_tables import POSTGRES_ERRORS, PostgresTables
from bastion.stores.postgres_volume import PostgresVolumeStore

BINDING = ApprovalBinding("idp\x1falice", "notes", "delete_note", "a" * 64, "v1")

#: Each store, and one read it answers.
STORES: dict[str, tuple[type[PostgresTables], Callable[[Any], Awaitable[object]]]] = {
    "approvals": (PostgresApprovalStore, lambda store: store.find(BINDING, 1_700_000_000.0)),
    "pins": (PostgresPinStore, lambda store: store.version("weather")),
    "volume": (PostgresVolumeStore, lambda store: store.load()),
}


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    yield postgres_schema(tmp_path)
    await drop_postgres_schema(tmp_path)


@pytest.mark.parametrize("kind", sorted(STORES))
async def test_an_unreachable_database_raises_at_start_and_before_it(kind: str) -> None:
    make, read = STORES[kind]
    store = make(PostgresDatabase("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=2))
    with pytest.raises(RuntimeError, match="not open"):
        await read(store)
    with pytest.raises(POSTGRES_ERRORS):
        await store.start()
    with pytest.raises(RuntimeError, match="not open"):
        await read(store)
    await store.close()  # nothing to release


@pytest.mark.parametrize("kind", sorted(STORES))
async def test_a_store_answers_again_after_the_database_dropped_its_connections(kind: str, schema: str) -> None:
    make, read = STORES[kind]
    async with make(PostgresDatabase(POSTGRES_URL, schema=schema, min_size=2, max_size=2)) as store:
        await read(store)
        pool = store.database.pool
        async with pool.acquire() as one, pool.acquire() as two:  # every connection of the pool
            pids = [one.get_server_pid(), two.get_server_pid()]
        admin = await asyncpg.connect(POSTGRES_URL)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
        finally:
            await admin.close()
        failed = 0
        for _ in range(3):  # each dropped connection may fail one call (an error, never an answer made up)
            try:
                await read(store)
                break
            except POSTGRES_ERRORS:
                failed += 1
        else:
            pytest.fail("the store did not answer again")
        assert failed <= 2  # then the pool has replaced them
        await read(store)
    assert store.database._pool is None  # its last user closed it
