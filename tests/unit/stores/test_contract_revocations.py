"""The ``RevocationStore`` contract, run against every backend: ``RevocationList`` on SQLite and
``PostgresRevocationStore`` on the PostgreSQL on loopback.

``handles`` opens stores on ONE backend (for SQLite: one file; for PostgreSQL: one schema, each
handle with its own pool and listening connection), as the gateway, the CLI and other replicas
each have their own. Another handle's revocation may reach a handle's view asynchronously (for
PostgreSQL, by ``NOTIFY``): the tests give it ``PROPAGATION_S``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from stores_support import POSTGRES_URL, eventually, handles_fixture, postgres_schema

from bastion.identity import RevocationList
from bastion.stores.postgres import PostgresDatabase
from bastion.stores.postgres_revocations import PostgresRevocationStore
from bastion.stores.revocations import RevocationStore

NOW = 1_700_000_000

Opener = Callable[[], Awaitable[RevocationStore]]


PROPAGATION_S = 1.0
"""How long another replica may take to see a revocation (issue 17: "within a second")."""

#: Every backend of ``RevocationStore``: a factory of a store on the backend at ``tmp_path``.
BACKENDS: dict[str, Callable[[Path], RevocationStore]] = {
    "sqlite": lambda tmp: RevocationList(tmp / "bastion.db"),
    "postgres": lambda tmp: PostgresRevocationStore(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp))),
}

handles = handles_fixture(BACKENDS)


@pytest.fixture
async def store(handles: Opener) -> RevocationStore:
    """One store on the backend."""
    return await handles()


async def test_a_revoked_id_is_revoked_and_others_are_not(store: RevocationStore) -> None:
    assert not store.is_revoked("abc")
    await store.revoke("abc", expires_at=NOW + 600, now=NOW)
    assert store.is_revoked("abc")
    assert not store.is_revoked("abd")
    assert not store.is_revoked("ab")
    assert not store.is_revoked("")


async def test_a_revocation_through_another_handle_is_seen_within_a_second(handles: Opener) -> None:
    gateway, cli = await handles(), await handles()
    assert not gateway.is_revoked("jti-1")
    await cli.revoke("jti-1", expires_at=NOW + 600, now=NOW)
    assert cli.is_revoked("jti-1")  # its own at once
    assert await eventually(lambda: gateway.is_revoked("jti-1"), PROPAGATION_S)


async def test_prune_forgets_only_what_expired_before_now(handles: Opener) -> None:
    store, other = await handles(), await handles()
    await store.revoke("old", expires_at=NOW - 1, now=NOW - 100)
    await store.revoke("edge", expires_at=NOW, now=NOW - 100)
    await store.revoke("new", expires_at=NOW + 600, now=NOW - 100)
    assert await eventually(lambda: other.is_revoked("old"), PROPAGATION_S)
    assert await store.prune(NOW) == 1
    assert await store.prune(NOW) == 0
    assert [store.is_revoked(j) for j in ("old", "edge", "new")] == [False, True, True]
    assert await eventually(lambda: [other.is_revoked(j) for j in ("old", "edge", "new")] == [False, True, True],
                            PROPAGATION_S)  # fmt: skip


async def test_revoking_again_keeps_the_later_expiry(store: RevocationStore) -> None:
    await store.revoke("abc", expires_at=NOW + 200, now=NOW)
    await store.revoke("abc", expires_at=NOW + 100, now=NOW + 1)
    assert await store.prune(NOW + 150) == 0
    assert store.is_revoked("abc")
    await store.revoke("abc", expires_at=NOW + 300, now=NOW + 2)
    assert await store.prune(NOW + 250) == 0
    assert store.is_revoked("abc")
    assert await store.prune(NOW + 301) == 1
    assert not store.is_revoked("abc")


async def test_an_empty_id_is_refused(store: RevocationStore) -> None:
    with pytest.raises(ValueError, match="jti"):
        await store.revoke("", expires_at=NOW + 600)


async def test_concurrent_revocations_are_all_kept(handles: Opener) -> None:
    stores = [await handles() for _ in range(3)]
    await asyncio.gather(*(stores[i % 3].revoke(f"jti-{i}", expires_at=NOW + 600, now=NOW) for i in range(60)))
    for store in stores:
        assert await eventually(lambda store=store: all(store.is_revoked(f"jti-{i}") for i in range(60)), PROPAGATION_S)


async def test_close_is_idempotent(store: RevocationStore) -> None:
    await store.close()
    await store.close()
