"""The token vault: each user's upstream tokens, sealed with AES-256-GCM at rest.

A record is sealed with the current key (``cryptography``'s ``AESGCM``, a fresh
96-bit nonce per seal, NIST SP 800-38D) and its associated data names its owner,
route and kind, so a sealed value copied into another user's row does not open
(the tag fails). The key id stored beside each record (the first 16 hex digits of
the key's SHA-256) says which key opens it; previous keys open old records until
``rotate`` re-seals them with the current key.

    keys = VaultKeys.from_settings(config.credentials)       # ConfigError when a key is bad
    vault = TokenVault(data_dir / "bastion.db", keys)
    await vault.start()
    await vault.put(owner, route, TokenSet(...), now=time.time())
    tokens = await vault.get(owner, route)                    # TokenSet | None

What is stored sealed: access and refresh tokens, a registered client's secret, an
unfinished connection's PKCE verifier. What is stored in clear: owner (issuer and
subject of the Bastion principal), route name, key id, times.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.config.base import SecretRef
from bastion.config.credentials import VaultSettings
from bastion.errors import ConfigError, VaultError
from bastion.stores.sqlite import SQLiteTables

__all__ = ["Connection", "PendingConnection", "TokenSet", "TokenVault", "VaultKeys", "generate_key"]

_KEY_BYTES = 32
_NONCE_BYTES = 12


def generate_key() -> str:
    """A new vault key: 32 random bytes (``secrets``) as unpadded base64url, 43 characters."""
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).rstrip(b"=").decode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: a vault key is 32 bytes written as base64url") from None
    if len(raw) != _KEY_BYTES:
        raise ConfigError(f"{where}: a vault key is 32 bytes written as base64url, this one is {len(raw)} bytes")
    return raw


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class VaultKeys:
    """The current AES-256 key (seals and opens) and previous ones (open only).

    ``current`` and ``previous`` are raw 32-byte keys. Raises ``ConfigError`` when
    two of them are the same key.
    """

    def __init__(self, current: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self.current_id = _key_id(current)
        self._keys = {self.current_id: AESGCM(current)}
        for key in previous:
            key_id = _key_id(key)
            if key_id in self._keys:
                raise ConfigError("credentials: the same vault key is listed twice")
            self._keys[key_id] = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> VaultKeys:
        """Resolve and decode ``credentials.vault_key`` and ``previous_vault_keys``.

        Raises ``ConfigError`` when no key is configured, a reference cannot be
        resolved, or a key is not 32 bytes of base64url.
        """
        if settings.vault_key is None:
            raise ConfigError("credentials.vault_key is not configured")

        def load(ref: SecretRef, where: str) -> bytes:
            try:
                text = ref.resolve()
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc.message}") from exc
            return _decode_key(text, where)

        current = load(settings.vault_key, "credentials.vault_key")
        previous = tuple(
            load(ref, f"credentials.previous_vault_keys.{i}") for i, ref in enumerate(settings.previous_vault_keys)
        )
        return cls(current, previous)

    def seal(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes]:
        """``(key id, nonce || ciphertext || tag)`` under the current key, bound to ``associated``."""
        nonce = os.urandom(_NONCE_BYTES)
        return self.current_id, nonce + self._keys[self.current_id].encrypt(nonce, plaintext, associated)

    def open(self, key_id: str, sealed: bytes, associated: bytes) -> bytes:
        """The plaintext of ``sealed``. Raises ``VaultError`` for an unknown key or a failed tag."""
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise VaultError(f"a vault record is sealed with key {key_id}, which is not configured")
        try:
            return cipher.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)
        except InvalidTag:
            raise VaultError("a vault record does not verify (tampered or moved)") from None


@dataclass(frozen=True, slots=True)
class TokenSet:
    """One user's tokens for one upstream (RFC 6749 section 5.1) and the client they were issued to.

    ``expires_at`` is epoch seconds (``None``: the server gave no lifetime);
    ``issuer`` the authorization server's issuer; ``client_id`` Bastion's client id there.
    """

    access_token: str
    token_type: str
    issuer: str
    client_id: str
    refresh_token: str | None = None
    expires_at: float | None = None
    scope: str | None = None

    def __repr__(self) -> str:
        return f"TokenSet(issuer={self.issuer!r}, expires_at={self.expires_at!r}, scope={self.scope!r})"


@dataclass(frozen=True, slots=True)
class PendingConnection:
    """A connection a person started in the portal, between the redirect and the callback.

    ``owner`` is the Bastion principal key, ``browser`` the SHA-256 of the browser
    cookie that started it; ``code_verifier`` the PKCE verifier (RFC 7636), sealed
    at rest. ``expires_at`` is epoch seconds.
    """

    owner: str
    route: str
    browser: str
    code_verifier: str
    issuer: str
    client_id: str
    redirect_uri: str
    expires_at: float

    def __repr__(self) -> str:
        return f"PendingConnection(owner={self.owner!r}, route={self.route!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True, slots=True)
class Connection:
    """What the portal shows of a stored connection (nothing secret): times in epoch seconds."""

    route: str
    connected_at: float
    expires_at: float | None
    refreshable: bool


_DDL = """
CREATE TABLE IF NOT EXISTS vault_tokens (
    owner TEXT NOT NULL, route TEXT NOT NULL, key_id TEXT NOT NULL, sealed BLOB NOT NULL,
    connected_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL, refreshable INTEGER NOT NULL,
    PRIMARY KEY (owner, route));
