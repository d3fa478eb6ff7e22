"""The ``ApprovalStore`` contract, run against every backend (``MemoryApprovalStore``, ``SQLiteApprovalStore``,
``PostgresApprovalStore`` on the PostgreSQL on loopback: each test in a schema of its own).

Round trips, the exact binding ``find`` matches, each transition of the lifecycle
(``bastion.approvals.model``) and its refusals, and races: every transition has exactly
one winner. ``handles`` opens stores on ONE backend (for SQLite: one file; for PostgreSQL: one
schema, each handle with a pool of its own), as two
replicas would. The replica tests (two handles racing, a restart) use ``replica_handles``,
which holds only the backends whose handles share their requests: the memory store is
per process by design, so two of its handles are two separate stores. A shared backend
joins by adding an entry to ``BACKENDS`` and its name to ``SHARED``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from stores_support import POSTGRES_URL, handles_fixture, postgres_schema

from bastion.approvals import ApprovalBinding, ApprovalRequest, ApprovalStats, ApprovalStore
from bastion.approvals.store_memory import MemoryApprovalStore
from bastion.approvals.store_postgres import PostgresApprovalStore
from bastion.approvals.store_sqlite import SQLiteApprovalStore
from bastion.stores.postgres import PostgresDatabase

NOW = 1_700_000_000.0
TTL = 600.0
GRANT_TTL = 300.0
ALICE = "https://idp.example\x1falice"
BOB = "https://idp.example\x1fbob"
BINDING = ApprovalBinding(ALICE, "notes", "delete_note", "a" * 64, "policy-v1")

Opener = Callable[[], Awaitable[ApprovalStore]]

#: Every backend of ``ApprovalStore``: a factory of a store on the backend at ``tmp_path``.
BACKENDS: dict[str, Callable[[Path], ApprovalStore]] = {
    "memory": lambda tmp: MemoryApprovalStore(),
    "sqlite": lambda tmp: SQLiteApprovalStore(tmp / "bastion.db"),
    "postgres": lambda tmp: PostgresApprovalStore(PostgresDatabase(POSTGRES_URL, schema=postgres_schema(tmp))),
}
#: The backends whose handles (replicas, a restarted process) share one set of requests.
SHARED = ("sqlite", "postgres")


handles = handles_fixture(BACKENDS)
replica_handles = handles_fixture({name: BACKENDS[name] for name in SHARED})


@pytest.fixture
async def store(handles: Opener) -> ApprovalStore:
    return await handles()


def request(
    approval_id: str = "ap-1",
    *,
    binding: ApprovalBinding = BINDING,
    created_at: float = NOW,
    ttl: float = TTL,
    **changes: Any,
) -> ApprovalRequest:
    made = ApprovalRequest(
        id=approval_id,
        kind="review",
        binding=binding,
        requester_label="alice@example.com",
        client_id="cli",
        arguments={"note_id": 7},
        risk="high",
        classification="destructive",
        policy_ids=("approve-deletes",),
        decision_id="d-" + approval_id,
        created_at=created_at,
        expires_at=created_at + ttl,
    )
    return dataclasses.replace(made, **changes)


async def approve_or_none(store: ApprovalStore, approval_id: str, *, now: float = NOW + 10) -> ApprovalRequest | None:
    return await store.decide(
        approval_id, approved=True, approver="bob@example.com", approver_key=BOB, reason="ok", now=now,
        grant_ttl=GRANT_TTL,
    )  # fmt: skip


async def approve(store: ApprovalStore, approval_id: str, *, now: float = NOW + 10) -> ApprovalRequest:
    decided = await approve_or_none(store, approval_id, now=now)
    assert decided is not None
    return decided


async def deny(store: ApprovalStore, approval_id: str, *, now: float = NOW + 10) -> ApprovalRequest | None:
    return await store.decide(
        approval_id, approved=False, approver="bob@example.com", approver_key=BOB, reason="no", now=now,
        grant_ttl=GRANT_TTL,
    )  # fmt: skip


# --- create and get ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"title": "Café ☕ 東京", "nested": {"list": [1, 2.5, None, True, {"deep": "ü\u2028"}], "empty": {}}},
        ["a", {"b": []}],
        "[REDACTED]",
        None,
        0,
    ],
    ids=["object", "array", "string", "null", "number"],
)
async def test_every_field_survives_a_round_trip(store: ApprovalStore, arguments: Any) -> None:
    made = request(
        arguments=arguments,
        kind="confirm",
        policy_ids=("p1", "p-ü"),
        status="consumed",
        decided_at=NOW + 1.25,
        approver="Bob Ü",
        approver_key=BOB,
        reason="looks right ✓",
        consumed_at=NOW + 2.5,
        consumed_by="d-call",
    )
    await store.create(made)
    got = await store.get("ap-1")
    assert got == made
    assert got is not None
    assert got.arguments == arguments
    assert type(got.policy_ids) is tuple


async def test_a_new_request_round_trips_with_its_defaults(store: ApprovalStore) -> None:
    await store.create(request())
    assert await store.get("ap-1") == request()
    assert await store.get("unknown") is None


async def test_creating_an_existing_id_raises_and_keeps_the_first(store: ApprovalStore) -> None:
    await store.create(request())
    with pytest.raises(ValueError, match="ap-1"):
        await store.create(request(risk="low"))
    assert await store.get("ap-1") == request()


# --- find -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["requester", "route", "tool", "arguments_sha256", "policy_version"])
async def test_find_matches_exactly_the_binding(store: ApprovalStore, field: str) -> None:
    await store.create(request())
    assert await store.find(BINDING, NOW) == request()
    other = dataclasses.replace(BINDING, **{field: getattr(BINDING, field) + "x"})
    assert await store.find(other, NOW) is None


async def test_find_returns_the_newest_live_request(store: ApprovalStore) -> None:
    await store.create(request("old", created_at=NOW))
    await store.create(request("new", created_at=NOW + 5))
    await store.create(request("other", created_at=NOW + 9, binding=dataclasses.replace(BINDING, tool="rename")))
    found = await store.find(BINDING, NOW + 6)
    assert found is not None
    assert found.id == "new"
    await deny(store, "new", now=NOW + 7)
    found = await store.find(BINDING, NOW + 8)
    assert found is not None
    assert found.id == "old"


async def test_find_returns_an_approved_grant(store: ApprovalStore) -> None:
    await store.create(request())
    granted = await approve(store, "ap-1")
    assert await store.find(BINDING, NOW + 20) == granted


async def test_find_ignores_denied_expired_consumed_and_past_expiry(store: ApprovalStore) -> None:
    await store.create(request("denied"))
    await deny(store, "denied")
    await store.create(request("marked-expired", status="expired"))
    await store.create(request("consumed"))
    await approve(store, "consumed")
    assert await store.consume("consumed", decision_id="d-call", now=NOW + 11) is not None
    assert await store.find(BINDING, NOW + 12) is None

    await store.create(request("stale", created_at=NOW, ttl=60))
    assert await store.find(BINDING, NOW + 59.9) is not None
    assert await store.find(BINDING, NOW + 60) is None  # at expires_at: expired, even before expire() marks it


# --- decide -----------------------------------------------------------------------------------


async def test_approving_sets_the_decision_and_moves_expiry_to_the_grant_ttl(store: ApprovalStore) -> None:
    await store.create(request())
    decided = await approve(store, "ap-1", now=NOW + 10)
    expected = dataclasses.replace(
        request(), status="approved", decided_at=NOW + 10, approver="bob@example.com", approver_key=BOB, reason="ok",
        expires_at=NOW + 10 + GRANT_TTL,
    )  # fmt: skip
    assert decided == expected
    assert await store.get("ap-1") == expected


async def test_denying_sets_the_decision_and_keeps_the_expiry(store: ApprovalStore) -> None:
    await store.create(request())
    decided = await deny(store, "ap-1", now=NOW + 10)
    expected = dataclasses.replace(
        request(), status="denied", decided_at=NOW + 10, approver="bob@example.com", approver_key=BOB, reason="no"
    )
    assert decided == expected
    assert await store.get("ap-1") == expected


async def test_deciding_a_decided_request_changes_nothing(store: ApprovalStore) -> None:
    await store.create(request("approved"))
    granted = await approve(store, "approved")
    await store.create(request("denied"))
    denied = await deny(store, "denied")
    for approval_id, kept in (("approved", granted), ("denied", denied)):
        assert await deny(store, approval_id, now=NOW + 20) is None
        assert await store.decide(approval_id, approved=True, approver="eve", approver_key="eve", reason="",
                                  now=NOW + 20, grant_ttl=GRANT_TTL) is None  # fmt: skip
        assert await store.get(approval_id) == kept


@pytest.mark.parametrize("status", ["expired", "consumed"])
async def test_deciding_an_expired_or_consumed_request_changes_nothing(store: ApprovalStore, status: str) -> None:
    await store.create(request(status=status))
    assert await approve_or_none(store, "ap-1") is None
    assert await deny(store, "ap-1") is None
    assert await store.get("ap-1") == request(status=status)


async def test_deciding_a_pending_request_past_its_expiry_changes_nothing(store: ApprovalStore) -> None:
    await store.create(request(ttl=60))
    assert await approve_or_none(store, "ap-1", now=NOW + 60) is None  # at expires_at
    assert await deny(store, "ap-1", now=NOW + 61) is None
    assert await store.get("ap-1") == request(ttl=60)
    assert await approve_or_none(store, "unknown") is None


# --- consume ----------------------------------------------------------------------------------


async def test_a_grant_is_consumed_once(store: ApprovalStore) -> None:
    await store.create(request())
    granted = await approve(store, "ap-1", now=NOW + 10)
    consumed = await store.consume("ap-1", decision_id="d-call", now=NOW + 20)
    expected = dataclasses.replace(granted, status="consumed", consumed_at=NOW + 20, consumed_by="d-call")
    assert consumed == expected
    assert await store.consume("ap-1", decision_id="d-again", now=NOW + 21) is None
    assert await store.get("ap-1") == expected


@pytest.mark.parametrize("status", ["pending", "denied", "expired"])
async def test_only_an_approved_grant_is_consumed(store: ApprovalStore, status: str) -> None:
    await store.create(request())
    if status == "denied":
        await deny(store, "ap-1")
    elif status == "expired":
        await approve(store, "ap-1")
        assert len(await store.expire(NOW + 10 + GRANT_TTL)) == 1
    before = await store.get("ap-1")
    assert before is not None
    assert before.status == status
    assert await store.consume("ap-1", decision_id="d-call", now=NOW + 20) is None
    assert await store.get("ap-1") == before
    assert await store.consume("unknown", decision_id="d-call", now=NOW + 20) is None


async def test_a_grant_is_not_consumed_at_or_after_its_expiry(store: ApprovalStore) -> None:
    for approval_id in ("at", "after", "before"):
        await store.create(request(approval_id))
        await approve(store, approval_id, now=NOW + 10)
    expires_at = NOW + 10 + GRANT_TTL
    assert await store.consume("at", decision_id="d-call", now=expires_at) is None
    assert await store.consume("after", decision_id="d-call", now=expires_at + 1) is None
    for approval_id in ("at", "after"):
        got = await store.get(approval_id)
        assert got is not None
        assert got.status == "approved"
    consumed = await store.consume("before", decision_id="d-call", now=expires_at - 0.001)
    assert consumed is not None
    assert consumed.status == "consumed"


# --- expire -----------------------------------------------------------------------------------


async def test_expire_marks_pending_and_approved_past_expiry_only(store: ApprovalStore) -> None:
    await store.create(request("pending-due", created_at=NOW, ttl=100))  # expires NOW + 100
    await store.create(request("approved-due", created_at=NOW + 1, ttl=TTL))
    await approve(store, "approved-due", now=NOW + 100 - GRANT_TTL)  # grant expires NOW + 100
    await store.create(request("pending-live", created_at=NOW + 2, ttl=100.5))
    await store.create(request("denied", created_at=NOW + 3, ttl=10))
    await deny(store, "denied", now=NOW + 4)
    await store.create(request("consumed", created_at=NOW + 4, ttl=TTL))
    await approve(store, "consumed", now=NOW + 100 - GRANT_TTL)
    assert await store.consume("consumed", decision_id="d-call", now=NOW + 50) is not None
    untouched = {i: await store.get(i) for i in ("pending-live", "denied", "consumed")}

    expired = await store.expire(NOW + 100)
    assert [r.id for r in expired] == ["pending-due", "approved-due"]
    assert all(r.status == "expired" for r in expired)
    for r in expired:
        assert await store.get(r.id) == r
    got = await store.get("approved-due")
    assert got is not None
    assert (got.approver, got.decided_at) == ("bob@example.com", NOW + 100 - GRANT_TTL)  # the decision is kept
    assert {i: await store.get(i) for i in untouched} == untouched
    assert await store.expire(NOW + 100) == []  # idempotent


# --- list and stats ---------------------------------------------------------------------------


async def test_list_is_newest_first_filtered_and_limited(store: ApprovalStore) -> None:
    await store.create(request("b", created_at=NOW))
    await store.create(request("a", created_at=NOW))
    await store.create(request("c", created_at=NOW + 1))
    await store.create(request("d", created_at=NOW - 1))
    await deny(store, "c", now=NOW + 2)
    assert [r.id for r in await store.list()] == ["c", "b", "a", "d"]
    assert [r.id for r in await store.list("pending")] == ["b", "a", "d"]
    assert [r.id for r in await store.list("pending", limit=2)] == ["b", "a"]
    assert [r.id for r in await store.list("denied")] == ["c"]
    assert await store.list("consumed") == []
    assert await store.list(limit=0) == []
    assert (await store.list(limit=1))[0] == await store.get("c")
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=-1)


async def test_list_shows_a_request_past_expiry_as_stored(store: ApprovalStore) -> None:
    await store.create(request(ttl=1))
    assert [r.status for r in await store.list("pending")] == ["pending"]


async def test_stats_count_by_status_and_take_the_median_decision_time(store: ApprovalStore) -> None:
    assert await store.count("pending") == 0
    empty = await store.stats()
    assert empty == ApprovalStats(
        counts={"pending": 0, "approved": 0, "denied": 0, "expired": 0, "consumed": 0}, median_decision_s=None
    )
    await store.create(request("fast", created_at=NOW))
    await approve(store, "fast", now=NOW + 10)
    assert await store.consume("fast", decision_id="d-call", now=NOW + 11) is not None
    await store.create(request("slow", created_at=NOW + 5))
    await deny(store, "slow", now=NOW + 35)
    await store.create(request("lapsed", created_at=NOW, ttl=1))
    assert len(await store.expire(NOW + 1)) == 1
    await store.create(request("waiting", created_at=NOW + 40))
    stats = await store.stats()
    assert stats.counts == {"pending": 1, "approved": 0, "denied": 1, "expired": 1, "consumed": 1}
    assert {status: await store.count(status) for status in stats.counts} == stats.counts
    assert stats.median_decision_s == 20.0  # the consumed (10 s) and the denied (30 s); not the undecided


# --- races ------------------------------------------------------------------------------------


async def test_concurrent_consumes_have_exactly_one_winner(store: ApprovalStore) -> None:
    await store.create(request())
    await approve(store, "ap-1")
    results = await asyncio.gather(*(store.consume("ap-1", decision_id=f"d-{i}", now=NOW + 20) for i in range(20)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get("ap-1") == winners[0]


async def test_concurrent_decisions_have_exactly_one_winner(store: ApprovalStore) -> None:
    await store.create(request())
    results = await asyncio.gather(*(
        store.decide("ap-1", approved=i % 2 == 0, approver=f"approver-{i}", approver_key=f"key-{i}", reason=str(i),
                     now=NOW + 10, grant_ttl=GRANT_TTL)
        for i in range(10)
    ))  # fmt: skip
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].status == ("approved" if winners[0].reason in {"0", "2", "4", "6", "8"} else "denied")
    assert await store.get("ap-1") == winners[0]


async def test_replicas_racing_for_one_grant_have_exactly_one_winner(replica_handles: Opener) -> None:
    store, replica = await replica_handles(), await replica_handles()
    await store.create(request())
    await approve(replica, "ap-1")
    results = await asyncio.gather(*(
        (store if i % 2 else replica).consume("ap-1", decision_id=f"d-{i}", now=NOW + 20) for i in range(20)
    ))  # fmt: skip
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get("ap-1") == await replica.get("ap-1") == winners[0]


async def test_replicas_deciding_at_once_have_exactly_one_winner(replica_handles: Opener) -> None:
    store, replica = await replica_handles(), await replica_handles()
    await store.create(request())
    results = await asyncio.gather(*(
        (store if i % 2 else replica).decide("ap-1", approved=i % 2 == 0, approver=f"a{i}", approver_key=f"k{i}",
                                             reason=str(i), now=NOW + 10, grant_ttl=GRANT_TTL)
        for i in range(10)
    ))  # fmt: skip
    assert len([r for r in results if r is not None]) == 1


async def test_a_request_outlives_its_handle_and_is_seen_by_another(replica_handles: Opener) -> None:
    first = await replica_handles()
    await first.create(request())
    await first.close()
    restarted = await replica_handles()
    assert await restarted.get("ap-1") == request()
    assert await restarted.find(BINDING, NOW) == request()
    granted = await approve(restarted, "ap-1")
    other = await replica_handles()
    assert await other.find(BINDING, NOW + 20) == granted


async def test_a_decision_through_one_replica_is_seen_and_consumed_through_another(replica_handles: Opener) -> None:
    gateway, portal = await replica_handles(), await replica_handles()
    await gateway.create(request())
    assert await portal.find(BINDING, NOW + 5) == request()
    granted = await approve(portal, "ap-1")
    assert await gateway.get("ap-1") == granted
    assert await gateway.find(BINDING, NOW + 20) == granted
    consumed = await gateway.consume("ap-1", decision_id="d-call", now=NOW + 21)
    assert consumed is not None
    assert await portal.get("ap-1") == consumed
    assert await portal.consume("ap-1", decision_id="d-again", now=NOW + 22) is None
    assert await deny(portal, "ap-1") is None  # a used grant is not decided again


async def test_many_replicas_racing_for_one_grant_have_exactly_one_winner(replica_handles: Opener) -> None:
    replicas = [await replica_handles() for _ in range(4)]
    await replicas[0].create(request())
    await approve(replicas[1], "ap-1")
    results = await asyncio.gather(*(
        replicas[i % 4].consume("ap-1", decision_id=f"d-{i}", now=NOW + 20) for i in range(40)
    ))  # fmt: skip
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert [await replica.get("ap-1") for replica in replicas] == [winners[0]] * 4


async def test_replicas_sweeping_at_once_expire_each_request_once(replica_handles: Opener) -> None:
    one, two = await replica_handles(), await replica_handles()
    for i in range(10):
        await one.create(request(f"ap-{i}", ttl=60))
    swept = await asyncio.gather(one.expire(NOW + 60), two.expire(NOW + 60), one.expire(NOW + 61))
    assert sorted(r.id for batch in swept for r in batch) == sorted(f"ap-{i}" for i in range(10))
    assert (await two.stats()).counts["expired"] == 10


async def test_a_consume_racing_the_sweep_either_consumes_or_finds_it_expired(replica_handles: Opener) -> None:
    gateway, sweeper = await replica_handles(), await replica_handles()
    await gateway.create(request())
    await approve(gateway, "ap-1", now=NOW + 10)
    expires_at = NOW + 10 + GRANT_TTL
    consumed, expired = await asyncio.gather(
        gateway.consume("ap-1", decision_id="d-call", now=expires_at - 0.5), sweeper.expire(expires_at)
    )
    final = await sweeper.get("ap-1")
    assert final is not None
    assert (consumed is not None, [r.id for r in expired]) in [(True, []), (False, ["ap-1"])]
    assert final.status == ("consumed" if consumed is not None else "expired")
