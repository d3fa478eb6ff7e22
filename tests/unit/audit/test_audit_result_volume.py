"""An outcome's ``result.volume`` (an anomalous tool result's measures, issue 14): the request path's
builder gives exactly the model's body, and the key is absent when there is none."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion import audit
from bastion.audit.build import as_model, decision_body, outcome_body
from bastion.audit.record import ResultVolume, event_body

VOLUME: dict[str, Any] = {
    "bytes": 215_000, "blocks": 1_000, "items": 1_000, "baseline": {"bytes": 2_150, "blocks": 10, "items": 10},
    "samples": 20, "exceeded": ["bytes", "blocks", "items"], "anomalous": True, "withheld": True,
    "result_sha256": "ab" * 32,
}  # fmt: skip


def _decision() -> dict[str, Any]:
    return decision_body(
        route="db", method="tools/call", effect="allow", policy_ids=("p",), obligations={}, reason=None,
        policy_version=None, arguments={}, principal=None, target="rows", session=None, decision_id="d" * 32,
    )  # fmt: skip


def _outcome(**extra: Any) -> dict[str, Any]:
    return outcome_body(
        _decision(), error=True, error_code="answer_withheld", request_bytes=1, response_bytes=2,
        credential_kind="none", status=200, duration_ms=1.0, flags=["volume_anomaly"], **extra,
    )  # fmt: skip


def test_the_volume_is_recorded_as_the_model_records_it() -> None:
    body = _outcome(volume=VOLUME)
    model = as_model(body)
    assert isinstance(model, audit.OutcomeEvent)
    assert model.result.volume == ResultVolume.model_validate(VOLUME)
    assert {k: v for k, v in event_body(model).items() if k not in ("id", "time")} == {
        k: v for k, v in body.items() if k not in ("id", "time")
    }


def test_without_a_volume_the_key_is_absent_as_in_the_models_dump() -> None:
    body = _outcome()
    assert "volume" not in body["result"]
    model = as_model(body)
    assert isinstance(model, audit.OutcomeEvent)
    assert "volume" not in event_body(model)["result"]


@pytest.mark.parametrize(
    "change", [{"result_sha256": "not hex"}, {"bytes": -1}, {"exceeded": ["rows"]}, {"content": "the rows"}]
)
def test_a_volume_that_is_not_measures_and_a_digest_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        as_model(_outcome(volume={**VOLUME, **change}))
