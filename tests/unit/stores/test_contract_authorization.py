"""The authorization server's stores: the ``AuthorizationFlowStore`` and ``AuthorizationGrantStore``
contracts, each run against every backend of its kind (the SQLite stores on their own and
``SQLiteAuthorizationStore``, which is both; the PostgreSQL stores on the PostgreSQL on loopback,
on their own and ``PostgresAuthorizationStore``): single use under races, families, purge.

``flow_handles`` / ``grant_handles`` open stores on ONE backend (for SQLite: one file; for
PostgreSQL: one schema, each handle with its own pool), as two replicas would; a shared backend
joins by adding an entry to ``FLOW_BACKENDS`` or ``GRANT_BACKENDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from stores_support import POSTGRES_URL, handles_fixture, postgres_schema

from bastion.oauth import (
    AuthorizationFlowStore,
    AuthorizationGrantStore,
    SQLiteAuthorizationStore,
    SQLiteFlowStore,
    SQLiteGrantStore,
)
from bastion.oauth.records import (
    AuthorizationCode,
    Consent,
    FederatedSignIn,
    Grant,
    PendingAuthorization,
    UserIdentity,
    digest,
)
from bastion.oauth.store_postgres import PostgresAuthorizationStore
from bastion.oauth.store_postgres_flows import PostgresFlowStore
from bastion.oauth.store_postgres_grants import PostgresGrantStore
from bastion.stores.postgres import PostgresDatabase

NOW = 1_800_000_000.0
ALICE = UserIdentity("alice", "local", "alice@example.com", "Alice", ("eng", "ops"))
GRANT = Grant("cli", "echo", "http://127.0.0.1:8123/mcp/echo", ("mcp",), ALICE)

FlowOpener = Callable[[], Awaitable[AuthorizationFlowStore]]
GrantOpener = Callable[[], Awaitable[AuthorizationGrantStore]]

#: Every backend of each kind: a factory of a store on the backend at ``tmp_path``.
def _postgres(tmp: Path) -> PostgresDatabase:
    """A database (its own pool) on the test's schema: one per handle, as each replica has one."""
    return PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp))


FLOW_BACKENDS: dict[str, Callable[[Path], AuthorizationFlowStore]] = {
    "sqlite": lambda tmp: SQLiteFlowStore(tmp / "bastion.db"),
    "sqlite-both": lambda tmp: SQLiteAuthorizationStore(tmp / "bastion.db"),
    "postgres": lambda tmp: PostgresFlowStore(_postgres(tmp)),
    "postgres-both": lambda tmp: PostgresAuthorizationStore(_postgres(tmp)),
}
GRANT_BACKENDS: dict[str, Callable[[Path], AuthorizationGrantStore]] = {
    "sqlite": lambda tmp: SQLiteGrantStore(tmp / "bastion.db"),
    "sqlite-both": lambda tmp: SQLiteAuthorizationStore(tmp / "bastion.db"),
    "postgres": lambda tmp: PostgresGrantStore(_postgres(tmp)),
    "postgres-both": lambda tmp: PostgresAuthorizationStore(_postgres(tmp)),
}


flow_handles = handles_fixture(FLOW_BACKENDS)
grant_handles = handles_fixture(GRANT_BACKENDS)


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


def federated(expires_at: float) -> FederatedSignIn:
    return FederatedSignIn("p1", "corp", "nonce", "v" * 43, digest("browser"), expires_at)


def code(expires_at: float = NOW + 60) -> AuthorizationCode:
    return AuthorizationCode(GRANT, "http://127.0.0.1:5555/cb", "c" * 43, expires_at)


async def family(store: AuthorizationGrantStore, family_id: str = "f1", *, expires_at: float = NOW + 3600) -> None:
    await store.create_family(family_id, GRANT, expires_at, NOW)


# --- pending requests -----------------------------------------------------------------------------


async def test_a_pending_request_round_trips(flows: AuthorizationFlowStore) -> None:
    await flows.put_pending(pending())
    assert await flows.get_pending("p1", NOW) == pending()
    await flows.set_pending_user("p1", ALICE)
    got = await flows.get_pending("p1", NOW)
    assert got is not None
    assert got.user == ALICE
    assert got.scopes == ("mcp", "read")


async def test_an_expired_or_unknown_pending_request_is_none(flows: AuthorizationFlowStore) -> None:
    await flows.put_pending(pending(expires_at=NOW + 10))
    assert await flows.get_pending("p1", NOW + 10) is None
    assert await flows.take_pending("p1", NOW + 10) is None
    assert await flows.get_pending("nope", NOW) is None


