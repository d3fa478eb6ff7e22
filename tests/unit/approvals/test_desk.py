"""The approval desk's rules, on the in-memory store: who may decide, what each step records, how a
held call's wait ends. (The same paths through a real gateway: tests/e2e/test_approvals.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.support.audit_fakes import RecordingAuditLog

from bastion.approvals.desk import ApprovalDesk
from bastion.approvals.model import ApprovalBinding
from bastion.approvals.store_memory import MemoryApprovalStore
from bastion.errors import DecisionRefused
from bastion.policy import PolicyEngine
from bastion.principal import Principal

POLICY = """
@id("ops-decide")
permit (principal in Group::"ops", action == Action::"approvals/decide", resource is Approval)
when { resource.risk == "destructive" };
"""


def person(sub: str, *groups: str, email: str | None = None) -> Principal:
    return Principal(kind="User", sub=sub, issuer="https://bastion.test", auth_method="bastion_jwt",
                     expires_at=0, idp="local", email=email, groups=groups)  # fmt: skip


RITA, ALEX, MALLORY = person("rita", "dev", email="rita@x.test"), person("alex", "ops"), person("mallory", "dev")
RITA_ELSEWHERE = Principal(kind="User", sub="r-123", issuer="https://login.example", auth_method="external_jwt",
                           expires_at=0, idp="corp", email="RITA@x.test", groups=("ops",))  # fmt: skip
"""Rita signed in through another issuer: another key, the same email, the same person."""


@pytest.fixture
def desk(tmp_path: Path) -> tuple[ApprovalDesk, RecordingAuditLog]:
    (tmp_path / "p.cedar").write_text(POLICY, encoding="utf-8")
    log = RecordingAuditLog()
    desk = ApprovalDesk(store=MemoryApprovalStore(), log=log, engine=PolicyEngine.load([tmp_path / "p.cedar"]),
                        ttl=60, status_url=lambda i: f"https://bastion.test/portal/approvals/{i}",
                        poll_s=0.05, closing=asyncio.Event())  # fmt: skip
    return desk, log


async def ask(desk: ApprovalDesk, kind: str = "review", who: Principal = RITA) -> str:
    binding = ApprovalBinding(who.key, "ci", "deploy", "d" * 64, "v1")
    request = await desk.admit(
        binding, kind=kind, principal=who, arguments={"env": "prod"},  # type: ignore[arg-type]
        risk="destructive", classification="", policy_ids=("p",), decision_id="call-1",
    )  # fmt: skip
    return request.id


def steps(log: RecordingAuditLog) -> list[tuple[str, str | None]]:
    return [(r["method"], (r["decision"] or {}).get("reason")) for r in log.bodies]


async def test_a_review_is_decided_by_someone_else_whom_policy_allows(
    desk: tuple[ApprovalDesk, RecordingAuditLog],
) -> None:
    approvals, log = desk
    approval_id = await ask(approvals)
    for who, status, reason in [(RITA, 403, "own_request"), (MALLORY, 403, "policy_denied"),
                                (RITA_ELSEWHERE, 403, "own_request")]:  # fmt: skip
        with pytest.raises(DecisionRefused) as refused:
            await approvals.decide(approval_id, approver=who, approve=True, reason="ok")
        assert (refused.value.status, refused.value.reason) == (status, reason)
    decided = await approvals.decide(approval_id, approver=ALEX, approve=True, reason="  change\t 42\n")
    assert (decided.status, decided.approver, decided.reason) == ("approved", "alex", "change 42")
    with pytest.raises(DecisionRefused) as again:
        await approvals.decide(approval_id, approver=ALEX, approve=False, reason="changed my mind")
    assert again.value.status == 409
    assert steps(log) == [("approval/requested", None), ("approval/refused", "own_request"),
                          ("approval/refused", "policy_denied"), ("approval/refused", "own_request"),
                          ("approval/approved", None), ("approval/refused", "not_pending")]  # fmt: skip


async def test_a_confirmation_is_the_requesters_alone(desk: tuple[ApprovalDesk, RecordingAuditLog]) -> None:
    approvals, _ = desk
    approval_id = await ask(approvals, "confirm")
    with pytest.raises(DecisionRefused) as refused:
        await approvals.decide(approval_id, approver=ALEX, approve=True, reason="I approve everything")
    assert refused.value.reason == "not_requester"
    assert (await approvals.decide(approval_id, approver=RITA, approve=True, reason="me")).status == "approved"


async def test_a_grant_is_consumed_once_and_the_same_call_then_asks_anew(
    desk: tuple[ApprovalDesk, RecordingAuditLog],
) -> None:
    approvals, log = desk
    approval_id = await ask(approvals)
    await approvals.decide(approval_id, approver=ALEX, approve=True, reason="ok")
    assert (await approvals.store.get(approval_id)).status == "approved"  # type: ignore[union-attr]
    consumed_id = await ask(approvals)
    assert consumed_id == approval_id
    assert (await approvals.store.get(approval_id)).status == "consumed"  # type: ignore[union-attr]
    assert await ask(approvals) != approval_id
    assert [m for m, _ in steps(log)].count("approval/consumed") == 1


async def test_a_held_wait_ends_on_a_decision_at_once_and_on_shutdown(
    desk: tuple[ApprovalDesk, RecordingAuditLog],
) -> None:
    approvals, _ = desk
    request = await approvals.store.get(await ask(approvals))
    assert request is not None
    started = time.monotonic()
    waiting = asyncio.create_task(approvals.wait(request, 30))
    await asyncio.sleep(0.1)
    await approvals.decide(request.id, approver=ALEX, approve=False, reason="no")
    assert (await waiting).status == "denied"
    assert time.monotonic() - started < 5
    other = await approvals.store.get(await ask(approvals, who=MALLORY))
    assert other is not None
    waiting = asyncio.create_task(approvals.wait(other, 30))
    await asyncio.sleep(0.1)
    approvals._closing.set()  # type: ignore[union-attr]  # the gateway is stopping
    assert (await asyncio.wait_for(waiting, 2)).status == "pending"
