"""Bastion as an OpenID Connect relying party, against a hostile provider: the attack table.

Each test runs the real authorization server in-process (Starlette TestClient, SQLite store and audit log,
a fake clock) with one identity provider, ``corp``: a ``HostileProvider`` over HTTPS on 127.0.0.1 whose
discovery document, JWKS, token and UserInfo answers the test sets. Bastion reaches it through its egress
guard (``egress.allow`` names the provider's port, ``egress.ca_file`` the test CA). A browser starts an
authorization request, follows the sign-in page's provider link, takes ``state`` and ``nonce`` from the
redirect to the provider and comes back to ``/oauth/callback`` with its own cookies.

Every refusal is checked for what the person sees (status, message), that nobody was signed in (no
``oauth/sign-in`` allow record, no sign-in cookie, the pending request has no user) and for its one audit
record (``deny``, the OAuth error code, ``arguments.problem``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc.jwk import ECKey, RSAKey
from markupsafe import escape
from oauth_helpers import RFC7636_VERIFIER, AuditRow, Served, audit_rows, jwt_claims, s256, served
from pydantic import ValidationError
from tests.support.hostile_oidc import HostileProvider, Reply, b64url
from tests.support.pki import Pki, make_pki

from bastion.audit import AuditLog
from bastion.config import parse_config
from bastion.config.oauth import AuthorizationServerSettings, IdentityProviderSettings
from bastion.egress import AllowList, EgressGuard, Refusal, audit_refusals
from bastion.egress.addresses import IPAddress
from bastion.egress.client import Resolver, resolve
from bastion.oauth.authorize_endpoint import BROWSER_COOKIE, SIGN_IN_COOKIE
from bastion.oauth.federation import groups_from

ISSUER = "http://127.0.0.1:8123"
ECHO = ISSUER + "/mcp/echo"
REDIRECT = "http://127.0.0.1:5555/cb"
CALLBACK = ISSUER + "/oauth/callback"
CLIENT_ID = "bastion-at-corp"
CORP_SECRET = "corp client secret"
ACCESS_TOKEN = "provider-access-token-1"
STATE_PROBLEM = "the sign-in's state is unknown, used, expired or from another browser"
EXPIRED_PAGE = "This sign-in has expired or was already used; start again from your application."


# --- keys, the provider, the server ---------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The provider's published keys and two forgers: ``rogue`` (kid not in the JWKS) and
    ``imposter`` (the kid of ``rsa``, other key material)."""

    rsa: RSAKey
    ec: ECKey
    rogue: RSAKey
    imposter: RSAKey


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
        ec=ECKey.generate_key("P-256", parameters={"kid": "ec-1"}),
        rogue=RSAKey.generate_key(2048, parameters={"kid": "rogue"}),
        imposter=RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
    )


@pytest.fixture
def op(pki: Pki, keys: Keys) -> Iterator[HostileProvider]:
    with HostileProvider(pki.localhost, rsa=keys.rsa, ec=keys.ec) as provider:
        yield provider


def write_config(tmp_path: Path, op: HostileProvider, pki: Pki, provider: dict[str, Any]) -> Any:
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);')
    document = {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": 8123},
        "policy": {"files": ["p.cedar"]},
        "identity": {
            "authorization_server": {
                "client_metadata_documents": {"enabled": False},
                "clients": [{"client_id": "cli", "client_name": "CLI", "redirect_uris": ["http://127.0.0.1/cb"]}],
                "identity_providers": [
                    {
                        "name": "corp",
                        "label": "Corp SSO",
                        "issuer": op.issuer,
                        "client_id": CLIENT_ID,
                        "client_secret": {"env": "BASTION_TEST_CORP"},
                        "scopes": ["openid", "email", "profile", "groups"],
                        **provider,
                    }
                ],
            }
        },
        "egress": {"allow": [f"127.0.0.1:{op.port}"], "ca_file": str(pki.ca_file)},
        "routes": [
            {
                "name": "echo",
                "title": "Echo",
                "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]},
            }
        ],
    }
    return parse_config(document, base_dir=tmp_path)


@dataclass
class Harness(Served):
    """A running authorization server with the hostile provider ``op`` configured as ``corp``."""

    op: HostileProvider = field(kw_only=True)

    def browser(self) -> Browser:
        return Browser(self)

    def claims(self, nonce: str | None, **overrides: Any) -> dict[str, Any]:
        """Good ID token claims for ``nonce``; an override of ``None`` leaves the claim out."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.op.issuer,
            "sub": "dana",
            "aud": CLIENT_ID,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            "at_hash": at_hash(ACCESS_TOKEN),
            **overrides,
        }
        return {k: v for k, v in claims.items() if v is not None}

    def answer(self, id_token: str | None, **extra: Any) -> None:
        """The token endpoint's next answer: a bearer token response carrying ``id_token``."""
        body: dict[str, Any] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300, **extra}
        if id_token is not None:
            body["id_token"] = id_token
        self.op.token = Reply(200, {k: v for k, v in body.items() if v is not None})


@dataclass
class Flight:
    """A sign-in sent to the provider: the browser, its pending request and what the provider got."""

    browser: Browser
    transaction: str
    query: dict[str, str]

    @property
    def state(self) -> str:
        return self.query["state"]

    @property
    def nonce(self) -> str:
        return self.query["nonce"]


@dataclass
class Browser:
    """One browser: its own ``__Host-`` cookies, sent by hand (the TestClient keeps no Secure cookie over http)."""

    h: Harness
    cookies: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, params: Any = None) -> httpx2.Response:
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        response = self.h.http.get(path, params=params, headers=headers, follow_redirects=False)
        self.cookies.update(set_cookies(response))
        return response

    def sign_in_page(self) -> httpx2.Response:
        query = {
            "response_type": "code",
            "client_id": "cli",
            "redirect_uri": REDIRECT,
            "code_challenge": s256(RFC7636_VERIFIER),
            "code_challenge_method": "S256",
            "resource": ECHO,
            "state": "client-" + secrets.token_hex(6),
        }
        page = self.get("/oauth/authorize", query)
        assert page.status_code == 200, page.text
        assert "Sign in with Corp SSO" in page.text
        return page

    def start(self) -> httpx2.Response:
        """Open the sign-in page and follow its provider link: the answer of ``/oauth/sign-in/provider``."""
        link = provider_link(self.sign_in_page())
        return self.get(link)

    def fly(self) -> Flight:
        """``start``, checked to be the 303 to the provider's authorization endpoint."""
        response = self.start()
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        assert location.startswith(self.h.op.issuer + "/authorize?"), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        transaction = parse_qs(urlsplit(str(response.request.url)).query)["transaction"][0]
        return Flight(self, transaction, query)

    def callback(self, params: Any) -> httpx2.Response:
        return self.get("/oauth/callback", params)

    def approve(self, consent: httpx2.Response) -> httpx2.Response:
        """Approve on the consent page: the 303 to the MCP client's redirect URI."""
        fields = dict(re.findall(r'name="(transaction|csrf_token)" value="([^"]+)"', consent.text))
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        data = {**fields, "decision": "approve"}
        approved = self.h.http.post("/oauth/consent", data=data, headers=headers, follow_redirects=False)
        assert approved.status_code == 303, approved.text
        return approved


