"""TokenIssuer.mint: the RFC 9068 header and claims, and the lifetimes it refuses."""

from __future__ import annotations

import pytest
from identity_support import ISSUER, NOW, ROUTE_A, WINDOW_S
from joserfc import jwt
from joserfc.jwk import ECKey

from bastion.errors import ConfigError
from bastion.identity import SigningKeys, TokenIssuer


def test_mint_header_and_claims(issuer: TokenIssuer, keys: SigningKeys) -> None:
    minted = issuer.mint(
        sub="alice",
        audience=ROUTE_A,
        ttl_s=900,
        email="alice@example.com",
        name="Alice",
        groups=["dev", "ops"],
        scopes=["tools:call", "resources:read"],
        now=NOW,
    )
    public = ECKey.import_key(keys.jwks()["keys"][0])
    token = jwt.decode(minted.token, public, algorithms=["ES256"])
    assert token.header == {"typ": "at+jwt", "alg": "ES256", "kid": keys.current.kid}
    claims = token.claims
    assert claims == dict(minted.claims)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == ROUTE_A
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["exp"] == int(NOW) + 900
    assert claims["client_id"] == "bastion-cli"
    assert claims["scope"] == "tools:call resources:read"
    assert claims["groups"] == ["dev", "ops"]
    assert claims["email"] == "alice@example.com"
    assert claims["name"] == "Alice"
    assert claims["bastion_kind"] == "User"


def test_jti_is_random_and_at_least_128_bits(issuer: TokenIssuer) -> None:
    jtis = {issuer.mint(sub="a", audience=ROUTE_A, ttl_s=60).claims["jti"] for _ in range(50)}
    assert len(jtis) == 50
    assert all(len(jti) == 32 and int(jti, 16) >= 0 for jti in jtis)  # 16 bytes in hex
    assert not any(jti.startswith("-") for jti in jtis)  # never read as an option by `bastion token revoke`


def test_empty_scope_and_optional_claims_are_omitted(issuer: TokenIssuer) -> None:
    claims = issuer.mint(sub="svc", audience=ROUTE_A, ttl_s=60, kind="ServiceAccount").claims
    assert "scope" not in claims
    assert "email" not in claims
    assert "name" not in claims
    assert claims["groups"] == []
    assert claims["bastion_kind"] == "ServiceAccount"


@pytest.mark.parametrize("ttl", [WINDOW_S + 1, 10**9, 0, -60])
def test_refuses_lifetime_outside_limits(issuer: TokenIssuer, ttl: int) -> None:
    with pytest.raises(ValueError, match=f"token lifetime {ttl}s refused"):
        issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=ttl)


def test_accepts_exactly_max_ttl(issuer: TokenIssuer) -> None:
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=WINDOW_S, now=NOW)
    assert minted.claims["exp"] == int(NOW) + WINDOW_S


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sub": ""}, "sub"),
        ({"audience": ""}, "audience"),
        ({"client_id": ""}, "client_id"),
        ({"scopes": ["two words"]}, "scope"),
        ({"groups": [""]}, "group"),
        ({"kind": "Admin"}, "kind"),
        ({"ttl_s": 1.5}, "ttl_s"),
    ],
)
def test_refuses_bad_arguments(issuer: TokenIssuer, kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"sub": "alice", "audience": ROUTE_A, "ttl_s": 60, **kwargs}
    with pytest.raises(ValueError, match=match):
        issuer.mint(**arguments)  # type: ignore[arg-type]


def test_max_ttl_may_not_exceed_key_window(keys: SigningKeys) -> None:
    with pytest.raises(ConfigError, match="verification window"):
        TokenIssuer(keys, ISSUER, WINDOW_S + 1)


@pytest.mark.parametrize(("issuer_url", "max_ttl"), [("", 60), (ISSUER, 0)])
def test_refuses_bad_settings(keys: SigningKeys, issuer_url: str, max_ttl: int) -> None:
    with pytest.raises(ConfigError):
        TokenIssuer(keys, issuer_url, max_ttl)


def test_mints_with_key_rotated_by_another_process(issuer: TokenIssuer, keys: SigningKeys) -> None:
    other = SigningKeys.load_or_create(keys.path.parent, verify_window_s=WINDOW_S)
    new = other.rotate()
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=60)
    assert jwt.decode(minted.token, new.public_key, algorithms=["ES256"]).header["kid"] == new.kid
