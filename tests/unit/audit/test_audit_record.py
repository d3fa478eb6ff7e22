"""The version 1 record: decision and outcome events, their fields and stored shape."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from bastion.audit.canonical import arguments_sha256
from bastion.audit.record import (
    RECORD_KEYS,
    Approval,
    Decision,
    DecisionEvent,
    OutcomeEvent,
    Result,
    Upstream,
    event_body,
    utc_now,
)
from bastion.principal import Principal

ALICE = Principal(
    kind="User", sub="alice", issuer="https://bastion.test", auth_method="bastion_jwt", expires_at=1,
    email="alice@example.com", groups=("eng",), client_id="claude", token_id="jti-1", scopes=("mcp",),
)  # fmt: skip


def _decision_event(**kwargs: object) -> DecisionEvent:
    args = {"query": "select 1", "api_key": "sk-secret-value", "b": 2}
    params: dict[str, object] = {
        "route": "db", "method": "tools/call", "target": "run_query", "principal": ALICE,
        "arguments": args, "decision": Decision(effect="allow", policy_ids=("p-read",)), "session": "s1",
    }  # fmt: skip
    params.update(kwargs)
    return DecisionEvent.create(**params)  # type: ignore[arg-type]


def test_create_hashes_the_raw_arguments_and_stores_them_redacted() -> None:
    event = _decision_event()
    assert event.arguments_sha256 == arguments_sha256(
        {"b": 2, "api_key": "sk-secret-value", "query": "select 1"}
    )
    assert event.arguments == {"query": "select 1", "api_key": "[REDACTED:secret_field]", "b": 2}
    assert event.kind == "decision"
    assert event.principal is not None
    assert event.principal.sub == "alice"
    assert event.principal.groups == ("eng",)


def test_store_arguments_false_keeps_only_the_digest() -> None:
    event = _decision_event(store_arguments=False)
    assert event.arguments is None
    assert re.fullmatch(r"[0-9a-f]{64}", event.arguments_sha256)


def test_body_has_every_v1_key_with_nulls_for_the_other_kind() -> None:
    body = event_body(_decision_event())
    assert set(body) == set(RECORD_KEYS) - {"seq", "prev_hash", "hash"}
    assert body["version"] == 1
    assert body["upstream"] is None
    assert body["result"] is None
    assert body["decision"] == {
        "effect": "allow", "policy_ids": ["p-read"], "obligations": {}, "reason": None,
        "policy_version": None,
    }  # fmt: skip
    assert "expires_at" not in body["principal"]
    assert "scopes" not in body["principal"]


def test_outcome_refers_to_its_decision() -> None:
    decision = _decision_event()
    outcome = decision.outcome(
        result=Result(
            error=True, error_code="upstream_error", request_bytes=120, response_bytes=0, flags=("x",)
        ),
        upstream=Upstream(
            credential_kind="oauth_user", credential_principal="alice@gh", status=502, duration_ms=8.5
        ),
    )
    assert isinstance(outcome, OutcomeEvent)
    assert outcome.decision_id == decision.decision_id
    assert outcome.id != decision.id
    assert (outcome.route, outcome.target, outcome.principal) == (
        decision.route,
        decision.target,
        decision.principal,
    )
    body = event_body(outcome)
    assert body["kind"] == "outcome"
    assert body["arguments_sha256"] is None
    assert body["decision"] is None
    assert body["upstream"]["status"] == 502
    assert body["result"]["error_code"] == "upstream_error"


def test_unauthenticated_deny_has_no_principal() -> None:
    event = _decision_event(principal=None, decision=Decision(effect="deny", reason="unauthenticated"))
    assert event.principal is None
    assert event_body(event)["decision"]["reason"] == "unauthenticated"


def test_a_deny_needs_a_reason() -> None:
    with pytest.raises(ValidationError):
        Decision(effect="deny", policy_ids=("p",))


def test_time_is_rfc3339_utc_with_microseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_now())
    with pytest.raises(ValidationError):
        Approval(id="a1", approver="bob", time="2026-05-09 07:35:25")


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    event = _decision_event()
    with pytest.raises(ValidationError):
        event.route = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        OutcomeEvent(route="r", method="m", decision_id="d", result=Result(error=False, request_bytes=0,
                     response_bytes=0), colour="red")  # type: ignore[call-arg]  # fmt: skip