def set_cookies(response: httpx2.Response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        found[name.strip()] = rest.split(";")[0]
    return found


def provider_link(page: httpx2.Response) -> str:
    match = re.search(r'href="([^"]*/oauth/sign-in/provider\?[^"]*)"', page.text)
    assert match is not None, page.text
    return html.unescape(match[1]).removeprefix(ISSUER)


def at_hash(access_token: str, digest: str = "sha256") -> str:
    """OpenID Connect Core section 3.1.3.6: the left half of the hash, base64url."""
    value = hashlib.new(digest, access_token.encode("ascii")).digest()
    return b64url(value[: len(value) // 2])


@contextmanager
def running(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    op: HostileProvider,
    pki: Pki,
    *,
    resolver: Resolver | None = None,
    refusals: EgressAudit | None = None,
    **provider: Any,
) -> Iterator[Harness]:
    """The server on ``tmp_path`` (again after a restart: the same database and keys); ``refusals``
    set: the guard's refusals are audited in the server's log, as the gateway's guard does."""
    monkeypatch.setenv("BASTION_TEST_CORP", CORP_SECRET)
    config = write_config(tmp_path, op, pki, provider)
    allow = AllowList.parse(config.egress.allow)
    guard = EgressGuard(allow=allow, ca_file=config.egress.ca_file, resolver=resolver, on_refusal=refusals)
    with served(config, tmp_path / "data", egress=guard) as run:
        if refusals is not None:
            refusals.log = run.audit
        yield Harness(**vars(run), op=op)


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: HostileProvider, pki: Pki) -> Iterator[Harness]:
    with running(tmp_path, monkeypatch, op, pki) as harness:
        yield harness


# --- what a refusal must look like ----------------------------------------------------------------


def sign_in_allowed(h: Harness) -> list[AuditRow]:
    return [row for row in audit_rows(h.database) if row.method == "oauth/sign-in" and row.effect == "allow"]


def assert_refused(
    h: Harness,
    response: httpx2.Response,
    mark: int,
    *,
    status: int,
    reason: str,
    problem: str,
    flight: Flight | None = None,
    provider: str | None = "corp",
) -> None:
    """Nobody signed in; the page says so; exactly one ``oauth/sign-in`` deny record with ``problem``.

    ``provider`` set: the sign-in form again with ``problem`` shown, the record naming the provider and
    the client. ``provider=None``: the "expired" error page, the record naming no request.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert SIGN_IN_COOKIE not in set_cookies(response)
    if provider is not None:
        assert str(escape(problem)) in response.text
        assert "Sign in with Corp SSO" in response.text  # the sign-in page again: try another way
    else:
        assert str(escape(EXPIRED_PAGE)) in response.text
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason) for r in rows] == [("oauth/sign-in", "deny", reason)]
    expected = {"provider": provider, "problem": problem} if provider is not None else {"problem": problem}
    assert rows[0].arguments == expected
    assert rows[0].subject is None  # and no allow record: nobody signed in
    if flight is not None:
        pending = h.run(h.server.store.get_pending, flight.transaction, h.clock())
        assert pending is not None  # the request is still there: the person may try again
        assert pending.user is None


def refused_at_callback(h: Harness, flight: Flight, response: httpx2.Response, mark: int, problem: str) -> None:
    assert_refused(h, response, mark, status=401, reason="access_denied", problem=problem, flight=flight)


def good_callback(flight: Flight) -> dict[str, str]:
    return {"code": "the-code", "state": flight.state, "iss": flight.browser.h.op.issuer}


# --- the good path --------------------------------------------------------------------------------


def userinfo(**overrides: Any) -> Reply:
    body = {
        "sub": "dana",
        "email": "dana@example.com",
        "email_verified": True,
        "name": "Dana Scully",
        "groups": ["engineering", "on call", "eng"],
        **overrides,
    }
    return Reply(200, {k: v for k, v in body.items() if v is not None})


def sign_in_record(h: Harness) -> dict[str, Any]:
    with closing(sqlite3.connect(h.database)) as conn:
        rows = conn.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
    records = [json.loads(row[0]) for row in rows]
    signed = [r for r in records if r["method"] == "oauth/sign-in" and r["decision"]["effect"] == "allow"]
    assert len(signed) == 1
    return dict(signed[0])


def test_the_good_path_signs_in_as_corp_sub_with_groups_from_userinfo_then_issues_a_token(h: Harness) -> None:
    browser = h.browser()
    flight = browser.fly()
    query = flight.query
    assert (query["response_type"], query["client_id"], query["redirect_uri"]) == ("code", CLIENT_ID, CALLBACK)
    assert query["scope"] == "openid email profile groups"
    assert query["code_challenge_method"] == "S256"
    assert len(flight.state) >= 43
    assert len(flight.nonce) >= 43
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.op.userinfo = userinfo()

    mark = h.mark()
    consent = browser.callback(good_callback(flight))
    assert consent.status_code == 200, consent.text
    assert "Allow" in consent.text
    assert SIGN_IN_COOKIE in set_cookies(consent)
    rows = h.since(mark)
    assert [(r.method, r.effect, r.subject, r.target, r.route) for r in rows] == [
        ("oauth/sign-in", "allow", "corp:dana", "cli", "echo")
    ]
    assert rows[0].arguments == {"provider": "corp", "provider_sub": "dana", "dropped_groups": 1}
    principal = sign_in_record(h)["principal"]
    assert (principal["sub"], principal["auth_method"], principal["email"]) == ("corp:dana", "corp", "dana@example.com")
    assert principal["groups"] == ["engineering", "eng"]

    # What the provider was sent: the code with the PKCE verifier of the challenge, Bastion's
    # credentials (client_secret_basic), and the access token to UserInfo.
    (token_request,) = h.op.requests_to("/token")
    form = {k: v[0] for k, v in parse_qs(token_request.body.decode()).items()}
    assert form["grant_type"] == "authorization_code"
    assert (form["code"], form["redirect_uri"]) == ("the-code", CALLBACK)
    assert s256(form["code_verifier"]) == query["code_challenge"]
    assert "client_secret" not in form
    basic = base64.b64decode(token_request.headers["authorization"].removeprefix("Basic ")).decode()
    assert basic == "bastion-at-corp:corp%20client%20secret"  # each part encoded (RFC 6749 section 2.3.1)
    (info_request,) = h.op.requests_to("/userinfo")
    assert info_request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"

    # consent, then the MCP client's code and token carry the federated identity
    approved = browser.approve(consent)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    token = h.http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "cli",
            "code_verifier": RFC7636_VERIFIER,
            "resource": ECHO,
        },
    )
    assert token.status_code == 200, token.text
    claims = jwt_claims(token.json()["access_token"])
    assert (claims["sub"], claims["groups"], claims["email"]) == (
        "corp:dana",
        ["engineering", "eng"],
        "dana@example.com",
    )
    assert claims["bastion_idp"] == "corp"  # the provider's configured name, for principal.idp


@pytest.mark.parametrize(
    ("provider", "info", "email"),
    [
        pytest.param({}, {"email_verified": True}, "dana@example.com", id="verified-kept"),
        pytest.param({}, {"email_verified": False}, None, id="unverified-dropped"),
        pytest.param({}, {"email_verified": None}, None, id="no-email_verified-dropped"),
        pytest.param({}, {"email_verified": "true"}, None, id="string-true-dropped"),
        pytest.param({"trust_unverified_email": True}, {"email_verified": False}, "dana@example.com", id="trusted"),
        pytest.param({"trust_unverified_email": True}, {"email_verified": None}, "dana@example.com", id="trusted-none"),
    ],
)
def test_an_email_is_kept_only_when_verified_or_the_provider_is_trusted_with_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    op: HostileProvider,
    pki: Pki,
    provider: dict[str, Any],
    info: dict[str, Any],
    email: str | None,
) -> None:
    with running(tmp_path, monkeypatch, op, pki, **provider) as h:
        flight = h.browser().fly()
        h.answer(h.op.signed(h.claims(flight.nonce)))
        h.op.userinfo = userinfo(**info)
        response = flight.browser.callback(good_callback(flight))
        assert response.status_code == 200, response.text
        principal = sign_in_record(h)["principal"]
        assert (principal["sub"], principal["email"]) == ("corp:dana", email)


def test_claims_in_the_id_token_win_and_userinfo_is_not_asked_when_nothing_is_missing(h: Harness) -> None:
    flight = h.browser().fly()
    claims = h.claims(
        flight.nonce, email="d@corp.example", email_verified=True, name="Dana", groups=["sec"], azp=CLIENT_ID
    )
    h.answer(h.op.signed(claims, h.op.ec))  # ES256, the JWKS's EC key
    h.op.userinfo = userinfo(sub="someone-else")  # would be refused, were it asked
    response = flight.browser.callback(good_callback(flight))
    assert response.status_code == 200, response.text
    principal = sign_in_record(h)["principal"]
    assert (principal["sub"], principal["email"], principal["groups"]) == ("corp:dana", "d@corp.example", ["sec"])
    assert h.op.requests_to("/userinfo") == []


def test_a_token_within_the_clock_skew_and_with_aud_a_list_holding_only_bastion_is_accepted(h: Harness) -> None:
    flight = h.browser().fly()
    now = int(h.clock())
    claims = h.claims(flight.nonce, aud=[CLIENT_ID], exp=now - 30, iat=now + 30, at_hash=None)
    h.answer(h.op.signed(claims))
    h.op.userinfo = userinfo()
    response = flight.browser.callback(good_callback(flight))
    assert response.status_code == 200, response.text
    assert [row.subject for row in sign_in_allowed(h)] == ["corp:dana"]


def test_a_provider_that_does_not_announce_iss_may_leave_it_out(h: Harness) -> None:
    h.op.discovery["authorization_response_iss_parameter_supported"] = False
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.op.userinfo = userinfo()
    response = flight.browser.callback({"code": "c", "state": flight.state})
    assert response.status_code == 200, response.text
    assert len(sign_in_allowed(h)) == 1


# --- the ID token ---------------------------------------------------------------------------------

Forge = Callable[[Harness, Flight, Keys], str]


def hs256_with_public_key(h: Harness, flight: Flight, keys: Keys) -> str:
    """Algorithm confusion: HMAC keyed with the provider's public key (PEM), which anyone can fetch."""
    secret = keys.rsa.as_pem(private=False)
    signing_input = b64url(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()) + "."
    signing_input += b64url(json.dumps(h.claims(flight.nonce)).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def not_valid(what: str) -> str:
    return f"corp: the ID token is not valid ({what})"


#: every claim Bastion wants, so that UserInfo is not asked
COMPLETE = {"email": "d@corp.example", "email_verified": True, "name": "Dana", "groups": ["sec"]}
UNKNOWN_ALG = "corp: the ID token is signed with an algorithm not accepted"
UNKNOWN_KEY = "corp: the ID token's signing key is unknown (unknown_kid)"

ID_TOKEN_ATTACKS: list[Any] = [
    pytest.param(lambda h, f, k: h.op.signed(h.claims("another-nonce")), not_valid("nonce"), id="wrong-nonce"),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(None)), not_valid("nonce"), id="missing-nonce"),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce, aud="someone-else")), not_valid("aud"), id="wrong-aud"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, aud=["someone-else"])), not_valid("aud"), id="aud-list-without-us"
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, aud=[CLIENT_ID, "someone-else"])),
        not_valid("azp"),
        id="aud-list-no-azp",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, aud=[CLIENT_ID, "someone-else"], azp="someone-else")),
        not_valid("azp"),
        id="aud-list-other-azp",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, aud=[CLIENT_ID, "someone-else"], azp=CLIENT_ID)),
        not_valid("aud"),
        id="aud-list-our-azp-but-another-audience",
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce, azp="someone-else")), not_valid("azp"), id="other-azp"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, iss="https://evil.example")), not_valid("iss"), id="wrong-iss"
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce, iss=None)), not_valid("iss"), id="missing-iss"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, exp=int(h.clock()) - 61)), not_valid("exp"), id="expired"
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce, exp=None)), not_valid("exp"), id="missing-exp"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, iat=int(h.clock()) + 3600)), not_valid("iat"), id="iat-future"
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce, iat=None)), not_valid("iat"), id="missing-iat"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, nbf=int(h.clock()) + 3600)), not_valid("nbf"), id="nbf-future"
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce, sub=None)), not_valid("sub"), id="missing-sub"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, sub="x" * 256, **COMPLETE)),
        "corp: the ID token's sub is not a usable identifier",
        id="sub-too-long",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, sub="dana\nadmin", **COMPLETE)),
        "corp: the ID token's sub is not a usable identifier",
        id="sub-control-character",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce, at_hash=at_hash("another-access-token"))),
        not_valid("at_hash"),
        id="at_hash-mismatch",
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce), header={"alg": "none"}), UNKNOWN_ALG, id="alg-none"),
    pytest.param(hs256_with_public_key, UNKNOWN_ALG, id="hs256-with-the-public-key"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce), k.rsa, header={"alg": "RS384", "kid": "rsa-1"}),
        UNKNOWN_ALG,
        id="alg-not-announced",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce), header={"alg": ["RS256"], "kid": "rsa-1"}),
        UNKNOWN_ALG,
        id="alg-not-a-string",
    ),
    pytest.param(lambda h, f, k: h.op.signed(h.claims(f.nonce), k.rogue), UNKNOWN_KEY, id="unknown-kid"),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce), k.imposter),
        not_valid("BadSignatureError"),
        id="same-kid-other-key",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce), k.rogue, header={"alg": "RS256"}),
        not_valid("BadSignatureError"),
        id="no-kid-other-key",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce), k.rsa, header={"alg": "RS256", "kid": "ec-1"}),
        UNKNOWN_KEY,
        id="kid-of-a-key-of-another-type",
    ),
    pytest.param(
        lambda h, f, k: h.op.signed(h.claims(f.nonce), k.rsa)[:-8] + "AAAAAAAA",
        not_valid("BadSignatureError"),
        id="tampered-signature",
    ),
    pytest.param(lambda h, f, k: "not-a-jwt", not_valid("DecodeError"), id="not-a-jws"),
]


