"""The shared ``AuthorizationFlowStore``: short-lived authorization records in PostgreSQL, for every replica.

Pending authorization requests, clients' ``state`` values, authorization codes, browser sign-ins
and sign-ins waiting at an identity provider live in the tables of migration
``0008_authorization.sql`` (the embedded store's columns; codes, cookies and provider states by
their SHA-256 only). A flow may start on one replica and finish on another (no stickiness):
every step reads what the previous one wrote, whichever replica wrote it. Times are wall-clock
epoch seconds.

Single use across replicas, each settled by the database:

- ``take_pending`` and ``take_federated`` are one ``DELETE ... RETURNING`` each: the row goes to
  exactly one caller.
- ``claim_state`` is one ``INSERT ... ON CONFLICT DO NOTHING``: one insert wins.
- ``redeem_code`` (RFC 6749 section 10.5: a code is used once; a replay revokes what the first
  use issued) is one transaction that locks the code's row (``SELECT ... FOR UPDATE``) and marks
  it used, with the family its first redemption starts, only when it was not: a replica redeeming
  at the same time waits for that transaction, then sees the code used and the family to revoke.

Errors are the driver's (``bastion.stores.postgres_tables``); the authorization endpoints answer
them with an error page or an OAuth error and grant nothing (``bastion.oauth.app``).
"""

from __future__ import annotations

import dataclasses
import json

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bastion.oauth.records import AuthorizationCode, FederatedSignIn, Grant, PendingAuthorization, UserIdentity
from bastion.oauth.store import CODE_REPLAY_WINDOW_S
from bastion.oauth.store_postgres_grants import deleted
from bastion.stores.postgres_tables import PostgresTables

__all__ = ["PostgresFlowStore", "flow_purge"]


def _pending_body(pending: PendingAuthorization) -> str:
    """The request as JSON text, without its ``user`` (a column of its own, set later)."""
    body = {field.name: getattr(pending, field.name) for field in dataclasses.fields(pending) if field.name != "user"}
    body["scopes"] = list(pending.scopes)
    return json.dumps(body)


def _pending_from(row: asyncpg.Record) -> PendingAuthorization:
    data = json.loads(row["body"])
    data["scopes"] = tuple(data["scopes"])
    user = row["user_json"]
    return PendingAuthorization(**data, user=UserIdentity.from_json(user) if user else None)


