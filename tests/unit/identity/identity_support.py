"""Constants and token-crafting helpers for the identity tests (imported by name; conftest holds fixtures)."""

from __future__ import annotations

import base64
import json
from typing import Any

from joserfc import jws
from joserfc.jwk import Key

ISSUER = "https://bastion.example"
ROUTE_A = "https://bastion.example/mcp/github"
ROUTE_B = "https://bastion.example/mcp/jira"
WINDOW_S = 3600
NOW = 1_800_000_000.0


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    """Base64url of compact JSON."""
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def sign(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    """A compact JWS signed with joserfc, any header we like (hostile tokens included)."""
    payload = json.dumps(claims).encode()
    return jws.serialize_compact(header, payload, key, algorithms=[header["alg"]])