@pytest.mark.parametrize(("forge", "problem"), ID_TOKEN_ATTACKS)
def test_an_id_token_that_does_not_check_out_is_refused(h: Harness, keys: Keys, forge: Forge, problem: str) -> None:
    flight = h.browser().fly()
    h.answer(forge(h, flight, keys))
    h.op.userinfo = userinfo()
    mark = h.mark()
    response = flight.browser.callback(good_callback(flight))
    refused_at_callback(h, flight, response, mark, problem)
    assert h.op.requests_to("/userinfo") == []  # nothing is asked with a token from an unverified response


# --- the token and UserInfo responses -------------------------------------------------------------


def token_reply(h: Harness, flight: Flight, **body: Any) -> Reply:
    base = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "id_token": h.op.signed(h.claims(flight.nonce))}
    return Reply(200, {k: v for k, v in {**base, **body}.items() if v is not None})


TOKEN_ATTACKS: list[Any] = [
    pytest.param(
        lambda h, f: token_reply(h, f, id_token=None), "corp: the token response has no ID token", id="no-id_token"
    ),
    pytest.param(
        lambda h, f: token_reply(h, f, id_token=["a.b.c"]),
        "corp: the token response has no ID token",
        id="id_token-list",
    ),
    pytest.param(
        lambda h, f: token_reply(h, f, token_type="DPoP"),
        "corp: the token response is not a bearer token response",
        id="token_type-dpop",
    ),
    pytest.param(
        lambda h, f: token_reply(h, f, token_type=None),
        "corp: the token response is not a bearer token response",
        id="no-token_type",
    ),
    pytest.param(
        lambda h, f: Reply(400, {"error": "invalid_grant", "error_description": "the code was used"}),
        "corp: the provider refused the sign-in code (invalid_grant)",
        id="invalid_grant",
    ),
    pytest.param(
        lambda h, f: Reply(400, {"error": "<script>alert(1)</script>"}),
        "corp: the provider refused the sign-in code (<script>alert(1)</script>)",
        id="error-with-markup-is-escaped",
    ),
    pytest.param(
        lambda h, f: Reply(400, {"error": "x\n" * 10}),
        "corp: the provider refused the sign-in code",
        id="error-unprintable",
    ),
    pytest.param(
        lambda h, f: Reply(200, b"<html>not json</html>", content_type="text/html"),
        "corp: the token response is not a bearer token response",
        id="not-json",
    ),
    pytest.param(
        lambda h, f: Reply(200, ["access_token"]),
        "corp: the token response is not a bearer token response",
        id="json-not-an-object",
    ),
    pytest.param(
        lambda h, f: Reply(307, b"", headers={"Location": h.op.issuer + "/token-elsewhere"}),
        "corp: the provider refused the sign-in code",
        id="redirect-not-followed",
    ),
]


