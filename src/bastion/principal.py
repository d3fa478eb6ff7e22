"""The authenticated caller: the result of the authenticate stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BASTION_IDP", "IDP_NAME_PATTERN", "RESERVED_IDPS", "USERS_FILE_IDP", "Principal"]

#: What a configured identity provider or external issuer may be named (``Principal.idp``).
IDP_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"

#: ``Principal.idp`` of a person who signed in with the local users file (development sign-in).
#: Reserved: no identity provider or external issuer may be given this name.
USERS_FILE_IDP = "local"
#: ``Principal.idp`` of a token Bastion minted on its own authority, with nobody signing in:
#: ``bastion token mint`` (users and service accounts alike) and the demo's tokens. Reserved too.
BASTION_IDP = "bastion"
#: The names Bastion gives itself; a configured provider or issuer named so is refused.
RESERVED_IDPS = frozenset({USERS_FILE_IDP, BASTION_IDP})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by a verified access token.

    ``kind`` maps to the Cedar entity type (``User`` or ``ServiceAccount``).
    ``sub`` is the token subject, ``issuer`` the token's ``iss``; ``groups``
    become Cedar ``Group`` parents. ``auth_method`` is ``"bastion_jwt"`` for a
    token Bastion minted, ``"external_jwt"`` for a trusted external issuer.
    ``token_id`` is the ``jti`` (RFC 7519 section 4.1.7); ``expires_at`` is the
    ``exp`` claim in seconds since the epoch.

    ``idp`` names who vouched for the subject, which ``issuer`` cannot tell (Bastion is
    the issuer of every token it mints): the configured ``name`` of the OpenID Connect
    provider the person signed in with, ``USERS_FILE_IDP`` for the users file,
    ``BASTION_IDP`` for ``bastion token mint``, an external issuer's configured ``name``
    (else its issuer URL). Left empty, it is ``issuer``: the documented fallback for
    Bastion tokens minted before the ``bastion_idp`` claim existed.
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
    idp: str = ""

    def __post_init__(self) -> None:
        if not self.idp:
            object.__setattr__(self, "idp", self.issuer)  # frozen: set once, here

    @property
    def key(self) -> str:
        """A stable identity key for binding sessions: issuer and subject."""
        return f"{self.issuer}\x1f{self.sub}"
