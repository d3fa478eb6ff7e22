"""Shared fixtures for the identity tests: a data directory with keys, a revocation list, an issuer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from identity_support import ISSUER, NOW, ROUTE_A, WINDOW_S

from bastion.identity import RevocationList, SigningKeys, TokenIssuer, TokenVerifier


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A not-yet-existing data directory."""
    return tmp_path / "data"


@pytest.fixture
def keys(data_dir: Path) -> SigningKeys:
    """Freshly created signing keys, verification window one hour."""
    return SigningKeys.load_or_create(data_dir, verify_window_s=WINDOW_S)


@pytest.fixture
def revocations(data_dir: Path, keys: SigningKeys) -> Iterator[RevocationList]:
    """The revocation list in ``<data_dir>/bastion.db``."""
    with RevocationList(data_dir / "bastion.db") as revocation_list:
        yield revocation_list


@pytest.fixture
def issuer(keys: SigningKeys) -> TokenIssuer:
    """Bastion's token issuer, max lifetime one hour."""
    return TokenIssuer(keys, ISSUER, WINDOW_S)


@pytest.fixture
def verifier(keys: SigningKeys, revocations: RevocationList) -> TokenVerifier:
    """A verifier for Bastion's own tokens only."""
    return TokenVerifier(issuer=ISSUER, keys=keys, revocations=revocations)


@pytest.fixture
def claims_for() -> Callable[..., dict[str, Any]]:
    """Valid Bastion access-token claims for ROUTE_A at NOW, with overrides (None deletes)."""

    def build(**overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": ROUTE_A,
            "iat": int(NOW),
            "nbf": int(NOW),
            "exp": int(NOW) + 600,
            "jti": "jti-forged-1",
            "client_id": "bastion-cli",
            "groups": ["dev"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    return build
