"""The ``AuthorizationStore`` contract, run against ``SQLiteAuthorizationStore``: single use, families, purge."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bastion.oauth import SQLiteAuthorizationStore
from bastion.oauth.records import AuthorizationCode, Consent, Grant, PendingAuthorization, UserIdentity, digest

NOW = 1_800_000_000.0
ALICE = UserIdentity("alice", "local", "alice@example.com", "Alice", ("eng", "ops"))
GRANT = Grant("cli", "echo", "http://127.0.0.1:8123/mcp/echo", ("mcp",), ALICE)


def pending(
    pending_id: str = "p1", *, expires_at: float = NOW + 600, state: str | None = "xyz"
) -> PendingAuthorization:
    return PendingAuthorization(
        id=pending_id,
        client_id="cli",
        client_name="CLI",
        redirect_uri="http://127.0.0.1:5555/cb",
        state=state,
        code_challenge="c" * 43,
        route="echo",
        resource=GRANT.resource,
        scopes=("mcp", "read"),
        browser=digest("browser"),
        csrf_token="csrf",
        expires_at=expires_at,
        unverified_client=True,
    )


def code(expires_at: float = NOW + 60) -> AuthorizationCode:
    return AuthorizationCode(GRANT, "http://127.0.0.1:5555/cb", "c" * 43, expires_at)


async def family(store: SQLiteAuthorizationStore, family_id: str = "f1", *, expires_at: float = NOW + 3600) -> None:
    await store.create_family(family_id, GRANT, expires_at, NOW)


# --- pending requests -----------------------------------------------------------------------------


async def test_a_pending_request_round_trips(store: SQLiteAuthorizationStore) -> None:
    await store.put_pending(pending())
    assert await store.get_pending("p1", NOW) == pending()
    await store.set_pending_user("p1", ALICE)
    got = await store.get_pending("p1", NOW)
    assert got is not None
    assert got.user == ALICE
    assert got.scopes == ("mcp", "read")


async def test_an_expired_or_unknown_pending_request_is_none(store: SQLiteAuthorizationStore) -> None:
    await store.put_pending(pending(expires_at=NOW + 10))
    assert await store.get_pending("p1", NOW + 10) is None
    assert await store.take_pending("p1", NOW + 10) is None
    assert await store.get_pending("nope", NOW) is None


async def test_take_pending_is_single_use(store: SQLiteAuthorizationStore) -> None:
    await store.put_pending(pending())
    await store.set_pending_user("p1", ALICE)
    taken = await store.take_pending("p1", NOW)
    assert taken is not None
    assert taken.user == ALICE
    assert await store.take_pending("p1", NOW) is None
    assert await store.get_pending("p1", NOW) is None


async def test_concurrent_take_pending_has_exactly_one_winner(store: SQLiteAuthorizationStore) -> None:
    await store.put_pending(pending())
    results = await asyncio.gather(*(store.take_pending("p1", NOW) for _ in range(20)))
    assert sum(r is not None for r in results) == 1


# --- state ----------------------------------------------------------------------------------------


async def test_claim_state_is_single_use_per_client(store: SQLiteAuthorizationStore) -> None:
    assert await store.claim_state("cli", "xyz", NOW + 600) is True
    assert await store.claim_state("cli", "xyz", NOW + 600) is False
    assert await store.claim_state("other", "xyz", NOW + 600) is True
    assert await store.claim_state("cli", "xyz2", NOW + 600) is True


async def test_concurrent_claim_state_has_exactly_one_winner(store: SQLiteAuthorizationStore) -> None:
    results = await asyncio.gather(*(store.claim_state("cli", "s", NOW + 600) for _ in range(20)))
    assert results.count(True) == 1


# --- authorization codes --------------------------------------------------------------------------


async def test_redeem_code_is_single_use(store: SQLiteAuthorizationStore) -> None:
    await store.put_code(digest("the-code"), code())
    first = await store.redeem_code(digest("the-code"))
    assert first == code()
    assert first is not None
    assert (first.used, first.family_id) == (False, None)
    second = await store.redeem_code(digest("the-code"))
    assert second is not None
    assert second.used is True
    assert second.grant == GRANT
    assert await store.redeem_code(digest("another")) is None


async def test_a_redeemed_code_names_the_family_it_started(store: SQLiteAuthorizationStore) -> None:
    await store.put_code(digest("the-code"), code())
    first = await store.redeem_code(digest("the-code"), "f1")
    assert first is not None
    assert (first.used, first.family_id) == (False, "f1")
    again = await store.redeem_code(digest("the-code"))
    assert again is not None
    assert (again.used, again.family_id) == (True, "f1")


async def test_concurrent_redeem_code_has_exactly_one_first_use(store: SQLiteAuthorizationStore) -> None:
    await store.put_code(digest("the-code"), code())
    results = await asyncio.gather(*(store.redeem_code(digest("the-code")) for _ in range(20)))
    assert all(r is not None for r in results)
    assert [r.used for r in results if r is not None].count(False) == 1


async def test_two_stores_on_one_file_redeem_a_code_once(store: SQLiteAuthorizationStore, tmp_path: Path) -> None:
    """Two replicas (two connections to the same file) racing: still exactly one first use."""
    replica = SQLiteAuthorizationStore(tmp_path / "bastion.db")
    await replica.start()
    try:
        await store.put_code(digest("the-code"), code())
        calls = [(store if i % 2 else replica).redeem_code(digest("the-code")) for i in range(20)]
        results = await asyncio.gather(*calls)
    finally:
        await replica.close()
    assert [r.used for r in results if r is not None].count(False) == 1


# --- refresh-token families -----------------------------------------------------------------------


async def test_use_refresh_reports_the_previous_use(store: SQLiteAuthorizationStore) -> None:
    await family(store)
    await store.add_refresh(digest("r1"), "f1", NOW)
    first = await store.use_refresh(digest("r1"), NOW + 1)
    assert first is not None
    assert (first.family_id, first.grant, first.expires_at) == ("f1", GRANT, NOW + 3600)
    assert (first.revoked, first.previous_use) == (False, None)
    second = await store.use_refresh(digest("r1"), NOW + 2)
    assert second is not None
    assert second.previous_use == NOW + 1
    third = await store.use_refresh(digest("r1"), NOW + 3)
    assert third is not None
    assert third.previous_use == NOW + 1, "the first use is kept, not the latest"
    assert await store.use_refresh(digest("unknown"), NOW) is None


async def test_concurrent_use_refresh_has_exactly_one_first_use(store: SQLiteAuthorizationStore) -> None:
    await family(store)
    await store.add_refresh(digest("r1"), "f1", NOW)
    results = await asyncio.gather(*(store.use_refresh(digest("r1"), NOW + 1) for _ in range(20)))
    assert [r.previous_use for r in results if r is not None].count(None) == 1


async def test_revoke_family_returns_its_unexpired_access_tokens(store: SQLiteAuthorizationStore) -> None:
    await family(store)
    await family(store, "f2")
    await store.add_refresh(digest("r1"), "f1", NOW)
    await store.add_access_token("f1", "jti-live", int(NOW) + 900)
    await store.add_access_token("f1", "jti-expired", int(NOW) - 1)
    await store.add_access_token("f1", "jti-now", int(NOW))
    await store.add_access_token("f2", "jti-other-family", int(NOW) + 900)
    assert await store.revoke_family("f1", NOW) == [("jti-live", int(NOW) + 900)]
    use = await store.use_refresh(digest("r1"), NOW + 1)
    assert use is not None
    assert use.revoked is True
    assert await store.families_of("alice", None) == ["f2"]


async def test_family_of_and_families_of(store: SQLiteAuthorizationStore) -> None:
    await family(store, "f1")
    await store.create_family("f2", Grant("other", "echo", GRANT.resource, ("mcp",), ALICE), NOW + 3600, NOW)
    bob = Grant("cli", "echo", GRANT.resource, ("mcp",), UserIdentity("bob", "local"))
    await store.create_family("f3", bob, NOW + 3600, NOW)
    await store.add_refresh(digest("r1"), "f1", NOW)
    assert await store.family_of(digest("r1")) == ("f1", "cli")
    assert await store.family_of(digest("nope")) is None
    assert sorted(await store.families_of("alice", None)) == ["f1", "f2"]
    assert await store.families_of("alice", "other") == ["f2"]
    assert await store.families_of("bob", "cli") == ["f3"]
    assert await store.families_of("carol", None) == []


# --- consents, sign-ins, clients ------------------------------------------------------------------


async def test_consents_are_kept_replaced_listed_and_deleted(store: SQLiteAuthorizationStore) -> None:
    await store.put_consent(Consent("alice", "cli", "echo", ("mcp",), NOW))
    await store.put_consent(Consent("alice", "other", "echo", ("mcp",), NOW + 1))
    await store.put_consent(Consent("bob", "cli", "echo", ("mcp",), NOW + 2))
    await store.put_consent(Consent("alice", "cli", "echo", ("mcp", "read"), NOW + 3))
    assert await store.get_consent("alice", "cli", "echo") == Consent("alice", "cli", "echo", ("mcp", "read"), NOW + 3)
    assert await store.get_consent("alice", "cli", "other-route") is None
    assert [c.client_id for c in await store.list_consents("alice")] == ["other", "cli"]
    assert len(await store.list_consents(None)) == 3
    assert await store.delete_consents("alice", "cli") == 1
    assert await store.delete_consents("alice", None) == 1
    assert await store.list_consents(None) == [Consent("bob", "cli", "echo", ("mcp",), NOW + 2)]


async def test_a_sign_in_lasts_until_it_expires(store: SQLiteAuthorizationStore) -> None:
    await store.put_sign_in(digest("cookie"), ALICE, NOW + 60)
    assert await store.get_sign_in(digest("cookie"), NOW + 59) == ALICE
    assert await store.get_sign_in(digest("cookie"), NOW + 60) is None
    assert await store.get_sign_in(digest("other"), NOW) is None


async def test_a_dynamic_client_round_trips(store: SQLiteAuthorizationStore) -> None:
    metadata = {"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "Tool"}
    await store.put_client("dcr-1", metadata, NOW)
    assert await store.get_client("dcr-1") == metadata
    assert await store.get_client("dcr-2") is None


# --- purge ----------------------------------------------------------------------------------------


async def test_purge_deletes_what_expired_and_keeps_codes_a_day(store: SQLiteAuthorizationStore) -> None:
    await store.put_pending(pending("old", expires_at=NOW - 1))
    await store.put_pending(pending("new", expires_at=NOW + 600))
    await store.claim_state("cli", "old", NOW - 1)
    await store.claim_state("cli", "new", NOW + 600)
    await store.put_code(digest("recent"), code(NOW - 3600))
    await store.put_code(digest("ancient"), code(NOW - 86401))
    await store.put_sign_in(digest("old"), ALICE, NOW - 1)
    await store.put_sign_in(digest("new"), ALICE, NOW + 60)
    await family(store, "old", expires_at=NOW - 1)
    await family(store, "new", expires_at=NOW + 3600)
    await store.add_refresh(digest("r-old"), "old", NOW - 100)
    await store.add_refresh(digest("r-new"), "new", NOW - 100)
    await store.add_access_token("new", "jti-old", int(NOW) - 1)
    await store.add_access_token("new", "jti-new", int(NOW) + 900)

    # pending, state, code, sign-in, access token, refresh token, family: one each
    assert await store.purge(NOW) == 7

    assert await store.get_pending("new", NOW) is not None
    assert await store.claim_state("cli", "old", NOW + 600) is True, "the expired state was purged"
    assert await store.claim_state("cli", "new", NOW + 600) is False
    recent = await store.redeem_code(digest("recent"))
    assert recent is not None, "an expired code is kept a day so that a replay is still caught"
    assert await store.redeem_code(digest("ancient")) is None
    assert await store.get_sign_in(digest("new"), NOW) == ALICE
    assert await store.use_refresh(digest("r-old"), NOW) is None
    assert await store.use_refresh(digest("r-new"), NOW) is not None
    assert await store.revoke_family("new", NOW) == [("jti-new", int(NOW) + 900)]
    assert await store.purge(NOW) == 0


# --- lifecycle ------------------------------------------------------------------------------------


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    closed = SQLiteAuthorizationStore(tmp_path / "x" / "bastion.db")
    await closed.start()
    await closed.close()
    await closed.close()
    with pytest.raises(sqlite3.ProgrammingError, match="not open"):
        await closed.get_client("dcr-1")
