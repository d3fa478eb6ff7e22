"""The OpenID Connect provider harness (``tests/support/oidc_provider.py``) is a real, working
provider: ``oidc-provider`` v9 on loopback over HTTPS, driven here the way a browser and a relying
party would (discovery, authorization code + PKCE S256, the sign-in form, the token endpoint,
ID token signature against the JWKS, userinfo), with a public and a confidential client.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from tests.support.oidc_provider import OIDCAccount, OIDCClient, OIDCProvider
from tests.support.pki import make_pki

pytestmark = pytest.mark.e2e

DANA = OIDCAccount("dana", "dana's passphrase", "dana@example.com", "Dana Scully", ("engineering", "support"))
ERIN = OIDCAccount("erin", "erin's passphrase", "erin@example.com", "Erin Reagan", ("support",))
PUBLIC = OIDCClient("bastion-public", ("http://127.0.0.1:53682/callback",))
CONFIDENTIAL = OIDCClient("bastion-confidential", ("https://bastion.test/oauth/callback",), "a confidential secret")
SCOPE = "openid email profile groups"


@dataclass
class Harness:
    provider: OIDCProvider
    ca_file: Path

    def http(self) -> httpx2.Client:
        """A fresh "browser": its own cookie jar, trusting the test CA, redirects followed by hand."""
        tls = ssl.create_default_context(cafile=self.ca_file)
        return httpx2.Client(verify=tls, timeout=30.0, follow_redirects=False)

    def discovery(self) -> dict[str, Any]:
        with self.http() as http:
            response = http.get(self.provider.discovery_url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    workdir = tmp_path_factory.mktemp("oidc")
    pki = make_pki(workdir)
    with OIDCProvider(workdir, pki, accounts=[DANA, ERIN], clients=[PUBLIC, CONFIDENTIAL]) as provider:
        yield Harness(provider, pki.ca_file)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def form_action(page: httpx2.Response) -> str:
    """The sign-in form's absolute action URL (and proof that the page is that form)."""
    match = re.search(r'<form method="POST" action="([^"]+)"', page.text)
    assert match is not None, page.text
    for part in ('name="login"', 'name="password"', ">Sign in</button>"):
        assert part in page.text
    return urljoin(str(page.url), unescape(match.group(1)))


def follow(http: httpx2.Client, response: httpx2.Response, redirect_uri: str) -> httpx2.Response | str:
    """Follow redirects until a page, or until the redirect to ``redirect_uri`` (returned, not fetched)."""
    for _ in range(10):
        if not response.is_redirect:
            return response
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(redirect_uri):
            return location
        response = http.get(location)
    raise AssertionError("too many redirects")


def authorize(
    harness: Harness, http: httpx2.Client, client: OIDCClient, challenge: str, state: str, nonce: str
) -> httpx2.Response | str:
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0],
        "scope": SCOPE,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    endpoint = harness.discovery()["authorization_endpoint"]
    return follow(http, http.get(endpoint, params=params), client.redirect_uris[0])


def sign_in(harness: Harness, http: httpx2.Client, client: OIDCClient, account: OIDCAccount) -> dict[str, str]:
    """Drive the browser part of the flow; the callback's query parameters, plus the PKCE verifier."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    page = authorize(harness, http, client, challenge, state, nonce)
    assert isinstance(page, httpx2.Response), f"expected the sign-in form, got a redirect to {page}"
    assert page.status_code == 200

    wrong = http.post(form_action(page), data={"login": account.login, "password": "not the password"})
    assert wrong.status_code == 401
    assert "Invalid login or password" in wrong.text

    signed_in = http.post(form_action(wrong), data={"login": account.login, "password": account.password})
    callback = follow(http, signed_in, client.redirect_uris[0])
    assert isinstance(callback, str), f"expected a redirect to the client, got {callback}"
    query = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    assert query["state"] == state
    assert query["iss"] == harness.provider.issuer  # RFC 9207
    assert "error" not in query
    return {**query, "code_verifier": verifier, "nonce": nonce}


def redeem(
    harness: Harness, http: httpx2.Client, client: OIDCClient, code: str, verifier: str, *, secret: str | None = None
) -> httpx2.Response:
    """The token request; a confidential client authenticates with ``secret`` (default: its own) by HTTP Basic."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uris[0],
        "code_verifier": verifier,
    }
    endpoint = harness.discovery()["token_endpoint"]
    if client.client_secret is None:
        return http.post(endpoint, data={**data, "client_id": client.client_id})
    return http.post(endpoint, data=data, auth=httpx2.BasicAuth(client.client_id, secret or client.client_secret))


