"""``tracing:`` (``bastion.config.tracing``): off by default, an OTLP/HTTP endpoint required when on, bad values
named by key; and ``Tracing.build`` places nothing when off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.tracing import Tracing


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    policy = tmp_path / "policy.cedar"
    policy.write_text('@id("p")\npermit (principal, action, resource);\n', encoding="utf-8")
    return {"policy": {"files": [str(policy)]}, "routes": [{"name": "r", "stdio": {"command": "true"}}]}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="bastion.yaml")
    return caught.value.message


def test_off_by_default_builds_nothing(base: dict[str, Any]) -> None:
    config = parse_config(base)
    assert not config.tracing.enabled
    assert Tracing.build(config.tracing) is None


def test_on_with_an_endpoint_builds_a_provider(base: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TOKEN", "s3cret")
    config = parse_config({**base, "tracing": {"enabled": True, "endpoint": "http://127.0.0.1:4318/v1/traces",
                                               "headers": {"authorization": {"env": "OTEL_TOKEN"}},
                                               "sample_ratio": 0.25}})  # fmt: skip
    tracing = Tracing.build(config.tracing)
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "bastion"
    assert "TraceIdRatioBased{0.25}" in tracing.provider.sampler.get_description()
    tracing.provider.shutdown()


@pytest.mark.parametrize(
    ("tracing", "expected"),
    [
        ({"enabled": True}, "tracing.endpoint: required when tracing.enabled is true"),
        ({"endpoint": "grpc://collector:4317"}, "tracing.endpoint must be an OTLP/HTTP traces URL"),
        ({"endpoint": "http://u:pw@collector:4318/v1/traces"}, "carries a password"),
        ({"sample_ratio": 2}, "tracing.sample_ratio"),
        ({"exporter": "zipkin"}, "tracing.exporter"),
    ],
)
def test_bad_tracing_settings_name_their_key(base: dict[str, Any], tracing: dict[str, Any], expected: str) -> None:
    assert expected in _error({**base, "tracing": tracing})
