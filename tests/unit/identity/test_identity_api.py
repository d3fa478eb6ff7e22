"""The identity package's public names are pinned: a change here is an API change."""

from __future__ import annotations

import bastion.identity


def test_exported_names() -> None:
    assert sorted(bastion.identity.__all__) == [
        "ACCESS_TOKEN_TYPE",
        "ExternalIssuer",
        "JWKSCache",
        "MintedToken",
        "RevocationList",
        "SIGNING_ALGORITHM",
        "SigningKey",
        "SigningKeys",
        "TokenIssuer",
        "TokenVerifier",
        "VerifiedJWS",
        "parse_compact_jws",
        "parse_duration",
        "verify_compact_jws",
    ]


def test_every_export_exists_and_is_documented() -> None:
    for name in bastion.identity.__all__:
        member = getattr(bastion.identity, name)
        if callable(member):
            assert member.__doc__, name
