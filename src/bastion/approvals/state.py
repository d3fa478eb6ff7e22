"""Bastion's own ``requestState`` for a confirmation asked through an MCP 2026-07-28 multi round-trip.

When a call needs the requester's confirmation (``@approval("confirm")``), a 2026-07-28 client is
answered with an ``InputRequiredResult`` carrying a URL-mode elicitation (the confirm page) and a
``requestState`` that Bastion, not the upstream, issued (MCP 2026-07-28 basic/patterns/mrtr: the
server protects its state; SEP-2322). The client retries the call with that state once the
person confirmed. The state is::

    bastion-approval.v1.<payload>.<mac>

``payload`` is base64url JSON ``{"a": approval id, "p": SHA-256 of Principal.key, "d": the
arguments' SHA-256, "e": expiry (epoch seconds), "n": nonce}`` and ``mac`` base64url
HMAC-SHA256 (RFC 2104) of ``payload`` under a key of 32 random bytes kept in the data directory
(``approval-state.key``, mode 0600). ``open`` accepts a state only for the same principal and
arguments, before its expiry, and once (the nonce; per process). Nothing in it is secret; the
MAC makes it unforgeable and the binding makes it useless to anyone else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["STATE_PREFIX", "RequestStateSealer", "is_bastion_state"]

STATE_PREFIX = "bastion-approval.v1."
_KEY_FILE = "approval-state.key"


def is_bastion_state(value: object) -> bool:
    """Whether a ``requestState`` is Bastion's own (not the upstream's)."""
    return isinstance(value, str) and value.startswith(STATE_PREFIX)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RequestStateSealer:
    """Seals and opens Bastion's approval ``requestState`` under ``key`` (32 bytes)."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("the request state key must be at least 32 bytes")
        self._key = key
        self._clock = clock
        self._used: dict[str, float] = {}

    @classmethod
    def load_or_create(cls, data_dir: Path) -> RequestStateSealer:
        """The sealer with the data directory's key, made (32 random bytes, mode 0600) if missing.
        Raises ``OSError`` when the file cannot be read or written."""
        path = data_dir / _KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
        return cls(key)

    def seal(self, approval_id: str, *, principal_key: str, arguments_sha256: str, expires_at: float) -> str:
        """A state naming ``approval_id``, bound to the principal and the arguments until ``expires_at``."""
        claims = {
            "a": approval_id,
            "p": hashlib.sha256(principal_key.encode()).hexdigest(),
            "d": arguments_sha256,
            "e": int(expires_at),
            "n": secrets.token_hex(8),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{STATE_PREFIX}{payload}.{self._mac(payload)}"

    def open(self, state: str, *, principal_key: str, arguments_sha256: str) -> str | None:
        """The approval id of a state this sealer issued for this principal and these arguments,
        unexpired and not presented before; ``None`` for anything else (forged, tampered, someone
        else's, other arguments, expired, replayed)."""
        if not is_bastion_state(state):
            return None
        payload, _, mac = state[len(STATE_PREFIX) :].partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except ValueError:
            return None
        now = self._clock()
        if (
            not isinstance(claims, dict)
            or claims.get("p") != hashlib.sha256(principal_key.encode()).hexdigest()
            or claims.get("d") != arguments_sha256
            or not isinstance(claims.get("e"), int)
            or now >= claims["e"]
            or not isinstance(claims.get("a"), str)
        ):
            return None
        nonce = str(claims.get("n"))
        self._used = {n: e for n, e in self._used.items() if e > now}
        if nonce in self._used:
            return None
        self._used[nonce] = float(claims["e"])
        return str(claims["a"])

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