@pytest.mark.parametrize(("reply", "problem"), TOKEN_ATTACKS)
def test_a_token_response_that_is_wrong_is_refused(
    h: Harness, reply: Callable[[Harness, Flight], Reply], problem: str
) -> None:
    flight = h.browser().fly()
    h.op.token = reply(h, flight)
    h.op.userinfo = userinfo()
    mark = h.mark()
    response = flight.browser.callback(good_callback(flight))
    refused_at_callback(h, flight, response, mark, problem)
    assert "<script>alert" not in response.text
    assert h.op.requests_to("/token-elsewhere") == []  # the code is never carried to a redirect's target
    assert h.op.requests_to("/userinfo") == []


USERINFO_ATTACKS: list[Any] = [
    pytest.param(userinfo(sub="mallory"), "corp: the UserInfo response is for another subject", id="other-sub"),
    pytest.param(userinfo(sub=None), "corp: the UserInfo response is for another subject", id="no-sub"),
    pytest.param(
        Reply(200, b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJkYW5hIn0.", content_type="application/jwt"),
        "corp: the UserInfo endpoint answered 200, not JSON",
        id="signed-userinfo",
    ),
    pytest.param(
        Reply(401, {"error": "invalid_token"}), "corp: the UserInfo endpoint answered 401, not JSON", id="401"
    ),
]


@pytest.mark.parametrize(("reply", "problem"), USERINFO_ATTACKS)
def test_a_userinfo_response_that_is_wrong_is_refused(h: Harness, reply: Reply, problem: str) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.op.userinfo = reply
    mark = h.mark()
    response = flight.browser.callback(good_callback(flight))
    refused_at_callback(h, flight, response, mark, problem)


# --- the discovery document and the egress guard --------------------------------------------------


def start_refused(h: Harness, problem: str) -> None:
    """The provider link answers the sign-in form again (502) with ``problem``, audited; nothing stored."""
    browser = h.browser()
    page = browser.sign_in_page()
    mark = h.mark()
    response = browser.get(provider_link(page))
    assert_refused(h, response, mark, status=502, reason="temporarily_unavailable", problem=problem)


DISCOVERY_ATTACKS: list[Any] = [
    pytest.param(
        {"issuer": "https://evil.example"}, "corp: the discovery document names another issuer", id="another-issuer"
    ),
    pytest.param(
        {"issuer": "https://127.0.0.1"}, "corp: the discovery document names another issuer", id="issuer-without-port"
    ),
    pytest.param(
        {"id_token_signing_alg_values_supported": ["HS256", "none"]},
        'corp: the discovery document is not valid: "RS256" MUST be included in '
        '"id_token_signing_alg_values_supported"',
        id="no-acceptable-alg",
    ),
    pytest.param(
        {"code_challenge_methods_supported": ["plain"]},
        "corp: the provider does not support PKCE S256",
        id="no-pkce-s256",
    ),
    pytest.param(
        {"token_endpoint": "http://idp.example/token"},
        'corp: the discovery document is not valid: "token_endpoint" MUST use "https" scheme',
        id="http-token-endpoint",
    ),
    pytest.param(
        {"jwks_uri": None},
        'corp: the discovery document is not valid: "jwks_uri" is required',
        id="no-jwks_uri",
    ),
    # A hostile document's values of the wrong JSON type are refused like any invalid document.
    pytest.param({"issuer": 5}, "corp: the discovery document is not valid", id="issuer-a-number"),
    pytest.param(
        {"authorization_endpoint": ["https://127.0.0.1/authorize"]},
        "corp: the discovery document is not valid",
        id="endpoint-a-list",
    ),
    pytest.param(
        {"code_challenge_methods_supported": 256},
        "corp: the provider does not support PKCE S256",
        id="pkce-methods-a-number",
    ),
    pytest.param(
        {"code_challenge_methods_supported": "S256"},
        "corp: the provider does not support PKCE S256",
        id="pkce-methods-a-string",
    ),
]


@pytest.mark.parametrize(("change", "problem"), DISCOVERY_ATTACKS)
def test_a_discovery_document_that_is_wrong_is_refused_at_the_start(
    h: Harness, change: dict[str, Any], problem: str
) -> None:
    h.op.discovery.update(change)
    h.op.discovery = {k: v for k, v in h.op.discovery.items() if v is not None}
    browser = h.browser()
    page = browser.sign_in_page()
    mark = h.mark()
    response = browser.get(provider_link(page))
    assert response.status_code == 502, response.text
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason) for r in rows] == [("oauth/sign-in", "deny", "temporarily_unavailable")]
    shown = rows[0].arguments["problem"]
    assert shown.startswith(problem), shown
    assert_refused(h, response, mark, status=502, reason="temporarily_unavailable", problem=shown)
    assert h.op.requests_to("/authorize") == []


