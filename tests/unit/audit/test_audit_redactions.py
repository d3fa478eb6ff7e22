"""An outcome's ``result.redacted`` and ``result.injection`` (issue 15): the request path's builder gives
exactly the model's body, ``redactions`` is their sum, the keys are absent when nothing was found, and
anything but rule ids and counts is refused (a value can never be recorded there)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion import audit
from bastion.audit.build import as_model, decision_body, outcome_body
from bastion.audit.record import Result, event_body

REDACTED = {"aws_access_key": 2, "email": 1}
INJECTION = {"rules": {"ignore_instructions": 1}, "replaced": 1}


def _outcome(**extra: Any) -> dict[str, Any]:
    decision = decision_body(
        route="db", method="tools/call", effect="allow", policy_ids=("p",), obligations={"redact": "secrets,pii"},
        reason=None, policy_version=None, arguments={}, principal=None, target="lookup", session=None,
        decision_id="d" * 32,
    )  # fmt: skip
    return outcome_body(
        decision, error=False, error_code=None, request_bytes=1, response_bytes=2, credential_kind="none",
        status=200, duration_ms=1.0, flags=["redacted", "injection"], **extra,
    )  # fmt: skip


def test_redactions_are_recorded_by_rule_as_the_model_records_them() -> None:
    body = _outcome(redacted=REDACTED, injection=INJECTION)
    assert body["result"]["redactions"] == 3
    model = as_model(body)
    assert isinstance(model, audit.OutcomeEvent)
    assert model.result.redacted == REDACTED
    assert model.result.injection is not None
    assert model.result.injection.replaced == 1
    assert {k: v for k, v in event_body(model).items() if k not in ("id", "time")} == {
        k: v for k, v in body.items() if k not in ("id", "time")
    }


def test_without_findings_the_keys_are_absent_as_in_the_models_dump() -> None:
    for empty in ({}, {"redacted": None, "injection": None}, {"redacted": {}, "injection": {}}):
        body = _outcome(**empty)
        assert "redacted" not in body["result"]
        assert "injection" not in body["result"]
        assert body["result"]["redactions"] == 0
        assert event_body(as_model(body))["result"] == body["result"]


@pytest.mark.parametrize(
    "redacted",
    [{"aws_access_key": 0}, {"AKIAIOSFODNN7EXAMPLE is the key": 1}, {"email": "ann@example.com"}],
)
def test_anything_but_rule_ids_and_counts_is_refused(redacted: dict[str, Any]) -> None:
    body = _outcome()
    body["result"].update(redacted=redacted, redactions=1)
    with pytest.raises(ValidationError):
        as_model(body)


def test_redactions_must_add_up() -> None:
    with pytest.raises(ValidationError, match="sum"):
        Result(error=False, request_bytes=1, response_bytes=1, redactions=1, redacted={"email": 2})
    assert Result(error=False, request_bytes=1, response_bytes=1, redactions=5).redacted is None  # older records
