"""``PostgresAuditLog`` across a PostgreSQL restart: the pooled connections the server dropped are
replaced without refusing an append. A private PostgreSQL cluster of the test's own
(``tests.support.databases.private_postgres``) is stopped as by a crash and started again under the
running log; before the writer retried a dropped connection, the first append after the restart
(one per stale pooled connection) was refused, and so was its call."""

from __future__ import annotations

import asyncio

from tests.support.audit_events import decision
from tests.support.bastion_process import free_port
from tests.support.databases import private_postgres

from bastion.audit.store_postgres import PostgresAuditLog, PostgresAuditReader
from bastion.stores.postgres import PostgresDatabase


def test_appends_after_a_restart_are_not_refused_for_the_stale_connections() -> None:
    with private_postgres(free_port()) as postgres:

        async def run() -> None:
            database = PostgresDatabase(postgres.url, schema="audit", max_size=4)
            async with PostgresAuditLog(database) as log:
                # every pooled connection opened and returned to the pool, as under load
                await asyncio.gather(*(database.pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(4)))
                await log.append(decision(1))
                postgres.stop()  # immediate: as a crash; the pool's connections are now dead
                postgres.start()
                for n in range(2, 8):
                    await log.append(decision(n))  # AuditUnavailable here fails the test
                assert log.failures == 0

        asyncio.run(run())
        reader = PostgresAuditReader(PostgresDatabase(postgres.url, schema="audit"))
        assert [event["seq"] for event in reader.events()] == list(range(1, 8))
        assert reader.verify().ok


def test_queued_events_kept_while_postgresql_is_away_are_counted_and_written_once_it_is_back() -> None:
    with private_postgres(free_port()) as postgres:

        async def run() -> None:
            database = PostgresDatabase(postgres.url, schema="audit", connect_timeout_s=2.0)
            async with PostgresAuditLog(database) as log:
                await log.append(decision(1))
                postgres.stop()
                log.append_nowait(decision(2))  # an outcome would be queued so
                for _ in range(500):  # its first try fails (connection refused)
                    if log.failures:
                        break
                    await asyncio.sleep(0.02)
                assert log.queued == 1  # kept for another try, and counted while it waits for one
                postgres.start()
                for _ in range(400):  # tried again alone every second: written once the server is back
                    if not log.queued:
                        break
                    await asyncio.sleep(0.05)

        asyncio.run(asyncio.wait_for(run(), 60))
        reader = PostgresAuditReader(PostgresDatabase(postgres.url, schema="audit"))
        assert [event["seq"] for event in reader.events()] == [1, 2]
