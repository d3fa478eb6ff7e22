"""The authenticated caller: the result of the authenticate stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by a verified access token.

    ``kind`` maps to the Cedar entity type (``User`` or ``ServiceAccount``).
    ``sub`` is the token subject, ``issuer`` the token's ``iss``; ``groups``
    become Cedar ``Group`` parents. ``auth_method`` is ``"bastion_jwt"`` for a
    token Bastion minted, ``"external_jwt"`` for a trusted external issuer.
    ``token_id`` is the ``jti`` (RFC 7519 section 4.1.7); ``expires_at`` is the
    ``exp`` claim in seconds since the epoch.
    """

    kind: Literal["User", "ServiceAccount"]
    sub: str
    issuer: str
    auth_method: str
    expires_at: int
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()
    client_id: str | None = None
    token_id: str | None = None
    scopes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A stable identity key for binding sessions: issuer and subject."""
        return f"{self.issuer}\x1f{self.sub}"