def test_entries_of_the_wrong_type_among_the_signing_algorithms_are_ignored(h: Harness) -> None:
    h.op.discovery["id_token_signing_alg_values_supported"] = ["RS256", {"alg": "none"}, ["HS256"], 5]
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.op.userinfo = userinfo()
    response = flight.browser.callback(good_callback(flight))
    assert response.status_code == 200, response.text
    assert len(sign_in_allowed(h)) == 1


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        pytest.param(Reply(404, {"error": "nope"}), "corp: the discovery document answered 404, not JSON", id="404"),
        pytest.param(Reply(200, b"<html/>"), "corp: the discovery document answered 200, not JSON", id="not-json"),
        pytest.param(
            Reply(200, b"x" * (64 * 1024 + 1)), "corp: the provider cannot be reached (discovery)", id="too-large"
        ),
    ],
)
def test_a_discovery_answer_that_is_not_a_document_is_refused_at_the_start(
    h: Harness, reply: Reply, problem: str
) -> None:
    h.op.discovery_reply = reply
    start_refused(h, problem)


class PrivateResolver:
    """``idp.corp.example`` resolves to a private address; other names as ``getaddrinfo`` says."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host == "idp.corp.example":
            return [ipaddress.ip_address("10.0.0.1")]
        return await resolve(host, port)


@pytest.mark.parametrize(
    "issuer",
    [
        pytest.param("https://10.0.0.1", id="private-ip-literal"),
        pytest.param("https://169.254.169.254", id="cloud-metadata"),
        pytest.param("https://idp.corp.example:{port}", id="name-resolving-to-a-private-address"),
        pytest.param("https://127.0.0.1:1", id="loopback-on-a-port-not-allowed"),
    ],
)
def test_a_provider_on_an_address_not_in_egress_allow_is_refused_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: HostileProvider, pki: Pki, issuer: str
) -> None:
    resolver = PrivateResolver()
    issuer = issuer.format(port=op.port)
    with running(tmp_path, monkeypatch, op, pki, resolver=resolver, issuer=issuer) as h:
        start_refused(h, "corp: the provider cannot be reached (discovery)")
    assert op.seen == []
    assert resolver.asked == (["idp.corp.example"] if "corp.example" in issuer else [])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            {"token_endpoint": "https://10.0.0.1/token"},
            "corp: the provider cannot be reached (token)",
            id="token-endpoint-private",
        ),
        pytest.param(
            {"token_endpoint": "http://127.0.0.1:{port}/token"},
            "corp: the provider cannot be reached (token)",
            id="token-endpoint-plain-http",
        ),
        pytest.param(
            {"jwks_uri": "https://169.254.169.254/jwks"},
            "corp: the ID token's signing key is unknown (jwks_unavailable)",
            id="jwks-on-cloud-metadata",
        ),
        pytest.param(
            {"userinfo_endpoint": "https://169.254.169.254/userinfo"},
            "corp: the provider cannot be reached (UserInfo)",
            id="userinfo-on-cloud-metadata",
        ),
    ],
)
def test_endpoints_the_discovery_document_points_at_private_addresses_are_never_reached(
    h: Harness, change: dict[str, str], problem: str
) -> None:
    h.op.discovery.update({k: v.format(port=h.op.port) for k, v in change.items()})
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.op.userinfo = userinfo()
    mark = h.mark()
    response = flight.browser.callback(good_callback(flight))
    refused_at_callback(h, flight, response, mark, problem)


# --- a provider the guard must refuse although it answers ------------------------------------------
#
# The targets above cannot be reached at all, so they would fail the same way without the guard's
# address check. ``decoy`` is a provider as good as ``op`` (the same keys and certificate) that answers
# on a loopback port ``egress.allow`` does not list: only the guard stands between it and Bastion, and
# a refusal leaves the guard's own ``egress/connect`` record before the sign-in's deny.


@dataclass
class EgressAudit:
    """The guard's ``on_refusal`` hook (``audit_refusals``) on the served audit log, bound once it is open."""

    log: AuditLog | None = None

    async def __call__(self, refusal: Refusal) -> None:
        assert self.log is not None
        await audit_refusals(self.log)(refusal)


