"""The token vault: each user's upstream tokens, sealed with AES-256-GCM at rest.

A record is sealed with the current key (``cryptography``'s ``AESGCM``, a fresh
96-bit nonce per seal, NIST SP 800-38D) and its associated data names its owner,
route and kind, so a sealed value copied into another user's row does not open
(the tag fails). The key id stored beside each record (the first 16 hex digits of
the key's SHA-256) says which key opens it; previous keys open old records until
``rotate`` re-seals them with the current key.

    keys = VaultKeys.from_settings(config.credentials)       # ConfigError when a key is bad
    vault = TokenVault(SQLiteVaultStore(data_dir / "bastion.db"), keys)
    await vault.start()
    await vault.put(owner, route, TokenSet(...), now=time.time())
    tokens = await vault.get(owner, route)                    # TokenSet | None

What is stored sealed: access and refresh tokens, a registered client's secret, an
unfinished connection's PKCE verifier. What is stored in clear: owner (issuer and
subject of the Bastion principal), route name, key id, times. Where it is stored is the
``VaultStore`` the vault is given (``bastion.credentials.vault_store``; the data directory's
SQLite file, or PostgreSQL with ``stores.postgres``, shared by every replica): the vault seals
before anything reaches the store, so no backend ever holds a token in clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from typing import Any, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.config.base import SecretRef
from bastion.config.credentials import VaultSettings
from bastion.credentials.vault_store import Connection, RecordKind, Sealed, VaultStore
from bastion.errors import ConfigError, VaultError

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


def _aad(*parts: str) -> bytes:
    return "\x1f".join(parts).encode()


class TokenVault:
    """Sealed upstream tokens per (owner, route), unfinished connections, registered clients,
    kept in ``store``.

    ``owner`` is ``Principal.key`` (issuer and subject). Every method may raise the store's
    errors (``sqlite3.Error`` for the embedded one, ``asyncpg``'s or ``OSError`` for PostgreSQL);
    ``get``/``take_pending``/``get_client`` raise ``VaultError`` when a record cannot be opened.
    ``start``/``close`` (or ``async with``) open and close the store.
    """

    def __init__(self, store: VaultStore, keys: VaultKeys) -> None:
        self._store = store
        self._keys = keys

    async def start(self) -> None:
        """Open the store."""
        await self._store.start()

    async def close(self) -> None:
        """Close the store (idempotent)."""
        await self._store.close()

    async def __aenter__(self) -> Self:
        """``start`` and return the vault."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """``close``."""
        await self.close()

    def _seal(self, value: dict[str, Any], kind: RecordKind, *ids: str) -> Sealed:
        key_id, blob = self._keys.seal(json.dumps(value, separators=(",", ":")).encode(), _aad(kind, *ids))
        return Sealed(key_id, blob)

    def _unseal(self, sealed: Sealed, kind: RecordKind, *ids: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self._keys.open(sealed.key_id, sealed.blob, _aad(kind, *ids)))
        return value

    # tokens
    async def put(self, owner: str, route: str, tokens: TokenSet, *, now: float) -> None:
        """Store (or replace) ``owner``'s tokens for ``route``, sealed; ``now`` is epoch seconds."""
        sealed = self._seal(asdict(tokens), "tokens", owner, route)
        await self._store.put_tokens(
            owner, route, sealed, expires_at=tokens.expires_at, refreshable=tokens.refresh_token is not None, now=now
        )

    async def get(self, owner: str, route: str) -> TokenSet | None:
        """``owner``'s tokens for ``route``, or ``None`` when not connected."""
        sealed = await self._store.get_tokens(owner, route)
        return None if sealed is None else TokenSet(**self._unseal(sealed, "tokens", owner, route))

    async def delete(self, owner: str, route: str) -> bool:
        """Forget ``owner``'s tokens for ``route``; True when there were some."""
        return await self._store.delete_tokens(owner, route)

    async def connections(self, owner: str) -> dict[str, Connection]:
        """``owner``'s connections by route (no secrets are opened)."""
        return {connection.route: connection for connection in await self._store.connections(owner)}

    # unfinished connections
    async def put_pending(self, state_digest: str, pending: PendingConnection) -> None:
        """Keep ``pending`` under the SHA-256 of its ``state`` until ``pending.expires_at``."""
        sealed = self._seal(asdict(pending), "pending", state_digest)
        await self._store.put_pending(state_digest, sealed, pending.expires_at)

    async def take_pending(self, state_digest: str, now: float) -> PendingConnection | None:
        """Remove and return the unexpired pending connection for ``state_digest`` (single use)."""
        sealed = await self._store.take_pending(state_digest, now)
        return None if sealed is None else PendingConnection(**self._unseal(sealed, "pending", state_digest))

    # clients Bastion registered at upstream authorization servers (RFC 7591)
    async def put_client(self, route: str, issuer: str, client: dict[str, Any], *, now: float) -> None:
        """Keep the registration response ``client`` (RFC 7591 section 3.2.1) for ``route`` at ``issuer``."""
        await self._store.put_client(route, issuer, self._seal(client, "client", route, issuer), now=now)

    async def get_client(self, route: str, issuer: str) -> dict[str, Any] | None:
        """The registration kept for ``route`` at ``issuer``, or ``None``."""
        sealed = await self._store.get_client(route, issuer)
        return None if sealed is None else self._unseal(sealed, "client", route, issuer)

    async def purge(self, now: float) -> int:
        """Delete expired pending connections; returns how many."""
        return await self._store.purge(now)

    def refreshing(self, owner: str, route: str) -> AbstractAsyncContextManager[None]:
        """Hold ``owner``'s tokens for ``route`` while refreshing them: one holder at a time, on every
        replica sharing the store (``VaultStore.refreshing``)."""
        return self._store.refreshing(owner, route)

    async def rotate(self) -> int:
        """Re-seal every record with the current key; returns how many were re-sealed.

        Raises ``VaultError`` (and changes nothing) when a record cannot be opened
        with the configured keys.
        """

        def reseal(kind: RecordKind, ids: tuple[str, ...], sealed: Sealed) -> Sealed:
            associated = _aad(kind, *ids)
            key_id, blob = self._keys.seal(self._keys.open(sealed.key_id, sealed.blob, associated), associated)
            return Sealed(key_id, blob)

        return await self._store.reseal(self._keys.current_id, reseal)
