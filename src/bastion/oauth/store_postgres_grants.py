"""The shared ``AuthorizationGrantStore``: durable authorization records in PostgreSQL, for every replica.

Refresh-token families, the access tokens issued from them, consents and dynamically registered
clients live in the tables of migration ``0008_authorization.sql`` (the embedded store's columns;
refresh tokens by their SHA-256 only). Every replica reads and writes the same rows, so a consent
given through one holds on the others, and a refresh token is rotated once across them all.
Times are wall-clock epoch seconds.

Refresh token rotation (OAuth 2.1 section 4.3.1; RFC 9700 section 4.14.2): every token is used
once, and a token presented again after its rotation revokes its family. ``use_refresh`` settles
the race between replicas presenting the same token at once in one transaction: it locks the
token's row (``SELECT ... FOR UPDATE``) and records the first use only when there was none, so
exactly one caller sees ``previous_use`` None; any other waits for that transaction and sees the
first use's time (and ``GrantService`` decides, by ``reuse_grace_s``, whether that is a duplicate
or a reuse that revokes the family). ``revoke_family`` marks the family revoked in the same
transaction in which it reads the family's access tokens, and marks one not created yet with a
revoked placeholder that ``create_family`` fills in without un-revoking (a replayed code racing
its first redemption, RFC 6749 section 10.5).

Errors are the driver's (``bastion.stores.postgres_tables``); the token endpoint answers them with
an OAuth error and issues nothing (``bastion.oauth.app``).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bastion.oauth.records import Consent, Grant, RefreshUse
from bastion.stores.postgres_tables import PostgresTables

__all__ = ["PostgresGrantStore", "deleted", "grant_purge"]

_REFRESH = (
    "SELECT t.family_id, t.used_at, f.grant_json, f.expires_at, f.revoked_at "
    "FROM oauth_refresh_tokens t JOIN oauth_families f ON f.id = t.family_id WHERE t.digest = $1"
)
_PLACEHOLDER_S = 86400
"""How long a revoked placeholder family lasts when its ``create_family`` never comes."""


def deleted(status: str) -> int:
    """The row count of a command's status (``DELETE 3`` is 3)."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresGrantStore(PostgresTables):
    """``AuthorizationGrantStore`` in ``database`` (a ``PostgresDatabase``; see the module docstring)."""

    LABEL = "authorization store"

    # refresh-token families
    async def create_family(self, family_id: str, grant: Grant, expires_at: float, now: float) -> None:
        """See ``AuthorizationGrantStore.create_family``: a revoked placeholder stays revoked."""
        await self._pool.execute(
            "INSERT INTO oauth_families (id, grant_json, sub, client_id, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET grant_json = excluded.grant_json, "
            "sub = excluded.sub, client_id = excluded.client_id, expires_at = excluded.expires_at",
            family_id, grant.to_json(), grant.user.sub, grant.client_id, now, expires_at,
        )  # fmt: skip

    async def family_revoked(self, family_id: str) -> bool:
        """See ``AuthorizationGrantStore.family_revoked``."""
        revoked_at = await self._pool.fetchval("SELECT revoked_at FROM oauth_families WHERE id = $1", family_id)
        return revoked_at is not None

    async def add_refresh(self, token_digest: str, family_id: str, now: float) -> None:
        """See ``AuthorizationGrantStore.add_refresh``."""
        await self._pool.execute(
            "INSERT INTO oauth_refresh_tokens (digest, family_id, created_at) VALUES ($1, $2, $3)",
            token_digest, family_id, now,
        )  # fmt: skip

    async def peek_refresh(self, token_digest: str) -> RefreshUse | None:
        """See ``AuthorizationGrantStore.peek_refresh``."""
        return _refresh_use(await self._pool.fetchrow(_REFRESH, token_digest))

    async def use_refresh(self, token_digest: str, now: float) -> RefreshUse | None:
        """See ``AuthorizationGrantStore.use_refresh``: the token's row locked, so one first use."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(_REFRESH + " FOR UPDATE OF t", token_digest)
            if row is not None and row["used_at"] is None:
                await connection.execute(
                    "UPDATE oauth_refresh_tokens SET used_at = $2 WHERE digest = $1", token_digest, now
                )
        return _refresh_use(row)

    async def add_access_token(self, family_id: str, jti: str, expires_at: int) -> None:
        """See ``AuthorizationGrantStore.add_access_token``."""
        await self._pool.execute(
            "INSERT INTO oauth_access_tokens (jti, family_id, expires_at) VALUES ($1, $2, $3)",
            jti, family_id, int(expires_at),
        )  # fmt: skip

    async def revoke_family(self, family_id: str, now: float) -> list[tuple[str, int]]:
        """See ``AuthorizationGrantStore.revoke_family``: one transaction; the first revocation's time kept."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO oauth_families (id, grant_json, sub, client_id, created_at, expires_at, revoked_at) "
                "VALUES ($1, '{}', '', '', $2, $3, $2) "
                "ON CONFLICT (id) DO UPDATE SET revoked_at = coalesce(oauth_families.revoked_at, excluded.revoked_at)",
                family_id, now, now + _PLACEHOLDER_S,
            )  # fmt: skip
            rows = await connection.fetch(
                "SELECT jti, expires_at FROM oauth_access_tokens WHERE family_id = $1 AND expires_at > $2::float8 "
                "ORDER BY jti",
                family_id, now,
            )  # fmt: skip
        return [(str(row["jti"]), int(row["expires_at"])) for row in rows]

    async def family_of(self, token_digest: str) -> tuple[str, str] | None:
        """See ``AuthorizationGrantStore.family_of``."""
        row = await self._pool.fetchrow(
            "SELECT f.id, f.client_id FROM oauth_refresh_tokens t JOIN oauth_families f ON f.id = t.family_id "
            "WHERE t.digest = $1",
            token_digest,
        )
        return (str(row["id"]), str(row["client_id"])) if row else None

    async def families_of(self, sub: str, client_id: str | None) -> list[str]:
        """See ``AuthorizationGrantStore.families_of`` (oldest first)."""
        rows = await self._pool.fetch(
            "SELECT id FROM oauth_families WHERE sub = $1 AND revoked_at IS NULL "
            "AND ($2::text IS NULL OR client_id = $2) ORDER BY created_at, id",
            sub, client_id,
        )  # fmt: skip
        return [str(row["id"]) for row in rows]

    # consents
    async def get_consent(self, sub: str, client_id: str, route: str) -> Consent | None:
        """See ``AuthorizationGrantStore.get_consent``."""
        row = await self._pool.fetchrow(
            "SELECT scopes, granted_at FROM oauth_consents WHERE sub = $1 AND client_id = $2 AND route = $3",
            sub, client_id, route,
        )  # fmt: skip
        return Consent(sub, client_id, route, tuple(json.loads(row["scopes"])), row["granted_at"]) if row else None

    async def put_consent(self, consent: Consent) -> None:
        """See ``AuthorizationGrantStore.put_consent``: the last consent given wins whole."""
        await self._pool.execute(
            "INSERT INTO oauth_consents (sub, client_id, route, scopes, granted_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (sub, client_id, route) DO UPDATE SET scopes = excluded.scopes, "
            "granted_at = excluded.granted_at",
            consent.sub, consent.client_id, consent.route, json.dumps(list(consent.scopes)), consent.granted_at,
        )  # fmt: skip

    async def list_consents(self, sub: str | None) -> list[Consent]:
        """See ``AuthorizationGrantStore.list_consents``."""
        rows = await self._pool.fetch(
            "SELECT sub, client_id, route, scopes, granted_at FROM oauth_consents "
            "WHERE $1::text IS NULL OR sub = $1 ORDER BY granted_at, sub, client_id, route",
            sub,
        )
        return [
            Consent(row["sub"], row["client_id"], row["route"], tuple(json.loads(row["scopes"])), row["granted_at"])
            for row in rows
        ]

    async def delete_consents(self, sub: str, client_id: str | None) -> int:
        """See ``AuthorizationGrantStore.delete_consents``."""
        status = await self._pool.execute(
            "DELETE FROM oauth_consents WHERE sub = $1 AND ($2::text IS NULL OR client_id = $2)", sub, client_id
        )
        return deleted(status)

    # dynamically registered clients
    async def put_client(self, client_id: str, metadata: dict[str, Any], now: float) -> None:
        """See ``AuthorizationGrantStore.put_client`` (a client id taken already raises
        ``asyncpg.UniqueViolationError``)."""
        await self._pool.execute(
            "INSERT INTO oauth_clients (client_id, metadata, created_at) VALUES ($1, $2, $3)",
            client_id, json.dumps(metadata), now,
        )  # fmt: skip

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        """See ``AuthorizationGrantStore.get_client``."""
        metadata = await self._pool.fetchval("SELECT metadata FROM oauth_clients WHERE client_id = $1", client_id)
        return dict(json.loads(metadata)) if metadata is not None else None

    async def purge(self, now: float) -> int:
        """See ``AuthorizationGrantStore.purge``; returns the number of rows deleted (one transaction)."""
        async with self._pool.acquire() as connection, connection.transaction():
            return await grant_purge(connection, now)


async def grant_purge(connection: asyncpg.Connection | PoolConnectionProxy, now: float) -> int:
    """Delete the grant records expired at ``now`` on ``connection`` (in the caller's transaction)."""
    count = deleted(await connection.execute("DELETE FROM oauth_access_tokens WHERE expires_at <= $1::float8", now))
    count += deleted(await connection.execute(
        "DELETE FROM oauth_refresh_tokens WHERE family_id IN (SELECT id FROM oauth_families WHERE expires_at <= $1)",
        now,
    ))  # fmt: skip
    count += deleted(await connection.execute("DELETE FROM oauth_families WHERE expires_at <= $1", now))
    return count


def _refresh_use(row: asyncpg.Record | None) -> RefreshUse | None:
    """What the row of ``_REFRESH`` says (``used_at`` as read, before any use this call recorded)."""
    if row is None:
        return None
    grant = Grant.from_json(row["grant_json"])
    return RefreshUse(row["family_id"], grant, row["expires_at"], row["revoked_at"] is not None, row["used_at"])
