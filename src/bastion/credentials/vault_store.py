"""Where the token vault keeps its sealed records: one small async interface.

``TokenVault`` (``bastion.credentials.vault``) seals and opens; a ``VaultStore`` only keeps
what it is given, already sealed (``Sealed``: key id and AES-GCM blob), beside the little it
needs in clear to find and expire records: owner and route, the state digest of an
unfinished connection, the issuer of a registered client, and times (wall-clock epoch
seconds). A backend never sees a token.

Three kinds of record, each with its ids (the same ids the seal's associated data names):
``tokens`` by ``(owner, route)``, ``pending`` by ``(state_digest,)``, ``client`` by
``(route, issuer)``. Every method is atomic on its own; ``take_pending`` is single use
across replicas; ``reseal`` replaces records all at once or not at all; ``refreshing`` lets one
holder at a time, across replicas, refresh one person's tokens for one route.

The embedded backend is ``bastion.credentials.vault_sqlite.SQLiteVaultStore``, the shared one
``bastion.credentials.vault_postgres.PostgresVaultStore``; the contract suite is
``tests/unit/stores/test_contract_vault.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from bastion.stores.lifecycle import Lifecycle

__all__ = ["Connection", "RecordKind", "Sealed", "VaultStore"]

RecordKind = Literal["tokens", "pending", "client"]


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed record: ``key_id`` names the vault key that opens it; ``blob`` is nonce || ciphertext || tag."""

    key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r}, {len(self.blob)} bytes)"


@dataclass(frozen=True, slots=True)
class Connection:
    """What the portal shows of a stored connection (nothing secret): times in epoch seconds."""

    route: str
    connected_at: float
    expires_at: float | None
    refreshable: bool


class VaultStore(Lifecycle, Protocol):
    """Sealed upstream tokens per (owner, route), unfinished connections, registered clients."""

    async def put_tokens(
        self, owner: str, route: str, sealed: Sealed, *, expires_at: float | None, refreshable: bool, now: float
    ) -> None:
        """Store (or replace) ``owner``'s tokens for ``route``; a replacement keeps the first
        ``connected_at``. ``expires_at`` and ``refreshable`` describe the tokens for ``connections``."""
        ...

    async def get_tokens(self, owner: str, route: str) -> Sealed | None:
        """``owner``'s sealed tokens for ``route``, or ``None``."""
        ...

    async def delete_tokens(self, owner: str, route: str) -> bool:
        """Forget ``owner``'s tokens for ``route``; True when there were some."""
        ...

    async def connections(self, owner: str) -> list[Connection]:
        """``owner``'s connections, ordered by route."""
        ...

    async def put_pending(self, state_digest: str, sealed: Sealed, expires_at: float) -> None:
        """Keep an unfinished connection under the digest of its ``state`` until ``expires_at``."""
        ...

    async def take_pending(self, state_digest: str, now: float) -> Sealed | None:
        """Remove the unfinished connection (single use, across replicas) and return it unless it
        had expired at ``now``."""
        ...

    async def put_client(self, route: str, issuer: str, sealed: Sealed, *, now: float) -> None:
        """Keep (or replace) the registration of ``route``'s client at ``issuer``."""
        ...

    async def get_client(self, route: str, issuer: str) -> Sealed | None:
        """The sealed registration of ``route``'s client at ``issuer``, or ``None``."""
        ...

    async def purge(self, now: float) -> int:
        """Delete the unfinished connections expired at ``now``; returns how many."""
        ...

    def refreshing(self, owner: str, route: str) -> AbstractAsyncContextManager[None]:
        """Hold ``owner``'s tokens for ``route`` while they are refreshed (``async with``): a second
        holder, through any handle on the same backend (another replica), waits until the first
        leaves, then reads what it stored; so one upstream refresh token is presented once."""
        ...

    async def reseal(self, current_key_id: str, reseal: Callable[[RecordKind, tuple[str, ...], Sealed], Sealed]) -> int:
        """Replace every record sealed with another key than ``current_key_id`` by
        ``reseal(kind, ids, record)``, all in one atomic step; returns how many. When ``reseal``
        raises, nothing is changed and the error propagates."""
        ...
