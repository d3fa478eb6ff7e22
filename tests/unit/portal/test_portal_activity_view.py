"""The activity page's parts that need no server: which filters are taken, how a call is shown, and
whose calls ``ActivityLog`` reads from a real audit database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.audit_events import decision, outcome

from bastion.audit.query import SQLiteAuditReader
from bastion.audit.record import Approval, Decision, DecisionEvent, Result, Upstream
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.portal.activity import ACTIVITY_LIMIT, ActivityFilters, ActivityLog, activity_filters, call_view
from bastion.principal import Principal

ROUTES = ("ledger", "notes")


@pytest.mark.parametrize(
    ("params", "auditor", "expected"),
    [
        ({}, False, ActivityFilters()),
        ({"route": "ledger", "tool": " deploy ", "effect": "deny"}, False, ActivityFilters("ledger", "deploy", "deny")),
        ({"route": "elsewhere", "effect": "maybe"}, False, ActivityFilters()),  # unknown values are ignored
        ({"route": "ledger' OR 1=1 --"}, False, ActivityFilters()),
        ({"tool": "x" * 201}, False, ActivityFilters()),  # too long
        ({"tool": "a\nb"}, False, ActivityFilters()),  # not printable
        ({"subject": "bob"}, False, ActivityFilters()),  # only an auditor names a person
        ({"subject": "bob"}, True, ActivityFilters(subject="bob")),
        ({"subject": "  "}, True, ActivityFilters()),  # empty: everyone
    ],
)
def test_filters(params: dict[str, str], auditor: bool, expected: ActivityFilters) -> None:
    assert activity_filters(params, routes=ROUTES, auditor=auditor) == expected


def _person(sub: str, issuer: str = "https://bastion.test") -> Principal:
    return Principal(kind="User", sub=sub, issuer=issuer, auth_method="bastion_jwt", expires_at=0,
                     email=f"{sub}@example.com", client_id="claude-desktop")  # fmt: skip


def _approved_call() -> DecisionEvent:
    return DecisionEvent.create(
        route="ledger", method="tools/call", target="deploy", principal=_person("rita"),
        arguments={"env": "prod"}, decision=Decision(effect="allow", policy_ids=("dev-deploy",)),
        approval=Approval(id="ap-1", kind="review", status="consumed", approver="alex"),
    )  # fmt: skip


def _view(event: DecisionEvent, result: dict[str, Any] | None = None) -> dict[str, Any]:
    return call_view(event.model_dump(mode="json"), result)


def test_a_call_is_shown_with_its_decision_approval_and_outcome() -> None:
    event = _approved_call()
    failed = event.outcome(
        result=Result(error=True, error_code="upstream_error", request_bytes=1, response_bytes=2),
        upstream=Upstream(credential_kind="none", duration_ms=1.0),
    )
    view = _view(event, failed.model_dump(mode="json"))
    assert view["time"] == f"{event.time[:10]} {event.time[11:19]} UTC"
    assert {k: view[k] for k in ("who", "client_id", "route", "target", "effect", "policy_ids")} == {
        "who": "rita@example.com", "client_id": "claude-desktop", "route": "ledger", "target": "deploy",
        "effect": "allow", "policy_ids": ["dev-deploy"],
    }  # fmt: skip
    assert (view["approval_id"], view["approval_status"], view["approver"]) == ("ap-1", "consumed", "alex")
    assert view["outcome"] == "error: upstream_error"
    assert _view(event, outcome(event).model_dump(mode="json"))["outcome"] == "ok"


def test_a_deny_has_no_outcome_and_names_its_policies() -> None:
    event = DecisionEvent.create(
        route="ledger", method="tools/call", target="deploy", principal=_person("rita"),
        decision=Decision(effect="deny", policy_ids=("no-prod",), reason="policy_denied"),
    )  # fmt: skip
    view = _view(event)
    assert (view["effect"], view["policy_ids"], view["reason"], view["outcome"]) == (
        "deny", ["no-prod"], "policy_denied", None)  # fmt: skip
    assert view["approval_id"] is None


def test_a_malformed_record_is_shown_not_raised() -> None:
    view = call_view({"time": "x", "principal": "nobody", "decision": 5, "approval": []}, None)
    assert (view["who"], view["effect"], view["policy_ids"], view["approval_id"]) == (
        "unauthenticated", None, [], None)  # fmt: skip


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    """rita's approved call (with outcome); rita of another issuer; bob's deny; then 120 of bob's allows."""
    db = tmp_path / "bastion.db"
    async with SQLiteAuditLog(db) as log:
        first = _approved_call()
        await log.append(first)
        log.append_nowait(outcome(first))
        await log.append(DecisionEvent.create(
            route="ledger", method="tools/call", target="status", principal=_person("rita", "https://other.test"),
            decision=Decision(effect="allow", policy_ids=("anyone",)),
        ))  # fmt: skip
        await log.append(decision(sub="bob", route="ledger", tool="deploy", effect="deny"))
        for n in range(120):
            log.append_nowait(decision(n, sub="bob", route="notes", tool="search"))
    return db


async def test_a_person_reads_only_their_own_calls(database: Path) -> None:
    activity = ActivityLog(SQLiteAuditReader(database), issuer="https://bastion.test")
    own = await activity.calls("rita", ActivityFilters(), auditor=False)
    assert [(c["subject"], c["target"], c["outcome"]) for c in own] == [("rita", "deploy", "ok")]
    # whatever subject the filters carry, a person who is not an auditor reads their own
    assert await activity.calls("rita", ActivityFilters(subject="bob"), auditor=False) == own


async def test_an_auditor_reads_anyones_calls_at_most_the_limit(database: Path) -> None:
    activity = ActivityLog(SQLiteAuditReader(database), issuer="https://bastion.test")
    everyone = await activity.calls("alex", ActivityFilters(), auditor=True)
    assert len(everyone) == ACTIVITY_LIMIT
    assert {c["subject"] for c in everyone} == {"bob"}  # the newest hundred are bob's searches
    ritas = await activity.calls("alex", ActivityFilters(subject="rita"), auditor=True)
    assert [c["target"] for c in ritas] == ["status", "deploy"]  # both issuers, newest first
    denied = await activity.calls("alex", ActivityFilters(subject="bob", effect="deny", route="ledger"), auditor=True)
    assert [(c["target"], c["effect"]) for c in denied] == [("deploy", "deny")]
