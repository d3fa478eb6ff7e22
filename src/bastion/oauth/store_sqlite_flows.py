"""The embedded ``AuthorizationFlowStore``: short-lived records in the data directory's SQLite file (WAL).

The connection and transactions are ``bastion.stores.sqlite.SQLiteTables``'. Single use
(``take_pending``, ``claim_state``, ``redeem_code``, ``take_federated``) is one statement
or one ``BEGIN IMMEDIATE`` transaction, so it holds across processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bastion.oauth.records import AuthorizationCode, FederatedSignIn, Grant, PendingAuthorization, UserIdentity
from bastion.oauth.store import CODE_REPLAY_WINDOW_S
from bastion.stores.sqlite import SQLiteTables, delete_rows

__all__ = ["SQLiteFlowStore"]

FLOW_DDL = """
CREATE TABLE IF NOT EXISTS oauth_pending (
    id TEXT PRIMARY KEY, body TEXT NOT NULL, user TEXT, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_states (
    client_id TEXT NOT NULL, state TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (client_id, state));
CREATE TABLE IF NOT EXISTS oauth_codes (
    digest TEXT PRIMARY KEY, grant_json TEXT NOT NULL, redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL,
    expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0, family_id TEXT);
CREATE TABLE IF NOT EXISTS oauth_sign_ins (
    digest TEXT PRIMARY KEY, user TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_federated (
    digest TEXT PRIMARY KEY, body TEXT NOT NULL, expires_at REAL NOT NULL);
"""

_PENDING_FIELDS = (
    "id", "client_id", "client_name", "redirect_uri", "state", "code_challenge", "route", "resource",
    "scopes", "browser", "csrf_token", "expires_at", "unverified_client",
)  # fmt: skip


def _pending_from(body: str, user: str | None) -> PendingAuthorization:
    data = json.loads(body)
    data["scopes"] = tuple(data["scopes"])
    return PendingAuthorization(**data, user=UserIdentity.from_json(user) if user else None)


class SQLiteFlowStore(SQLiteTables):
    """``AuthorizationFlowStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = FLOW_DDL
    LABEL = "authorization store"

    # pending authorization requests
    async def put_pending(self, pending: PendingAuthorization) -> None:
        """See ``AuthorizationFlowStore.put_pending``."""
        body = {name: getattr(pending, name) for name in _PENDING_FIELDS}
        body["scopes"] = list(pending.scopes)
        user = pending.user.to_json() if pending.user else None
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_pending (id, body, user, expires_at) VALUES (?, ?, ?, ?)",
                (pending.id, json.dumps(body), user, pending.expires_at),
            )
        )

    async def get_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """See ``AuthorizationFlowStore.get_pending``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT body, user FROM oauth_pending WHERE id = ? AND expires_at > ?", (pending_id, now)
            ).fetchone(),
            write=False,
        )
        return _pending_from(row[0], row[1]) if row else None

    async def set_pending_user(self, pending_id: str, user: UserIdentity) -> None:
        """See ``AuthorizationFlowStore.set_pending_user``."""
        await self._run(
            lambda c: c.execute("UPDATE oauth_pending SET user = ? WHERE id = ?", (user.to_json(), pending_id))
        )

    async def take_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """See ``AuthorizationFlowStore.take_pending``."""
        row = await self._run(
            lambda c: c.execute(
                "DELETE FROM oauth_pending WHERE id = ? AND expires_at > ? RETURNING body, user", (pending_id, now)
            ).fetchone()
        )
        return _pending_from(row[0], row[1]) if row else None

    async def claim_state(self, client_id: str, state: str, expires_at: float) -> bool:
        """See ``AuthorizationFlowStore.claim_state``."""
        cursor = await self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO oauth_states (client_id, state, expires_at) VALUES (?, ?, ?)",
                (client_id, state, expires_at),
            )
        )
        return cursor.rowcount == 1

    # authorization codes
    async def put_code(self, code_digest: str, code: AuthorizationCode) -> None:
        """See ``AuthorizationFlowStore.put_code``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_codes (digest, grant_json, redirect_uri, code_challenge, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (code_digest, code.grant.to_json(), code.redirect_uri, code.code_challenge, code.expires_at),
            )
        )

    async def redeem_code(self, code_digest: str, family_id: str | None = None) -> AuthorizationCode | None:
        """See ``AuthorizationFlowStore.redeem_code``."""

        def work(c: sqlite3.Connection) -> Any:
            row = c.execute(
                "SELECT grant_json, redirect_uri, code_challenge, expires_at, used, family_id "
                "FROM oauth_codes WHERE digest = ?",
                (code_digest,),
            ).fetchone()
            if row is not None and not row[4]:
                c.execute("UPDATE oauth_codes SET used = 1, family_id = ? WHERE digest = ?", (family_id, code_digest))
                row = (*row[:5], family_id)
            return row

        row = await self._run(work)
        if row is None:
            return None
        return AuthorizationCode(Grant.from_json(row[0]), row[1], row[2], row[3], bool(row[4]), row[5])

    # browser sign-ins
    async def put_sign_in(self, cookie_digest: str, user: UserIdentity, expires_at: float) -> None:
        """See ``AuthorizationFlowStore.put_sign_in``."""
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO oauth_sign_ins (digest, user, expires_at) VALUES (?, ?, ?)",
                (cookie_digest, user.to_json(), expires_at),
            )
        )

    async def get_sign_in(self, cookie_digest: str, now: float) -> UserIdentity | None:
        """See ``AuthorizationFlowStore.get_sign_in``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT user FROM oauth_sign_ins WHERE digest = ? AND expires_at > ?", (cookie_digest, now)
            ).fetchone(),
            write=False,
        )
        return UserIdentity.from_json(row[0]) if row else None

    # sign-ins waiting for an identity provider
    async def put_federated(self, state_digest: str, sign_in: FederatedSignIn) -> None:
        """See ``AuthorizationFlowStore.put_federated``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_federated (digest, body, expires_at) VALUES (?, ?, ?)",
                (state_digest, sign_in.to_json(), sign_in.expires_at),
            )
        )

    async def take_federated(self, state_digest: str, now: float) -> FederatedSignIn | None:
        """See ``AuthorizationFlowStore.take_federated``."""
        row = await self._run(
            lambda c: c.execute(
                "DELETE FROM oauth_federated WHERE digest = ? AND expires_at > ? RETURNING body", (state_digest, now)
            ).fetchone()
        )
        return FederatedSignIn.from_json(row[0]) if row else None

    async def purge(self, now: float) -> int:
        """See ``AuthorizationFlowStore.purge``; returns the number of rows deleted."""
        return await self._run(lambda c: flow_purge(c, now))


def flow_purge(c: sqlite3.Connection, now: float) -> int:
    """Delete the flow records expired at ``now`` in one transaction's connection ``c``."""
    return delete_rows(
        c,
        (
            ("DELETE FROM oauth_pending WHERE expires_at <= ?", (now,)),
            ("DELETE FROM oauth_states WHERE expires_at <= ?", (now,)),
            ("DELETE FROM oauth_codes WHERE expires_at <= ?", (now - CODE_REPLAY_WINDOW_S,)),
            ("DELETE FROM oauth_sign_ins WHERE expires_at <= ?", (now,)),
            ("DELETE FROM oauth_federated WHERE expires_at <= ?", (now,)),
        ),
    )
