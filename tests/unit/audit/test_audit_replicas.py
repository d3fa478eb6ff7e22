"""``ReplicaRegistry``: heartbeats in ``gateway_replicas`` and the outcomes written for the calls a lost
replica left open, against the PostgreSQL on loopback (a schema of the test's own, dropped after)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tests.support.audit_events import outcome, principal
from tests.support.clock import FakeClock
from tests.support.databases import POSTGRES_URL, drop_postgres_schema, postgres_schema

from bastion.audit.record import Decision, DecisionEvent
from bastion.audit.replicas import OUTCOME_UNKNOWN, REPLICA_LOST, ReplicaRegistry
from bastion.audit.store import EventFilter
from bastion.audit.store_postgres import PostgresAuditLog, PostgresAuditReader
from bastion.stores.postgres import PostgresDatabase


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    yield postgres_schema(tmp_path)
    await drop_postgres_schema(tmp_path)


def _call(effect: str = "allow", tool: str = "create_issue") -> DecisionEvent:
    decision = Decision(effect="allow") if effect == "allow" else Decision(effect="deny", reason="policy_denied")
    return DecisionEvent.create(
        route="github", method="tools/call", target=tool, principal=principal("alice"), session="s1",
        decision=decision, arguments={"title": "x"},
    )  # fmt: skip


async def _write_as(schema: str, replica: str, *events: DecisionEvent, closed: int = 0) -> None:
    """Append ``events`` as ``replica`` would, the first ``closed`` of them with their outcome."""
    async with PostgresAuditLog(PostgresDatabase(POSTGRES_URL, schema=schema), replica=replica) as log:
        for n, event in enumerate(events):
            await log.append(event)
            if n < closed:
                await log.append(outcome(event))


@asynccontextmanager
async def _registered(
    schema: str, replica: str, lost_after_s: float, clock: Callable[[], float] | None = None
) -> AsyncIterator[tuple[ReplicaRegistry, PostgresDatabase]]:
    """A started registry for ``replica`` writing into the log in ``schema``, closed after."""
    database = PostgresDatabase(POSTGRES_URL, schema=schema)
    async with PostgresAuditLog(database, replica=replica) as log:
        registry = ReplicaRegistry(database, log, replica, lost_after_s=lost_after_s, clock=clock or time.monotonic)
        await registry.start()
        try:
            yield registry, database
        finally:
            await registry.close()


async def _set_seen(database: PostgresDatabase, replica: str, ago_s: float) -> None:
    await database.pool.execute(
        "INSERT INTO gateway_replicas (replica, seen_at) VALUES ($1, now() - make_interval(secs => $2)) "
        "ON CONFLICT (replica) DO UPDATE SET seen_at = EXCLUDED.seen_at", replica, ago_s,
    )  # fmt: skip


async def test_a_lost_replicas_open_calls_get_an_unknown_outcome_once(schema: str) -> None:
    done, open_call, denied = _call(tool="done"), _call(tool="open"), _call("deny", tool="denied")
    await _write_as(schema, "dead", done, open_call, denied, closed=1)
    async with _registered(schema, "live", 5, FakeClock(1000.0)) as (registry, database):
        await _set_seen(database, "dead", 60)
        assert await registry.sweep() == 1
        assert await registry.sweep() == 0  # its row is gone: nothing is written twice
        left = await database.pool.fetch("SELECT replica FROM gateway_replicas ORDER BY replica")
        assert [row["replica"] for row in left] == ["live"]
    reader = PostgresAuditReader(PostgresDatabase(POSTGRES_URL, schema=schema))
    outcomes = [e for e in reader.events(EventFilter(kind="outcome"))]
    by_decision = {e["decision_id"]: e for e in outcomes}
    assert set(by_decision) == {done.decision_id, open_call.decision_id}  # the deny gets none
    lost = by_decision[open_call.decision_id]
    assert lost["result"]["error_code"] == REPLICA_LOST
    assert lost["result"]["flags"] == [OUTCOME_UNKNOWN]
    assert (lost["route"], lost["target"], lost["session"]) == ("github", "open", "s1")
    assert lost["principal"]["sub"] == "alice"
    assert by_decision[done.decision_id]["result"]["error"] is False
    assert reader.verify().ok
    # the stopped replica removed its own row
    async with PostgresDatabase(POSTGRES_URL, schema=schema) as database:
        assert await database.pool.fetchval("SELECT count(*) FROM gateway_replicas") == 0


async def test_a_replica_beating_recently_is_left_alone(schema: str) -> None:
    await _write_as(schema, "slow", _call())
    async with _registered(schema, "live", 30) as (registry, database):
        await _set_seen(database, "slow", 10)  # silent 10 s of the 30 allowed
        assert await registry.sweep() == 0
        assert await database.pool.fetchval("SELECT count(*) FROM gateway_replicas") == 2


async def test_a_replica_sweeps_only_after_beating_for_as_long_as_a_loss_takes(schema: str) -> None:
    clock = FakeClock(1000.0)
    async with _registered(schema, "live", 5, clock) as (registry, database):
        assert await registry.beat() is False  # just registered
        clock.now += 5
        assert await registry.beat() is True
        # the database away: no sweeping until it has been back for 5 s
        await database.pool.execute("ALTER TABLE gateway_replicas RENAME TO gateway_replicas_away")
        assert await registry.beat() is False
        await database.pool.execute("ALTER TABLE gateway_replicas_away RENAME TO gateway_replicas")
        clock.now += 10
        assert await registry.beat() is False  # healthy again from now on
        clock.now += 5
        assert await registry.beat() is True


async def test_a_replica_declared_lost_registers_again_when_it_beats(schema: str) -> None:
    async with _registered(schema, "paused", 5) as (registry, database):
        await database.pool.execute("DELETE FROM gateway_replicas WHERE replica = 'paused'")
        await registry.beat()
        assert await database.pool.fetchval("SELECT count(*) FROM gateway_replicas WHERE replica = 'paused'") == 1


async def test_the_writer_names_its_replica_in_each_row(schema: str) -> None:
    await _write_as(schema, "r1", _call())
    await _write_as(schema, "r2", _call(), closed=1)
    async with PostgresDatabase(POSTGRES_URL, schema=schema) as database:
        rows = await database.pool.fetch("SELECT kind, replica FROM audit_events ORDER BY seq")
    assert [(row["kind"], row["replica"]) for row in rows] == [
        ("decision", "r1"), ("decision", "r2"), ("outcome", "r2"),
    ]  # fmt: skip
