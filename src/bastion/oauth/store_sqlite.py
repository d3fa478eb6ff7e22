"""The embedded authorization store: tables in the data directory's SQLite file (WAL).

The connection and transactions are ``bastion.stores.sqlite.SQLiteTables``'.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bastion.oauth.records import (
    AuthorizationCode,
    Consent,
    FederatedSignIn,
    Grant,
    PendingAuthorization,
    RefreshUse,
    UserIdentity,
)
from bastion.stores.sqlite import SQLiteTables

__all__ = ["SQLiteAuthorizationStore"]


_DDL = """
CREATE TABLE IF NOT EXISTS oauth_pending (
    id TEXT PRIMARY KEY, body TEXT NOT NULL, user TEXT, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_states (
    client_id TEXT NOT NULL, state TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (client_id, state));
CREATE TABLE IF NOT EXISTS oauth_codes (
    digest TEXT PRIMARY KEY, grant_json TEXT NOT NULL, redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL,
    expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0, family_id TEXT);
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
CREATE TABLE IF NOT EXISTS oauth_sign_ins (
    digest TEXT PRIMARY KEY, user TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_federated (
    digest TEXT PRIMARY KEY, body TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, created_at REAL NOT NULL);
"""

_PENDING_FIELDS = (
    "id", "client_id", "client_name", "redirect_uri", "state", "code_challenge", "route", "resource",
    "scopes", "browser", "csrf_token", "expires_at", "unverified_client",
)  # fmt: skip


def _pending_from(body: str, user: str | None) -> PendingAuthorization:
    data = json.loads(body)
    data["scopes"] = tuple(data["scopes"])
    return PendingAuthorization(**data, user=UserIdentity.from_json(user) if user else None)


class SQLiteAuthorizationStore(SQLiteTables):
    """``AuthorizationStore`` on SQLite at ``path`` (the data directory's ``bastion.db``)."""

    DDL = _DDL
    LABEL = "authorization store"

    # pending authorization requests
    async def put_pending(self, pending: PendingAuthorization) -> None:
        """See ``AuthorizationStore.put_pending``."""
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
        """See ``AuthorizationStore.get_pending``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT body, user FROM oauth_pending WHERE id = ? AND expires_at > ?", (pending_id, now)
            ).fetchone(),
            write=False,
        )
        return _pending_from(row[0], row[1]) if row else None

    async def set_pending_user(self, pending_id: str, user: UserIdentity) -> None:
        """See ``AuthorizationStore.set_pending_user``."""
        await self._run(
            lambda c: c.execute("UPDATE oauth_pending SET user = ? WHERE id = ?", (user.to_json(), pending_id))
        )

    async def take_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """See ``AuthorizationStore.take_pending``."""
        row = await self._run(
            lambda c: c.execute(
                "DELETE FROM oauth_pending WHERE id = ? AND expires_at > ? RETURNING body, user", (pending_id, now)
            ).fetchone()
        )
        return _pending_from(row[0], row[1]) if row else None

    async def claim_state(self, client_id: str, state: str, expires_at: float) -> bool:
        """See ``AuthorizationStore.claim_state``."""
        cursor = await self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO oauth_states (client_id, state, expires_at) VALUES (?, ?, ?)",
                (client_id, state, expires_at),
            )
        )
        return cursor.rowcount == 1

    # authorization codes
    async def put_code(self, code_digest: str, code: AuthorizationCode) -> None:
        """See ``AuthorizationStore.put_code``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_codes (digest, grant_json, redirect_uri, code_challenge, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (code_digest, code.grant.to_json(), code.redirect_uri, code.code_challenge, code.expires_at),
            )
        )

    async def redeem_code(self, code_digest: str, family_id: str | None = None) -> AuthorizationCode | None:
        """See ``AuthorizationStore.redeem_code``."""

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

    # refresh-token families
    async def create_family(self, family_id: str, grant: Grant, expires_at: float, now: float) -> None:
        """See ``AuthorizationStore.create_family``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_families (id, grant_json, sub, client_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET grant_json = excluded.grant_json, "
                "sub = excluded.sub, client_id = excluded.client_id, expires_at = excluded.expires_at",
                (family_id, grant.to_json(), grant.user.sub, grant.client_id, now, expires_at),
            )
        )

    async def family_revoked(self, family_id: str) -> bool:
        """See ``AuthorizationStore.family_revoked``."""
        row = await self._run(
            lambda c: c.execute("SELECT revoked_at FROM oauth_families WHERE id = ?", (family_id,)).fetchone(),
            write=False,
        )
        return row is not None and row[0] is not None

    async def add_refresh(self, token_digest: str, family_id: str, now: float) -> None:
        """See ``AuthorizationStore.add_refresh``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_refresh_tokens (digest, family_id, created_at) VALUES (?, ?, ?)",
                (token_digest, family_id, now),
            )
        )

    async def peek_refresh(self, token_digest: str) -> RefreshUse | None:
        """See ``AuthorizationStore.peek_refresh``."""
        return await self._refresh(token_digest, None)

    async def use_refresh(self, token_digest: str, now: float) -> RefreshUse | None:
        """See ``AuthorizationStore.use_refresh``."""
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
        """See ``AuthorizationStore.add_access_token``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_access_tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
                (jti, family_id, expires_at),
            )
        )

    async def revoke_family(self, family_id: str, now: float) -> list[tuple[str, int]]:
        """See ``AuthorizationStore.revoke_family``."""

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
        """See ``AuthorizationStore.family_of``."""
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
        """See ``AuthorizationStore.families_of``."""
        sql = "SELECT id FROM oauth_families WHERE sub = ? AND revoked_at IS NULL"
        params: tuple[str, ...] = (sub,)
        if client_id is not None:
            sql, params = sql + " AND client_id = ?", (sub, client_id)
        rows = await self._run(lambda c: c.execute(sql, params).fetchall(), write=False)
        return [str(row[0]) for row in rows]

    # consents
    async def get_consent(self, sub: str, client_id: str, route: str) -> Consent | None:
        """See ``AuthorizationStore.get_consent``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT scopes, granted_at FROM oauth_consents WHERE sub = ? AND client_id = ? AND route = ?",
                (sub, client_id, route),
            ).fetchone(),
            write=False,
        )
        return Consent(sub, client_id, route, tuple(json.loads(row[0])), row[1]) if row else None

    async def put_consent(self, consent: Consent) -> None:
        """See ``AuthorizationStore.put_consent``."""
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO oauth_consents (sub, client_id, route, scopes, granted_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (consent.sub, consent.client_id, consent.route, json.dumps(list(consent.scopes)), consent.granted_at),
            )
        )

    async def list_consents(self, sub: str | None) -> list[Consent]:
        """See ``AuthorizationStore.list_consents``."""
        sql = "SELECT sub, client_id, route, scopes, granted_at FROM oauth_consents"
        params: tuple[str, ...] = ()
        if sub is not None:
            sql, params = sql + " WHERE sub = ?", (sub,)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY granted_at", params).fetchall(), write=False)
        return [Consent(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4]) for r in rows]

    async def delete_consents(self, sub: str, client_id: str | None) -> int:
        """See ``AuthorizationStore.delete_consents``."""
        sql = "DELETE FROM oauth_consents WHERE sub = ?"
        params: tuple[str, ...] = (sub,)
        if client_id is not None:
            sql, params = sql + " AND client_id = ?", (sub, client_id)
        cursor = await self._run(lambda c: c.execute(sql, params))
        return int(cursor.rowcount)

    # browser sign-ins
    async def put_sign_in(self, cookie_digest: str, user: UserIdentity, expires_at: float) -> None:
        """See ``AuthorizationStore.put_sign_in``."""
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO oauth_sign_ins (digest, user, expires_at) VALUES (?, ?, ?)",
                (cookie_digest, user.to_json(), expires_at),
            )
        )

    async def get_sign_in(self, cookie_digest: str, now: float) -> UserIdentity | None:
        """See ``AuthorizationStore.get_sign_in``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT user FROM oauth_sign_ins WHERE digest = ? AND expires_at > ?", (cookie_digest, now)
            ).fetchone(),
            write=False,
        )
        return UserIdentity.from_json(row[0]) if row else None

    # sign-ins waiting for an identity provider
    async def put_federated(self, state_digest: str, sign_in: FederatedSignIn) -> None:
        """See ``AuthorizationStore.put_federated``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_federated (digest, body, expires_at) VALUES (?, ?, ?)",
                (state_digest, sign_in.to_json(), sign_in.expires_at),
            )
        )

    async def take_federated(self, state_digest: str, now: float) -> FederatedSignIn | None:
        """See ``AuthorizationStore.take_federated``."""
        row = await self._run(
            lambda c: c.execute(
                "DELETE FROM oauth_federated WHERE digest = ? AND expires_at > ? RETURNING body", (state_digest, now)
            ).fetchone()
        )
        return FederatedSignIn.from_json(row[0]) if row else None

    # dynamically registered clients
    async def put_client(self, client_id: str, metadata: dict[str, Any], now: float) -> None:
        """See ``AuthorizationStore.put_client``."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_clients (client_id, metadata, created_at) VALUES (?, ?, ?)",
                (client_id, json.dumps(metadata), now),
            )
        )

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        """See ``AuthorizationStore.get_client``."""
        row = await self._run(
            lambda c: c.execute("SELECT metadata FROM oauth_clients WHERE client_id = ?", (client_id,)).fetchone(),
            write=False,
        )
        return dict(json.loads(row[0])) if row else None

    async def purge(self, now: float) -> int:
        """See ``AuthorizationStore.purge``. Codes are kept a day past expiry so a late replay is still caught."""

        def work(c: sqlite3.Connection) -> int:
            deleted = 0
            for sql, params in (
                ("DELETE FROM oauth_pending WHERE expires_at <= ?", (now,)),
                ("DELETE FROM oauth_states WHERE expires_at <= ?", (now,)),
                ("DELETE FROM oauth_codes WHERE expires_at <= ?", (now - 86400,)),
                ("DELETE FROM oauth_sign_ins WHERE expires_at <= ?", (now,)),
                ("DELETE FROM oauth_federated WHERE expires_at <= ?", (now,)),
                ("DELETE FROM oauth_access_tokens WHERE expires_at <= ?", (now,)),
                (
                    "DELETE FROM oauth_refresh_tokens WHERE family_id IN "
                    "(SELECT id FROM oauth_families WHERE expires_at <= ?)",
                    (now,),
                ),
                ("DELETE FROM oauth_families WHERE expires_at <= ?", (now,)),
            ):
                deleted += c.execute(sql, params).rowcount
            return deleted

        return await self._run(work)