@pytest.fixture
def decoy(pki: Pki, keys: Keys) -> Iterator[HostileProvider]:
    with HostileProvider(pki.localhost, rsa=keys.rsa, ec=keys.ec) as provider:
        yield provider


def refused_by_the_guard(h: Harness, mark: int, url: str) -> int:
    """The first record after ``mark`` is the guard's refusal of ``url`` (a loopback address not in
    ``egress.allow``, for the identity provider); returns its seq."""
    rows = h.since(mark)
    assert rows, "no audit record after the mark"
    refusal = rows[0]
    assert (refusal.method, refusal.effect, refusal.reason) == ("egress/connect", "deny", "egress_denied")
    assert refusal.target == url
    reason = "127.0.0.1 is a loopback address"
    assert refusal.arguments == {"url": url, "purpose": "identity_provider", "reason": reason, "hop": 0}
    return refusal.seq


def test_discovery_from_a_reachable_provider_not_in_egress_allow_is_refused_by_the_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: HostileProvider, pki: Pki, decoy: HostileProvider
) -> None:
    with running(tmp_path, monkeypatch, op, pki, refusals=EgressAudit(), issuer=decoy.issuer) as h:
        browser = h.browser()
        page = browser.sign_in_page()
        mark = h.mark()
        response = browser.get(provider_link(page))
        after = refused_by_the_guard(h, mark, decoy.issuer + "/.well-known/openid-configuration")
        problem = "corp: the provider cannot be reached (discovery)"
        assert_refused(h, response, after, status=502, reason="temporarily_unavailable", problem=problem)
    assert decoy.seen == []


@pytest.mark.parametrize(
    ("endpoint", "path", "problem"),
    [
        pytest.param("jwks_uri", "/jwks", "corp: the ID token's signing key is unknown (jwks_unavailable)", id="jwks"),
        pytest.param("token_endpoint", "/token", "corp: the provider cannot be reached (token)", id="token"),
        pytest.param(
            "userinfo_endpoint", "/userinfo", "corp: the provider cannot be reached (UserInfo)", id="userinfo"
        ),
    ],
)
def test_an_endpoint_on_a_reachable_provider_not_in_egress_allow_is_refused_by_the_guard(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    op: HostileProvider,
    pki: Pki,
    decoy: HostileProvider,
    endpoint: str,
    path: str,
    problem: str,
) -> None:
    with running(tmp_path, monkeypatch, op, pki, refusals=EgressAudit()) as h:
        h.op.discovery[endpoint] = decoy.issuer + path
        flight = h.browser().fly()
        h.answer(h.op.signed(h.claims(flight.nonce)))
        h.op.userinfo = userinfo()
        decoy.token, decoy.userinfo = h.op.token, h.op.userinfo  # the decoy would sign the person in
        mark = h.mark()
        response = flight.browser.callback(good_callback(flight))
        after = refused_by_the_guard(h, mark, decoy.issuer + path)
        refused_at_callback(h, flight, response, after, problem)
    assert decoy.seen == []


# --- the callback: state, browser, iss ------------------------------------------------------------


def test_a_replayed_callback_is_refused(h: Harness) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.op.userinfo = userinfo()
    first = flight.browser.callback(good_callback(flight))
    assert first.status_code == 200, first.text
    flight.browser.cookies.pop(SIGN_IN_COOKIE)

    mark = h.mark()
    again = flight.browser.callback(good_callback(flight))
    assert again.status_code == 400, again.text
    assert SIGN_IN_COOKIE not in set_cookies(again)
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason, r.arguments) for r in rows] == [
        ("oauth/sign-in", "deny", "invalid_request", {"problem": STATE_PROBLEM})
    ]
    assert len(h.op.requests_to("/token")) == 1  # the code was redeemed once


def test_a_callback_replayed_after_a_refusal_is_refused_too(h: Harness) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims("another-nonce")))
    mark = h.mark()
    refused_at_callback(h, flight, flight.browser.callback(good_callback(flight)), mark, not_valid("nonce"))
    h.answer(h.op.signed(h.claims(flight.nonce)))
    mark = h.mark()
    again = flight.browser.callback(good_callback(flight))
    assert_refused(h, again, mark, status=400, reason="invalid_request", problem=STATE_PROBLEM, provider=None)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(lambda f: {"code": "c", "state": "not-a-state-bastion-made"}, id="unknown-state"),
        pytest.param(lambda f: {"code": "c", "state": f.nonce}, id="the-nonce-as-state"),
        pytest.param(lambda f: {"code": "c"}, id="no-state"),
        pytest.param(lambda f: {"code": "c", "state": ""}, id="empty-state"),
    ],
)
def test_a_callback_with_a_state_bastion_did_not_issue_is_refused(
    h: Harness, params: Callable[[Flight], dict[str, str]]
) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    mark = h.mark()
    response = flight.browser.callback(params(flight))
    assert_refused(h, response, mark, status=400, reason="invalid_request", problem=STATE_PROBLEM, provider=None)
    assert h.op.requests_to("/token") == []


