"""Fail closed in ``Pipeline.handle``: a request is forwarded only when a stage allowed it explicitly and
its decision record is committed; every other ending is a deny with an audit record, never a forward.

Each case runs the real runner and the real ``AuditStage`` on a real ``SQLiteAuditLog`` (``tmp_path``);
the checks are small stages that each do one thing to the exchange, and the forward stage only notes
that it was called (and how many decision records were committed by then). The pipeline is built in
one place, ``pipeline``, from the runner's public constructor.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.audit import SQLiteAuditLog
from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import AuditUnavailable, PolicyDenied
from bastion.pipeline.context import Exchange, HttpRequest, JsonReply
from bastion.pipeline.filters import MessageInspector
from bastion.pipeline.runner import Pipeline
from bastion.pipeline.stages.audit import AuditStage
from bastion.pipeline.stages.base import Stage
from bastion.policy import Decision
from bastion.principal import Principal
from bastion.transport.routes import RouteRuntime

ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "delete_all", "arguments": {}}}


@dataclass
class Check:
    """A check stage called ``name`` that does ``act`` to the exchange."""

    name: str
    act: Callable[[Exchange], None]

    async def run(self, exchange: Exchange) -> None:
        self.act(exchange)


class Forward:
    """The forward stage: notes the call and the decision records committed by then; answers ``{}``."""

    name = "forward"

    def __init__(self, database: Path) -> None:
        self.database = database
        self.committed_at_call: int | None = None

    @property
    def called(self) -> bool:
        return self.committed_at_call is not None

    async def run(self, exchange: Exchange) -> None:
        self.committed_at_call = len(records(self.database))
        exchange.reply = JsonReply(200, {"jsonrpc": "2.0", "id": exchange.rpc_id, "result": {}})


def pipeline(checks: Sequence[Stage], audit: AuditStage, forward: Stage) -> Pipeline:
    """The POST runner with ``checks`` before the decision gate, no message filters."""
    return Pipeline(checks, audit=audit, forward=forward, inspector=MessageInspector([], on_drop=audit.record_dropped))


def records(database: Path) -> list[dict[str, Any]]:
    """The audit records committed to ``database``, oldest first."""
    with closing(sqlite3.connect(database)) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT record FROM audit_events ORDER BY seq")]


def refuse_every_commit(database: Path) -> None:
    """Make every insert into the audit table fail, as a full disk would: the log's commits raise."""
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        conn.commit()


@dataclass
class Run:
    """What one request through the pipeline came to."""

    exchange: Exchange
    forward: Forward
    records: list[dict[str, Any]]

    @property
    def error(self) -> dict[str, Any]:
        reply = self.exchange.reply
        assert isinstance(reply, JsonReply)
        assert isinstance(reply.message, dict)
        return dict(reply.message["error"])

    @property
    def status(self) -> int:
        assert self.exchange.reply is not None
        return self.exchange.reply.status


async def run(tmp_path: Path, *checks: Stage, audit_fails: bool = False) -> Run:
    """One ``tools/call`` through ``checks``, the audit stage and the recording forward stage."""
    database = tmp_path / "bastion.db"
    forward = Forward(database)
    route = RouteRuntime(
        settings=RouteSettings(name="notes", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True)),
        resource_uri="http://gw.test/mcp/notes",
        metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/notes",
    )
    body = json.dumps(CALL).encode()
    request = HttpRequest("POST", "/mcp/notes", {"host": "gw.test"}, (("host", "gw.test"),), "127.0.0.1", body)
    exchange = Exchange(route=route, http=request, message=dict(CALL), kind="request", principal=ALICE)
    async with SQLiteAuditLog(database, linger_ms=0, synchronous="normal") as log:
        if audit_fails:
            refuse_every_commit(database)
        await pipeline(checks, AuditStage(log, policy_version="v1"), forward).handle(exchange)
    return Run(exchange, forward, records(database))


def decide(effect: str, *policies: str) -> Check:
    return Check("authorize", lambda exchange: setattr(exchange, "decision", Decision(effect, policies)))  # type: ignore[arg-type]


