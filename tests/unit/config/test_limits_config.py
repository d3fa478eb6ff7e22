"""``limits:`` and ``counters:`` in the configuration: what is accepted, what is refused and why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.limits import CounterSettings, LimitSettings


def test_a_limit_has_exactly_one_rate_or_quota() -> None:
    assert LimitSettings.model_validate({"name": "a", "quota": "500/day"}).durable
    assert not LimitSettings.model_validate({"name": "a", "rate": "5/minute"}).durable
    for bad in ({"name": "a"}, {"name": "a", "rate": "1/minute", "quota": "1/day"}, {"name": "a", "rate": "lots"}):
        with pytest.raises(ValidationError):
            LimitSettings.model_validate(bad)


def test_a_redis_password_is_a_reference_never_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="redis_password"):
        CounterSettings.model_validate({"redis_url": "redis://:hunter2@127.0.0.1:6379/0"})
    with pytest.raises(ValidationError, match="redis://"):
        CounterSettings.model_validate({"redis_url": "http://127.0.0.1:6379"})
    monkeypatch.setenv("E2E_REDIS_PASSWORD", "p@ss/word")
    settings = CounterSettings.model_validate(
        {"redis_url": "redis://127.0.0.1:6379/2", "redis_password": {"env": "E2E_REDIS_PASSWORD"}}
    )
    assert settings.resolved_url() == "redis://:p%40ss%2Fword@127.0.0.1:6379/2"
    assert CounterSettings().resolved_url() is None
