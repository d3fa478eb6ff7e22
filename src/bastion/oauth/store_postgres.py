"""The shared ``AuthorizationStore``: flow and grant records in PostgreSQL, on one pool.

``PostgresAuthorizationStore`` is ``PostgresFlowStore`` and ``PostgresGrantStore`` together (their
tables, the process's one ``PostgresDatabase``), what the gateway and the CLI use with
``stores.postgres``; ``purge`` purges both in one transaction.
"""

from __future__ import annotations

from bastion.oauth.store_postgres_flows import PostgresFlowStore, flow_purge
from bastion.oauth.store_postgres_grants import PostgresGrantStore, grant_purge

__all__ = ["PostgresAuthorizationStore"]


class PostgresAuthorizationStore(PostgresFlowStore, PostgresGrantStore):
    """``AuthorizationStore`` in ``database`` (a ``PostgresDatabase``)."""

    async def purge(self, now: float) -> int:
        """Delete expired flow and grant records (see both protocols); returns how many rows."""
        async with self._pool.acquire() as connection, connection.transaction():
            return await flow_purge(connection, now) + await grant_purge(connection, now)