async def test_take_pending_is_single_use(flows: AuthorizationFlowStore) -> None:
    await flows.put_pending(pending())
    await flows.set_pending_user("p1", ALICE)
    taken = await flows.take_pending("p1", NOW)
    assert taken is not None
    assert taken.user == ALICE
    assert await flows.take_pending("p1", NOW) is None
    assert await flows.get_pending("p1", NOW) is None


async def test_concurrent_take_pending_has_exactly_one_winner(flows: AuthorizationFlowStore) -> None:
    await flows.put_pending(pending())
    results = await asyncio.gather(*(flows.take_pending("p1", NOW) for _ in range(20)))
    assert sum(r is not None for r in results) == 1


# --- state ----------------------------------------------------------------------------------------


async def test_claim_state_is_single_use_per_client(flows: AuthorizationFlowStore) -> None:
    assert await flows.claim_state("cli", "xyz", NOW + 600) is True
    assert await flows.claim_state("cli", "xyz", NOW + 600) is False
    assert await flows.claim_state("other", "xyz", NOW + 600) is True
    assert await flows.claim_state("cli", "xyz2", NOW + 600) is True


async def test_concurrent_claim_state_has_exactly_one_winner(flows: AuthorizationFlowStore) -> None:
    results = await asyncio.gather(*(flows.claim_state("cli", "s", NOW + 600) for _ in range(20)))
    assert results.count(True) == 1


# --- authorization codes --------------------------------------------------------------------------


async def test_redeem_code_is_single_use(flows: AuthorizationFlowStore) -> None:
    await flows.put_code(digest("the-code"), code())
    first = await flows.redeem_code(digest("the-code"))
    assert first == code()
    assert first is not None
    assert (first.used, first.family_id) == (False, None)
    second = await flows.redeem_code(digest("the-code"))
    assert second is not None
    assert second.used is True
    assert second.grant == GRANT
    assert await flows.redeem_code(digest("another")) is None


async def test_a_redeemed_code_names_the_family_it_started(flows: AuthorizationFlowStore) -> None:
    await flows.put_code(digest("the-code"), code())
    first = await flows.redeem_code(digest("the-code"), "f1")
    assert first is not None
    assert (first.used, first.family_id) == (False, "f1")
    again = await flows.redeem_code(digest("the-code"))
    assert again is not None
    assert (again.used, again.family_id) == (True, "f1")


async def test_concurrent_redeem_code_has_exactly_one_first_use(flows: AuthorizationFlowStore) -> None:
    await flows.put_code(digest("the-code"), code())
    results = await asyncio.gather(*(flows.redeem_code(digest("the-code")) for _ in range(20)))
    assert all(r is not None for r in results)
    assert [r.used for r in results if r is not None].count(False) == 1


async def test_two_handles_on_one_backend_redeem_a_code_once(flow_handles: FlowOpener) -> None:
    """Two replicas (two connections to one backend) racing: still exactly one first use."""
    store, replica = await flow_handles(), await flow_handles()
    await store.put_code(digest("the-code"), code())
    results = await asyncio.gather(*((store if i % 2 else replica).redeem_code(digest("the-code")) for i in range(20)))
    assert [r.used for r in results if r is not None].count(False) == 1


async def test_two_handles_on_one_backend_take_a_pending_request_once(flow_handles: FlowOpener) -> None:
    store, replica = await flow_handles(), await flow_handles()
    await store.put_pending(pending())
    results = await asyncio.gather(*((store if i % 2 else replica).take_pending("p1", NOW) for i in range(20)))
    assert sum(r is not None for r in results) == 1


async def test_a_federated_sign_in_is_taken_once_and_only_before_it_expires(flows: AuthorizationFlowStore) -> None:
    await flows.put_federated(digest("s1"), federated(NOW + 60))
    await flows.put_federated(digest("s2"), federated(NOW + 60))
    assert await flows.take_federated(digest("s1"), NOW) == federated(NOW + 60)
    assert await flows.take_federated(digest("s1"), NOW) is None
    assert await flows.take_federated(digest("s2"), NOW + 60) is None
    assert await flows.take_federated(digest("unknown"), NOW) is None
    await flows.put_federated(digest("s3"), federated(NOW + 60))
    results = await asyncio.gather(*(flows.take_federated(digest("s3"), NOW) for _ in range(20)))
    assert sum(r is not None for r in results) == 1

