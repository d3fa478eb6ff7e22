"""Session caps and data-flow labels (``bastion.limits.activity``): which key a call counts on in
each scope, what Cedar sees, how many records a call asks for, and the configuration's checks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config.limits import DataFlowSettings, SessionCaps
from bastion.config.routes import ToolSettings
from bastion.errors import LimitsUnavailable, SessionCapReached
from bastion.limits.activity import SessionActivity
from bastion.pipeline.stages.authorize import requested_records
from bastion.pipeline.stages.limits import LimitsStage
from bastion.policy import Decision, PolicyEngine, ResourceRef
from bastion.principal import Principal
from bastion.stores.memory_activity import MemoryActivityStore
from bastion.stores.memory_counters import MemoryRateCounter
from bastion.stores.redis_activity import RedisActivityStore

NOW = 1_700_000_000.0


def person(sub: str, client: str = "agent") -> Principal:
    return Principal(kind="User", sub=sub, issuer="https://b.test", auth_method="bastion_jwt", expires_at=0,
                     idp="local", groups=(), client_id=client)  # fmt: skip


def call(who: Principal, route: str, tool: str, *, session: str | None = None, labels: tuple[str, ...] = (),
         risk: str = "read", action: str = "tools/call", response_bytes: int = 0) -> Any:  # fmt: skip
    resource = ResourceRef.from_tool(route, {"name": tool}, risk=risk, labels=labels)  # type: ignore[arg-type]
    return SimpleNamespace(
        decision=Decision("allow", ("p",), {}, ()), principal=who, action=action, target=tool, resource=resource,
        route=SimpleNamespace(name=route, settings=SimpleNamespace(denials="jsonrpc")),
        session=SimpleNamespace(id=session) if session else None, response_bytes=response_bytes,
    )  # fmt: skip


def activity(scope: str = "client", clock: list[float] | None = None, **caps: Any) -> SessionActivity:
    times = clock or [NOW]
    return SessionActivity(
        MemoryActivityStore(),
        caps={"crm": SessionCaps(**caps)} if caps else {},
        data_flow=DataFlowSettings(scope=scope, window=600),  # type: ignore[arg-type]
        track_labels=True, session_idle_s=3600, clock=lambda: times[0],
    )  # fmt: skip


async def test_client_scope_spans_routes_and_sessions_of_one_principal_and_client() -> None:
    flow, dana = activity("client"), person("dana")
    await flow.admit(call(dana, "git", "git_log", session="s1", labels=("private_data",)))
    await flow.admit(call(dana, "fetch", "fetch", session="s2", labels=("untrusted_content",)))
    assert await flow.session_labels(call(dana, "chat", "post", session="s3")) == {"private_data", "untrusted_content"}
    assert await flow.session_labels(call(person("dana", client="other"), "chat", "post")) == frozenset()
    assert await flow.session_labels(call(person("erin"), "chat", "post")) == frozenset()


async def test_session_scope_keeps_labels_per_mcp_session_and_falls_back_to_client_without_one() -> None:
    flow, dana = activity("session"), person("dana")
    await flow.admit(call(dana, "git", "git_log", session="s1", labels=("private_data",)))
    assert await flow.session_labels(call(dana, "git", "post", session="s1")) == {"private_data"}
    assert await flow.session_labels(call(dana, "git", "post", session="s2")) == frozenset()
    await flow.admit(call(dana, "fetch", "fetch", labels=("untrusted_content",)))  # stateless: client key
    assert await flow.session_labels(call(dana, "chat", "post")) == {"untrusted_content"}


async def test_principal_scope_spans_every_client_of_the_person() -> None:
    flow = activity("principal")
    await flow.admit(call(person("dana", "a"), "git", "git_log", labels=("private_data",)))
    assert await flow.session_labels(call(person("dana", "b"), "chat", "post")) == {"private_data"}


async def test_labels_are_forgotten_after_the_window_without_calls() -> None:
    clock = [NOW]
    flow, dana = activity("client", clock), person("dana")
    await flow.admit(call(dana, "git", "git_log", labels=("private_data",)))
    clock[0] = NOW + 500
    await flow.admit(call(dana, "time", "now"))  # an unlabelled call keeps the flow alive
    clock[0] = NOW + 1000
    assert await flow.session_labels(call(dana, "chat", "post")) == {"private_data"}
    clock[0] = NOW + 1100
    assert await flow.session_labels(call(dana, "chat", "post")) == frozenset()


async def test_a_denied_call_marks_nothing() -> None:
    flow, dana = activity("client"), person("dana")
    denied = call(dana, "git", "git_log", labels=("private_data",))
    denied.decision = Decision("deny", ("x",), {}, ())
    await flow.admit(denied)
    assert await flow.session_labels(call(dana, "chat", "post")) == frozenset()


async def test_caps_count_per_session_and_name_the_cap() -> None:
    flow, dana = activity(calls=2), person("dana")
    await flow.admit(call(dana, "crm", "read", session="s1"))
    await flow.admit(call(dana, "crm", "read", session="s1"))
    with pytest.raises(SessionCapReached) as refused:
        await flow.admit(call(dana, "crm", "read", session="s1"))
    assert refused.value.data == {"cap": "calls", "limit": 2, "used": 2}
    assert "start a new session" in refused.value.message
    await flow.admit(call(dana, "crm", "read", session="s2"))  # another session: its own count
    await flow.admit(call(dana, "other", "read", session="s1"))  # a route without caps


async def test_stateless_calls_share_one_count_per_route_principal_and_client_until_idle() -> None:
    clock = [NOW]
    flow, dana = activity(clock=clock, calls=1, window=30), person("dana")
    await flow.admit(call(dana, "crm", "read"))
    with pytest.raises(SessionCapReached) as refused:
        await flow.admit(call(dana, "crm", "read"))
    assert "30 s pass without a call" in refused.value.message
    await flow.admit(call(person("dana", "other-client"), "crm", "read"))
    clock[0] = NOW + 31
    await flow.admit(call(dana, "crm", "read"))


async def test_bytes_returned_are_counted_after_the_reply() -> None:
    flow, dana = activity(result_bytes=100), person("dana")
    await flow.admit(call(dana, "crm", "read", session="s1"))
    await flow.returned(call(dana, "crm", "read", session="s1", response_bytes=150))
    with pytest.raises(SessionCapReached) as refused:
        await flow.admit(call(dana, "crm", "read", session="s1"))
    assert refused.value.data == {"cap": "result_bytes", "limit": 100, "used": 150}


@pytest.mark.parametrize(
    ("arguments", "records"),
    [
        ({}, 0),
        ({"limit": 25}, 25),
        ({"limit": 25, "page_size": 500}, 500),
        ({"limit": "700"}, 700),  # digits in a string count: tools coerce them
        ({"limit": 12.5}, 13),
        ({"limit": True}, 0),
        ({"limit": -3}, 0),
        ({"limit": "lots"}, 0),
        ({"limit": 10**30}, 2**63 - 1),
        ({"limit": float("inf")}, 2**63 - 1),
        ({"count": 999}, 0),  # not declared for this tool
    ],
)
def test_requested_records(arguments: dict[str, Any], records: int) -> None:
    assert requested_records(arguments, ToolSettings(record_arguments=("limit", "page_size"))) == records


def test_max_records_needs_record_arguments() -> None:
    with pytest.raises(ValidationError, match="record_arguments"):
        ToolSettings(max_records=10)


def test_data_flow_and_caps_configuration() -> None:
    assert DataFlowSettings().scope == "client"
    assert DataFlowSettings(window="2h").window == 7200  # type: ignore[arg-type]
    assert not SessionCaps().active
    assert SessionCaps(result_bytes=1).active
    with pytest.raises(ValidationError):
        DataFlowSettings(scope="team")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SessionCaps(calls=0)


def test_cedar_sees_session_labels_records_and_bulk(tmp_path: Path) -> None:
    (tmp_path / "p.cedar").write_text(
        '@id("all") permit (principal, action, resource);\n'
        '@id("trifecta") forbid (principal, action == Action::"tools/call", resource is Tool) when { '
        'resource.labels.contains("external_sink") '
        '&& context.session_labels.containsAll(["private_data", "untrusted_content"]) };\n'
        '@id("bulk") forbid (principal, action == Action::"tools/call", resource) '
        'when { context.bulk || context.records > 1000 };\n',
        encoding="utf-8",
    )
    engine = PolicyEngine.load([tmp_path / "p.cedar"])
    assert engine.reads_context("session_labels")
    assert not engine.reads_context("ip")
    sink = ResourceRef.from_tool("chat", {"name": "post"}, risk="write", labels=["external_sink"])
    both = {"session_labels": ["private_data", "untrusted_content"]}
    assert engine.decide(person("d"), "tools/call", sink, both).policy_ids == ("trifecta",)
    assert engine.decide(person("d"), "tools/call", sink, {"session_labels": ["private_data"]}).allowed
    assert engine.decide(person("d"), "tools/call", sink, {"records": 1001}).policy_ids == ("bulk",)
    assert engine.decide(person("d"), "tools/call", sink, {"bulk": True}).policy_ids == ("bulk",)
    for bad in ({"session_labels": "private_data"}, {"records": -1}, {"records": True}, {"bulk": "yes"}):
        decision = engine.decide(person("d"), "tools/call", sink, bad)
        assert not decision.allowed
        assert decision.errors


async def test_a_shared_store_that_does_not_answer_refuses_the_call(tmp_path: Path) -> None:
    """``stores.redis`` unreachable: the limits stage refuses (503 ``limits_unavailable``) rather than
    let the call through uncounted."""
    (tmp_path / "p.cedar").write_text('@id("any") permit (principal, action, resource);', encoding="utf-8")
    store = RedisActivityStore("redis://127.0.0.1:1/0")
    try:
        flow = SessionActivity(store, caps={"crm": SessionCaps(calls=5)}, data_flow=DataFlowSettings(),
                               track_labels=True, session_idle_s=3600)  # fmt: skip
        limits = LimitsStage([], engine=PolicyEngine.load([tmp_path / "p.cedar"]), rates=MemoryRateCounter(),
                             quotas=MemoryRateCounter(), activity=flow)  # fmt: skip
        with pytest.raises(LimitsUnavailable) as caught:
            await limits.run(call(person("dana"), "crm", "export", session="s1"))
        assert (caught.value.status, caught.value.code) == (503, "limits_unavailable")
    finally:
        await store.close()