def classify(exchange: Exchange) -> None:
    exchange.action, exchange.target = "call_tool", "delete_all"


def assert_denied_unforwarded(result: Run, *, reason: str, code: int, message: str) -> dict[str, Any]:
    """Nothing forwarded, the client told ``code``/``message``, one deny record with ``reason``; the record."""
    assert not result.forward.called
    assert (result.error["code"], result.error["message"]) == (code, message)
    assert "Traceback" not in json.dumps(result.error)
    [record] = result.records
    assert (record["kind"], record["method"], record["decision"]["effect"]) == ("decision", "tools/call", "deny")
    assert record["decision"]["reason"] == reason
    return record


# --- the one way through -------------------------------------------------------------------------


async def test_an_allowed_call_is_forwarded_only_after_its_decision_record_is_committed(tmp_path: Path) -> None:
    result = await run(tmp_path, Check("classify", classify), decide("allow", "permit-notes"))
    assert result.forward.committed_at_call == 1
    assert result.status == 200
    [record] = result.records
    assert (record["decision"]["effect"], record["decision"]["policy_ids"]) == ("allow", ["permit-notes"])


# --- no decision, or one that is not an allow ------------------------------------------------------

NO_DECISION = "Denied: no decision allowed this request"


async def test_checks_that_never_decide_forward_nothing(tmp_path: Path) -> None:
    result = await run(tmp_path, Check("classify", classify), Check("authorize", lambda exchange: None))
    assert result.status == 200  # a JSON-RPC error: the call was refused, the HTTP request was fine
    assert_denied_unforwarded(result, reason=PolicyDenied.code, code=-32003, message=NO_DECISION)
    assert isinstance(result.exchange.error, PolicyDenied)


@pytest.mark.parametrize(
    ("checks", "policies"),
    [
        pytest.param([decide("deny", "forbid-delete")], ["forbid-delete"], id="a-forbid"),
        pytest.param([decide("deny")], [], id="default-deny"),
        pytest.param(
            [decide("allow", "permit-notes"), decide("deny", "forbid-url")], ["forbid-url"], id="allow-then-deny"
        ),
    ],
)
async def test_a_deny_decision_set_without_an_error_forwards_nothing(
    tmp_path: Path, checks: list[Check], policies: list[str]
) -> None:
    result = await run(tmp_path, Check("classify", classify), *checks)
    record = assert_denied_unforwarded(result, reason=PolicyDenied.code, code=-32003, message=NO_DECISION)
    assert record["decision"]["policy_ids"] == policies


# --- a check that breaks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [RuntimeError("bug"), KeyError("params"), AttributeError("none"), TimeoutError(), RecursionError()]
)
async def test_an_exception_after_the_allow_is_a_deny_and_forwards_nothing(tmp_path: Path, error: Exception) -> None:
    def broken(_: Exchange) -> None:
        raise error

    result = await run(tmp_path, decide("allow", "permit-notes"), Check("url_arguments", broken))
    assert result.status == 500
    record = assert_denied_unforwarded(
        result, reason="internal_error", code=-32603, message="Internal error in url_arguments"
    )
    assert record["decision"]["policy_ids"] == ["permit-notes"]
    assert result.exchange.notes["failed_stage"] == "url_arguments"
    assert result.exchange.error is not None
    assert result.exchange.error.__cause__ is error


# --- an audit log that cannot commit ---------------------------------------------------------------


async def test_an_audit_log_that_cannot_commit_forwards_nothing(tmp_path: Path) -> None:
    result = await run(tmp_path, Check("classify", classify), decide("allow", "permit-notes"), audit_fails=True)
    assert not result.forward.called
    assert result.status == 503
    assert result.error["code"] == -32603
    assert isinstance(result.exchange.error, AuditUnavailable)
    assert result.exchange.notes["failed_stage"] == "audit"
    assert not result.exchange.audited
    assert result.records == []  # nothing could be written, and nothing went out either