# --- refresh-token families -----------------------------------------------------------------------


async def test_use_refresh_reports_the_previous_use(grants: AuthorizationGrantStore) -> None:
    await family(grants)
    await grants.add_refresh(digest("r1"), "f1", NOW)
    first = await grants.use_refresh(digest("r1"), NOW + 1)
    assert first is not None
    assert (first.family_id, first.grant, first.expires_at) == ("f1", GRANT, NOW + 3600)
    assert (first.revoked, first.previous_use) == (False, None)
    second = await grants.use_refresh(digest("r1"), NOW + 2)
    assert second is not None
    assert second.previous_use == NOW + 1
    third = await grants.use_refresh(digest("r1"), NOW + 3)
    assert third is not None
    assert third.previous_use == NOW + 1, "the first use is kept, not the latest"
    assert await grants.use_refresh(digest("unknown"), NOW) is None


async def test_concurrent_use_refresh_has_exactly_one_first_use(grants: AuthorizationGrantStore) -> None:
    await family(grants)
    await grants.add_refresh(digest("r1"), "f1", NOW)
    results = await asyncio.gather(*(grants.use_refresh(digest("r1"), NOW + 1) for _ in range(20)))
    assert [r.previous_use for r in results if r is not None].count(None) == 1


async def test_revoke_family_returns_its_unexpired_access_tokens(grants: AuthorizationGrantStore) -> None:
    await family(grants)
    await family(grants, "f2")
    await grants.add_refresh(digest("r1"), "f1", NOW)
    await grants.add_access_token("f1", "jti-live", int(NOW) + 900)
    await grants.add_access_token("f1", "jti-expired", int(NOW) - 1)
    await grants.add_access_token("f1", "jti-now", int(NOW))
    await grants.add_access_token("f2", "jti-other-family", int(NOW) + 900)
    assert await grants.revoke_family("f1", NOW) == [("jti-live", int(NOW) + 900)]
    use = await grants.use_refresh(digest("r1"), NOW + 1)
    assert use is not None
    assert use.revoked is True
    assert await grants.families_of("alice", None) == ["f2"]


async def test_family_of_and_families_of(grants: AuthorizationGrantStore) -> None:
    await family(grants, "f1")
    await grants.create_family("f2", Grant("other", "echo", GRANT.resource, ("mcp",), ALICE), NOW + 3600, NOW)
    bob = Grant("cli", "echo", GRANT.resource, ("mcp",), UserIdentity("bob", "local"))
    await grants.create_family("f3", bob, NOW + 3600, NOW)
    await grants.add_refresh(digest("r1"), "f1", NOW)
    assert await grants.family_of(digest("r1")) == ("f1", "cli")
    assert await grants.family_of(digest("nope")) is None
    assert sorted(await grants.families_of("alice", None)) == ["f1", "f2"]
    assert await grants.families_of("alice", "other") == ["f2"]
    assert await grants.families_of("bob", "cli") == ["f3"]
    assert await grants.families_of("carol", None) == []


# --- consents, sign-ins, clients ------------------------------------------------------------------


async def test_consents_are_kept_replaced_listed_and_deleted(grants: AuthorizationGrantStore) -> None:
    await grants.put_consent(Consent("alice", "cli", "echo", ("mcp",), NOW))
    await grants.put_consent(Consent("alice", "other", "echo", ("mcp",), NOW + 1))
    await grants.put_consent(Consent("bob", "cli", "echo", ("mcp",), NOW + 2))
    await grants.put_consent(Consent("alice", "cli", "echo", ("mcp", "read"), NOW + 3))
    assert await grants.get_consent("alice", "cli", "echo") == Consent("alice", "cli", "echo", ("mcp", "read"), NOW + 3)
    assert await grants.get_consent("alice", "cli", "other-route") is None
    assert [c.client_id for c in await grants.list_consents("alice")] == ["other", "cli"]
    assert len(await grants.list_consents(None)) == 3
    assert await grants.delete_consents("alice", "cli") == 1
    assert await grants.delete_consents("alice", None) == 1
    assert await grants.list_consents(None) == [Consent("bob", "cli", "echo", ("mcp",), NOW + 2)]


async def test_a_sign_in_lasts_until_it_expires(flows: AuthorizationFlowStore) -> None:
    await flows.put_sign_in(digest("cookie"), ALICE, NOW + 60)
    assert await flows.get_sign_in(digest("cookie"), NOW + 59) == ALICE
    assert await flows.get_sign_in(digest("cookie"), NOW + 60) is None
    assert await flows.get_sign_in(digest("other"), NOW) is None


