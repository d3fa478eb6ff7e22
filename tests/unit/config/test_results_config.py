"""``routes[].results`` (issue 15, ``bastion.config.results``): the defaults, and bad values refused with
the key named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config import RouteSettings


def _route(**results: Any) -> RouteSettings:
    return RouteSettings.model_validate({"name": "crm", "stdio": {"command": "x"}, "results": results})


def test_secrets_are_redacted_and_instructions_flagged_by_default() -> None:
    settings = RouteSettings.model_validate({"name": "crm", "stdio": {"command": "x"}})
    assert (settings.results.redact, settings.results.injection) == (("secrets",), "flag")


def test_a_route_names_its_classes() -> None:
    assert _route(redact=["secrets", "pii"], injection="replace").results.redact == ("secrets", "pii")
    assert _route(redact=[]).results.redact == ()


@pytest.mark.parametrize(
    ("results", "where"),
    [
        ({"redact": ["passwords"]}, "results.redact"),
        ({"redact": ["pii", "pii"]}, "results.redact"),
        ({"injection": "drop"}, "results.injection"),
        ({"redcat": ["pii"]}, "results.redcat"),
    ],
)
def test_bad_values_are_refused_naming_the_key(results: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        _route(**results)
    assert where in str(info.value)