def verified_id_token(harness: Harness, http: httpx2.Client, id_token: str, client: OIDCClient) -> dict[str, Any]:
    jwks = http.get(harness.discovery()["jwks_uri"]).json()
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] in {key["kid"] for key in jwks["keys"]}
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": harness.provider.issuer},
        aud={"essential": True, "value": client.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(token.claims)
    return token.claims


def test_discovery_document(harness: Harness) -> None:
    document = harness.discovery()
    issuer = harness.provider.issuer
    assert issuer == f"https://127.0.0.1:{harness.provider.port}"
    assert document["issuer"] == issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert document[endpoint].startswith(f"{issuer}/"), endpoint
    assert "S256" in document["code_challenge_methods_supported"]
    assert document["response_types_supported"] == ["code"]
    assert {"openid", "email", "profile", "groups"} <= set(document["scopes_supported"])
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    with harness.http() as http:
        keys = http.get(document["jwks_uri"]).json()["keys"]
    assert [(key["kty"], key["alg"]) for key in keys] == [("RSA", "RS256")]
    assert not {"d", "p", "q"} & set(keys[0])  # public parts only


def test_public_client_code_flow_with_pkce(harness: Harness) -> None:
    with harness.http() as http:
        callback = sign_in(harness, http, PUBLIC, DANA)
        tokens = redeem(harness, http, PUBLIC, callback["code"], callback["code_verifier"])
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        assert body["token_type"].lower() == "bearer"
        assert "refresh_token" not in body
        assert set(body["scope"].split()) == set(SCOPE.split())

        claims = verified_id_token(harness, http, body["id_token"], PUBLIC)
        assert claims["sub"] == DANA.login
        assert claims["nonce"] == callback["nonce"]
        # conformIdTokenClaims: with an access token issued, scope claims are for userinfo only.
        assert not {"email", "name", "groups"} & set(claims)

        userinfo = http.get(
            harness.discovery()["userinfo_endpoint"], headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert userinfo.status_code == 200, userinfo.text
        assert userinfo.json() == {
            "sub": "dana",
            "email": "dana@example.com",
            "email_verified": True,
            "name": "Dana Scully",
            "groups": ["engineering", "support"],
        }

        # The code is single use.
        again = redeem(harness, http, PUBLIC, callback["code"], callback["code_verifier"])
        assert again.status_code == 400
        assert again.json()["error"] == "invalid_grant"


def test_pkce_is_enforced(harness: Harness) -> None:
    with harness.http() as http:
        callback = sign_in(harness, http, PUBLIC, ERIN)
        wrong = redeem(harness, http, PUBLIC, callback["code"], pkce_pair()[0])
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "invalid_grant"

    with harness.http() as http:
        params = {
            "response_type": "code",
            "client_id": PUBLIC.client_id,
            "redirect_uri": PUBLIC.redirect_uris[0],
            "scope": SCOPE,
            "state": "no-pkce",
        }
        response = http.get(harness.discovery()["authorization_endpoint"], params=params)
        assert response.is_redirect
        location = response.headers["location"]
        assert location.startswith(PUBLIC.redirect_uris[0])
        query = parse_qs(urlsplit(location).query)
        assert query["error"] == ["invalid_request"]
        assert "PKCE" in query["error_description"][0]


def test_confidential_client_with_client_secret_basic(harness: Harness) -> None:
    with harness.http() as http:
        callback = sign_in(harness, http, CONFIDENTIAL, ERIN)
        verifier = callback["code_verifier"]
        wrong_secret = redeem(harness, http, CONFIDENTIAL, callback["code"], verifier, secret="not the secret")
        assert wrong_secret.status_code == 401
        assert wrong_secret.json()["error"] == "invalid_client"
        no_auth = http.post(
            harness.discovery()["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": callback["code"],
                "code_verifier": verifier,
                "redirect_uri": CONFIDENTIAL.redirect_uris[0],
                "client_id": CONFIDENTIAL.client_id,
            },
        )
        assert no_auth.status_code == 401  # a confidential client cannot pose as a public one
        assert no_auth.json()["error"] == "invalid_client"

    with harness.http() as http:
        callback = sign_in(harness, http, CONFIDENTIAL, ERIN)
        tokens = redeem(harness, http, CONFIDENTIAL, callback["code"], callback["code_verifier"])
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        claims = verified_id_token(harness, http, body["id_token"], CONFIDENTIAL)
        assert claims["sub"] == "erin"
        userinfo = http.get(
            harness.discovery()["userinfo_endpoint"], headers={"Authorization": f"Bearer {body['access_token']}"}
        ).json()
        assert userinfo["email"] == "erin@example.com"
        assert userinfo["groups"] == ["support"]
