"""RFC 8693 token exchange as an upstream credential, against a real STS process and a real egress guard.

The STS (``tests/support/token_exchange_sts.py``) runs as a child process on 127.0.0.1; it verifies
the subject tokens Bastion's ``TokenIssuer`` mints against Bastion's JWK Set, served over http from
this test process at ``/.well-known/jwks.json`` as the gateway serves it. Requests go through an
``EgressGuard`` that allows 127.0.0.1. What the STS received is read back from its JSON-lines record.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from pydantic import ValidationError
from tests.support.bastion_process import REPO, free_port, stop, wait_http

from bastion.config.base import SecretRef
from bastion.config.exchange import TokenExchangeSettings
from bastion.credentials.exchange import TokenExchange
from bastion.credentials.tokens import UpstreamToken
from bastion.egress import AllowList, EgressGuard
from bastion.errors import ConfigError, EgressDenied, TokenExchangeFailed, UpstreamUnavailable
from bastion.identity import SigningKeys, TokenIssuer
from bastion.principal import Principal

BASTION_ISSUER = "https://bastion.test"
STS_AUDIENCE = "https://sts.test"  # what the STS expects as the subject token's aud
STS_ISSUER = "https://sts.test/issuer"
UPSTREAM = "https://notes.internal/api"
CLIENT_ID = "bastion"
CLIENT_SECRET = "s3cret: with/odd+chars%"  # exercises the form-encoding of client_secret_basic
EXPIRES_IN = 300
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ALICE = Principal(
    kind="User",
    sub="alice",
    issuer=BASTION_ISSUER,
    auth_method="bastion_jwt",
    expires_at=2_000_000_000,
    email="alice@example.com",
    name="Alice",
    groups=("engineering",),
)
BOB = Principal(kind="User", sub="bob", issuer=BASTION_ISSUER, auth_method="bastion_jwt", expires_at=2_000_000_000)


# --- real components -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    """Bastion's signing keys in a fresh data directory."""
    return SigningKeys.load_or_create(tmp_path_factory.mktemp("bastion-data"), verify_window_s=3600)


