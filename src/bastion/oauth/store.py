"""The authorization server's records, split by how long they live: two small async interfaces.

``AuthorizationFlowStore`` keeps what one sign-in or authorization flow needs for minutes
(pending requests, clients' ``state`` values, codes, browser sign-ins, sign-ins waiting
at an identity provider): short-lived, single-use, a fit for an expiring key-value store.
``AuthorizationGrantStore`` keeps what outlives a flow (refresh-token families and the
access tokens issued from them, consents, dynamically registered clients): durable,
queried by user, a fit for a database. ``AuthorizationStore`` is both, as the embedded
backend provides them in one SQLite file; a deployment may back each by a different store.

Every method is atomic on its own. The single-use operations (``take_pending``,
``redeem_code``, ``use_refresh``, ``claim_state``, ``take_federated``) must stay correct
when two requests race, on one replica or several: exactly one caller sees a first use.
Times are wall-clock epoch seconds (float). The embedded backends are ``SQLiteFlowStore``,
``SQLiteGrantStore`` and ``SQLiteAuthorizationStore`` (both); the shared ones, for replicas,
``PostgresFlowStore``, ``PostgresGrantStore`` and ``PostgresAuthorizationStore`` (both; with
``stores.postgres``). The contract suite is ``tests/unit/stores/test_contract_authorization.py``.
"""

from __future__ import annotations

from typing import Any, Protocol

from bastion.oauth.records import (
    AuthorizationCode,
    Consent,
    FederatedSignIn,
    Grant,
    PendingAuthorization,
    RefreshUse,
    UserIdentity,
)
from bastion.stores.lifecycle import Lifecycle

__all__ = ["CODE_REPLAY_WINDOW_S", "AuthorizationFlowStore", "AuthorizationGrantStore", "AuthorizationStore"]

CODE_REPLAY_WINDOW_S = 86400
"""Codes are kept this long past expiry (seconds), so that a late replay is still caught (and its
family revoked: RFC 6749 section 10.5)."""


class AuthorizationFlowStore(Lifecycle, Protocol):
    """Pending authorization requests, clients' ``state`` values, authorization codes, browser
    sign-ins and sign-ins at identity providers: minutes to hours, then purged."""

    # pending authorization requests
    async def put_pending(self, pending: PendingAuthorization) -> None:
        """Keep ``pending`` until it is taken or expires."""
        ...

    async def get_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """The unexpired request ``pending_id``, or None."""
        ...

    async def set_pending_user(self, pending_id: str, user: UserIdentity) -> None:
        """Record who signed in for ``pending_id``."""
        ...

    async def take_pending(self, pending_id: str, now: float) -> PendingAuthorization | None:
        """Remove and return the unexpired request (single use): a second call gets None."""
        ...

    async def claim_state(self, client_id: str, state: str, expires_at: float) -> bool:
        """True the first time ``client_id`` presents ``state`` before ``expires_at``; False on reuse."""
        ...

    # authorization codes (by digest)
    async def put_code(self, code_digest: str, code: AuthorizationCode) -> None:
        """Keep an issued code."""
        ...

    async def redeem_code(self, code_digest: str, family_id: str | None = None) -> AuthorizationCode | None:
        """Mark the code used and return it, with ``used`` telling whether it had been used before.

        A first use records ``family_id``, the family its tokens will belong to, in the same
        step, so a replay racing the first redemption always knows which family to revoke.
        """
        ...

    # browser sign-ins (by cookie digest)
    async def put_sign_in(self, cookie_digest: str, user: UserIdentity, expires_at: float) -> None:
        """Keep a sign-in."""
        ...

    async def get_sign_in(self, cookie_digest: str, now: float) -> UserIdentity | None:
        """The unexpired sign-in, or None."""
        ...

    # sign-ins waiting for an OpenID Connect provider (by state digest)
    async def put_federated(self, state_digest: str, sign_in: FederatedSignIn) -> None:
        """Keep a sign-in sent to an identity provider until it comes back or expires."""
        ...

    async def take_federated(self, state_digest: str, now: float) -> FederatedSignIn | None:
        """Remove and return the unexpired sign-in (single use): a second call gets None."""
        ...

    async def purge(self, now: float) -> int:
        """Delete what expired before ``now`` (codes a day later, so a late replay is still
        caught); returns how many records."""
        ...


class AuthorizationGrantStore(Lifecycle, Protocol):
    """Refresh-token families (with the access tokens issued from them), consents and
    dynamically registered clients: days to forever."""

    # refresh-token families (tokens by digest)
    async def create_family(self, family_id: str, grant: Grant, expires_at: float, now: float) -> None:
        """Start a family for ``grant`` that ends at ``expires_at`` (revoked already if
        ``revoke_family`` came first)."""
        ...

    async def family_revoked(self, family_id: str) -> bool:
        """Whether the family was revoked."""
        ...

    async def add_refresh(self, token_digest: str, family_id: str, now: float) -> None:
        """Add a refresh token to a family."""
        ...

    async def peek_refresh(self, token_digest: str) -> RefreshUse | None:
        """What the token is, without recording a use (None: unknown token)."""
        ...

    async def use_refresh(self, token_digest: str, now: float) -> RefreshUse | None:
        """Record a use of the token and say what it was (None: unknown token)."""
        ...

    async def add_access_token(self, family_id: str, jti: str, expires_at: int) -> None:
        """Remember an access token issued from the family, so revoking the family revokes it."""
        ...

    async def revoke_family(self, family_id: str, now: float) -> list[tuple[str, int]]:
        """Revoke the family, even one not created yet; returns the ``(jti, exp)`` of its
        unexpired access tokens."""
        ...

    async def family_of(self, token_digest: str) -> tuple[str, str] | None:
        """``(family id, client id)`` of a refresh token, or None."""
        ...

    async def families_of(self, sub: str, client_id: str | None) -> list[str]:
        """The unrevoked families of a user (for one client, or all)."""
        ...

    # consents
    async def get_consent(self, sub: str, client_id: str, route: str) -> Consent | None:
        """The remembered consent, or None."""
        ...

    async def put_consent(self, consent: Consent) -> None:
        """Remember (or replace) a consent."""
        ...

    async def list_consents(self, sub: str | None) -> list[Consent]:
        """Every consent (of one user, or all), oldest first."""
        ...

    async def delete_consents(self, sub: str, client_id: str | None) -> int:
        """Forget a user's consents (for one client, or all); returns how many."""
        ...

    # dynamically registered clients (RFC 7591)
    async def put_client(self, client_id: str, metadata: dict[str, Any], now: float) -> None:
        """Keep a registered client's metadata."""
        ...

    async def get_client(self, client_id: str) -> dict[str, Any] | None:
        """A registered client's metadata, or None."""
        ...

    async def purge(self, now: float) -> int:
        """Delete expired families (with their refresh tokens) and access-token records
        expired before ``now``; returns how many records."""
        ...


class AuthorizationStore(AuthorizationFlowStore, AuthorizationGrantStore, Protocol):
    """Both kinds of records in one backend; ``purge`` purges both."""
