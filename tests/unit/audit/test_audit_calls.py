"""``ActivityReader.calls``: the decision records of some methods, newest first, each with its outcome
(the portal's activity page), on both backends: ``SQLiteAuditReader`` and ``PostgresAuditReader`` (on
a schema of its own in the PostgreSQL on loopback, dropped after)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from audit_helpers import raw
from tests.support.audit_events import decision, fill_six, outcome, principal
from tests.support.databases import POSTGRES_URL, drop_postgres_schema, postgres_schema

from bastion.audit.query import SQLiteAuditReader
from bastion.audit.record import Decision, DecisionEvent
from bastion.audit.store import ActivityReader, AuditLog, EventFilter
from bastion.audit.store_postgres import PostgresAuditLog, PostgresAuditReader
from bastion.audit.store_sqlite import SQLiteAuditLog
from bastion.principal import Principal
from bastion.stores.postgres import PostgresDatabase


@dataclass
class Log:
    """Writers on one audit log (``open_log()``) and its activity reader."""

    open_log: Callable[[], AuditLog]
    reader: ActivityReader


@pytest.fixture(params=["postgres", "sqlite"])
async def log(request: pytest.FixtureRequest, db: Path, tmp_path: Path) -> AsyncIterator[Log]:
    """An empty log on each backend."""
    if request.param == "sqlite":
        yield Log(lambda: SQLiteAuditLog(db), SQLiteAuditReader(db))
        return
    schema = postgres_schema(tmp_path)
    yield Log(lambda: PostgresAuditLog(PostgresDatabase(POSTGRES_URL, schema=schema)),
              PostgresAuditReader(PostgresDatabase(POSTGRES_URL, schema=schema)))  # fmt: skip
    await drop_postgres_schema(tmp_path)


CALLS = ("tools/call", "resources/read", "prompts/get")


def _other(method: str, sub: str = "alice") -> DecisionEvent:
    return DecisionEvent.create(
        route="github", method=method, target="x", principal=principal(sub),
        decision=Decision(effect="allow", policy_ids=("p1",)),
    )  # fmt: skip


@pytest.fixture
async def filled(log: Log) -> ActivityReader:
    """``fill_six`` (seq 1-6), then alice's resources/read with its outcome (7, 8) and a tools/list (9)."""
    async with log.open_log() as writer:
        await fill_six(writer)
        read = _other("resources/read")
        await writer.append(read)
        writer.append_nowait(outcome(read))
        await writer.append(_other("tools/list"))
    return log.reader


def _seqs(calls: list[tuple[dict[str, object], dict[str, object] | None]]) -> list[tuple[object, object]]:
    return [(d["seq"], o["seq"] if o is not None else None) for d, o in calls]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (EventFilter(), [(7, 8), (6, None), (5, None), (4, None), (3, None), (1, 2)]),
        (EventFilter(subject="alice"), [(7, 8), (6, None), (1, 2)]),
        (EventFilter(subject="alice", limit=2), [(7, 8), (6, None)]),
        (EventFilter(route="jira", decision="allow"), [(5, None), (4, None)]),
        (EventFilter(tool="create_issue"), [(3, None), (1, 2)]),
        (EventFilter(kind="outcome"), [(7, 8), (6, None), (5, None), (4, None), (3, None), (1, 2)]),  # kind ignored
        (EventFilter(subject="nobody"), []),
    ],
)
async def test_calls_filters_newest_first_with_outcomes(
    filled: ActivityReader, filters: EventFilter, expected: list[tuple[object, object]]
) -> None:
    assert _seqs(filled.calls(CALLS, filters)) == expected


async def test_only_the_methods_asked_for(filled: ActivityReader) -> None:
    reader = filled
    assert _seqs(reader.calls(["resources/read"])) == [(7, 8)]
    assert _seqs(reader.calls(["tools/list"])) == [(9, None)]
    assert reader.calls([]) == []


async def test_the_outcome_is_the_one_of_the_same_decision(filled: ActivityReader) -> None:
    [(first, result)] = filled.calls(CALLS, EventFilter(tool="create_issue", decision="allow"))
    assert result is not None
    assert (result["kind"], result["decision_id"]) == ("outcome", first["decision_id"])
    assert result["result"]["error"] is False


async def test_values_are_parameters_not_sql(filled: ActivityReader) -> None:
    reader = filled
    hostile = "alice' OR '1'='1"
    assert reader.calls(CALLS, EventFilter(subject=hostile)) == []
    assert reader.calls([hostile]) == []


async def test_a_file_without_the_log_has_no_calls(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with raw(other) as conn:
        conn.execute("CREATE TABLE sessions (id TEXT)")
    assert SQLiteAuditReader(other).calls(CALLS) == []
    with pytest.raises(FileNotFoundError):
        SQLiteAuditReader(tmp_path / "nope.db").calls(CALLS)


async def test_many_calls_each_find_their_outcome(log: Log) -> None:
    async with log.open_log() as writer:
        for n in range(600):  # more than one chunk of decision ids
            event = decision(n)
            writer.append_nowait(event)
            writer.append_nowait(outcome(event))
    calls = log.reader.calls(CALLS)
    assert len(calls) == 600
    assert all(o is not None and o["decision_id"] == d["decision_id"] for d, o in calls)


async def test_issuer_narrows_to_one_identity(log: Log) -> None:
    elsewhere = DecisionEvent.create(
        route="github", method="tools/call", target="x", decision=Decision(effect="allow", policy_ids=("p1",)),
        principal=Principal(kind="User", sub="alice", issuer="https://other.test", auth_method="external_jwt",
                            expires_at=0),
    )  # fmt: skip
    async with log.open_log() as writer:
        await writer.append(decision(1))
        await writer.append(elsewhere)
    reader = log.reader
    alice = EventFilter(subject="alice")
    assert _seqs(reader.calls(CALLS, alice)) == [(2, None), (1, None)]
    assert _seqs(reader.calls(CALLS, alice, issuer="https://bastion.test")) == [(1, None)]
    assert _seqs(reader.calls(CALLS, alice, issuer="https://other.test")) == [(2, None)]
