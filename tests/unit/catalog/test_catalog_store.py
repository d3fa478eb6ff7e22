"""The catalog store contract (one suite, run against every backend: today the in-memory one) and
the per-route / per-user decision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bastion.catalog import CatalogStore, MemoryCatalogStore, ToolCatalog, definition_sha256

Backend = Callable[..., CatalogStore]
BACKENDS: dict[str, Backend] = {"memory": MemoryCatalogStore}

READ = {"name": "read", "annotations": {"readOnlyHint": True}}
WIPE = {"name": "wipe", "annotations": {"destructiveHint": True}}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


def test_a_shared_route_has_one_catalog_for_everyone(backend: Backend) -> None:
    store = backend(per_user=False)
    store.catalog("alice").merge([READ], complete=True)
    assert store.per_user is False
    assert store.catalog("bob").get("read") == READ
    assert store.catalog(None) is store.catalog("alice")


def test_a_per_user_route_keeps_what_each_person_was_listed_apart(backend: Backend) -> None:
    store = backend(per_user=True)
    store.catalog("alice").merge([READ, WIPE], complete=True)
    store.catalog("bob").merge([READ], complete=True)
    assert store.catalog("alice").get("wipe") == WIPE
    assert store.catalog("bob").get("wipe") is None
    assert store.catalog("carol").stale  # never listed: nothing known, the next call loads it


def test_without_a_principal_a_per_user_route_learns_nothing(backend: Backend) -> None:
    store = backend(per_user=True)
    anonymous = store.catalog(None)
    anonymous.merge([WIPE], complete=True)
    assert store.catalog(None).stale
    assert store.catalog(None) is not anonymous


@pytest.mark.parametrize("per_user", [False, True])
def test_a_list_change_makes_every_catalog_of_the_route_stale(backend: Backend, per_user: bool) -> None:
    store = backend(per_user=per_user)
    for who in ("alice", "bob"):
        store.catalog(who).merge([READ], complete=True)
    store.mark_stale()
    assert store.catalog("alice").stale
    assert store.catalog("bob").stale
    assert store.catalog("alice").get("read") is None  # a stale catalog answers no tool
    assert store.catalog("alice").ref("r", "read") is None


def test_the_memory_store_forgets_the_least_recently_used_person_past_its_bound() -> None:
    store = MemoryCatalogStore(per_user=True, max_users=2)
    store.catalog("alice").merge([READ], complete=True)
    store.catalog("bob").merge([READ], complete=True)
    store.catalog("alice")  # alice used again: bob is now the oldest
    store.catalog("carol")
    assert not store.catalog("alice").stale
    assert store.catalog("bob").stale  # forgotten, so reloaded on its next call


def test_each_definition_has_the_hash_of_its_canonical_json() -> None:
    catalog = ToolCatalog()
    reordered: dict[str, Any] = {"annotations": {"readOnlyHint": True}, "name": "read"}
    catalog.merge([reordered], complete=True)
    assert catalog.hashes == {"read": definition_sha256(READ)}  # key order does not change it
    changed = {**READ, "description": "now also deletes"}
    catalog.merge([changed])
    assert catalog.hashes["read"] != definition_sha256(READ)
    catalog.merge([WIPE], complete=True)
    assert set(catalog.hashes) == {"wipe"}
