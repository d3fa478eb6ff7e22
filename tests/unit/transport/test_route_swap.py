"""``RouteSwap`` (the routes side of a reload) on a recording host: only the routes added or changed are built
and started (strictly), a failed start stops them and raises, a commit installs them and withdraws the
removed ones, a rollback puts the old ones back, and a retire ends the withdrawn routes' requests before
stopping their upstreams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.support.route_fakes import RecordingHost

from bastion.config import BastionConfig
from bastion.errors import ConfigError, UpstreamUnavailable
from bastion.policy.reloading import RouteDiff, route_diff
from bastion.transport.route_swap import RouteSwap, SwapPlan


def _config(*routes: dict[str, Any]) -> BastionConfig:
    return BastionConfig.model_validate({"policy": {"files": ["p.cedar"]}, "routes": list(routes)})


A = {"name": "a", "stdio": {"command": "true"}}
B = {"name": "b", "http": {"url": "https://b.example/mcp"}}
B2 = {"name": "b", "http": {"url": "https://b2.example/mcp"}}
C = {"name": "c", "stdio": {"command": "cat"}}


def test_route_diff_by_name() -> None:
    old, new = _config(A, B).routes, _config(B2, C).routes
    assert route_diff(old, new) == RouteDiff(added=("c",), removed=("a",), changed=("b",))
    assert not route_diff(old, _config(A, B).routes)


async def test_the_same_routes_need_no_plan() -> None:
    host = RecordingHost(_config(A, B))
    assert await RouteSwap(host, drain_s=1).prepare(_config(A, B)) is None
    assert host.steps == []


async def test_only_the_routes_added_or_changed_are_built_and_started_strictly() -> None:
    host = RecordingHost(_config(A, B))
    plan = await RouteSwap(host, drain_s=1).prepare(_config(B2, C))
    assert isinstance(plan, SwapPlan)
    assert plan.diff == RouteDiff(added=("c",), removed=("a",), changed=("b",))
    assert host.steps == [("built", "b", True), ("built", "c", False), ("started", ["b", "c"], True)]
    assert [s.name for s in plan.old] == ["a", "b"]
    assert host.names() == ["a", "b"]  # nothing serves differently before the commit


async def test_a_route_that_does_not_start_refuses_the_plan_and_is_stopped() -> None:
    host = RecordingHost(_config(A))
    host.fail_start = "stdio upstream 'c' did not become ready"
    with pytest.raises(UpstreamUnavailable):
        await RouteSwap(host, drain_s=1).prepare(_config(A, C))
    assert host.steps[-1] == ("stopped", ["c"])
    assert host.names() == ["a"]


async def test_a_configuration_the_gateway_cannot_serve_is_refused_before_anything_is_built() -> None:
    host = RecordingHost(_config(A))
    host.refuse = "restart to apply"
    with pytest.raises(ConfigError):
        await RouteSwap(host, drain_s=1).prepare(_config(A, C))
    assert host.steps == []


async def test_commit_then_retire_ends_the_old_routes_after_their_requests() -> None:
    host = RecordingHost(_config(A, B))
    swap = RouteSwap(host, drain_s=1)
    plan = await swap.prepare(_config(B2, C))
    assert plan is not None
    old_b = host.served[1]
    swap.commit(plan)
    assert host.names() == ["b", "c"]
    assert host.served[0] is not old_b
    assert host.steps[-1] == ("installed", ["b", "c"], ["a"])
    swap.retire(plan)
    await asyncio.sleep(0.05)
    steps = host.steps[-4:]
    for name in ("a", "b"):  # each one's requests end before its upstream stops
        assert steps.index(("retired", name)) < steps.index(("stopped", [name]))


async def test_rollback_serves_the_old_routes_again_and_stops_the_new() -> None:
    host = RecordingHost(_config(A, B))
    before = list(host.served)
    swap = RouteSwap(host, drain_s=1)
    plan = await swap.prepare(_config(B2, C))
    assert plan is not None
    swap.commit(plan)
    await swap.rollback(plan)
    assert host.served == before
    assert host.steps[-1] == ("stopped", ["b", "c"])