class PostgresFlowStore(PostgresTables):
    """``AuthorizationFlowStore`` in ``database`` (a ``PostgresDatabase``; see the module docstring)."""

    LABEL = "authorization store"

    # pending authorization requests
    async def put_pending(self, pending: PendingAuthorization) -> None:
        """See ``AuthorizationFlowStore.put_pending``."""
        await self._pool.execute(
            "INSERT INTO oauth_pending (id, body, user_json, expires_at) VALUES ($1, $2, $3, $4)",
            pending.id, _pending_body(pending), pending.user.to_json() if pending.user else None, pending.expires_at,
        )  # fmt: skip

    async def get_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """See ``AuthorizationFlowStore.get_pending``."""
        row = await self._pool.fetchrow(
            "SELECT body, user_json FROM oauth_pending WHERE id = $1 AND expires_at > $2", pending_id, now
        )
        return _pending_from(row) if row else None

    async def set_pending_user(self, pending_id: str, user: UserIdentity) -> None:
        """See ``AuthorizationFlowStore.set_pending_user``."""
        await self._pool.execute("UPDATE oauth_pending SET user_json = $2 WHERE id = $1", pending_id, user.to_json())

    async def take_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """See ``AuthorizationFlowStore.take_pending``: one ``DELETE ... RETURNING``."""
        row = await self._pool.fetchrow(
            "DELETE FROM oauth_pending WHERE id = $1 AND expires_at > $2 RETURNING body, user_json", pending_id, now
        )
        return _pending_from(row) if row else None

    async def claim_state(self, client_id: str, state: str, expires_at: float) -> bool:
        """See ``AuthorizationFlowStore.claim_state``: one insert wins."""
        claimed = await self._pool.fetchval(
            "INSERT INTO oauth_states (client_id, state, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (client_id, state) DO NOTHING RETURNING true",
            client_id, state, expires_at,
        )  # fmt: skip
        return claimed is not None

    # authorization codes
    async def put_code(self, code_digest: str, code: AuthorizationCode) -> None:
        """See ``AuthorizationFlowStore.put_code``."""
        await self._pool.execute(
            "INSERT INTO oauth_codes (digest, grant_json, redirect_uri, code_challenge, expires_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            code_digest, code.grant.to_json(), code.redirect_uri, code.code_challenge, code.expires_at,
        )  # fmt: skip

    async def redeem_code(self, code_digest: str, family_id: str | None = None) -> AuthorizationCode | None:
        """See ``AuthorizationFlowStore.redeem_code``: the code's row locked, so one first use."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT grant_json, redirect_uri, code_challenge, expires_at, used, family_id "
                "FROM oauth_codes WHERE digest = $1 FOR UPDATE",
                code_digest,
            )
            if row is None:
                return None
            used, family = row["used"], row["family_id"]
            if not used:
                await connection.execute(
                    "UPDATE oauth_codes SET used = true, family_id = $2 WHERE digest = $1", code_digest, family_id
                )
                family = family_id
        grant = Grant.from_json(row["grant_json"])
        return AuthorizationCode(grant, row["redirect_uri"], row["code_challenge"], row["expires_at"], used, family)

    # browser sign-ins
    async def put_sign_in(self, cookie_digest: str, user: UserIdentity, expires_at: float) -> None:
        """See ``AuthorizationFlowStore.put_sign_in``."""
        await self._pool.execute(
            "INSERT INTO oauth_sign_ins (digest, user_json, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (digest) DO UPDATE SET user_json = excluded.user_json, expires_at = excluded.expires_at",
            cookie_digest, user.to_json(), expires_at,
        )  # fmt: skip

    async def get_sign_in(self, cookie_digest: str, now: float) -> UserIdentity | None:
        """See ``AuthorizationFlowStore.get_sign_in``."""
        user = await self._pool.fetchval(
            "SELECT user_json FROM oauth_sign_ins WHERE digest = $1 AND expires_at > $2", cookie_digest, now
        )
        return UserIdentity.from_json(user) if user is not None else None

    # sign-ins waiting for an identity provider
    async def put_federated(self, state_digest: str, sign_in: FederatedSignIn) -> None:
        """See ``AuthorizationFlowStore.put_federated``."""
        await self._pool.execute(
            "INSERT INTO oauth_federated (digest, body, expires_at) VALUES ($1, $2, $3)",
            state_digest, sign_in.to_json(), sign_in.expires_at,
        )  # fmt: skip

    async def take_federated(self, state_digest: str, now: float) -> FederatedSignIn | None:
        """See ``AuthorizationFlowStore.take_federated``: one ``DELETE ... RETURNING``."""
        body = await self._pool.fetchval(
            "DELETE FROM oauth_federated WHERE digest = $1 AND expires_at > $2 RETURNING body", state_digest, now
        )
        return FederatedSignIn.from_json(body) if body is not None else None

    async def purge(self, now: float) -> int:
        """See ``AuthorizationFlowStore.purge``; returns the number of rows deleted (one transaction)."""
        async with self._pool.acquire() as connection, connection.transaction():
            return await flow_purge(connection, now)


async def flow_purge(connection: asyncpg.Connection | PoolConnectionProxy, now: float) -> int:
    """Delete the flow records expired at ``now`` on ``connection`` (in the caller's transaction);
    codes only ``CODE_REPLAY_WINDOW_S`` after they expired."""
    count = 0
    for table, before in (
        ("oauth_pending", now),
        ("oauth_states", now),
        ("oauth_codes", now - CODE_REPLAY_WINDOW_S),
        ("oauth_sign_ins", now),
        ("oauth_federated", now),
    ):
        count += deleted(await connection.execute(f"DELETE FROM {table} WHERE expires_at <= $1", before))  # noqa: S608
    return count
