"""TokenVerifier on Bastion's own tokens: the principal, and one test per rejection reason."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from identity_support import ISSUER, NOW, ROUTE_A, ROUTE_B, b64json, b64url, sign
from joserfc.jwk import ECKey, RSAKey

from bastion.errors import AuthenticationError, ConfigError
from bastion.identity import RevocationList, SigningKeys, TokenIssuer, TokenVerifier
from bastion.principal import Principal

Claims = Callable[..., dict[str, Any]]
HEADER = {"typ": "at+jwt", "alg": "ES256"}


def own(keys: SigningKeys, claims: dict[str, Any], **header: Any) -> str:
    """A token signed with Bastion's current key; header fields overridable (None deletes)."""
    merged = {**HEADER, "kid": keys.current.kid, **header}
    return sign({k: v for k, v in merged.items() if v is not None}, claims, keys.current.private_key)


def reason(verifier: TokenVerifier, token: str, audience: str = ROUTE_A, now: float = NOW) -> str:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token, audience, now=now)
    assert info.value.status == 401
    return info.value.reason


def test_valid_token_gives_principal(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    minted = issuer.mint(
        sub="alice",
        audience=ROUTE_A,
        ttl_s=600,
        email="a@example.com",
        name="Alice",
        groups=["dev"],
        scopes=["tools:call"],
        client_id="vscode",
        now=NOW,
    )
    principal = verifier.verify(minted.token, ROUTE_A, now=NOW + 1)
    assert principal == Principal(
        kind="User",
        sub="alice",
        issuer=ISSUER,
        auth_method="bastion_jwt",
        expires_at=int(NOW) + 600,
        email="a@example.com",
        name="Alice",
        groups=("dev",),
        client_id="vscode",
        token_id=minted.claims["jti"],
        scopes=("tools:call",),
        idp="bastion",  # minted with nobody signing in
    )


def test_service_account_kind(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    minted = issuer.mint(sub="ci-bot", audience=ROUTE_A, ttl_s=60, kind="ServiceAccount", now=NOW)
    assert verifier.verify(minted.token, ROUTE_A, now=NOW).kind == "ServiceAccount"


async def test_authenticate_handles_own_tokens(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=60, now=NOW)
    principal = await verifier.authenticate(minted.token, ROUTE_A, now=NOW)
    assert principal.sub == "alice"
    assert principal.auth_method == "bastion_jwt"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "e30.e30.",
        "!!!.e30.AAAA",
        "W10.e30.AAAA",
        "eyJhbGciOiJFUzI1NiJ9=.e30.AA",
        "x" * 9000,
        "éé.e30.AA",
    ],
)
def test_malformed(verifier: TokenVerifier, token: str) -> None:
    assert reason(verifier, token) == "malformed_token"


def test_alg_none(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    header = {"typ": "at+jwt", "alg": "none", "kid": keys.current.kid}
    assert reason(verifier, f"{b64json(header)}.{b64json(claims_for())}.") == "algorithm_not_allowed"


def test_hs256_signed_with_public_key_bytes(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims
) -> None:
    """Algorithm confusion: an HMAC keyed with the server's public key must never verify."""
    pem = keys.current.public_key.get_op_key("verify").public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"typ": "at+jwt", "alg": "HS256", "kid": keys.current.kid}
    signing_input = f"{b64json(header)}.{b64json(claims_for())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert reason(verifier, f"{signing_input}.{b64url(mac)}") == "algorithm_not_allowed"


@pytest.mark.parametrize("alg", ["ES384", "RS256", "PS256", "EdDSA", "NONE"])
def test_algorithm_outside_allow_list_checked_before_key_lookup(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, alg: str
) -> None:
    header = {"typ": "at+jwt", "alg": alg, "kid": "not-a-known-kid"}
    token = f"{b64json(header)}.{b64json(claims_for())}.AAAA"
    assert reason(verifier, token) == "algorithm_not_allowed"


