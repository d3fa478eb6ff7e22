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
