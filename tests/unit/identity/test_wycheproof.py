"""Wycheproof JSON Web Signature vectors through the verifier's own signature check.

Every case of ``json_web_signature_test.json`` runs through
``verify_compact_jws`` (the function ``TokenVerifier`` uses) with the group's
public key (its private key for HMAC groups) and, as the allow list, the
key's own ``alg``; keys without ``alg`` (the wrong-``use``/``key_ops``
groups) get every algorithm of their key type, so their refusal must come
from the key check itself.

Eight vectors contradict the JWS specifications or each other; they are
marked ``xfail(strict=True)`` below with the reason, so the suite fails if our
behaviour on them ever changes. Every other valid case must be accepted and
every other invalid case refused.

The corpus is vendored under ``tests/vectors/wycheproof/`` (source, commit and licence in its
README), so every checkout runs these cases; a missing file is a collection error, never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import JWKRegistry

from bastion.errors import AuthenticationError
from bastion.identity import verify_compact_jws

CORPUS = Path(__file__).parents[2] / "vectors/wycheproof/json_web_signature_test.json"
_BY_KEY_TYPE = {
    "RSA": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    "EC": ["ES256", "ES384", "ES512"],
    "oct": ["HS256", "HS384", "HS512"],
}
_SAME_AS_357 = "byte-identical to tcId 357 (labelled valid) yet labelled invalid: no verifier can satisfy both"
_NOT_BASE64URL = "labelled valid but contains '?', outside the base64url alphabet (RFC 7515 section 2)"
_KEY_ALG = (
    "the group key's alg ({key}) contradicts the JWS alg ({jws}); RFC 7520's key has no alg, Wycheproof "
    "added one, and the verifier honours the key's alg (RFC 7517 section 4.4)"
)
CORPUS_DEFECTS = {
    346: _KEY_ALG.format(key="PS256", jws="PS384"),
    347: _KEY_ALG.format(key="ES521, not a JWS algorithm", jws="ES512"),
    350: _KEY_ALG.format(key="PS256", jws="PS384"),
    351: _KEY_ALG.format(key="ES521, not a JWS algorithm", jws="ES512"),
    367: _SAME_AS_357,
    370: _SAME_AS_357,
    372: _NOT_BASE64URL,
    373: _NOT_BASE64URL,
}


def _corpus() -> dict[str, Any]:
    """The vendored corpus; raises ``FileNotFoundError`` naming the path when it is missing (fail, not skip)."""
    return dict(json.loads(CORPUS.read_text()))


def _cases() -> list[Any]:
    document = _corpus()
    cases = []
    for group in document["testGroups"]:
        jwk = group.get("public") or group["private"]
        for case in group["tests"]:
            marks = []
            if case["tcId"] in CORPUS_DEFECTS:
                marks.append(pytest.mark.xfail(strict=True, reason=CORPUS_DEFECTS[case["tcId"]]))
            cases.append(pytest.param(jwk, case, group["comment"], id=f"tcId{case['tcId']}", marks=marks))
    assert len(cases) == document["numberOfTests"] == 401
    return cases


@pytest.mark.parametrize(("jwk", "case", "group"), _cases())
def test_vector(jwk: dict[str, Any], case: dict[str, Any], group: str) -> None:
    allowed = [jwk["alg"]] if "alg" in jwk else _BY_KEY_TYPE[jwk["kty"]]
    key = JWKRegistry.import_key(jwk)
    try:
        verify_compact_jws(case["jws"], key, allowed)
    except AuthenticationError as exc:
        outcome, why = "invalid", exc.reason
    else:
        outcome, why = "valid", ""
    assert outcome == case["result"], f"{group} tcId {case['tcId']} {case['comment']}: {why}"


def _vectors() -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    document = _corpus()
    return {
        case["tcId"]: (group.get("public") or group["private"], case)
        for group in document["testGroups"]
        for case in group["tests"]
    }


def test_invalid_vectors_we_accept_are_the_valid_vector() -> None:
    """The only 'invalid' vectors accepted (367, 370) are the exact bytes of valid vector 357."""
    vectors = _vectors()
    assert vectors[367][1]["jws"] == vectors[370][1]["jws"] == vectors[357][1]["jws"]
    assert vectors[357][1]["result"] == "valid"


@pytest.mark.parametrize(("tc_id", "alg"), [(346, "PS384"), (347, "ES512"), (350, "PS384"), (351, "ES512")])
def test_rfc7520_vectors_verify_with_the_rfc_key(tc_id: int, alg: str) -> None:
    """With the key as RFC 7520 section 3 prints it (no ``alg``) and the JWS's real algorithm allowed,
    the signatures verify: our refusal above comes from the contradictory key ``alg`` alone."""
    jwk, case = _vectors()[tc_id]
    key = JWKRegistry.import_key({k: v for k, v in jwk.items() if k != "alg"})
    assert verify_compact_jws(case["jws"], key, [alg]).header["alg"] == alg