def test_rsa_key_with_our_kid(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    rsa = RSAKey.generate_key(2048, private=True)
    header = {**HEADER, "alg": "RS256", "kid": keys.current.kid}
    assert reason(verifier, sign(header, claims_for(), rsa)) == "algorithm_not_allowed"


@pytest.mark.parametrize("kid", ["unknown", None])
def test_unknown_kid(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, kid: str | None) -> None:
    token = sign({**HEADER, **({} if kid is None else {"kid": kid})}, claims_for(), keys.current.private_key)
    assert reason(verifier, token) == "unknown_kid"


@pytest.mark.parametrize("header", [{"kid": 7}, {"typ": 1}, {"kid": ["a"]}, {"alg": 256}, {"x5c": "cert"}])
def test_header_member_of_wrong_type(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, header: dict[str, Any]
) -> None:
    full = {**HEADER, "kid": keys.current.kid, **header}
    assert reason(verifier, f"{b64json(full)}.{b64json(claims_for())}.AAAA") == "malformed_token"


def test_signature_by_another_key_with_our_kid(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims
) -> None:
    attacker = ECKey.generate_key("P-256", private=True)
    token = sign({**HEADER, "kid": keys.current.kid}, claims_for(), attacker)
    assert reason(verifier, token) == "bad_signature"


def test_truncated_signature(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    token = own(keys, claims_for())
    assert reason(verifier, token[:-8]) == "bad_signature"
    assert reason(verifier, token.rsplit(".", 1)[0] + ".") == "bad_signature"


def test_tampered_payload(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    header, _, signature = own(keys, claims_for()).split(".")
    forged = f"{header}.{b64json(claims_for(sub='root'))}.{signature}"
    assert reason(verifier, forged) == "bad_signature"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt2", "application/jwt", None])
def test_wrong_typ(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, typ: str | None) -> None:
    assert reason(verifier, own(keys, claims_for(), typ=typ)) == "wrong_token_type"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_accepted_typ_spellings(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, typ: str
) -> None:
    assert verifier.verify(own(keys, claims_for(), typ=typ), ROUTE_A, now=NOW).sub == "alice"


@pytest.mark.parametrize("iss", ["https://evil.example", "https://bastion.example/", None])
def test_wrong_issuer(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, iss: str | None
) -> None:
    assert reason(verifier, own(keys, claims_for(iss=iss))) == "wrong_issuer"


def test_token_for_route_a_used_on_route_b(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=600, now=NOW)
    assert reason(verifier, minted.token, audience=ROUTE_B) == "wrong_audience"
    verifier.verify(minted.token, ROUTE_A, now=NOW)  # now cached: the cache must not widen it
    assert reason(verifier, minted.token, audience=ROUTE_B) == "wrong_audience"


def test_audience_as_list(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    token = own(keys, claims_for(aud=[ROUTE_A, ROUTE_B]))
    assert verifier.verify(token, ROUTE_B, now=NOW).sub == "alice"
    assert reason(verifier, token, audience="https://bastion.example/mcp/other") == "wrong_audience"
    assert reason(verifier, own(keys, claims_for(aud=None))) == "wrong_audience"


def test_missing_exp(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    assert reason(verifier, own(keys, claims_for(exp=None))) == "missing_exp"


def test_expired(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    token = own(keys, claims_for(exp=int(NOW)))
    assert reason(verifier, token, now=NOW) == "token_expired"
    assert reason(verifier, token, now=NOW + 10) == "token_expired"  # no leeway on exp


def test_nbf_in_future_beyond_leeway(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    assert verifier.verify(own(keys, claims_for(nbf=int(NOW) + 30)), ROUTE_A, now=NOW).sub == "alice"
    assert reason(verifier, own(keys, claims_for(nbf=int(NOW) + 31))) == "token_not_yet_valid"


def test_iat_in_future_beyond_leeway(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims) -> None:
    assert reason(verifier, own(keys, claims_for(iat=int(NOW) + 31))) == "issued_in_future"


@pytest.mark.parametrize("sub", [None, ""])
def test_missing_sub(verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, sub: str | None) -> None:
    assert reason(verifier, own(keys, claims_for(sub=sub))) == "missing_sub"


@pytest.mark.parametrize("claim", ["jti", "iat", "client_id"])
def test_missing_rfc9068_claim(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, claim: str
) -> None:
    assert reason(verifier, own(keys, claims_for(**{claim: None}))) == "missing_claim"


async def test_revoked_from_second_connection(
    issuer: TokenIssuer, verifier: TokenVerifier, revocations: RevocationList
) -> None:
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=600, now=NOW)
    verifier.verify(minted.token, ROUTE_A, now=NOW)  # verified and cached
    async with RevocationList(revocations.path) as other:  # its own connection, as `bastion token revoke` has
        await other.revoke(minted.claims["jti"], expires_at=NOW + 600, now=NOW)
    assert reason(verifier, minted.token) == "token_revoked"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"exp": "tomorrow"}, "invalid_claim"),
        ({"exp": True}, "invalid_claim"),
        ({"bastion_kind": "Admin"}, "invalid_claim"),
        ({"groups": "dev ops"}, None),
        ({"groups": [1]}, "invalid_claim"),
        ({"email": 5}, "invalid_claim"),
    ],
)
def test_claim_types(
    verifier: TokenVerifier,
    keys: SigningKeys,
    claims_for: Claims,
    overrides: dict[str, Any],
    expected: str | None,
) -> None:
    token = own(keys, claims_for(**overrides))
    if expected is None:
        assert verifier.verify(token, ROUTE_A, now=NOW).groups == ("dev", "ops")
    else:
        assert reason(verifier, token) == expected


def test_payload_not_an_object(verifier: TokenVerifier, keys: SigningKeys) -> None:
    token = sign({**HEADER, "kid": keys.current.kid}, ["not", "claims"], keys.current.private_key)  # type: ignore[arg-type]
    assert reason(verifier, token) == "malformed_token"


@pytest.mark.parametrize("extra", [{"crit": ["exp"], "exp": 1}, {"b64": False, "crit": ["b64"]}])
def test_critical_headers_refused(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, extra: dict[str, Any]
) -> None:
    header = {**HEADER, "kid": keys.current.kid, **extra}
    token = f"{b64json(header)}.{b64json(claims_for())}.AAAA"
    assert reason(verifier, token) == "unsupported_header"


@pytest.mark.parametrize("algorithms", [(), ("none",), ("ES256", "HS256")])
def test_unsafe_algorithm_settings_refused(
    keys: SigningKeys, revocations: RevocationList, algorithms: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError, match="allowed_algorithms"):
        TokenVerifier(issuer=ISSUER, keys=keys, revocations=revocations, allowed_algorithms=algorithms)


def test_audience_list_with_non_strings(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims
) -> None:
    token = own(keys, claims_for(aud=[ROUTE_A, {"not": "a string"}, 7]))
    assert verifier.verify(token, ROUTE_A, now=NOW).sub == "alice"
    assert reason(verifier, token, audience=ROUTE_B) == "wrong_audience"


async def test_deeply_nested_payload_is_malformed(verifier: TokenVerifier, keys: SigningKeys) -> None:
    header = {**HEADER, "kid": keys.current.kid}
    token = f"{b64json(header)}.{b64url(b'[' * 5000 + b']' * 5000)}.AAAA"
    with pytest.raises(AuthenticationError) as info:
        await verifier.authenticate(token, ROUTE_A, now=NOW)
    assert info.value.reason == "malformed_token"


# --- the identity provider (bastion_idp claim -> Principal.idp) -----------------------------------


@pytest.mark.parametrize(
    ("minted_with", "idp"),
    [
        pytest.param({"idp": "corp"}, "corp", id="signed-in-through-corp"),
        pytest.param({"idp": "local"}, "local", id="users-file"),
        pytest.param({}, "bastion", id="token-mint-default"),
        pytest.param({"kind": "ServiceAccount"}, "bastion", id="service-account"),
    ],
)
def test_the_idp_claim_becomes_the_principals_idp_and_the_issuer_stays(
    issuer: TokenIssuer, verifier: TokenVerifier, minted_with: dict[str, Any], idp: str
) -> None:
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=60, now=NOW, **minted_with)
    assert minted.claims["bastion_idp"] == idp
    principal = verifier.verify(minted.token, ROUTE_A, now=NOW)
    assert (principal.idp, principal.issuer) == (idp, ISSUER)


def test_a_token_minted_before_the_idp_claim_falls_back_to_its_issuer(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims
) -> None:
    claims = claims_for()
    assert "bastion_idp" not in claims
    principal = verifier.verify(own(keys, claims), ROUTE_A, now=NOW)
    assert (principal.idp, principal.issuer) == (ISSUER, ISSUER)  # what principal.idp was before


@pytest.mark.parametrize("value", ["", 7, ["corp"], None])
def test_an_idp_claim_that_is_not_a_name_is_refused(
    verifier: TokenVerifier, keys: SigningKeys, claims_for: Claims, value: Any
) -> None:
    claims = {**claims_for(), "bastion_idp": value}
    assert reason(verifier, own(keys, claims)) == "invalid_claim"


@pytest.mark.parametrize("idp", ["", None])
def test_minting_without_an_idp_is_refused(issuer: TokenIssuer, idp: Any) -> None:
    with pytest.raises(ValueError, match="idp"):
        issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=60, idp=idp, now=NOW)
