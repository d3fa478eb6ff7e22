"""The "approval decided" notification between replicas (``bastion.approvals.notices``), on the real
Redis on loopback under a key prefix of the test's own: two desks on one approval store, as two
replicas. The desks poll every 30 s, so only the notification can explain a release within 10 s;
the message is only a wake-up (the decision is read from the store); a Redis that is down or goes
away falls back to polling, never to approving.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tests.support.audit_fakes import RecordingAuditLog
from tests.support.bastion_process import free_port
from tests.support.databases import REDIS_URL, private_redis
from tests.support.e2e_helpers import wait_until

from bastion.approvals.desk import ApprovalDesk
from bastion.approvals.model import ApprovalBinding, ApprovalRequest
from bastion.approvals.notices import DecisionNotices
from bastion.approvals.store import ApprovalStore
from bastion.approvals.store_memory import MemoryApprovalStore
from bastion.policy import PolicyEngine
from bastion.principal import Principal

POLICY = """@id("ops-decide")
permit (principal in Group::"ops", action == Action::"approvals/decide", resource is Approval);
"""
LONG_POLL_S = 30
PROMPT_S = 10.0


def person(sub: str, *groups: str) -> Principal:
    return Principal(kind="User", sub=sub, issuer="https://bastion.test", auth_method="bastion_jwt",
                     expires_at=0, idp="local", groups=groups)  # fmt: skip


RITA, ALEX = person("rita", "dev"), person("alex", "ops")


class SharedStore(MemoryApprovalStore):
    """One store for two desks (two replicas): ``close`` leaves it open for the other."""

    async def close(self) -> None:
        pass


def make_desk(tmp_path: Path, store: ApprovalStore, notices: DecisionNotices | None, *, poll_s: float = LONG_POLL_S,
              ttl: float = 600) -> ApprovalDesk:  # fmt: skip
    (tmp_path / "p.cedar").write_text(POLICY, encoding="utf-8")
    return ApprovalDesk(store=store, log=RecordingAuditLog(), engine=PolicyEngine.load([tmp_path / "p.cedar"]),
                        ttl=ttl, status_url=lambda i: f"https://bastion.test/portal/approvals/{i}", poll_s=poll_s,
                        notices=notices, closing=asyncio.Event())  # fmt: skip


@pytest.fixture
def prefix() -> str:
    return f"bastion-test:{uuid.uuid4().hex}:"  # pub/sub keeps no keys: nothing to delete


async def ask(desk: ApprovalDesk) -> ApprovalRequest:
    binding = ApprovalBinding(RITA.key, "ci", "deploy", "d" * 64, "v1")
    return await desk.admit(binding, kind="review", principal=RITA, arguments={"env": "prod"}, risk="destructive",
                            classification="", policy_ids=("p",), decision_id="call-1")  # fmt: skip


async def subscribed(*desks: ApprovalDesk) -> None:
    deadline = time.monotonic() + 10
    while not all(d.notices is not None and d.notices.subscribed for d in desks):
        assert time.monotonic() < deadline, "the desks never subscribed"
        await asyncio.sleep(0.02)


async def test_a_decision_on_one_replica_releases_the_call_held_on_the_other_at_once(
    tmp_path: Path, prefix: str
) -> None:
    store = SharedStore()
    a = make_desk(tmp_path, store, DecisionNotices(REDIS_URL, prefix))
    b = make_desk(tmp_path, store, DecisionNotices(REDIS_URL, prefix))
    await a.start()
    await b.start()
    try:
        await subscribed(a, b)
        assert a._poll_interval() == LONG_POLL_S  # subscribed: the poll is long (at least SUBSCRIBED_POLL_S)
        request = await ask(a)
        started = time.monotonic()
        held = asyncio.create_task(a.wait(request, 120))
        await asyncio.sleep(0.2)
        assert not held.done()
        await b.decide(request.id, approver=ALEX, approve=True, reason="planned")
        released = await asyncio.wait_for(held, PROMPT_S)  # the next poll would be 30 s away
        assert released.status == "approved"
        assert time.monotonic() - started < PROMPT_S
    finally:
        await a.close()
        await b.close()


async def test_the_message_only_wakes_the_decision_is_read_from_the_store(tmp_path: Path, prefix: str) -> None:
    store = SharedStore()
    a = make_desk(tmp_path, store, DecisionNotices(REDIS_URL, prefix))
    await a.start()
    try:
        await subscribed(a)
        request = await ask(a)
        held = asyncio.create_task(a.wait(request, 120))
        async with Redis.from_url(REDIS_URL) as client:
            assert await client.publish(f"{prefix}approval-decided", request.id) == 1  # a forged "decided"
            await asyncio.sleep(0.5)
            assert not held.done()  # woken, read the store: still pending, still held
            assert (await store.get(request.id)).status == "pending"  # type: ignore[union-attr]
            # decided in the store by a replica whose message was lost; a later message (any) wakes it
            await store.decide(request.id, approved=False, approver="alex", approver_key=ALEX.key, reason="no",
                               now=time.time(), grant_ttl=600)  # fmt: skip
            await client.publish(f"{prefix}approval-decided", request.id)
        assert (await asyncio.wait_for(held, PROMPT_S)).status == "denied"
    finally:
        await a.close()


async def test_without_redis_the_desk_polls_and_never_approves(tmp_path: Path, prefix: str) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = SharedStore()
    a = make_desk(tmp_path, store, DecisionNotices(nowhere, prefix), poll_s=1)
    b = make_desk(tmp_path, store, DecisionNotices(nowhere, prefix), poll_s=1)
    await a.start()
    try:
        await asyncio.sleep(0.3)
        assert a.notices is not None
        assert not a.notices.subscribed
        assert a._poll_interval() == 1
        request = await ask(a)
        assert (await a.wait(request, 1.5)).status == "pending"  # the hold ends undecided: never approved
        held = asyncio.create_task(a.wait(request, 120))
        await b.decide(request.id, approver=ALEX, approve=True, reason="ok")  # its message cannot be sent
        assert (await asyncio.wait_for(held, PROMPT_S)).status == "approved"  # the poll saw it
    finally:
        await a.close()
        await b.close()


async def test_losing_redis_falls_back_to_the_short_poll(tmp_path: Path, prefix: str) -> None:
    port = free_port()
    with private_redis(port) as redis_proc:
        store = SharedStore()
        notices = DecisionNotices(f"redis://127.0.0.1:{port}/0", prefix, retry_s=0.2)
        a = make_desk(tmp_path, store, notices, poll_s=1)
        await a.start()
        try:
            await subscribed(a)
            assert a._poll_interval() >= 10  # subscribed: lengthened
            request = await ask(a)
            held = asyncio.create_task(a.wait(request, 120))
            await asyncio.sleep(0.2)
            redis_proc.terminate()
            await asyncio.to_thread(wait_until, lambda: not notices.subscribed, 10)
            assert a._poll_interval() == 1
            await store.decide(request.id, approved=True, approver="alex", approver_key=ALEX.key, reason="ok",
                               now=time.time(), grant_ttl=600)  # fmt: skip
            assert (await asyncio.wait_for(held, PROMPT_S)).status == "approved"  # polled: no message needed
        finally:
            await a.close()


async def test_a_held_call_ends_at_its_expiry_even_with_a_long_poll(tmp_path: Path) -> None:
    desk = make_desk(tmp_path, MemoryApprovalStore(), None, poll_s=LONG_POLL_S, ttl=1)
    request = await ask(desk)
    ended = await asyncio.wait_for(desk.wait(request, 120), PROMPT_S)
    assert ended.status == "expired"