@pytest.fixture(scope="module")
def jwks_url(keys: SigningKeys) -> Iterator[str]:
    """Bastion's public JWK Set over http on 127.0.0.1, at ``/.well-known/jwks.json``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            data = json.dumps(keys.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/jwk-set+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *values: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Sts:
    """The running STS: its URLs and what it recorded."""

    base_url: str
    record_path: Path
    jwks: Any = None  # the STS's JWK Set

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"

    def records(self) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def sts_process(tmp_path_factory: pytest.TempPathFactory, jwks_url: str) -> Iterator[Sts]:
    """``python -m tests.support.token_exchange_sts`` on a free port of 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("sts")
    port = free_port()
    record = workdir / "exchanges.jsonl"
    # fmt: off
    command = [
        sys.executable, "-m", "tests.support.token_exchange_sts", "--port", str(port), "--jwks-url", jwks_url,
        "--audience", STS_AUDIENCE, "--subject-issuer", BASTION_ISSUER, "--issuer", STS_ISSUER,
        "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, "--record", str(record),
        "--expires-in", str(EXPIRES_IN), "--allowed-audience", UPSTREAM,
    ]
    # fmt: on
    with (workdir / "sts.log").open("wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_http(f"{base_url}/healthz", proc=proc)
        jwks = httpx2.get(f"{base_url}/jwks.json", timeout=5.0).json()
        yield Sts(base_url, record, jwks)
    finally:
        stop(proc)


@pytest.fixture
def sts(sts_process: Sts) -> Sts:
    """The STS with its record emptied, so each test sees only its own exchanges."""
    sts_process.record_path.write_text("", encoding="utf-8")
    return sts_process


@pytest.fixture
def issuer(keys: SigningKeys) -> TokenIssuer:
    """Bastion's token issuer (the subject tokens' signer)."""
    return TokenIssuer(keys, BASTION_ISSUER, 3600)


@pytest.fixture
async def guard() -> AsyncIterator[EgressGuard]:
    """The egress guard, allowing 127.0.0.1 (where the STS listens)."""
    async with EgressGuard(allow=AllowList.parse(["127.0.0.1"])) as egress:
        yield egress


@dataclass
class SubjectTokens:
    """``subject_token(principal)`` as the gateway builds it, remembering every token it minted."""

    issuer: TokenIssuer
    audience: str = STS_AUDIENCE
    now: float | None = None
    minted: list[str] = field(default_factory=list)

    def __call__(self, principal: Principal) -> str:
        token = self.issuer.mint(
            sub=principal.sub,
            audience=self.audience,
            ttl_s=60,
            email=principal.email,
            name=principal.name,
            groups=principal.groups,
            client_id="bastion-token-exchange",
            now=self.now,
        ).token
        self.minted.append(token)
        return token


class Clock:
    """An injectable clock (epoch seconds) the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def settings(sts: Sts, path: str = "/token", **overrides: Any) -> TokenExchangeSettings:
    values: dict[str, Any] = {
        "token_endpoint": sts.token_endpoint.removesuffix("/token") + path,
        "allow_http": True,
        "client_id": CLIENT_ID,
        "client_secret": {"env": "STS_CLIENT_SECRET"},
        "audience": UPSTREAM,
        "scopes": ["notes.read", "notes.write"],
        "subject_token_audience": STS_AUDIENCE,
        "allow": ["127.0.0.1"],
    }
    return TokenExchangeSettings.model_validate(values | overrides)


def exchange_for(
    guard: EgressGuard,
    config: TokenExchangeSettings,
    subject: Callable[[Principal], str],
    *,
    secret: str | None = CLIENT_SECRET,
    clock: Callable[[], float] = time.time,
    max_cached: int = 10_000,
) -> TokenExchange:
    return TokenExchange(
        config,
        route_name="notes",
        send=guard.send,
        subject_token=subject,
        client_secret=secret,
        clock=clock,
        max_cached=max_cached,
    )


def verified_claims(sts: Sts, token: UpstreamToken) -> dict[str, Any]:
    """The issued token's claims, its ES256 signature checked against the STS's JWK Set."""
    decoded = jwt.decode(token.access_token, KeySet.import_key_set(sts.jwks), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    return dict(decoded.claims)


# --- exchanges -------------------------------------------------------------------------------------------------


async def test_exchange_issues_an_audience_restricted_token_for_the_user(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    clock = Clock()
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer), clock=clock)

    token = await exchange.token_for(ALICE)

    claims = verified_claims(sts, token)
    assert claims["iss"] == STS_ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == UPSTREAM
    assert claims["act"] == {"sub": CLIENT_ID}
    assert claims["scope"] == "notes.read notes.write"
    assert token.token_type == "Bearer"
    assert token.header() == {"authorization": f"Bearer {token.access_token}"}
    assert token.expires_at == clock.now + EXPIRES_IN  # counted from before the request
    assert token.scope == "notes.read notes.write"
    [record] = sts.records()
    assert record["status"] == 200
    assert record["auth"] == "basic"
    assert record["client_id"] == CLIENT_ID
    assert record["sub"] == "alice"
    assert record["jti"] == claims["jti"]
    assert record["audience"] == UPSTREAM
    assert record["resource"] is None
    assert record["scope"] == "notes.read notes.write"
    assert record["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert record["subject_token_type"] == JWT_TYPE


async def test_resource_is_sent_as_the_target(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    exchange = exchange_for(guard, settings(sts, audience=None, resource=UPSTREAM, scopes=[]), SubjectTokens(issuer))

    token = await exchange.token_for(ALICE)

    assert verified_claims(sts, token)["aud"] == UPSTREAM
    assert "scope" not in verified_claims(sts, token)
    assert token.scope is None
    [record] = sts.records()
    assert (record["resource"], record["audience"], record["scope"]) == (UPSTREAM, None, None)


async def test_cached_token_is_reused_until_the_refresh_margin(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    clock = Clock()
    config = settings(sts, refresh_margin_s=30)
    exchange = exchange_for(guard, config, SubjectTokens(issuer), clock=clock)
    first = await exchange.token_for(ALICE)
    assert first.expires_at is not None

    clock.now = first.expires_at - 31  # still fresh: expires more than 30 s from now
    assert await exchange.token_for(ALICE) is first
    assert len(sts.records()) == 1

    clock.now = first.expires_at - 30  # inside the margin: exchanged again
    second = await exchange.token_for(ALICE)
    assert second.access_token != first.access_token
    assert [r["status"] for r in sts.records()] == [200, 200]
    clock.now += 1
    assert await exchange.token_for(ALICE) is second
    assert len(sts.records()) == 2


async def test_cache_is_per_principal(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer))

    alice, bob = await exchange.token_for(ALICE), await exchange.token_for(BOB)

    assert verified_claims(sts, alice)["sub"] == "alice"
    assert verified_claims(sts, bob)["sub"] == "bob"
    assert [r["sub"] for r in sts.records()] == ["alice", "bob"]


async def test_the_cache_drops_the_least_recently_used_principal(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    carol = Principal(kind="User", sub="carol", issuer=BASTION_ISSUER, auth_method="bastion_jwt", expires_at=0)
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer), max_cached=2)
    alice, bob = await exchange.token_for(ALICE), await exchange.token_for(BOB)
    assert await exchange.token_for(ALICE) is alice  # alice is now the most recently used

    await exchange.token_for(carol)  # evicts bob, not alice

    assert await exchange.token_for(ALICE) is alice
    assert await exchange.token_for(BOB) is not bob
    assert [r["sub"] for r in sts.records()] == ["alice", "bob", "carol", "bob"]
    assert "cached=2" in repr(exchange)


async def test_concurrent_calls_for_one_principal_share_one_request(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer))

    tokens = await asyncio.gather(*(exchange.token_for(ALICE) for _ in range(8)), exchange.token_for(BOB))

    assert len({token.access_token for token in tokens[:8]}) == 1
    assert tokens[8].access_token != tokens[0].access_token
    assert sorted(r["sub"] for r in sts.records()) == ["alice", "bob"]


async def test_a_cancelled_caller_does_not_cancel_the_shared_exchange(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    exchange = exchange_for(guard, settings(sts, "/token/slow"), SubjectTokens(issuer))
    first = asyncio.create_task(exchange.token_for(ALICE))
    second = asyncio.create_task(exchange.token_for(ALICE))
    await asyncio.sleep(0.2)

    first.cancel()
    token = await second

    assert first.cancelled()
    assert verified_claims(sts, token)["sub"] == "alice"
    assert len(sts.records()) == 1


async def test_forget_forces_a_new_exchange(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer))
    first = await exchange.token_for(ALICE)
    bob = await exchange.token_for(BOB)

    exchange.forget(ALICE.key)
    exchange.forget("never-cached")  # no error

    second = await exchange.token_for(ALICE)
    assert second.access_token != first.access_token
    assert await exchange.token_for(BOB) is bob
    assert [r["sub"] for r in sts.records()] == ["alice", "bob", "alice"]


async def test_a_token_without_expires_in_is_used_once(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    exchange = exchange_for(guard, settings(sts, "/token/no-expires-in"), SubjectTokens(issuer))

    first, second = await exchange.token_for(ALICE), await exchange.token_for(ALICE)

    assert first.expires_at is None
    assert first.access_token != second.access_token
    assert len(sts.records()) == 2


async def test_scope_left_out_of_the_response_is_the_scope_requested(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    exchange = exchange_for(guard, settings(sts, "/token/no-scope"), SubjectTokens(issuer))

    token = await exchange.token_for(ALICE)

    assert token.scope == "notes.read notes.write"  # RFC 8693 section 2.2.1: omitted when identical


async def test_na_token_type_is_accepted_for_an_issued_jwt(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    config = settings(sts, "/token/n-a-jwt", requested_token_type=JWT_TYPE)
    exchange = exchange_for(guard, config, SubjectTokens(issuer))

    token = await exchange.token_for(ALICE)

    assert token.token_type == "Bearer"
    assert verified_claims(sts, token)["sub"] == "alice"
    assert sts.records()[0]["requested_token_type"] == JWT_TYPE


# --- failures --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureCase:
    """One way the exchange fails: the STS path, the subject token, the secret, and what the error says."""

    name: str
    says: str
    error: str | None
    sts_status: int | None
    path: str = "/token"
    forged: bool = False
    expired: bool = False
    subject_audience: str = STS_AUDIENCE
    secret: str = CLIENT_SECRET
    audience: str = UPSTREAM


FAILURES = [
    FailureCase("forged subject token", "refused it (400 invalid_request", "invalid_request", 400, forged=True),
    FailureCase("expired subject token", "refused it (400 invalid_request", "invalid_request", 400, expired=True),
    FailureCase(
        "subject token for another audience",
        "subject token is not acceptable",
        "invalid_request",
        400,
        subject_audience="https://elsewhere.test",
    ),
    FailureCase("wrong client secret", "refused it (401 invalid_client", "invalid_client", 401, secret="wrong"),
    FailureCase("audience not served", "(400 invalid_target", "invalid_target", 400, audience="https://other.test"),
    FailureCase("500", "answered 500 with no OAuth error", None, 500, path="/token/500"),
    FailureCase("non-JSON body", "the response is not a JSON object", None, 200, path="/token/not-json"),
    FailureCase("no access_token", "the response has no access_token", None, 200, path="/token/no-access-token"),
    FailureCase("DPoP token", "token_type 'DPoP' cannot be presented as a bearer", None, 200, "/token/token-type-dpop"),
    FailureCase("N_A access token", "token_type 'N_A' cannot be presented", None, 200, path="/token/n-a-access-token"),
    FailureCase("redirect", "answered 302 with a redirect, which is not followed", None, 302, path="/token/redirect"),
    FailureCase(
        "error echoing the issued token", "(400 invalid_request)", "invalid_request", 400, "/token/echo-issued-token"
    ),
    FailureCase(
        "error echoing the subject token", "(400 invalid_request)", "invalid_request", 400, "/token/echo-subject-token"
    ),
]


@pytest.mark.parametrize("case", FAILURES, ids=[case.name for case in FAILURES])
async def test_sts_failures_raise_token_exchange_failed_without_tokens(
    case: FailureCase, sts: Sts, guard: EgressGuard, issuer: TokenIssuer, tmp_path: Path
) -> None:
    signer = issuer
    if case.forged:  # same issuer name and claims, another key: its kid is not in Bastion's JWKS
        signer = TokenIssuer(SigningKeys.load_or_create(tmp_path / "forger", verify_window_s=3600), BASTION_ISSUER, 60)
    subject = SubjectTokens(signer, audience=case.subject_audience, now=time.time() - 600 if case.expired else None)
    exchange = exchange_for(guard, settings(sts, case.path, audience=case.audience), subject, secret=case.secret)

    with pytest.raises(TokenExchangeFailed) as caught:
        await exchange.token_for(ALICE)

    failure = caught.value
    assert case.says in failure.message
    assert failure.message.startswith("route notes: token exchange at 127.0.0.1 failed: ")
    assert (failure.error, failure.sts_status) == (case.error, case.sts_status)
    assert (failure.status, failure.jsonrpc_code, failure.code) == (502, -32603, "token_exchange_failed")
    [subject_token] = subject.minted
    for text in (failure.message, str(failure), repr(failure)):
        assert subject_token not in text
        assert CLIENT_SECRET not in text
        assert "eyJ" not in text  # no JWT (subject or issued) in any part
    [record] = sts.records()
    assert record["status"] == case.sts_status
    # a failure is not cached: the next call asks again
    with pytest.raises(TokenExchangeFailed):
        await exchange.token_for(ALICE)
    assert len(sts.records()) == 2


async def test_an_error_description_is_shown_unless_it_repeats_a_secret(
    sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer), secret="not-the-secret")
    with pytest.raises(TokenExchangeFailed, match=r"\(401 invalid_client: unknown client or wrong secret\)$"):
        await exchange.token_for(ALICE)

    # the STS's description ("... wrong secret") contains the secret Bastion sent ("wrong"): dropped
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer), secret="wrong")
    with pytest.raises(TokenExchangeFailed, match=r"\(401 invalid_client\)$"):
        await exchange.token_for(ALICE)


async def test_sts_timeout_is_upstream_unavailable(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    exchange = exchange_for(guard, settings(sts, "/token/slow", timeout_s=0.3), SubjectTokens(issuer))

    with pytest.raises(UpstreamUnavailable, match=r"127\.0\.0\.1 timed out after 0\.3 s"):
        await exchange.token_for(ALICE)


async def test_loopback_sts_without_allow_is_refused_by_the_guard(sts: Sts, issuer: TokenIssuer) -> None:
    async with EgressGuard() as strict:
        exchange = exchange_for(strict, settings(sts), SubjectTokens(issuer))
        with pytest.raises(EgressDenied, match=r"127\.0\.0\.1 is a loopback address"):
            await exchange.token_for(ALICE)
    assert sts.records() == []


@pytest.mark.parametrize(
    "endpoint",
    ["https://169.254.169.254/token", "https://[::ffff:169.254.169.254]/token", "https://0xa9fea9fe/token"],
)
async def test_metadata_address_sts_is_refused_by_the_guard(
    endpoint: str, sts: Sts, guard: EgressGuard, issuer: TokenIssuer
) -> None:
    exchange = exchange_for(guard, settings(sts, token_endpoint=endpoint), SubjectTokens(issuer))

    with pytest.raises(EgressDenied, match="is a cloud metadata address"):
        await exchange.token_for(ALICE)


async def test_repr_shows_no_secret(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    exchange = exchange_for(guard, settings(sts), SubjectTokens(issuer))

    text = repr(exchange)

    assert text.startswith("TokenExchange(route='notes', token_endpoint='http://127.0.0.1:")
    assert "client_id='bastion'" in text
    assert CLIENT_SECRET not in text
    assert "s3cret" not in text


async def test_resolved_secret_must_match_the_settings(sts: Sts, guard: EgressGuard, issuer: TokenIssuer) -> None:
    with pytest.raises(ConfigError, match="client_secret is set but the resolved secret is missing"):
        exchange_for(guard, settings(sts), SubjectTokens(issuer), secret=None)
    with pytest.raises(ConfigError, match="client_secret is not set but the resolved secret was given"):
        exchange_for(guard, settings(sts, client_secret=None), SubjectTokens(issuer), secret="x")


# --- configuration ---------------------------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "token_endpoint": "https://sts.example/oauth2/token",
    "client_id": "bastion",
    "client_secret": {"env": "STS_SECRET"},
    "audience": "https://api.example",
}


def test_settings_defaults() -> None:
    config = TokenExchangeSettings.model_validate(VALID)

    assert config.requested_token_type == "urn:ietf:params:oauth:token-type:access_token"
    assert (config.subject_token_ttl_s, config.refresh_margin_s, config.allow_http) == (60, 30, False)
    assert config.subject_audience == "https://sts.example/oauth2/token"
    assert config.allow_list == AllowList()
    assert TokenExchangeSettings.model_validate(VALID | {"allow": ["10.0.0.0/8"]}).allow_list == AllowList.parse(
        ["10.0.0.0/8"]
    )


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"client_secret": "abc"}, "a secret is written inline"),
        ({"audience": None}, "needs 'audience' or 'resource'"),
        ({"token_endpoint": "http://sts.example/token"}, "http only with allow_http"),
        ({"token_endpoint": "https://sts.example/token#frag"}, "no fragment"),
        ({"token_endpoint": "https://user:pw@sts.example/token"}, "must not carry user info"),
        ({"token_endpoint": "ftp://sts.example/token", "allow_http": True}, "http or https URL"),
        ({"resource": "notes"}, "absolute URI"),
        ({"scopes": ["notes read"]}, "not a valid scope token"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "cannot be presented upstream"),
        ({"subject_token_ttl_s": 301}, "less than or equal to 300"),
        ({"subject_token_ttl_s": 0}, "greater than or equal to 1"),
        ({"refresh_margin_s": -1}, "greater than or equal to 0"),
        ({"timeout_s": 0}, "greater than 0"),
        ({"allow": ["10.0.0.1/8"]}, "egress allow list entry '10.0.0.1/8'"),
        ({"client_secret": {"env": "A", "file": "/b"}}, "exactly one of 'env' or 'file'"),
        ({"client_id": ""}, "at least 1 character"),
        ({"audiences": ["x"]}, "Extra inputs are not permitted"),
    ],
)
def test_settings_refuse_invalid_values(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        TokenExchangeSettings.model_validate(VALID | changes)


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        (
            {"token_endpoint": "http://127.0.0.1:8080/t", "allow_http": True},
            "token_endpoint",
            "http://127.0.0.1:8080/t",
        ),
        ({"audience": None, "resource": "https://api.example/mcp"}, "resource", "https://api.example/mcp"),
        ({"client_secret": None}, "client_secret", None),
        ({"client_secret": {"file": "/run/sts"}}, "client_secret", SecretRef(file=Path("/run/sts"))),
        ({"requested_token_type": JWT_TYPE}, "requested_token_type", JWT_TYPE),
        ({"scopes": ["a:b", "c"]}, "scopes", ("a:b", "c")),
        ({"subject_token_audience": "https://sts.example"}, "subject_audience", "https://sts.example"),
    ],
)
def test_settings_accept_valid_values(changes: dict[str, Any], attribute: str, expected: Any) -> None:
    assert getattr(TokenExchangeSettings.model_validate(VALID | changes), attribute) == expected
