"""The request path's record builder gives exactly the bodies the pydantic models give."""

from __future__ import annotations

from typing import Any

import pytest

from bastion import audit
from bastion.audit.build import as_model, decision_body, outcome_body
from bastion.audit.record import event_body
from bastion.principal import Principal

ALICE = Principal(
    kind="User", sub="alice", issuer="https://bastion.example", auth_method="bastion_jwt", expires_at=2_000_000_000,
    email="alice@example.com", groups=("engineering", "oncall"), client_id="cli", token_id="jti-1",
)  # fmt: skip

CASES: list[dict[str, Any]] = [
    {"effect": "allow", "policy_ids": ("p1",), "obligations": {}, "reason": None, "arguments": {"env": "dev"}},
    {"effect": "deny", "policy_ids": (), "obligations": {}, "reason": "unauthenticated", "arguments": {},
     "principal": None, "target": None, "session": None},
    {"effect": "allow", "policy_ids": ("a", "b"), "obligations": {"approval": "required"}, "reason": None,
     "arguments": {"password": "hunter2", "nested": [1, 2.5, None, {"token": "ghp_" + "a" * 36}]}},
]  # fmt: skip


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("id", "time")}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("store_arguments", [True, False])
def test_decision_and_outcome_bodies_equal_the_models(case: dict[str, Any], store_arguments: bool) -> None:
    common = {"principal": ALICE, "target": "read_logs", "session": "s-1", **case}
    fast = decision_body(
        route="notes", method="tools/call", policy_version="v" * 64, decision_id="d" * 32,
        store_arguments=store_arguments, **common,
    )  # fmt: skip
    event = audit.DecisionEvent.create(
        route="notes", method="tools/call", arguments=common["arguments"], principal=common["principal"],
        target=common["target"], session=common["session"], decision_id="d" * 32, store_arguments=store_arguments,
        decision=audit.Decision(effect=case["effect"], policy_ids=case["policy_ids"], obligations=case["obligations"],
                                reason=case["reason"], policy_version="v" * 64),
    )  # fmt: skip
    assert _comparable(fast) == _comparable(event_body(event))
    assert isinstance(as_model(fast), audit.DecisionEvent)  # the fast body is a valid record too

    outcome = outcome_body(
        fast, error=True, error_code="upstream_error", request_bytes=10, response_bytes=20,
        credential_kind="none", status=502, duration_ms=1.5,
    )  # fmt: skip
    model = event.outcome(
        result=audit.Result(error=True, error_code="upstream_error", request_bytes=10, response_bytes=20),
        upstream=audit.Upstream(credential_kind="none", status=502, duration_ms=1.5),
    )
    assert _comparable(outcome) == _comparable(event_body(model))
    assert isinstance(as_model(outcome), audit.OutcomeEvent)


def test_a_deny_without_reason_is_refused_like_the_model() -> None:
    with pytest.raises(ValueError, match="reason"):
        decision_body(
            route="r", method="m", effect="deny", policy_ids=(), obligations={}, reason=None, policy_version=None,
            arguments={}, principal=None, target=None, session=None, decision_id="x",
        )  # fmt: skip


def test_the_principal_is_recorded_with_its_identity_provider_and_older_records_still_read() -> None:
    dana = Principal(
        kind="User", sub="corp:dana", issuer="https://bastion.example", auth_method="bastion_jwt",
        expires_at=2_000_000_000, idp="corp",
    )  # fmt: skip
    body = decision_body(
        route="notes", method="tools/call", effect="allow", policy_ids=("p",), obligations={}, reason=None,
        policy_version=None, arguments={}, principal=dana, target="t", session=None, decision_id="d" * 32,
    )  # fmt: skip
    assert (body["principal"]["idp"], body["principal"]["issuer"]) == ("corp", "https://bastion.example")
    assert as_model(body).principal == audit.PrincipalInfo.from_principal(dana)
    older = {**body, "principal": {k: v for k, v in body["principal"].items() if k != "idp"}}
    recorded = as_model(older).principal
    assert recorded is not None
    assert recorded.idp is None


def test_a_continuation_names_the_first_call_and_an_outcome_its_flags_as_the_models_do() -> None:
    common: dict[str, Any] = {
        "route": "notes", "method": "tasks/get", "effect": "allow", "policy_ids": ("p",), "obligations": {},
        "reason": None, "policy_version": None, "arguments": {}, "principal": ALICE, "target": "deploy",
        "session": None, "decision_id": "d" * 32,
    }  # fmt: skip
    body = decision_body(**common, continues="f" * 32)
    assert body["decision"]["continues"] == "f" * 32
    model = as_model(body)
    assert isinstance(model, audit.DecisionEvent)
    assert model.decision.continues == "f" * 32
    assert _comparable(event_body(model)) == _comparable(body)
    assert "continues" not in decision_body(**common)["decision"]  # absent unless set, as in the model's dump
    outcome = outcome_body(
        body, error=False, error_code=None, request_bytes=1, response_bytes=2, credential_kind="none",
        status=200, duration_ms=1.0, flags=["input_required"],
    )  # fmt: skip
    recorded = as_model(outcome)
    assert isinstance(recorded, audit.OutcomeEvent)
    assert recorded.result.flags == ("input_required",)