def test_a_callback_without_the_browser_cookie_is_refused(h: Harness) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    mark = h.mark()
    response = Browser(h).callback(good_callback(flight))
    assert_refused(h, response, mark, status=400, reason="invalid_request", problem=STATE_PROBLEM, provider=None)
    assert h.op.requests_to("/token") == []


def test_a_callback_carried_to_another_browser_is_refused_login_csrf(h: Harness) -> None:
    """The attacker's own sign-in, its callback URL sent to a victim whose browser has its own request."""
    attacker = h.browser().fly()
    h.answer(h.op.signed(h.claims(attacker.nonce, sub="mallory")))
    victim = h.browser()
    victim.sign_in_page()
    assert victim.cookies[BROWSER_COOKIE] != attacker.browser.cookies[BROWSER_COOKIE]
    mark = h.mark()
    response = victim.callback(good_callback(attacker))
    assert_refused(h, response, mark, status=400, reason="invalid_request", problem=STATE_PROBLEM, provider=None)
    assert h.op.requests_to("/token") == []
    # the state was taken by that attempt: it is not good for the attacker's own browser afterwards either
    mark = h.mark()
    again = attacker.browser.callback(good_callback(attacker))
    assert_refused(h, again, mark, status=400, reason="invalid_request", problem=STATE_PROBLEM, provider=None)


def test_a_second_sign_in_for_a_request_already_answered_is_refused(h: Harness) -> None:
    """The person clicked the provider twice; the first sign-in went through consent, which took the request."""
    browser = h.browser()
    link = provider_link(browser.sign_in_page())
    first, second = (parse_qs(urlsplit(browser.get(link).headers["location"]).query) for _ in range(2))
    h.answer(h.op.signed(h.claims(first["nonce"][0])))
    h.op.userinfo = userinfo()
    consent = browser.callback({"code": "c", "state": first["state"][0], "iss": h.op.issuer})
    assert consent.status_code == 200, consent.text
    browser.approve(consent)
    browser.cookies.pop(SIGN_IN_COOKIE)

    h.answer(h.op.signed(h.claims(second["nonce"][0])))
    mark = h.mark()
    response = browser.callback({"code": "c2", "state": second["state"][0], "iss": h.op.issuer})
    problem = "the authorization request has expired"
    assert_refused(h, response, mark, status=400, reason="invalid_request", problem=problem, provider=None)
    assert len(h.op.requests_to("/token")) == 1


def test_a_callback_after_the_request_expired_is_refused(h: Harness) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    h.clock.advance(601)  # request_ttl
    mark = h.mark()
    response = flight.browser.callback(good_callback(flight))
    assert_refused(h, response, mark, status=400, reason="invalid_request", problem=STATE_PROBLEM, provider=None)


MIX_UP = "corp: the response names another issuer (RFC 9207)"


@pytest.mark.parametrize(
    ("announced", "iss"),
    [
        pytest.param(True, "https://evil.example", id="another-issuer"),
        pytest.param(False, "https://evil.example", id="another-issuer-not-announced"),
        pytest.param(True, None, id="missing-when-announced"),
        pytest.param(True, "", id="empty"),
    ],
)
def test_a_callback_naming_another_issuer_is_refused_mix_up(h: Harness, announced: bool, iss: str | None) -> None:
    h.op.discovery["authorization_response_iss_parameter_supported"] = announced
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    params = {"code": "c", "state": flight.state} | ({"iss": iss} if iss is not None else {})
    mark = h.mark()
    response = flight.browser.callback(params)
    refused_at_callback(h, flight, response, mark, MIX_UP)
    assert h.op.requests_to("/token") == []


def test_a_missing_iss_is_refused_after_a_restart_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: HostileProvider, pki: Pki
) -> None:
    """The sign-in outlives the process (SQLite); the new process must still know the provider announces ``iss``."""
    with running(tmp_path, monkeypatch, op, pki) as h:
        flight = h.browser().fly()
        cookies = dict(flight.browser.cookies)
    with running(tmp_path, monkeypatch, op, pki) as h:
        h.answer(h.op.signed(h.claims(flight.nonce)))
        browser = Browser(h, cookies)
        flight = Flight(browser, flight.transaction, flight.query)
        mark = h.mark()
        response = browser.callback({"code": "c", "state": flight.state})
        refused_at_callback(h, flight, response, mark, MIX_UP)
        assert op.requests_to("/token") == []


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        pytest.param(
            {"error": "access_denied", "error_description": "the user said no"},
            "corp: the provider did not sign you in (access_denied)",
            id="access_denied",
        ),
        pytest.param(
            {"error": "<img src=x onerror=alert(1)>"},
            "corp: the provider did not sign you in (<img src=x onerror=alert(1)>)",
            id="error-with-markup-is-escaped",
        ),
        pytest.param(
            {"error": "login_required\r\nX: y"}, "corp: the provider did not sign you in", id="error-unprintable"
        ),
        pytest.param(
            {"error": "access_denied", "code": "c"},
            "corp: the provider did not sign you in (access_denied)",
            id="error-and-code",
        ),
        pytest.param({}, "corp: the provider sent no code", id="no-code"),
    ],
)
def test_a_callback_without_a_sign_in_is_refused(h: Harness, params: dict[str, str], problem: str) -> None:
    flight = h.browser().fly()
    mark = h.mark()
    response = flight.browser.callback({"state": flight.state, "iss": h.op.issuer, **params})
    refused_at_callback(h, flight, response, mark, problem)
    assert "<img src=x" not in response.text
    assert h.op.requests_to("/token") == []


@pytest.mark.parametrize("name", ["state", "code", "iss"])
def test_a_callback_with_a_repeated_parameter_is_refused(h: Harness, name: str) -> None:
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims(flight.nonce)))
    params: list[tuple[str, str]] = [*good_callback(flight).items(), (name, good_callback(flight)[name])]
    mark = h.mark()
    response = flight.browser.callback(params)
    problem = f"parameter {name!r} is repeated"
    assert_refused(h, response, mark, status=400, reason="invalid_request", problem=problem, provider=None)
    assert h.op.requests_to("/token") == []


# --- the start: the provider link -----------------------------------------------------------------


