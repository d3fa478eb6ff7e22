"""The runner's ``outcome`` step is observed for every request, refused ones included, once the reply
was sent (``Pipeline.finish``); ``combined`` tells several observers in turn, one that raises not
keeping the others from being told."""

from __future__ import annotations

import json
from typing import Any

from tests.support.audit_fakes import RecordingAuditLog

from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import BastionError, SessionNotFound
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.observer import NO_OBSERVER, combined
from bastion.pipeline.runner import Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.policy import Decision
from bastion.transport.routes import RouteRuntime


class Recorder:
    def __init__(self) -> None:
        self.ends: list[tuple[str, str | None]] = []

    def stage_started(self, exchange: Exchange, stage: str) -> None:
        pass

    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        assert duration_s >= 0
        self.ends.append((stage, error.code if error is not None else None))


class Broken(Recorder):
    def stage_ended(self, exchange: Exchange, stage: str, duration_s: float, error: BastionError | None) -> None:
        raise RuntimeError("metrics backend down")


class Step:
    def __init__(self, name: str, *, refuse: bool = False) -> None:
        self.name, self.refuse = name, refuse

    async def run(self, exchange: Exchange) -> None:
        if self.refuse:
            raise SessionNotFound("Session not found")
        if self.name == "authorize":
            exchange.message = json.loads(exchange.http.body)
            exchange.kind = "request"
            exchange.decision = Decision("allow", ("p",))
        if self.name == "forward":
            exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": 1, "result": {}})


async def _run(observer: Any, *, refuse: bool) -> Exchange:
    audit = AuditStage(RecordingAuditLog(), policy_version="v1")  # type: ignore[arg-type]
    pipeline = Pipeline([Step("session", refuse=refuse), Step("authorize")], audit=audit, forward=Step("forward"),
                        inspector=MessageInspector([], on_drop=audit.record_dropped), observer=observer)  # fmt: skip
    route = RouteRuntime(settings=RouteSettings(name="notes", http=HttpUpstream(url="http://up.test/mcp",
                         allow_http=True)), resource_uri="http://gw.test/mcp/notes", metadata_url="")  # fmt: skip
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'
    exchange = Exchange(route=route, http=HttpRequest("POST", "/mcp/notes", {}, (), "127.0.0.1", body))
    await pipeline.handle(exchange)
    await pipeline.finish(exchange)
    return exchange


async def test_outcome_is_observed_last_for_a_forwarded_and_for_a_refused_request() -> None:
    forwarded, refused = Recorder(), Recorder()
    await _run(forwarded, refuse=False)
    await _run(refused, refuse=True)
    assert forwarded.ends == [("session", None), ("authorize", None), ("audit", None), ("forward", None),
                              ("inspect", None), ("outcome", None)]  # fmt: skip
    assert refused.ends == [("session", "session_not_found"), ("outcome", None)]


async def test_combined_tells_each_observer_and_survives_one_that_raises() -> None:
    first, second = Recorder(), Recorder()
    exchange = await _run(combined(first, Broken(), second), refuse=False)
    assert first.ends == second.ends
    assert first.ends[-1] == ("outcome", None)
    assert isinstance(exchange.reply, JsonReply)
    assert exchange.reply.status == 200


def test_combined_keeps_the_default_free_and_one_observer_as_it_is() -> None:
    only = Recorder()
    assert combined() is NO_OBSERVER
    assert combined(NO_OBSERVER, NO_OBSERVER) is NO_OBSERVER
    assert combined(NO_OBSERVER, only) is only
