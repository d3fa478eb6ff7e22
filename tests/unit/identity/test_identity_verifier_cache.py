"""TokenVerifier's verification cache and key rotation."""

from __future__ import annotations

import pytest
from identity_support import ISSUER, NOW, ROUTE_A, WINDOW_S

from bastion.errors import AuthenticationError
from bastion.identity import RevocationList, SigningKeys, TokenIssuer, TokenVerifier
from bastion.identity import verifier as verifier_module


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the signature verifications the verifier performs."""
    calls: list[str] = []
    real = verifier_module.verify_compact_jws

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("verify")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verifier_module, "verify_compact_jws", counting)
    return calls


def test_repeated_token_is_verified_once(
    issuer: TokenIssuer, verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    token = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=600, now=NOW).token
    first = verifier.verify(token, ROUTE_A, now=NOW)
    for step in range(5):
        assert verifier.verify(token, ROUTE_A, now=NOW + step) is first
    assert signature_checks == ["verify"]


def test_cached_token_still_expires_and_leaves_cache(
    issuer: TokenIssuer, verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    token = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=60, now=NOW).token
    verifier.verify(token, ROUTE_A, now=NOW)
    verifier.verify(token, ROUTE_A, now=NOW + 59)
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token, ROUTE_A, now=NOW + 60)
    assert info.value.reason == "token_expired"
    with pytest.raises(AuthenticationError):  # evicted: the full path runs and refuses again
        verifier.verify(token, ROUTE_A, now=NOW + 61)
    assert signature_checks == ["verify", "verify"]


def test_cached_token_checks_nbf(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=600, now=NOW).token
    verifier.verify(token, ROUTE_A, now=NOW)
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token, ROUTE_A, now=NOW - 31)  # clock stepped back past the leeway
    assert info.value.reason == "token_not_yet_valid"


async def test_cached_token_checks_revocation(
    issuer: TokenIssuer, verifier: TokenVerifier, revocations: RevocationList
) -> None:
    minted = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=600, now=NOW)
    verifier.verify(minted.token, ROUTE_A, now=NOW)
    await revocations.revoke(minted.claims["jti"], expires_at=minted.claims["exp"])
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(minted.token, ROUTE_A, now=NOW + 1)
    assert info.value.reason == "token_revoked"


def test_cache_is_bounded_lru(
    keys: SigningKeys, revocations: RevocationList, issuer: TokenIssuer, signature_checks: list[str]
) -> None:
    small = TokenVerifier(issuer=ISSUER, keys=keys, revocations=revocations, cache_size=2)
    tokens = [issuer.mint(sub=f"u{i}", audience=ROUTE_A, ttl_s=600, now=NOW).token for i in range(3)]
    small.verify(tokens[0], ROUTE_A, now=NOW)
    small.verify(tokens[1], ROUTE_A, now=NOW)
    small.verify(tokens[0], ROUTE_A, now=NOW)  # most recently used now
    small.verify(tokens[2], ROUTE_A, now=NOW)  # evicts tokens[1]
    assert len(signature_checks) == 3
    small.verify(tokens[0], ROUTE_A, now=NOW)
    assert len(signature_checks) == 3
    small.verify(tokens[1], ROUTE_A, now=NOW)
    assert len(signature_checks) == 4


def test_purge_and_clear(issuer: TokenIssuer, verifier: TokenVerifier, signature_checks: list[str]) -> None:
    short = issuer.mint(sub="a", audience=ROUTE_A, ttl_s=10, now=NOW).token
    long = issuer.mint(sub="b", audience=ROUTE_A, ttl_s=600, now=NOW).token
    verifier.verify(short, ROUTE_A, now=NOW)
    verifier.verify(long, ROUTE_A, now=NOW)
    assert verifier.purge_expired(now=NOW + 10) == 1
    verifier.clear_cache()
    verifier.verify(long, ROUTE_A, now=NOW + 11)
    assert len(signature_checks) == 3


def test_old_token_verifies_after_rotation_until_window_ends(
    keys: SigningKeys, issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.mint(sub="alice", audience=ROUTE_A, ttl_s=WINDOW_S, now=NOW).token
    keys.rotate(now=NOW + 10)
    assert verifier.verify(token, ROUTE_A, now=NOW + 20).sub == "alice"
    new_token = issuer.mint(sub="bob", audience=ROUTE_A, ttl_s=60, now=NOW + 20).token
    assert verifier.verify(new_token, ROUTE_A, now=NOW + 20).sub == "bob"
    verifier.clear_cache()
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token, ROUTE_A, now=NOW + 10 + WINDOW_S)
    assert info.value.reason == "unknown_kid"


def test_rotation_by_cli_process_is_picked_up(keys: SigningKeys, verifier: TokenVerifier) -> None:
    cli_keys = SigningKeys.load_or_create(keys.path.parent, verify_window_s=WINDOW_S)
    cli_keys.rotate()
    token = TokenIssuer(cli_keys, ISSUER, WINDOW_S).mint(sub="alice", audience=ROUTE_A, ttl_s=60).token
    assert verifier.verify(token, ROUTE_A).sub == "alice"