async def test_a_dynamic_client_round_trips(grants: AuthorizationGrantStore) -> None:
    metadata = {"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "Tool"}
    await grants.put_client("dcr-1", metadata, NOW)
    assert await grants.get_client("dcr-1") == metadata
    assert await grants.get_client("dcr-2") is None


# --- several replicas on one backend -------------------------------------------------------------


async def test_a_flow_started_on_one_handle_finishes_on_another(flow_handles: FlowOpener) -> None:
    """Every step of a sign-in may reach another replica: what one wrote, the other reads once."""
    store, replica = await flow_handles(), await flow_handles()
    await store.put_pending(pending())
    await replica.set_pending_user("p1", ALICE)
    seen = await store.get_pending("p1", NOW)
    assert seen is not None
    assert seen.user == ALICE
    assert await store.claim_state("cli", "xyz", NOW + 600) is True
    assert await replica.claim_state("cli", "xyz", NOW + 600) is False
    await replica.put_sign_in(digest("cookie"), ALICE, NOW + 60)
    assert await store.get_sign_in(digest("cookie"), NOW) == ALICE
    await store.put_federated(digest("s1"), federated(NOW + 60))
    assert await replica.take_federated(digest("s1"), NOW) == federated(NOW + 60)
    assert await store.take_federated(digest("s1"), NOW) is None
    taken = await replica.take_pending("p1", NOW)
    assert taken is not None
    assert taken.user == ALICE
    assert await store.take_pending("p1", NOW) is None


async def test_a_code_issued_by_one_handle_is_redeemed_once_on_another(flow_handles: FlowOpener) -> None:
    store, replica = await flow_handles(), await flow_handles()
    await store.put_code(digest("the-code"), code())
    first = await replica.redeem_code(digest("the-code"), "f1")
    assert first is not None
    assert (first.used, first.family_id) == (False, "f1")
    replay = await store.redeem_code(digest("the-code"), "f2")
    assert replay is not None
    assert (replay.used, replay.family_id) == (True, "f1"), "the replay names the family to revoke"


async def test_two_handles_racing_for_a_state_or_a_sign_in_at_a_provider_have_one_winner(
    flow_handles: FlowOpener,
) -> None:
    store, replica = await flow_handles(), await flow_handles()
    handles = [store, replica] * 10
    claims = await asyncio.gather(*(each.claim_state("cli", "s", NOW + 600) for each in handles))
    assert claims.count(True) == 1
    await store.put_federated(digest("s1"), federated(NOW + 60))
    taken = await asyncio.gather(*(each.take_federated(digest("s1"), NOW) for each in handles))
    assert sum(t is not None for t in taken) == 1


async def test_a_consent_given_through_one_handle_holds_on_another(grant_handles: GrantOpener) -> None:
    store, replica = await grant_handles(), await grant_handles()
    await store.put_consent(Consent("alice", "cli", "echo", ("mcp",), NOW))
    assert await replica.get_consent("alice", "cli", "echo") == Consent("alice", "cli", "echo", ("mcp",), NOW)
    await replica.put_consent(Consent("alice", "cli", "echo", ("mcp", "read"), NOW + 1))
    assert await store.list_consents("alice") == [Consent("alice", "cli", "echo", ("mcp", "read"), NOW + 1)]
    assert await store.delete_consents("alice", None) == 1
    assert await replica.get_consent("alice", "cli", "echo") is None
    await store.put_client("dcr-1", {"client_name": "Tool"}, NOW)
    assert await replica.get_client("dcr-1") == {"client_name": "Tool"}


async def test_a_refresh_token_rotated_on_one_handle_is_a_reuse_on_another(grant_handles: GrantOpener) -> None:
    store, replica = await grant_handles(), await grant_handles()
    await family(store)
    await store.add_refresh(digest("r1"), "f1", NOW)
    first = await store.use_refresh(digest("r1"), NOW + 1)
    assert first is not None
    assert first.previous_use is None
    again = await replica.use_refresh(digest("r1"), NOW + 100)
    assert again is not None
    assert again.previous_use == NOW + 1, "the other replica sees the rotation: a reuse"
    await replica.add_access_token("f1", "jti-1", int(NOW) + 900)
    assert await replica.revoke_family("f1", NOW + 100) == [("jti-1", int(NOW) + 900)]
    assert await store.family_revoked("f1") is True
    late = await store.use_refresh(digest("r1"), NOW + 101)
    assert late is not None
    assert late.revoked is True
    assert await store.families_of("alice", None) == []


async def test_two_handles_rotating_one_refresh_token_at_once_have_one_first_use(grant_handles: GrantOpener) -> None:
    store, replica = await grant_handles(), await grant_handles()
    await family(store)
    await store.add_refresh(digest("r1"), "f1", NOW)
    results = await asyncio.gather(
        *((store if i % 2 else replica).use_refresh(digest("r1"), NOW + 1 + i) for i in range(20))
    )
    uses = [r.previous_use for r in results if r is not None]
    assert len(uses) == 20
    assert uses.count(None) == 1
    assert len(set(uses) - {None}) == 1, "every later use sees the one first use's time"


async def test_a_family_revoked_before_it_is_created_stays_revoked(grant_handles: GrantOpener) -> None:
    """A replayed code on one replica racing its first redemption on another (RFC 6749 section 10.5)."""
    store, replica = await grant_handles(), await grant_handles()
    assert await replica.revoke_family("f1", NOW) == []
    await family(store)
    assert await store.family_revoked("f1") is True
    assert await store.families_of("alice", None) == []


# --- purge ----------------------------------------------------------------------------------------


async def test_flow_purge_deletes_what_expired_and_keeps_codes_a_day(flows: AuthorizationFlowStore) -> None:
    await flows.put_pending(pending("old", expires_at=NOW - 1))
    await flows.put_pending(pending("new", expires_at=NOW + 600))
    await flows.claim_state("cli", "old", NOW - 1)
    await flows.claim_state("cli", "new", NOW + 600)
    await flows.put_code(digest("recent"), code(NOW - 3600))
    await flows.put_code(digest("ancient"), code(NOW - 86401))
    await flows.put_sign_in(digest("old"), ALICE, NOW - 1)
    await flows.put_sign_in(digest("new"), ALICE, NOW + 60)
    await flows.put_federated(digest("old"), federated(NOW - 1))
    await flows.put_federated(digest("new"), federated(NOW + 600))

    # pending, state, code, sign-in, federated sign-in: one each
    assert await flows.purge(NOW) == 5

    assert await flows.get_pending("new", NOW) is not None
    assert await flows.claim_state("cli", "old", NOW + 600) is True, "the expired state was purged"
    assert await flows.claim_state("cli", "new", NOW + 600) is False
    recent = await flows.redeem_code(digest("recent"))
    assert recent is not None, "an expired code is kept a day so that a replay is still caught"
    assert await flows.redeem_code(digest("ancient")) is None
    assert await flows.get_sign_in(digest("new"), NOW) == ALICE
    assert await flows.take_federated(digest("new"), NOW) == federated(NOW + 600)
    assert await flows.purge(NOW) == 0


async def test_grant_purge_deletes_expired_families_and_access_tokens(grants: AuthorizationGrantStore) -> None:
    await family(grants, "old", expires_at=NOW - 1)
    await family(grants, "new", expires_at=NOW + 3600)
    await grants.add_refresh(digest("r-old"), "old", NOW - 100)
    await grants.add_refresh(digest("r-new"), "new", NOW - 100)
    await grants.add_access_token("new", "jti-old", int(NOW) - 1)
    await grants.add_access_token("new", "jti-new", int(NOW) + 900)
    await grants.put_consent(Consent("alice", "cli", "echo", ("mcp",), NOW - 10**6))
    await grants.put_client("dcr-1", {"redirect_uris": ["http://127.0.0.1/cb"]}, NOW - 10**6)

    # access token, refresh token, family: one each; consents and clients do not expire
    assert await grants.purge(NOW) == 3

    assert await grants.use_refresh(digest("r-old"), NOW) is None
    assert await grants.use_refresh(digest("r-new"), NOW) is not None
    assert await grants.revoke_family("new", NOW) == [("jti-new", int(NOW) + 900)]
    assert await grants.get_consent("alice", "cli", "echo") is not None
    assert await grants.get_client("dcr-1") is not None
    assert await grants.purge(NOW) == 0


@pytest.fixture
async def flows(flow_handles: FlowOpener) -> AuthorizationFlowStore:
    """A started flow store on each backend."""
    return await flow_handles()


@pytest.fixture
async def grants(grant_handles: GrantOpener) -> AuthorizationGrantStore:
    """A started grant store on each backend."""
    return await grant_handles()
