"""The limits stage: which limits apply to a call, what they count separately, and the refusal."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.config.limits import LimitSettings
from bastion.errors import ConfigError, RateLimited
from bastion.limits import parse_rate
from bastion.pipeline.stages.limits import LimitsStage
from bastion.policy import Decision, PolicyEngine
from bastion.principal import Principal
from bastion.stores.memory_counters import MemoryRateCounter

NOW = 1_700_000_000.0
POLICY = """
@id("any") permit (principal, action == Action::"tools/call", resource);
@id("slow-export") @rate("2/minute") @rate_per("client")
permit (principal, action == Action::"tools/call", resource) when { resource.name == "export" };
"""


def person(sub: str, *groups: str, client: str = "app") -> Principal:
    return Principal(kind="User", sub=sub, issuer="https://b.test", auth_method="bastion_jwt", expires_at=0,
                     idp="local", groups=groups, client_id=client)  # fmt: skip


def call(who: Principal, tool: str, *policies: str, route: str = "ci", action: str = "tools/call") -> Any:
    decision = Decision("allow", policies or ("any",), {}, ())
    return SimpleNamespace(decision=decision, principal=who, action=action, route=SimpleNamespace(name=route),
                           target=tool)  # fmt: skip


def stage(tmp_path: Path, *limits: dict[str, Any], clock: list[float]) -> LimitsStage:
    (tmp_path / "p.cedar").write_text(POLICY, encoding="utf-8")
    engine = PolicyEngine.load([tmp_path / "p.cedar"])
    settings = [LimitSettings.model_validate(limit) for limit in limits]
    return LimitsStage(settings, engine=engine, rates=MemoryRateCounter(), quotas=MemoryRateCounter(),
                       clock=lambda: clock[0])  # fmt: skip


async def admitted(limits: LimitsStage, calls: list[Any]) -> list[bool]:
    results = []
    for exchange in calls:
        try:
            await limits.run(exchange)
        except RateLimited:
            results.append(False)
        else:
            results.append(True)
    return results


async def test_a_configured_rate_counts_per_principal_on_matching_calls_only(tmp_path: Path) -> None:
    clock = [NOW]
    limits = stage(tmp_path, {"name": "deploys", "match": {"tool": "deploy", "group": "dev"}, "rate": "2/minute"},
                   clock=clock)  # fmt: skip
    rita, sam, ops = person("rita", "dev"), person("sam", "dev"), person("olga", "ops")
    assert await admitted(limits, [call(rita, "deploy")] * 3) == [True, True, False]
    assert await admitted(limits, [call(sam, "deploy"), call(ops, "deploy")] * 3) == [True, True, True, True, False,
                                                                                       True]  # fmt: skip
    assert await admitted(limits, [call(rita, "status")] * 5) == [True] * 5  # another tool: not limited
    clock[0] = NOW + 60
    assert await admitted(limits, [call(rita, "deploy")]) == [True]  # the window moved on


async def test_the_refusal_names_the_limit_and_when_to_retry(tmp_path: Path) -> None:
    clock = [NOW]
    limits = stage(tmp_path, {"name": "tiny", "rate": "1/minute", "per": "global"}, clock=clock)
    await limits.run(call(person("a"), "t"))
    clock[0] = NOW + 20
    with pytest.raises(RateLimited) as refused:
        await limits.run(call(person("b"), "t"))  # global: b shares a's count
    assert refused.value.status == 429
    assert refused.value.retry_after_s == 40
    assert refused.value.data == {"limit": "tiny", "rate": "1/minute", "retry_after_s": 40}
    assert "tiny" in refused.value.message


async def test_a_policys_own_rate_counts_per_the_key_it_names(tmp_path: Path) -> None:
    limits = stage(tmp_path, clock=[NOW])
    same_client = [call(person(name, client="app"), "export", "any", "slow-export") for name in ("a", "b", "c")]
    assert await admitted(limits, same_client) == [True, True, False]  # @rate_per("client")
    assert await admitted(limits, [call(person("d", client="cli"), "export", "any", "slow-export")]) == [True]
    assert await admitted(limits, [call(person("e"), "export", "any")] * 4) == [True] * 4  # not decided by it


async def test_denied_calls_and_other_methods_are_not_counted(tmp_path: Path) -> None:
    limits = stage(tmp_path, {"name": "one", "rate": "1/minute"}, clock=[NOW])
    rita = person("rita")
    denied = call(rita, "t")
    denied.decision = Decision("deny", (), {}, ())
    assert await admitted(limits, [denied, call(rita, "t", action="tools/list"), call(rita, "t")]) == [True] * 3


def test_bad_rates_are_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text('@id("x") @rate("lots") permit (principal, action, resource);', encoding="utf-8")
    with pytest.raises(ConfigError, match="@rate"):
        PolicyEngine.load([tmp_path / "p.cedar"])
    moon = '@id("x") @rate("1/minute") @rate_per("moon") permit (principal, action, resource);'
    (tmp_path / "p.cedar").write_text(moon, encoding="utf-8")
    with pytest.raises(ConfigError, match="rate_per"):
        PolicyEngine.load([tmp_path / "p.cedar"])


@pytest.mark.parametrize("text", ["0/minute", "5", "5/week", "5/0s", "1/367d", "-1/day", "1.5/hour"])
def test_a_rate_is_count_slash_window(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(text)


def test_rates_as_people_write_them() -> None:
    rates = [parse_rate(text) for text in ("20/minute", "500/day", "5/30s", "3 / hour", "1/366d")]
    assert [(r.count, r.window_s) for r in rates] == [(20, 60), (500, 86400), (5, 30), (3, 3600), (1, 366 * 86400)]
