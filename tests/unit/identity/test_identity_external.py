"""External issuers: settings validation, JWKS fetching and caching, external token verification.

The cache is tested with a fake ``JWKSFetch``; ``guarded_jwks_fetch`` against a real JWKS
endpoint on 127.0.0.1 through a real ``EgressGuard`` (allowed, and refused with a ``Refusal``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from identity_support import ISSUER, NOW, ROUTE_A, ROUTE_B, b64json, b64url, sign
from joserfc.jwk import ECKey, RSAKey
from pydantic import ValidationError

import bastion.identity.external
from bastion.egress import AllowList, EgressGuard, Refusal
from bastion.errors import AuthenticationError, ConfigError, EgressDenied, UpstreamUnavailable
from bastion.identity import ExternalIssuer, JWKSCache, RevocationList, SigningKeys, TokenVerifier
from bastion.identity.external import MAX_JWKS_BYTES, guarded_jwks_fetch

IDP = "https://idp.example"
JWKS_URL = "https://idp.example/jwks"
AUDIENCE = "api://bastion"
RSA_KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "rsa-1"})


class FakeIdP:
    """A ``JWKSFetch`` answering for JWKS_URL with its key set (or ``respond()``); counts fetches."""

    def __init__(self, *keys: RSAKey | ECKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.respond: Callable[[], bytes] | None = None

    def document(self) -> dict[str, Any]:
        return {"keys": [dict(key.as_dict(private=False)) for key in self.keys]}

    async def __call__(self, url: str) -> bytes:
        assert url == JWKS_URL
        self.fetches += 1
        return self.respond() if self.respond else json.dumps(self.document()).encode()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def external_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": IDP,
        "sub": "ci-runner",
        "aud": AUDIENCE,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "azp": "github-actions",
        "scp": ["deploy"],
        "roles": ["builders"],
        "jti": "ext-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def idp_token(claims: dict[str, Any] | None = None, key: RSAKey | ECKey = RSA_KEY, **header: Any) -> str:
    base = {"alg": "RS256", "kid": key.kid, "typ": "JWT", **header}
    return sign({k: v for k, v in base.items() if v is not None}, claims or external_claims(), key)


@pytest.fixture
def idp() -> FakeIdP:
    return FakeIdP(RSA_KEY)


@pytest.fixture
def settings() -> ExternalIssuer:
    return ExternalIssuer(routes=("r",), issuer=IDP, jwks_url=JWKS_URL, audience=AUDIENCE, groups_claim="roles")


@pytest.fixture
def verifier(keys: SigningKeys, revocations: RevocationList, settings: ExternalIssuer, idp: FakeIdP) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, keys=keys, revocations=revocations, external_issuers=[settings], jwks_fetch=idp)


async def reason(verifier: TokenVerifier, token: str, audience: str = ROUTE_A) -> str:
    with pytest.raises(AuthenticationError) as info:
        await verifier.authenticate(token, audience, now=NOW)
    return info.value.reason


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"algorithms": ["none"]}, "never accepted"),
        ({"algorithms": ["RS256", "NONE"]}, "never accepted"),
        ({"algorithms": ["HS256"]}, "shared secret"),
        ({"algorithms": ["hs512"]}, "shared secret"),
        ({"algorithms": ["RS1"]}, "unsupported algorithm"),
        ({"algorithms": []}, "at least 1"),
        ({"jwks_url": "http://idp.example/jwks"}, "https"),
        ({"jwks_url": "file:///etc/passwd"}, "https"),
        ({"jwks_url": "/jwks"}, "https"),
        ({"kind": "Admin"}, "kind"),
        ({"jwks_cache_s": 0}, "jwks_cache_s"),
        ({"unknown": 1}, "unknown"),
        ({"audience": ""}, "audience"),
    ],
)
def test_settings_refused(changes: dict[str, Any], match: str) -> None:
    fields = {"issuer": IDP, "jwks_url": JWKS_URL, "audience": AUDIENCE, **changes}
    with pytest.raises(ValidationError, match=match):
        ExternalIssuer(routes=("r",), **fields)


def test_settings_defaults_and_loopback_http() -> None:
    item = ExternalIssuer(routes=("r",), issuer=IDP, jwks_url="http://127.0.0.1:9000/jwks", audience=AUDIENCE)
    assert item.algorithms == ["RS256", "ES256"]
    assert item.groups_claim == "groups"
    assert item.kind == "ServiceAccount"
    assert item.jwks_cache_s == 300


def test_external_issuer_may_not_shadow_bastion(keys: SigningKeys, revocations: RevocationList) -> None:
    clash = ExternalIssuer(routes=("r",), issuer=ISSUER, jwks_url=JWKS_URL, audience=AUDIENCE)
    with pytest.raises(ConfigError, match="issuer"):
        TokenVerifier(issuer=ISSUER, keys=keys, revocations=revocations, external_issuers=[clash], jwks_fetch=FakeIdP())


def test_external_issuers_need_a_jwks_fetch(
    keys: SigningKeys, revocations: RevocationList, settings: ExternalIssuer
) -> None:
    with pytest.raises(ConfigError, match="JWKS fetch"):
        TokenVerifier(issuer=ISSUER, keys=keys, revocations=revocations, external_issuers=[settings])


# --- verification ---------------------------------------------------------------------------


async def test_external_token_gives_principal(verifier: TokenVerifier, idp: FakeIdP) -> None:
    principal = await verifier.authenticate(idp_token(), ROUTE_A, now=NOW)
    assert principal.kind == "ServiceAccount"
    assert principal.auth_method == "external_jwt"
    assert principal.issuer == IDP
    assert principal.sub == "ci-runner"
    assert principal.groups == ("builders",)
    assert principal.scopes == ("deploy",)
    assert principal.client_id == "github-actions"
    assert principal.token_id == "ext-1"
    again = await verifier.authenticate(idp_token(), ROUTE_B, now=NOW + 1)  # cached; not route-bound
    assert again is principal
    assert idp.fetches == 1


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None])
async def test_external_typ_not_required(verifier: TokenVerifier, typ: str | None) -> None:
    assert (await verifier.authenticate(idp_token(typ=typ), ROUTE_A, now=NOW)).sub == "ci-runner"


async def test_es256_external_key_without_kid(
    keys: SigningKeys, revocations: RevocationList, settings: ExternalIssuer
) -> None:
    ec = ECKey.generate_key("P-256", private=True)
    idp = FakeIdP(ec)
    verifier = TokenVerifier(
        issuer=ISSUER, keys=keys, revocations=revocations, external_issuers=[settings], jwks_fetch=idp
    )
    token = idp_token(key=ec, alg="ES256", kid=None)
    assert (await verifier.authenticate(token, ROUTE_A, now=NOW)).sub == "ci-runner"


async def test_wrong_audience_uses_issuer_audience(verifier: TokenVerifier) -> None:
    assert await reason(verifier, idp_token(external_claims(aud=ROUTE_A))) == "wrong_audience"


async def test_untrusted_issuer(verifier: TokenVerifier) -> None:
    other = idp_token(external_claims(iss="https://evil.example"))
    assert await reason(verifier, other) == "wrong_issuer"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (external_claims(exp=int(NOW) - 1), "token_expired"),
        (external_claims(exp=None), "missing_exp"),
        (external_claims(sub=None), "missing_sub"),
        (external_claims(nbf=int(NOW) + 60), "token_not_yet_valid"),
    ],
)
async def test_external_claim_checks(verifier: TokenVerifier, claims: dict[str, Any], expected: str) -> None:
    assert await reason(verifier, idp_token(claims)) == expected


async def test_algorithm_checked_before_jwks_fetch(verifier: TokenVerifier, idp: FakeIdP) -> None:
    token = idp_token(alg="PS256")
    assert await reason(verifier, token) == "algorithm_not_allowed"
    pem = RSA_KEY.get_op_key("verify").public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": RSA_KEY.kid, "typ": "JWT"}
    signing_input = f"{b64json(header)}.{b64json(external_claims())}"
    mac = b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    assert await reason(verifier, f"{signing_input}.{mac}") == "algorithm_not_allowed"
    assert idp.fetches == 0


async def test_bad_signature_from_other_key_with_same_kid(verifier: TokenVerifier) -> None:
    impostor = RSAKey.generate_key(2048, private=True, parameters={"kid": RSA_KEY.kid})
    assert await reason(verifier, idp_token(key=impostor)) == "bad_signature"


async def test_revoked_external_token(verifier: TokenVerifier, revocations: RevocationList) -> None:
    await revocations.revoke("ext-1", expires_at=int(NOW) + 300)
    assert await reason(verifier, idp_token()) == "token_revoked"


# --- JWKS cache -----------------------------------------------------------------------------


async def test_unknown_kid_refetches_at_most_every_30s(settings: ExternalIssuer, idp: FakeIdP) -> None:
    clock = Clock()
    cache = JWKSCache.for_issuer(settings, idp, clock=clock)
    assert (await cache.key_for("rsa-1", "RS256")).kid == "rsa-1"
    assert idp.fetches == 1
    with pytest.raises(AuthenticationError, match="no key"):
        await cache.key_for("rsa-2", "RS256")
    assert idp.fetches == 1  # the first fetch was under 30 s ago
    clock.now += 30
    rotated = RSAKey.generate_key(2048, private=True, parameters={"kid": "rsa-2"})
    idp.keys.append(rotated)
    assert (await cache.key_for("rsa-2", "RS256")).kid == "rsa-2"
    assert idp.fetches == 2
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            await cache.key_for("rsa-9", "RS256")
    assert idp.fetches == 2


async def test_key_set_expires_after_cache_time(idp: FakeIdP) -> None:
    clock = Clock()
    settings = ExternalIssuer(routes=("r",), issuer=IDP, jwks_url=JWKS_URL, audience=AUDIENCE, jwks_cache_s=60)
    cache = JWKSCache.for_issuer(settings, idp, clock=clock)
    await cache.key_for("rsa-1", "RS256")
    clock.now += 59
    await cache.key_for("rsa-1", "RS256")
    assert idp.fetches == 1
    clock.now += 1
    await cache.key_for("rsa-1", "RS256")
    assert idp.fetches == 2


def _raise(error: Exception) -> Callable[[], bytes]:
    def respond() -> bytes:
        raise error

    return respond


@pytest.mark.parametrize(
    "response",
    [
        _raise(EgressDenied(f"response from idp.example exceeds {MAX_JWKS_BYTES} bytes")),
        _raise(ValueError("JWKS fetch from https://idp.example/jwks answered 500")),
        _raise(EgressDenied("redirect to http://169.254.169.254/ refused: URL scheme 'http' ...")),
        _raise(UpstreamUnavailable("could not fetch from idp.example: connection refused")),
        lambda: b"not json",
    ],
    ids=["too-large", "server-error", "redirect", "unreachable", "not-json"],
)
async def test_unusable_jwks_response(settings: ExternalIssuer, idp: FakeIdP, response: Callable[[], bytes]) -> None:
    idp.respond = response
    with pytest.raises(AuthenticationError) as info:
        await JWKSCache.for_issuer(settings, idp, clock=Clock()).key_for("rsa-1", "RS256")
    assert info.value.reason == "jwks_unavailable"


async def test_timeout_is_unavailable(settings: ExternalIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bastion.identity.external, "FETCH_TIMEOUT_S", 0.05)

    async def slow(url: str) -> bytes:
        await asyncio.sleep(5)
        return b"{}"

    with pytest.raises(AuthenticationError) as info:
        await JWKSCache.for_issuer(settings, slow, clock=Clock()).key_for("rsa-1", "RS256")
    assert info.value.reason == "jwks_unavailable"


async def test_failed_fetch_is_not_retried_for_30s(settings: ExternalIssuer, idp: FakeIdP) -> None:
    clock = Clock()
    cache = JWKSCache.for_issuer(settings, idp, clock=clock)
    idp.respond = _raise(ValueError("answered 503"))
    for _ in range(3):
        with pytest.raises(AuthenticationError, match="could not be fetched"):
            await cache.key_for("rsa-1", "RS256")
    assert idp.fetches == 1
    idp.respond = None
    clock.now += 30
    assert (await cache.key_for("rsa-1", "RS256")).kid == "rsa-1"
    assert idp.fetches == 2


async def test_stale_keys_survive_failed_refresh(settings: ExternalIssuer, idp: FakeIdP) -> None:
    clock = Clock()
    cache = JWKSCache.for_issuer(settings, idp, clock=clock)
    await cache.key_for("rsa-1", "RS256")
    idp.respond = _raise(ValueError("answered 503"))
    clock.now += settings.jwks_cache_s
    assert (await cache.key_for("rsa-1", "RS256")).kid == "rsa-1"
    assert idp.fetches == 2


async def test_private_and_encryption_keys_are_skipped(settings: ExternalIssuer, idp: FakeIdP) -> None:
    private = dict(RSA_KEY.as_dict(private=True))
    enc = {**dict(RSA_KEY.as_dict(private=False)), "use": "enc", "kid": "rsa-enc"}
    idp.respond = lambda: json.dumps({"keys": [private, enc, "junk"]}).encode()
    cache = JWKSCache.for_issuer(settings, idp, clock=Clock())
    for kid in ("rsa-1", "rsa-enc"):
        with pytest.raises(AuthenticationError) as info:
            await cache.key_for(kid, "RS256")
        assert info.value.reason == "unknown_kid"


async def test_deeply_nested_jwks_is_unavailable(settings: ExternalIssuer, idp: FakeIdP) -> None:
    idp.respond = lambda: b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(AuthenticationError) as info:
        await JWKSCache.for_issuer(settings, idp, clock=Clock()).key_for("rsa-1", "RS256")
    assert info.value.reason == "jwks_unavailable"


# --- JWKS through the egress guard ----------------------------------------------------------


class JwksEndpoint:
    """A JWKS endpoint on 127.0.0.1 (aiohttp): ``/jwks`` the key set, ``/big`` too large, ``/gone`` 404."""

    def __init__(self) -> None:
        self.document = json.dumps({"keys": [dict(RSA_KEY.as_dict(private=False))]}).encode()
        self.app = web.Application()
        self.app.router.add_get("/jwks", self._jwks)
        self.app.router.add_get("/big", self._big)
        self.runner = web.AppRunner(self.app)
        self.port = 0

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.Response(body=self.document, content_type="application/json")

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b" " * (MAX_JWKS_BYTES + 1), content_type="application/json")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def endpoint() -> AsyncIterator[JwksEndpoint]:
    server = JwksEndpoint()
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    server.port = server.runner.addresses[0][1]
    yield server
    await server.runner.cleanup()


class Refusals:
    """An ``on_refusal`` hook that keeps what it is told."""

    def __init__(self) -> None:
        self.seen: list[Refusal] = []

    async def __call__(self, refusal: Refusal) -> None:
        self.seen.append(refusal)


async def test_an_external_jwks_on_an_allowed_loopback_address_is_fetched_through_the_guard(
    keys: SigningKeys, revocations: RevocationList, endpoint: JwksEndpoint
) -> None:
    settings = ExternalIssuer(routes=("r",), issuer=IDP, jwks_url=endpoint.url("/jwks"), audience=AUDIENCE)
    async with EgressGuard(allow=AllowList.parse([f"127.0.0.1:{endpoint.port}"])) as guard:
        verifier = TokenVerifier(
            issuer=ISSUER,
            keys=keys,
            revocations=revocations,
            external_issuers=[settings],
            jwks_fetch=guarded_jwks_fetch(guard),
        )
        assert (await verifier.authenticate(idp_token(), ROUTE_A, now=NOW)).sub == "ci-runner"


async def test_an_external_jwks_on_loopback_is_refused_and_reported_unless_allowed(
    keys: SigningKeys, revocations: RevocationList, endpoint: JwksEndpoint
) -> None:
    refusals = Refusals()
    settings = ExternalIssuer(routes=("r",), issuer=IDP, jwks_url=endpoint.url("/jwks?v=1"), audience=AUDIENCE)
    async with EgressGuard(on_refusal=refusals) as guard:
        verifier = TokenVerifier(
            issuer=ISSUER,
            keys=keys,
            revocations=revocations,
            external_issuers=[settings],
            jwks_fetch=guarded_jwks_fetch(guard),
        )
        assert await reason(verifier, idp_token()) == "jwks_unavailable"
    assert refusals.seen == [
        Refusal(url=endpoint.url("/jwks"), reason="127.0.0.1 is a loopback address", hop=0, purpose="jwks")
    ]


async def test_the_guarded_fetch_caps_the_key_set_and_wants_a_200(endpoint: JwksEndpoint) -> None:
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1"])) as guard:
        fetch = guarded_jwks_fetch(guard)
        assert json.loads(await fetch(endpoint.url("/jwks")))["keys"][0]["kid"] == "rsa-1"
        with pytest.raises(EgressDenied, match=f"exceeds {MAX_JWKS_BYTES} bytes"):
            await fetch(endpoint.url("/big"))
        with pytest.raises(ValueError, match="answered 404"):
            await fetch(endpoint.url("/gone"))


# --- principal.idp of an external token -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "idp"),
    [pytest.param("ci-idp", "ci-idp", id="configured-name"), pytest.param(None, IDP, id="no-name-the-issuer-url")],
)
async def test_an_external_principals_idp_is_the_configured_name_never_a_claim(
    keys: SigningKeys, revocations: RevocationList, idp: str, name: str | None
) -> None:
    settings = ExternalIssuer(routes=("r",), issuer=IDP, name=name, jwks_url=JWKS_URL, audience=AUDIENCE)
    verifier = TokenVerifier(
        issuer=ISSUER, keys=keys, revocations=revocations, external_issuers=[settings], jwks_fetch=FakeIdP(RSA_KEY)
    )
    # the issuer may put anything in its tokens: claiming to be Bastion's "corp" sign-in changes nothing
    token = idp_token(external_claims(bastion_idp="corp", idp="corp"))
    principal = await verifier.authenticate(token, ROUTE_A, now=NOW)
    assert (principal.idp, principal.issuer) == (idp, IDP)


@pytest.mark.parametrize("name", ["CI", "ci_idp", "", "x" * 33, "https://idp.example"])
def test_an_external_issuer_name_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        ExternalIssuer(routes=("r",), issuer=IDP, name=name, jwks_url=JWKS_URL, audience=AUDIENCE)