CREATE TABLE IF NOT EXISTS vault_pending (
    state_digest TEXT PRIMARY KEY, key_id TEXT NOT NULL, sealed BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vault_clients (
    route TEXT NOT NULL, issuer TEXT NOT NULL, key_id TEXT NOT NULL, sealed BLOB NOT NULL,
    registered_at REAL NOT NULL, PRIMARY KEY (route, issuer));
"""


def _aad(*parts: str) -> bytes:
    return "\x1f".join(parts).encode()


class TokenVault(SQLiteTables):
    """Sealed upstream tokens per (owner, route), unfinished connections, registered clients.

    ``owner`` is ``Principal.key`` (issuer and subject). Every method may raise
    ``sqlite3.Error``; ``get``/``take_pending``/``get_client`` raise ``VaultError``
    when a record cannot be opened.
    """

    DDL = _DDL
    LABEL = "token vault"

    def __init__(self, path: Path, keys: VaultKeys, *, busy_timeout_s: float = 5.0) -> None:
        super().__init__(path, busy_timeout_s=busy_timeout_s)
        self._keys = keys

    def _seal(self, value: dict[str, Any], *aad: str) -> tuple[str, bytes]:
        return self._keys.seal(json.dumps(value, separators=(",", ":")).encode(), _aad(*aad))

    def _unseal(self, key_id: str, sealed: bytes, *aad: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self._keys.open(key_id, sealed, _aad(*aad)))
        return value

    # tokens
    async def put(self, owner: str, route: str, tokens: TokenSet, *, now: float) -> None:
        """Store (or replace) ``owner``'s tokens for ``route``, sealed; ``now`` is epoch seconds."""
        key_id, sealed = self._seal(asdict(tokens), "tokens", owner, route)
        await self._run(
            lambda c: c.execute(
                "INSERT INTO vault_tokens (owner, route, key_id, sealed, connected_at, updated_at, expires_at, "
                "refreshable) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, route) DO UPDATE SET "
                "key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at, "
                "expires_at = excluded.expires_at, refreshable = excluded.refreshable",
                (owner, route, key_id, sealed, now, now, tokens.expires_at, int(tokens.refresh_token is not None)),
            )
        )

    async def get(self, owner: str, route: str) -> TokenSet | None:
        """``owner``'s tokens for ``route``, or ``None`` when not connected."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT key_id, sealed FROM vault_tokens WHERE owner = ? AND route = ?", (owner, route)
            ).fetchone(),
            write=False,
        )
        return None if row is None else TokenSet(**self._unseal(row[0], row[1], "tokens", owner, route))

    async def delete(self, owner: str, route: str) -> bool:
        """Forget ``owner``'s tokens for ``route``; True when there were some."""
        count = await self._run(
            lambda c: c.execute("DELETE FROM vault_tokens WHERE owner = ? AND route = ?", (owner, route)).rowcount
        )
        return bool(count)

    async def connections(self, owner: str) -> dict[str, Connection]:
        """``owner``'s connections by route (no secrets are opened)."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT route, connected_at, expires_at, refreshable FROM vault_tokens WHERE owner = ?", (owner,)
            ).fetchall(),
            write=False,
        )
        return {row[0]: Connection(row[0], row[1], row[2], bool(row[3])) for row in rows}

    # unfinished connections
    async def put_pending(self, state_digest: str, pending: PendingConnection) -> None:
        """Keep ``pending`` under the SHA-256 of its ``state`` until ``pending.expires_at``."""
        key_id, sealed = self._seal(asdict(pending), "pending", state_digest)
        await self._run(
            lambda c: c.execute(
                "INSERT INTO vault_pending (state_digest, key_id, sealed, expires_at) VALUES (?, ?, ?, ?)",
                (state_digest, key_id, sealed, pending.expires_at),
            )
        )

    async def take_pending(self, state_digest: str, now: float) -> PendingConnection | None:
        """Remove and return the unexpired pending connection for ``state_digest`` (single use)."""
        row = await self._run(
            lambda c: c.execute(
                "DELETE FROM vault_pending WHERE state_digest = ? RETURNING key_id, sealed, expires_at",
                (state_digest,),
            ).fetchone()
        )
        if row is None or row[2] <= now:
            return None
        return PendingConnection(**self._unseal(row[0], row[1], "pending", state_digest))

    # clients Bastion registered at upstream authorization servers (RFC 7591)
    async def put_client(self, route: str, issuer: str, client: dict[str, Any], *, now: float) -> None:
        """Keep the registration response ``client`` (RFC 7591 section 3.2.1) for ``route`` at ``issuer``."""
        key_id, sealed = self._seal(client, "client", route, issuer)
        await self._run(
            lambda c: c.execute(
                "INSERT INTO vault_clients (route, issuer, key_id, sealed, registered_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (route, issuer) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, "
                "registered_at = excluded.registered_at",
                (route, issuer, key_id, sealed, now),
            )
        )

    async def get_client(self, route: str, issuer: str) -> dict[str, Any] | None:
        """The registration kept for ``route`` at ``issuer``, or ``None``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT key_id, sealed FROM vault_clients WHERE route = ? AND issuer = ?", (route, issuer)
            ).fetchone(),
            write=False,
        )
        return None if row is None else self._unseal(row[0], row[1], "client", route, issuer)

    async def purge(self, now: float) -> int:
        """Delete expired pending connections; returns how many."""
        return int(
            await self._run(lambda c: c.execute("DELETE FROM vault_pending WHERE expires_at <= ?", (now,)).rowcount)
        )

    async def rotate(self) -> int:
        """Re-seal every record with the current key; returns how many were re-sealed.

        Raises ``VaultError`` (and changes nothing) when a record cannot be opened
        with the configured keys.
        """

        def work(c: sqlite3.Connection) -> int:
            count = 0
            tables = (
                ("vault_tokens", ("owner", "route"), "tokens"),
                ("vault_pending", ("state_digest",), "pending"),
                ("vault_clients", ("route", "issuer"), "client"),
            )
            for table, columns, kind in tables:
                names = ", ".join(columns)
                rows = c.execute(f"SELECT {names}, key_id, sealed FROM {table} WHERE key_id != ?",  # noqa: S608
                                 (self._keys.current_id,)).fetchall()  # fmt: skip
                for row in rows:
                    ids = tuple(str(v) for v in row[: len(columns)])
                    plain = self._keys.open(row[-2], row[-1], _aad(kind, *ids))
                    key_id, sealed = self._keys.seal(plain, _aad(kind, *ids))
                    where = " AND ".join(f"{col} = ?" for col in columns)
                    c.execute(f"UPDATE {table} SET key_id = ?, sealed = ? WHERE {where}",  # noqa: S608
                              (key_id, sealed, *ids))  # fmt: skip
                    count += 1
            return count

        return await self._run(work)
