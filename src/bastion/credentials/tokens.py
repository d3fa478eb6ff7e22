"""The upstream access token value every credential source hands to the forward stage."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UpstreamToken"]


@dataclass(frozen=True, slots=True)
class UpstreamToken:
    """An access token for one upstream (RFC 6749 section 5.1).

    ``token_type`` is the response's ``token_type`` (only ``Bearer`` is presented,
    RFC 6750 section 2.1); ``expires_at`` is epoch seconds (``None`` when the
    authorization server gave no ``expires_in``); ``scope`` the granted scope string.
    """

    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the token type, not a secret
    expires_at: float | None = None
    scope: str | None = None

    def header(self) -> dict[str, str]:
        """The request header that presents this token: ``{"authorization": "Bearer <token>"}``."""
        return {"authorization": f"Bearer {self.access_token}"}

    def fresh(self, now: float, margin_s: float) -> bool:
        """True when the token does not expire within ``margin_s`` seconds of ``now`` (epoch seconds)."""
        return self.expires_at is None or self.expires_at - margin_s > now

    def __repr__(self) -> str:
        return f"UpstreamToken(token_type={self.token_type!r}, expires_at={self.expires_at!r}, scope={self.scope!r})"
