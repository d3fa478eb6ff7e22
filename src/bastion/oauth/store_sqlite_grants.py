"""The embedded ``AuthorizationGrantStore``: durable records in the data directory's SQLite file (WAL).

The connection and transactions are ``bastion.stores.sqlite.SQLiteTables``'. ``use_refresh``
and ``revoke_family`` are one ``BEGIN IMMEDIATE`` transaction each, so they hold across
processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bastion.oauth.records import Consent, Grant, RefreshUse
from bastion.stores.sqlite import SQLiteTables, delete_rows

__all__ = ["SQLiteGrantStore"]

GRANT_DDL = """
CREATE TABLE IF NOT EXISTS oauth_families (
    id TEXT PRIMARY KEY, grant_json TEXT NOT NULL, sub TEXT NOT NULL, client_id TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS oauth_families_sub ON oauth_families (sub, client_id);
CREATE TABLE IF NOT EXISTS oauth_refresh_tokens (
    digest TEXT PRIMARY KEY, family_id TEXT NOT NULL, created_at REAL NOT NULL, used_at REAL);
CREATE INDEX IF NOT EXISTS oauth_refresh_tokens_family ON oauth_refresh_tokens (family_id);
CREATE TABLE IF NOT EXISTS oauth_access_tokens (
    jti TEXT PRIMARY KEY, family_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS oauth_access_tokens_family ON oauth_access_tokens (family_id);
CREATE TABLE IF NOT EXISTS oauth_consents (
    sub TEXT NOT NULL, client_id TEXT NOT NULL, route TEXT NOT NULL, scopes TEXT NOT NULL,
    granted_at REAL NOT NULL, PRIMARY KEY (sub, client_id, route));
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, created_at REAL NOT NULL);
"""


class SQLiteGrantStore(SQLiteTables):
    """``AuthorizationGrantStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = GRANT_DDL
    LABEL = "authorization store"

    # refresh-token families
    async def create_family(self, family_id: str, grant: Grant, expires_at: float, now: float) -> None:
        """See ``AuthorizationGrantStore.create_family``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_families (id, grant_json, sub, client_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET grant_json = excluded.grant_json, "
                "sub = excluded.sub, client_id = excluded.client_id, expires_at = excluded.expires_at",
                (family_id, grant.to_json(), grant.user.sub, grant.client_id, now, expires_at),
            )
        )

    async def family_revoked(self, family_id: str) -> bool:
        """See ``AuthorizationGrantStore.family_revoked``."""
        row = await self._run(
            lambda c: c.execute("SELECT revoked_at FROM oauth_families WHERE id = ?", (family_id,)).fetchone(),
            write=False,
        )
        return row is not None and row[0] is not None

    async def add_refresh(self, token_digest: str, family_id: str, now: float) -> None:
        """See ``AuthorizationGrantStore.add_refresh``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_refresh_tokens (digest, family_id, created_at) VALUES (?, ?, ?)",
                (token_digest, family_id, now),
            )
        )

    async def peek_refresh(self, token_digest: str) -> RefreshUse | None:
        """See ``AuthorizationGrantStore.peek_refresh``."""
        return await self._refresh(token_digest, None)

    async def use_refresh(self, token_digest: str, now: float) -> RefreshUse | None:
        """See ``AuthorizationGrantStore.use_refresh``."""
        return await self._refresh(token_digest, now)

    async def _refresh(self, token_digest: str, now: float | None) -> RefreshUse | None:
        def work(c: sqlite3.Connection) -> Any:
            row = c.execute(
                "SELECT t.family_id, t.used_at, f.grant_json, f.expires_at, f.revoked_at "
                "FROM oauth_refresh_tokens t JOIN oauth_families f ON f.id = t.family_id WHERE t.digest = ?",
                (token_digest,),
            ).fetchone()
            if row is not None and row[1] is None and now is not None:
                c.execute("UPDATE oauth_refresh_tokens SET used_at = ? WHERE digest = ?", (now, token_digest))
            return row

        row = await self._run(work, write=now is not None)
        if row is None:
            return None
        return RefreshUse(row[0], Grant.from_json(row[2]), row[3], row[4] is not None, row[1])

    async def add_access_token(self, family_id: str, jti: str, expires_at: int) -> None:
        """See ``AuthorizationGrantStore.add_access_token``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_access_tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
                (jti, family_id, expires_at),
            )
        )

    async def revoke_family(self, family_id: str, now: float) -> list[tuple[str, int]]:
        """See ``AuthorizationGrantStore.revoke_family``."""

        def work(c: sqlite3.Connection) -> list[tuple[str, int]]:
            # A family not created yet (its code's first redemption is still running) gets a
            # revoked placeholder, which create_family fills in without un-revoking it.
            c.execute(
                "INSERT INTO oauth_families (id, grant_json, sub, client_id, created_at, expires_at, revoked_at) "
                "VALUES (?, '{}', '', '', ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET revoked_at = coalesce(revoked_at, excluded.revoked_at)",
                (family_id, now, now + 86400, now),
            )
            rows = c.execute(
                "SELECT jti, expires_at FROM oauth_access_tokens WHERE family_id = ? AND expires_at > ?",
                (family_id, now),
            ).fetchall()
            return [(str(jti), int(exp)) for jti, exp in rows]

        return await self._run(work)

    async def family_of(self, token_digest: str) -> tuple[str, str] | None:
        """See ``AuthorizationGrantStore.family_of``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT f.id, f.client_id FROM oauth_refresh_tokens t JOIN oauth_families f ON f.id = t.family_id "
                "WHERE t.digest = ?",
                (token_digest,),
            ).fetchone(),
            write=False,
        )
        return (str(row[0]), str(row[1])) if row else None

    async def families_of(self, sub: str, client_id: str | None) -> list[str]:
        """See ``AuthorizationGrantStore.families_of``."""
        sql = "SELECT id FROM oauth_families WHERE sub = ? AND revoked_at IS NULL"
        params: tuple[str, ...] = (sub,)
        if client_id is not None:
            sql, params = sql + " AND client_id = ?", (sub, client_id)
        rows = await self._run(lambda c: c.execute(sql, params).fetchall(), write=False)
        return [str(row[0]) for row in rows]

    # consents
    async def get_consent(self, sub: str, client_id: str, route: str) -> Consent | None:
        """See ``AuthorizationGrantStore.get_consent``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT scopes, granted_at FROM oauth_consents WHERE sub = ? AND client_id = ? AND route = ?",
                (sub, client_id, route),
            ).fetchone(),
            write=False,
        )
        return Consent(sub, client_id, route, tuple(json.loads(row[0])), row[1]) if row else None

    async def put_consent(self, consent: Consent) -> None:
        """See ``AuthorizationGrantStore.put_consent``."""
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO oauth_consents (sub, client_id, route, scopes, granted_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (consent.sub, consent.client_id, consent.route, json.dumps(list(consent.scopes)), consent.granted_at),
            )
        )

    async def list_consents(self, sub: str | None) -> list[Consent]:
        """See ``AuthorizationGrantStore.list_consents``."""
        sql = "SELECT sub, client_id, route, scopes, granted_at FROM oauth_consents"
        params: tuple[str, ...] = ()
        if sub is not None:
            sql, params = sql + " WHERE sub = ?", (sub,)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY granted_at", params).fetchall(), write=False)
        return [Consent(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4]) for r in rows]

    async def delete_consents(self, sub: str, client_id: str | None) -> int:
        """See ``AuthorizationGrantStore.delete_consents``."""
        sql = "DELETE FROM oauth_consents WHERE sub = ?"
        params: tuple[str, ...] = (sub,)
        if client_id is not None:
            sql, params = sql + " AND client_id = ?", (sub, client_id)
        cursor = await self._run(lambda c: c.execute(sql, params))
        return int(cursor.rowcount)

    # dynamically registered clients
    async def put_client(self, client_id: str, metadata: dict[str, Any], now: float) -> None:
        """See ``AuthorizationGrantStore.put_client``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_clients (client_id, metadata, created_at) VALUES (?, ?, ?)",
                (client_id, json.dumps(metadata), now),
            )
        )

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        """See ``AuthorizationGrantStore.get_client``."""
        row = await self._run(
            lambda c: c.execute("SELECT metadata FROM oauth_clients WHERE client_id = ?", (client_id,)).fetchone(),
            write=False,
        )
        return dict(json.loads(row[0])) if row else None

    async def purge(self, now: float) -> int:
        """See ``AuthorizationGrantStore.purge``; returns the number of rows deleted."""
        return await self._run(lambda c: grant_purge(c, now))


def grant_purge(c: sqlite3.Connection, now: float) -> int:
    """Delete the grant records expired at ``now`` in one transaction's connection ``c``."""
    return delete_rows(
        c,
        (
            ("DELETE FROM oauth_access_tokens WHERE expires_at <= ?", (now,)),
            (
                "DELETE FROM oauth_refresh_tokens WHERE family_id IN "
                "(SELECT id FROM oauth_families WHERE expires_at <= ?)",
                (now,),
            ),
            ("DELETE FROM oauth_families WHERE expires_at <= ?", (now,)),
        ),
    )
