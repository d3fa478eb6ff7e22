"""The embedded ``AuthorizationStore``: flow and grant records in one SQLite file, on one connection.

``SQLiteAuthorizationStore`` is ``SQLiteFlowStore`` and ``SQLiteGrantStore`` together (their
tables, one connection); ``purge`` purges both in one transaction.
"""

from __future__ import annotations

from bastion.oauth.store_sqlite_flows import FLOW_DDL, SQLiteFlowStore, flow_purge
from bastion.oauth.store_sqlite_grants import GRANT_DDL, SQLiteGrantStore, grant_purge

__all__ = ["SQLiteAuthorizationStore"]


class SQLiteAuthorizationStore(SQLiteFlowStore, SQLiteGrantStore):
    """``AuthorizationStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = FLOW_DDL + GRANT_DDL

    async def purge(self, now: float) -> int:
        """Delete expired flow and grant records (see both protocols); returns how many rows."""
        return await self._run(lambda c: flow_purge(c, now) + grant_purge(c, now))
