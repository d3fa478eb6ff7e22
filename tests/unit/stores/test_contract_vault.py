"""The ``VaultStore`` contract, run against every backend: ``SQLiteVaultStore`` and
``PostgresVaultStore`` on the PostgreSQL on loopback.

The store keeps records the vault sealed; here they are opaque bytes. ``handles`` opens
stores on ONE backend (for SQLite: one file; for PostgreSQL: one schema, each handle with its
own pool), as two replicas would; a shared backend joins by adding an entry to ``BACKENDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from stores_support import POSTGRES_URL, handles_fixture, postgres_schema

from bastion.credentials.vault_postgres import PostgresVaultStore
from bastion.credentials.vault_sqlite import SQLiteVaultStore
from bastion.credentials.vault_store import Connection, RecordKind, Sealed, VaultStore
from bastion.stores.postgres import PostgresDatabase

OWNER_A = "https://bastion.example\x1falice"
OWNER_B = "https://bastion.example\x1fbob"
ISSUER = "https://as.example"
NOW = 1_800_000_000.0

Opener = Callable[[], Awaitable[VaultStore]]

#: Every backend of ``VaultStore``: a factory of a store on the backend at ``tmp_path``.
BACKENDS: dict[str, Callable[[Path], VaultStore]] = {
    "sqlite": lambda tmp: SQLiteVaultStore(tmp / "bastion.db"),
    "postgres": lambda tmp: PostgresVaultStore(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp))),
}


handles = handles_fixture(BACKENDS)


@pytest.fixture
async def store(handles: Opener) -> VaultStore:
    return await handles()


def sealed(text: str, key_id: str = "k-old") -> Sealed:
    return Sealed(key_id, text.encode() + b"\x00\xff")


async def put_tokens(store: VaultStore, owner: str, route: str, record: Sealed, now: float = NOW) -> None:
    await store.put_tokens(owner, route, record, expires_at=NOW + 3600, refreshable=True, now=now)


# --- tokens -----------------------------------------------------------------------------------


async def test_tokens_are_kept_per_owner_and_route(store: VaultStore) -> None:
    await put_tokens(store, OWNER_A, "notes", sealed("a-notes"))
    await put_tokens(store, OWNER_A, "tracker", sealed("a-tracker"))
    await put_tokens(store, OWNER_B, "notes", sealed("b-notes"))
    assert await store.get_tokens(OWNER_A, "notes") == sealed("a-notes")
    assert await store.get_tokens(OWNER_B, "notes") == sealed("b-notes")
    assert await store.get_tokens(OWNER_B, "tracker") is None
    assert await store.get_tokens(OWNER_A + "x", "notes") is None


async def test_replacing_tokens_keeps_the_first_connection_time(store: VaultStore) -> None:
    await put_tokens(store, OWNER_A, "notes", sealed("first"), now=NOW)
    await store.put_tokens(OWNER_A, "notes", sealed("second"), expires_at=None, refreshable=False, now=NOW + 50)
    assert await store.get_tokens(OWNER_A, "notes") == sealed("second")
    assert await store.connections(OWNER_A) == [Connection("notes", NOW, None, False)]


async def test_connections_list_an_owners_routes_in_order(store: VaultStore) -> None:
    await put_tokens(store, OWNER_A, "tracker", sealed("t"))
    await store.put_tokens(OWNER_A, "notes", sealed("n"), expires_at=None, refreshable=False, now=NOW + 1)
    await put_tokens(store, OWNER_B, "notes", sealed("b"))
    assert await store.connections(OWNER_A) == [
        Connection("notes", NOW + 1, None, False),
        Connection("tracker", NOW, NOW + 3600, True),
    ]
    assert await store.connections("nobody") == []


async def test_delete_tokens_says_whether_there_were_some(store: VaultStore) -> None:
    await put_tokens(store, OWNER_A, "notes", sealed("a"))
    assert await store.delete_tokens(OWNER_A, "notes") is True
    assert await store.delete_tokens(OWNER_A, "notes") is False
    assert await store.get_tokens(OWNER_A, "notes") is None
    assert await store.connections(OWNER_A) == []


# --- unfinished connections -----------------------------------------------------------------


async def test_a_pending_connection_is_taken_once_and_only_before_it_expires(store: VaultStore) -> None:
    await store.put_pending("d1", sealed("p1"), NOW + 600)
    await store.put_pending("d2", sealed("p2"), NOW + 600)
    assert await store.take_pending("d1", NOW) == sealed("p1")
    assert await store.take_pending("d1", NOW) is None
    assert await store.take_pending("d2", NOW + 600) is None  # expired
    assert await store.take_pending("d2", NOW) is None  # and gone
    assert await store.take_pending("unknown", NOW) is None


async def test_concurrent_takes_on_two_handles_have_exactly_one_winner(handles: Opener) -> None:
    store, replica = await handles(), await handles()
    await store.put_pending("d1", sealed("p1"), NOW + 600)
    results = await asyncio.gather(*((store if i % 2 else replica).take_pending("d1", NOW) for i in range(20)))
    assert [r for r in results if r is not None] == [sealed("p1")]


async def test_purge_deletes_expired_pending_connections_only(store: VaultStore) -> None:
    await store.put_pending("old", sealed("old"), NOW - 1)
    await store.put_pending("edge", sealed("edge"), NOW)
    await store.put_pending("new", sealed("new"), NOW + 600)
    await put_tokens(store, OWNER_A, "notes", sealed("a"), now=NOW - 10**6)
    await store.put_client("notes", ISSUER, sealed("c"), now=NOW - 10**6)
    assert await store.purge(NOW) == 2
    assert await store.purge(NOW) == 0
    assert await store.take_pending("new", NOW) == sealed("new")
    assert await store.get_tokens(OWNER_A, "notes") == sealed("a")
    assert await store.get_client("notes", ISSUER) == sealed("c")


# --- registered clients ---------------------------------------------------------------------


async def test_clients_are_kept_per_route_and_issuer_and_replaced(store: VaultStore) -> None:
    await store.put_client("notes", ISSUER, sealed("c1"), now=NOW)
    await store.put_client("notes", ISSUER + "/other", sealed("c2"), now=NOW)
    await store.put_client("notes", ISSUER, sealed("c3"), now=NOW + 1)
    assert await store.get_client("notes", ISSUER) == sealed("c3")
    assert await store.get_client("notes", ISSUER + "/other") == sealed("c2")
    assert await store.get_client("tracker", ISSUER) is None


async def test_tokens_stored_through_one_handle_are_read_through_another(handles: Opener) -> None:
    """A replica reads what another stored: tokens, connections and clients, replaced and deleted."""
    store, replica = await handles(), await handles()
    await put_tokens(store, OWNER_A, "notes", sealed("a-notes"))
    await store.put_client("notes", ISSUER, sealed("c"), now=NOW)
    assert await replica.get_tokens(OWNER_A, "notes") == sealed("a-notes")
    assert await replica.connections(OWNER_A) == [Connection("notes", NOW, NOW + 3600, True)]
    assert await replica.get_client("notes", ISSUER) == sealed("c")
    await put_tokens(replica, OWNER_A, "notes", sealed("refreshed"), now=NOW + 60)
    assert await store.get_tokens(OWNER_A, "notes") == sealed("refreshed")
    assert await store.delete_tokens(OWNER_A, "notes") is True
    assert await replica.get_tokens(OWNER_A, "notes") is None


async def test_a_pending_connection_kept_by_one_handle_is_taken_once_through_another(handles: Opener) -> None:
    store, replica = await handles(), await handles()
    await store.put_pending("d1", sealed("p1"), NOW + 600)
    assert await replica.take_pending("d1", NOW) == sealed("p1")
    assert await store.take_pending("d1", NOW) is None


async def test_one_holder_at_a_time_refreshes_an_owners_tokens_for_a_route(handles: Opener) -> None:
    """Two replicas refreshing one person's tokens: the second waits for the first, then reads the
    tokens it stored (so the upstream's refresh token is presented once)."""
    store, replica = await handles(), await handles()
    await put_tokens(store, OWNER_A, "notes", sealed("expiring"))
    steps: list[str] = []
    first_in = asyncio.Event()

    async def first() -> None:
        async with store.refreshing(OWNER_A, "notes"):
            steps.append("first in")
            first_in.set()
            await asyncio.sleep(0.2)
            await put_tokens(store, OWNER_A, "notes", sealed("refreshed"))
            steps.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with replica.refreshing(OWNER_A, "notes"):
            steps.append("second in")
            assert await replica.get_tokens(OWNER_A, "notes") == sealed("refreshed")

    await asyncio.gather(first(), second())
    assert steps == ["first in", "first out", "second in"]
    async with (  # other routes and owners are not held
        store.refreshing(OWNER_A, "notes"),
        asyncio.timeout(2),
        replica.refreshing(OWNER_A, "tracker"),
        replica.refreshing(OWNER_B, "notes"),
    ):
        pass


async def test_a_store_that_was_not_started_refuses(handles: Opener) -> None:
    store = await handles()
    await store.close()
    with pytest.raises(Exception, match="not"):  # each backend its own error
        await store.get_tokens(OWNER_A, "notes")


# --- reseal -----------------------------------------------------------------------------------


async def _one_of_each(store: VaultStore, key_id: str) -> None:
    await put_tokens(store, OWNER_A, "notes", sealed("tokens", key_id))
    await store.put_pending("d1", sealed("pending", key_id), NOW + 600)
    await store.put_client("notes", ISSUER, sealed("client", key_id), now=NOW)


async def test_reseal_replaces_every_record_of_another_key_with_its_ids(store: VaultStore) -> None:
    await _one_of_each(store, "k-old")
    await store.put_client("tracker", ISSUER, sealed("current", "k-new"), now=NOW)
    seen: list[tuple[RecordKind, tuple[str, ...], Sealed]] = []

    def reseal(kind: RecordKind, ids: tuple[str, ...], record: Sealed) -> Sealed:
        seen.append((kind, ids, record))
        return Sealed("k-new", record.blob[::-1])

    assert await store.reseal("k-new", reseal) == 3
    assert sorted(seen) == sorted([
        ("tokens", (OWNER_A, "notes"), sealed("tokens")),
        ("pending", ("d1",), sealed("pending")),
        ("client", ("notes", ISSUER), sealed("client")),
    ])  # fmt: skip
    assert await store.get_tokens(OWNER_A, "notes") == Sealed("k-new", sealed("tokens").blob[::-1])
    assert await store.get_client("notes", ISSUER) == Sealed("k-new", sealed("client").blob[::-1])
    assert await store.get_client("tracker", ISSUER) == sealed("current", "k-new")  # untouched
    assert await store.take_pending("d1", NOW) == Sealed("k-new", sealed("pending").blob[::-1])
    assert await store.reseal("k-new", reseal) == 0


async def test_a_reseal_that_fails_changes_nothing(store: VaultStore) -> None:
    await _one_of_each(store, "k-old")
    calls: list[RecordKind] = []

    def reseal(kind: RecordKind, ids: tuple[str, ...], record: Sealed) -> Sealed:
        calls.append(kind)
        if len(calls) == 2:
            raise ValueError("cannot open")
        return Sealed("k-new", b"resealed")

    with pytest.raises(ValueError, match="cannot open"):
        await store.reseal("k-new", reseal)
    assert await store.get_tokens(OWNER_A, "notes") == sealed("tokens")
    assert await store.get_client("notes", ISSUER) == sealed("client")
    assert await store.take_pending("d1", NOW) == sealed("pending")