def test_the_provider_link_from_another_browser_or_for_another_provider_is_refused(h: Harness) -> None:
    browser = h.browser()
    link = provider_link(browser.sign_in_page())
    pending_id = parse_qs(urlsplit(link).query)["transaction"][0]

    mark = h.mark()
    response = Browser(h).get(link)  # no browser cookie
    assert response.status_code == 400
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason, r.target, r.arguments) for r in rows] == [
        ("oauth/sign-in", "deny", "invalid_request", "cli", {"problem": "start again from your application"})
    ]

    mark = h.mark()
    response = browser.get("/oauth/sign-in/provider", {"transaction": pending_id, "provider": "local"})
    assert response.status_code == 400
    rows = h.since(mark)
    assert [(r.reason, r.arguments) for r in rows] == [("invalid_request", {"problem": "no such identity provider"})]
    assert h.op.seen == []
    assert not sign_in_allowed(h)


# --- groups_from ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "groups", "dropped"),
    [
        pytest.param(["eng", "ops"], ("eng", "ops"), 0, id="strings"),
        pytest.param("eng", ("eng",), 0, id="one-string"),
        pytest.param(None, (), 0, id="absent"),
        pytest.param([], (), 0, id="empty-list"),
        pytest.param(5, (), 1, id="a-number"),
        pytest.param({"eng": True}, (), 1, id="an-object"),
        pytest.param(True, (), 1, id="a-boolean"),
        pytest.param(["eng", 5, None, ["ops"], {"g": 1}], ("eng",), 4, id="non-strings-in-the-list"),
        pytest.param(["on call", " eng", "eng\t", "a\u00a0b", "x\u2028y"], (), 5, id="whitespace"),
        pytest.param(["nul\x00", "bell\x07", "del\x7f", "zw\u200b", "rtl\u202e"], (), 5, id="control-characters"),
        pytest.param("on call", (), 1, id="one-string-with-a-space"),
        pytest.param(["", "ok"], ("ok",), 1, id="empty-string"),
        pytest.param(["x" * 256, "y" * 257], ("x" * 256,), 1, id="too-long"),
        pytest.param(["eng", "eng", "ops", "eng"], ("eng", "ops"), 0, id="duplicates"),
        pytest.param(["Eng", "eng", "ÉQUIPE-été"], ("Eng", "eng", "ÉQUIPE-été"), 0, id="case-and-letters-kept"),
    ],
)
def test_groups_from(value: Any, groups: tuple[str, ...], dropped: int) -> None:
    assert groups_from(value) == (groups, dropped)


def test_groups_from_keeps_the_first_256() -> None:
    names = [f"g{i}" for i in range(300)]
    kept, dropped = groups_from([*names, "g0"])
    assert kept == tuple(names[:256])
    assert dropped == 44


# --- IdentityProviderSettings ---------------------------------------------------------------------


def provider_settings(**overrides: Any) -> dict[str, Any]:
    return {"name": "corp", "issuer": "https://idp.example.com", "client_id": "bastion", **overrides}


def test_a_provider_with_the_defaults_is_valid() -> None:
    settings = IdentityProviderSettings(**provider_settings())
    assert settings.scopes == ("openid", "email", "profile")
    assert (settings.display_name, settings.groups_claim, settings.userinfo) == ("corp", "groups", True)
    assert settings.trust_unverified_email is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"issuer": "http://idp.example.com"}, "must be an https URL", id="http-issuer"),
        pytest.param({"issuer": "idp.example.com"}, "must be an https URL", id="issuer-no-scheme"),
        pytest.param({"issuer": "https://"}, "must be an https URL", id="issuer-no-host"),
        pytest.param({"issuer": "https://idp.example.com/?tenant=1"}, "must be an https URL", id="issuer-query"),
        pytest.param({"issuer": "https://idp.example.com/#x"}, "must be an https URL", id="issuer-fragment"),
        pytest.param({"scopes": ["email", "profile"]}, "must include 'openid'", id="no-openid-scope"),
        pytest.param({"scopes": ["openid", 'bad"scope']}, "not a valid scope token", id="bad-scope-token"),
        pytest.param({"name": "Corp"}, "String should match pattern", id="name-uppercase"),
        pytest.param({"name": "-corp"}, "String should match pattern", id="name-leading-dash"),
        pytest.param({"name": "corp_sso"}, "String should match pattern", id="name-underscore"),
        pytest.param({"name": "corp:sso"}, "String should match pattern", id="name-colon"),
        pytest.param({"name": "c" * 33}, "String should match pattern", id="name-too-long"),
        pytest.param({"name": ""}, "String should match pattern", id="name-empty"),
        pytest.param({"client_id": ""}, "at least 1 character", id="empty-client-id"),
        pytest.param({"clock_skew_s": 601}, "less than or equal to 600", id="clock-skew-too-large"),
        pytest.param({"unknown": 1}, "Extra inputs are not permitted", id="unknown-field"),
    ],
)
def test_a_provider_setting_that_is_wrong_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        IdentityProviderSettings(**provider_settings(**overrides))


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(["corp", "corp"], id="duplicate"),
        pytest.param(["local"], id="local"),
        pytest.param(["corp", "local"], id="local-among-others"),
    ],
)
def test_provider_names_must_be_unique_and_not_local(names: Sequence[str]) -> None:
    providers = [provider_settings(name=name) for name in names]
    with pytest.raises(ValidationError, match="identity provider names must be unique and not 'local'"):
        AuthorizationServerSettings(identity_providers=providers)


def test_distinct_provider_names_are_accepted() -> None:
    settings = AuthorizationServerSettings(
        identity_providers=[provider_settings(name="corp"), provider_settings(name="partner-1")]
    )
    assert [p.name for p in settings.identity_providers] == ["corp", "partner-1"]


def test_a_refused_callback_records_no_code_state_nonce_or_token(h: Harness) -> None:
    """The audit records of a refused callback hold no code, state, nonce or verifier."""
    flight = h.browser().fly()
    h.answer(h.op.signed(h.claims("another-nonce")))
    secret_code = "code-" + secrets.token_hex(8)
    flight.browser.callback({"code": secret_code, "state": flight.state, "iss": h.op.issuer})
    with closing(sqlite3.connect(h.database)) as conn:
        dump = "\n".join(row[0] for row in conn.execute("SELECT record FROM audit_events"))
    for secret in (secret_code, flight.state, flight.nonce, ACCESS_TOKEN):
        assert secret not in dump
