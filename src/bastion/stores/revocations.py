"""Revoked access tokens: the ids (``jti``) every replica must refuse until the token expires.

``RevocationStore`` is what the token verifier checks on every request and what the
authorization server, ``bastion token revoke`` and ``bastion consent revoke`` write to.
A revocation is kept until the token's own ``exp`` (epoch seconds) has passed; after
that the token is refused on ``exp`` alone, so ``prune`` may forget it. The gateway
prunes on its housekeeping schedule (``Gateway.sweep``).

``is_revoked`` is synchronous on purpose: it runs inside the verifier's CPU-only hot path
on every request, so every backend answers it from a view it keeps in the process and
refreshes behind the scenes, at most ``recheck_s`` seconds stale (the embedded backend
re-reads its table when a stamp file changes; a shared one would follow a change feed,
e.g. Redis pub/sub or PostgreSQL ``LISTEN``). A backend's own ``revoke`` is visible to its
``is_revoked`` at once. Writes and pruning are asynchronous.

The embedded backend is ``bastion.identity.revocation.RevocationList`` (table
``revoked_tokens`` in the data directory's SQLite file); the contract suite is
``tests/unit/stores/test_contract_revocations.py``.
"""

from __future__ import annotations

from typing import Protocol

from bastion.stores.lifecycle import Lifecycle

__all__ = ["RevocationStore"]


class RevocationStore(Lifecycle, Protocol):
    """The set of revoked token ids; ``start``/``close`` or ``async with`` (``Lifecycle``)."""

    async def revoke(self, jti: str, expires_at: int, *, now: float | None = None) -> None:
        """Record ``jti`` as revoked until ``expires_at`` (epoch s); ``now`` (epoch s, default the
        clock) is when. Idempotent: revoking again keeps the first time and the later expiry.
        Raises ``ValueError`` for an empty ``jti``; backend errors propagate (callers fail closed)."""
        ...

    def is_revoked(self, jti: str) -> bool:
        """True if ``jti`` was revoked by any writer (RFC 7009 section 2.2), from the backend's
        in-process view. Raises the backend's error when the view cannot be refreshed."""
        ...

    async def prune(self, now: float) -> int:
        """Forget revocations whose token expired before ``now`` (epoch s); returns how many."""
        ...
