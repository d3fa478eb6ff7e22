"""The authorization server over HTTP (Starlette TestClient): the attack table, every answer audited.

Each test gets a fresh server in ``tmp_path`` with a real SQLite audit log, signing keys and
revocation list and a fake clock. The TestClient's cookie jar does not send ``Secure`` cookies
over http, so ``Browser`` keeps each browser's ``__Host-`` cookies by hand.
"""

from __future__ import annotations

import base64
import re
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import yaml
from oauth_helpers import (
    PASSWORD,
    RFC7636_VERIFIER,
    AuditRow,
    Served,
    jwt_claims,
    password_hash,
    s256,
    served,
)

from bastion.config import parse_config
from bastion.errors import AuditUnavailable
from bastion.oauth.authorize_endpoint import BROWSER_COOKIE, SIGN_IN_COOKIE
from bastion.oauth.records import UserIdentity, digest

ISSUER = "http://127.0.0.1:8123"
ECHO = ISSUER + "/mcp/echo"
OTHER = ISSUER + "/mcp/other"
REDIRECT = "http://127.0.0.1:5555/cb"  # registered as http://127.0.0.1/cb: any loopback port
APP_REDIRECT = "https://app.example.com/callback"
CONF_REDIRECT = "https://conf.example.com/cb"
CONF_SECRET = "conf-secret-value"
ALICE = UserIdentity("alice", "local", "alice@example.com", "Alice", ("eng",))
FORM = {"content-type": "application/x-www-form-urlencoded"}


# --- the server -----------------------------------------------------------------------------------


def write_config(tmp_path: Path, **settings: Any) -> Any:
    (tmp_path / "p.cedar").write_text('@id("a") permit(principal, action, resource);')
    users: list[dict[str, Any]] = [
        {
            "username": "alice",
            "password_hash": password_hash(),
            "email": ALICE.email,
            "name": "Alice",
            "groups": ["eng"],
        }
    ]
    (tmp_path / "users.yaml").write_text(yaml.safe_dump({"users": users}))
    server_settings: dict[str, Any] = {
        "users_file": "users.yaml",
        "scopes": ["mcp", "read"],
        "client_metadata_documents": {"enabled": False},
        "clients": [
            {"client_id": "cli", "client_name": "CLI", "redirect_uris": ["http://127.0.0.1/cb", APP_REDIRECT]},
            {"client_id": "other-cli", "redirect_uris": ["http://127.0.0.1/cb"]},
            {"client_id": "conf", "redirect_uris": [CONF_REDIRECT], "client_secret": {"env": "BASTION_TEST_CONF"}},
        ],
        **settings,
    }
    document = {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": 8123},
        "policy": {"files": ["p.cedar"]},
        "identity": {"authorization_server": server_settings},
        "routes": [
            {
                "name": "echo",
                "title": "Echo",
                "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]},
            },
            {"name": "other", "http": {"url": "http://127.0.0.1:9/other", "allow_http": True, "allow": ["127.0.0.1"]}},
        ],
    }
    return parse_config(document, base_dir=tmp_path)


@dataclass
class Harness(Served):
    """A running authorization server and what the tests look at."""

    def browser(self, *, signed_in: bool = False) -> Browser:
        """A browser; ``signed_in`` plants a sign-in for alice (no argon2 verify needed)."""
        browser = Browser(self)
        if signed_in:
            cookie = secrets.token_urlsafe(32)
            self.run(self.server.store.put_sign_in, digest(cookie), ALICE, self.clock() + 3600)
            browser.cookies[SIGN_IN_COOKIE] = cookie
        return browser

    def token(self, data: Mapping[str, str], headers: Mapping[str, str] | None = None) -> httpx2.Response:
        return self.http.post("/oauth/token", data=data, headers=dict(headers or {}))

    def exchange(self, code: str, /, **params: str | None) -> httpx2.Response:
        """POST an authorization_code grant for ``code`` (defaults: client cli, REDIRECT, ECHO)."""
        data: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "cli",
            "code_verifier": RFC7636_VERIFIER,
            "resource": ECHO,
            **params,
        }
        return self.token({k: v for k, v in data.items() if v is not None})

    def refresh(self, token: str, client_id: str = "cli") -> httpx2.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id})

    def code(self, **query: str | None) -> str:
        """A fresh code for alice through a planted sign-in and an approved consent."""
        browser = self.browser(signed_in=True)
        page = browser.authorize(**query)
        assert page.status_code == 200, page.text
        return code_of(browser.consent(page, "approve"))

    def tokens(self, **query: str | None) -> dict[str, Any]:
        response = self.exchange(self.code(**query), resource=query.get("resource", ECHO))
        assert response.status_code == 200, response.text
        return dict(response.json())


@dataclass
class Browser:
    """One browser: its own ``__Host-`` cookies, sent by hand."""

    h: Harness
    cookies: dict[str, str] = field(default_factory=dict)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.h.http.request(method, path, headers=headers, follow_redirects=False, **kwargs)
        for name, value in set_cookies(response).items():
            self.cookies[name] = value
        return response

    def authorize(self, **query: str | None) -> httpx2.Response:
        return self._send("GET", "/oauth/authorize", params=authorization_query(**query))

    def authorize_raw(self, params: Any) -> httpx2.Response:
        return self._send("GET", "/oauth/authorize", params=params)

    def post(self, path: str, data: Mapping[str, str], headers: Mapping[str, str] | None = None) -> httpx2.Response:
        return self._send("POST", path, data=dict(data), headers=dict(headers or {}))

    def sign_in(self, page: httpx2.Response, password: str = PASSWORD, **overrides: str) -> httpx2.Response:
        fields = form_fields(page)
        return self.post("/oauth/sign-in", {**fields, "username": "alice", "password": password, **overrides})

    def consent(self, page: httpx2.Response, decision: str) -> httpx2.Response:
        return self.post("/oauth/consent", {**form_fields(page), "decision": decision})


def authorization_query(**query: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "cli",
        "redirect_uri": REDIRECT,
        "code_challenge": s256(RFC7636_VERIFIER),
        "code_challenge_method": "S256",
        "resource": ECHO,
        "state": "state-" + secrets.token_hex(6),
        **query,
    }
    return {k: v for k, v in params.items() if v is not None}


def set_cookies(response: httpx2.Response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        found[name.strip()] = rest.split(";")[0]
    return found


def form_fields(page: httpx2.Response) -> dict[str, str]:
    transaction = re.search(r'name="transaction" value="([^"]+)"', page.text)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert transaction is not None
    assert csrf is not None, page.text
    return {"transaction": transaction[1], "csrf_token": csrf[1]}


def redirect_params(response: httpx2.Response, base: str = REDIRECT) -> dict[str, str]:
    """The query of a 303 back to ``base``: each parameter once."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(base + "?"), location
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values())
    return {k: v[0] for k, v in query.items()}


def code_of(response: httpx2.Response, base: str = REDIRECT) -> str:
    params = redirect_params(response, base)
    assert params["iss"] == ISSUER
    return params["code"]


def assert_page(response: httpx2.Response, status: int) -> None:
    """An HTML page that cannot be framed and carries no code or redirect."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert "location" not in response.headers


def assert_error_page(response: httpx2.Response) -> None:
    assert_page(response, 400)
    assert "code=" not in response.text


def assert_audited(rows: list[AuditRow], method: str, effect: str, reason: str | None, target: str | None) -> AuditRow:
    """Exactly one record was written, with these fields; returns it."""
    assert [(r.method, r.effect, r.reason, r.target) for r in rows] == [(method, effect, reason, target)]
    return rows[0]


def oauth_error(response: httpx2.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert "access_token" not in response.json()
    assert response.headers["cache-control"] == "no-store"


@contextmanager
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Iterator[Harness]:
    monkeypatch.setenv("BASTION_TEST_CONF", CONF_SECRET)
    config = write_config(tmp_path, **settings)
    with served(config, tmp_path / "data") as run:
        yield Harness(**vars(run))


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with running(tmp_path, monkeypatch) as harness:
        yield harness


@pytest.fixture
def h_dcr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with running(tmp_path, monkeypatch, dynamic_registration=True) as harness:
        yield harness


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


# --- the happy path -------------------------------------------------------------------------------


def test_the_whole_flow_signs_in_consents_and_issues_a_token_for_the_route(h: Harness) -> None:
    browser = h.browser()
    page = browser.authorize(state="xyz", scope="read mcp")
    assert_page(page, 200)
    assert 'action="http://127.0.0.1:8123/oauth/sign-in"' in page.text
    browser_cookie = next(c for c in page.headers.get_list("set-cookie") if c.startswith(BROWSER_COOKIE + "="))
    assert {"Secure", "HttpOnly", "Path=/", "SameSite=lax"} <= {p.strip() for p in browser_cookie.split(";")}
    assert "domain" not in browser_cookie.lower()

    mark = h.mark()
    consent = browser.sign_in(page)
    assert_page(consent, 200)
    assert "Allow" in consent.text
    assert SIGN_IN_COOKIE in set_cookies(consent)
    signed = assert_audited(h.since(mark), "oauth/sign-in", "allow", None, "cli")
    assert (signed.subject, signed.route, signed.arguments) == ("alice", "echo", {"username": "alice"})

    mark = h.mark()
    back = browser.consent(consent, "approve")
    params = redirect_params(back)
    assert sorted(params) == ["code", "iss", "state"]
    assert (params["state"], params["iss"]) == ("xyz", ISSUER)
    assert back.headers["cache-control"] == "no-store"
    approved = assert_audited(h.since(mark), "oauth/authorize", "allow", None, "cli")
    assert (approved.subject, approved.route, approved.arguments["decision"]) == ("alice", "echo", "approve")

    mark = h.mark()
    response = h.exchange(params["code"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("Bearer", "mcp read", 900)
    issued = assert_audited(h.since(mark), "oauth/token", "allow", None, "cli")
    assert (issued.subject, issued.route, issued.arguments["grant_type"]) == ("alice", "echo", "authorization_code")
    assert "code" not in issued.arguments
    assert "code_verifier" not in issued.arguments


def test_the_access_token_audience_is_exactly_the_routes_resource(h: Harness) -> None:
    echo = jwt_claims(h.tokens(resource=ECHO)["access_token"])
    other = jwt_claims(h.tokens(resource=OTHER)["access_token"])
    assert echo["aud"] == ECHO
    assert other["aud"] == OTHER
    assert (echo["iss"], echo["sub"], echo["client_id"]) == (ISSUER, "alice", "cli")
    assert echo["bastion_idp"] == "local"  # signed in with the users file


def test_a_wrong_password_shows_the_form_again_and_is_audited(h: Harness) -> None:
    browser = h.browser()
    page = browser.authorize()
    mark = h.mark()
    again = browser.sign_in(page, password="wrong password")
    assert_page(again, 401)
    assert "not right" in again.text
    assert SIGN_IN_COOKIE not in set_cookies(again)
    row = assert_audited(h.since(mark), "oauth/sign-in", "deny", "access_denied", "cli")
    assert row.arguments == {"username": "alice"}


def test_password_guessing_is_throttled_per_username_even_for_the_right_password(h: Harness) -> None:
    browser = h.browser()
    page = browser.authorize()
    for _ in range(5):
        page = browser.sign_in(page, password="a guess")
        assert_page(page, 401)
    mark = h.mark()
    blocked = browser.sign_in(page)  # the right password, too late
    assert_page(blocked, 429)
    assert "Too many failed sign-ins" in blocked.text
    assert SIGN_IN_COOKIE not in set_cookies(blocked)
    row = assert_audited(h.since(mark), "oauth/sign-in", "deny", "access_denied", "cli")
    assert row.arguments == {"username": "alice"}
    h.clock.advance(301)  # the oldest failure leaves the five-minute window
    assert SIGN_IN_COOKIE in set_cookies(browser.sign_in(blocked))


# --- /oauth/authorize: errors shown on a page, never redirected -----------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        APP_REDIRECT + "/evil",  # registered URI as a prefix
        APP_REDIRECT + "x",
        "https://app.example.com.evil.example/callback",  # host suffix
        "https://evil.example/" + APP_REDIRECT,  # registered URI as a suffix
        "https://APP.example.com/callback",  # case
        "https://app.example.com/Callback",
        "https://app.example.com/%63allback",  # percent-encoding
        APP_REDIRECT + "?next=https://evil.example",
        APP_REDIRECT + "#frag",
        "https://user@app.example.com/callback",
        "http://localhost:5555/cb",
        "http://127.0.0.1:5555/cb/",
        "https://evil.example/cb",
        "",
    ],
)
def test_a_redirect_uri_mismatch_shows_an_error_page_and_never_redirects(h: Harness, redirect_uri: str) -> None:
    mark = h.mark()
    response = h.browser().authorize(redirect_uri=redirect_uri)
    assert_error_page(response)
    assert "set-cookie" not in response.headers
    row = assert_audited(h.since(mark), "oauth/authorize", "deny", "invalid_request", "cli")
    assert row.route == "-"


def test_a_missing_redirect_uri_shows_an_error_page(h: Harness) -> None:
    mark = h.mark()
    assert_error_page(h.browser().authorize(redirect_uri=None))
    assert_audited(h.since(mark), "oauth/authorize", "deny", "invalid_request", "cli")


@pytest.mark.parametrize("client_id", ["nobody", "https://app.example.com/client.json"])
def test_an_unknown_client_shows_an_error_page(h: Harness, client_id: str) -> None:
    mark = h.mark()
    assert_error_page(h.browser().authorize(client_id=client_id))
    assert_audited(h.since(mark), "oauth/authorize", "deny", "invalid_client", client_id)


def test_a_missing_client_id_shows_an_error_page(h: Harness) -> None:
    mark = h.mark()
    assert_error_page(h.browser().authorize(client_id=None))
    assert_audited(h.since(mark), "oauth/authorize", "deny", "invalid_client", None)


def test_a_repeated_parameter_shows_an_error_page(h: Harness) -> None:
    params = [*authorization_query().items(), ("redirect_uri", "https://evil.example/cb")]
    mark = h.mark()
    assert_error_page(h.browser().authorize_raw(params))
    assert_audited(h.since(mark), "oauth/authorize", "deny", "invalid_request", "cli")


# --- /oauth/authorize: errors redirected back with error, state and iss ---------------------------


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": RFC7636_VERIFIER, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"resource": None}, "invalid_target"),
        ({"resource": ISSUER + "/mcp/unknown"}, "invalid_target"),
        ({"resource": ECHO + "/"}, "invalid_target"),
        ({"resource": ISSUER + "/mcp"}, "invalid_target"),
        ({"scope": "mcp admin"}, "invalid_scope"),
    ],
)
def test_a_bad_request_redirects_back_with_the_error(h: Harness, query: dict[str, str | None], error: str) -> None:
    mark = h.mark()
    response = h.browser().authorize(state="s-1", **query)
    params = redirect_params(response)
    assert (params["error"], params["state"], params["iss"]) == (error, "s-1", ISSUER)
    assert "code" not in params
    assert_audited(h.since(mark), "oauth/authorize", "deny", error, "cli")


def test_a_redirect_back_without_a_state_carries_no_state(h: Harness) -> None:
    response = h.browser().authorize(state=None, code_challenge_method="plain", redirect_uri=APP_REDIRECT)
    params = redirect_params(response, APP_REDIRECT)
    assert sorted(params) == ["error", "error_description", "iss"]


def test_a_reused_state_redirects_back_with_an_error(h: Harness) -> None:
    first = h.browser().authorize(state="once")
    assert_page(first, 200)
    mark = h.mark()
    second = h.browser().authorize(state="once")
    params = redirect_params(second)
    assert (params["error"], params["state"], params["iss"]) == ("invalid_request", "once", ISSUER)
    assert "code" not in params
    row = assert_audited(h.since(mark), "oauth/authorize", "deny", "invalid_request", "cli")
    assert row.route == "echo"
    assert_page(h.browser().authorize(client_id="other-cli", state="once"), 200)  # per client


# --- sign-in and consent forms: bound to the browser, CSRF token, same origin ---------------------


def forged(h: Harness, attack: str) -> tuple[Browser, httpx2.Response, dict[str, str], dict[str, str]]:
    """The victim's sign-in page; the form, cookies and headers the attack sends."""
    victim = h.browser()
    page = victim.authorize()
    fields = {**form_fields(page), "username": "alice", "password": PASSWORD}
    cookies = dict(victim.cookies)
    headers: dict[str, str] = {}
    if attack == "no browser cookie":
        cookies.pop(BROWSER_COOKIE)
    elif attack == "another browser's cookie":
        attacker = h.browser()
        attacker.authorize()
        cookies[BROWSER_COOKIE] = attacker.cookies[BROWSER_COOKIE]
    elif attack == "wrong csrf token":
        fields["csrf_token"] = secrets.token_urlsafe(24)
    elif attack == "no csrf token":
        del fields["csrf_token"]
    elif attack == "foreign origin":
        headers["origin"] = "https://evil.example"
    elif attack == "origin with another port":
        headers["origin"] = "http://127.0.0.1:8124"
    return victim, page, fields, {**headers, "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


ATTACKS = [
    "no browser cookie",
    "another browser's cookie",
    "wrong csrf token",
    "no csrf token",
    "foreign origin",
    "origin with another port",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_sign_in_form_gets_an_error_page_and_no_code(h: Harness, attack: str) -> None:
    _, _, fields, headers = forged(h, attack)
    response = h.http.post("/oauth/sign-in", data=fields, headers=headers, follow_redirects=False)
    assert_error_page(response)
    assert "set-cookie" not in response.headers
    assert 'name="decision"' not in response.text
    pending = h.run(h.server.store.get_pending, fields["transaction"], h.clock())
    assert pending is not None
    assert pending.user is None, "nobody is signed in for the request"


def forged_consent(h: Harness, attack: str) -> tuple[dict[str, str], dict[str, str]]:
    """The attack on the consent form of a victim who has signed in: the form and headers it sends."""
    victim, page, fields, headers = forged(h, attack)
    consent = victim.sign_in(page)
    assert_page(consent, 200)
    fields = {k: v for k, v in fields.items() if k not in ("username", "password")}
    fields["decision"] = "approve"
    if attack in ("wrong csrf token", "no csrf token"):
        fields["transaction"] = form_fields(consent)["transaction"]
    else:
        fields.update(form_fields(consent))
    headers["cookie"] = headers["cookie"] + f"; {SIGN_IN_COOKIE}={victim.cookies[SIGN_IN_COOKIE]}"
    return fields, headers


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_consent_form_gets_an_error_page_and_no_code(h: Harness, attack: str) -> None:
    fields, headers = forged_consent(h, attack)
    response = h.http.post("/oauth/consent", data=fields, headers=headers, follow_redirects=False)
    assert_error_page(response)
    assert h.run(h.server.store.get_pending, fields["transaction"], h.clock()) is not None, "not taken"


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_sign_in_form_is_audited(h: Harness, attack: str) -> None:
    _, _, fields, headers = forged(h, attack)
    mark = h.mark()
    h.http.post("/oauth/sign-in", data=fields, headers=headers, follow_redirects=False)
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason) for r in rows] == [("oauth/sign-in", "deny", "invalid_request")]
    if "origin" not in attack:
        assert rows[0].target == "cli"


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_consent_form_is_audited(h: Harness, attack: str) -> None:
    fields, headers = forged_consent(h, attack)
    mark = h.mark()
    h.http.post("/oauth/consent", data=fields, headers=headers, follow_redirects=False)
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason) for r in rows] == [("oauth/consent", "deny", "invalid_request")]
    if "origin" not in attack:
        assert rows[0].target == "cli"


def test_a_non_ascii_csrf_token_gets_the_error_page(h: Harness) -> None:
    _, _, fields, headers = forged(h, "wrong csrf token")
    fields["csrf_token"] = "é" * 32
    response = h.http.post("/oauth/sign-in", data=fields, headers=headers, follow_redirects=False)
    assert_error_page(response)


def test_a_sign_in_for_an_expired_request_gets_an_error_page(h: Harness) -> None:
    browser = h.browser()
    page = browser.authorize()
    h.clock.advance(600)
    assert_error_page(browser.sign_in(page))


def test_consent_deny_redirects_back_with_access_denied(h: Harness) -> None:
    browser = h.browser(signed_in=True)
    page = browser.authorize(state="deny-me")
    mark = h.mark()
    params = redirect_params(browser.consent(page, "deny"))
    assert (params["error"], params["state"], params["iss"]) == ("access_denied", "deny-me", ISSUER)
    assert "code" not in params
    row = assert_audited(h.since(mark), "oauth/consent", "deny", "access_denied", "cli")
    assert (row.subject, row.route) == ("alice", "echo")
    assert h.run(h.server.store.get_consent, "alice", "cli", "echo") is None


def test_a_consent_form_is_single_use(h: Harness) -> None:
    browser = h.browser(signed_in=True)
    page = browser.authorize()
    code_of(browser.consent(page, "approve"))
    assert_error_page(browser.consent(page, "approve"))


def test_a_remembered_consent_redirects_straight_back_with_a_code(h: Harness) -> None:
    browser = h.browser(signed_in=True)
    code_of(browser.consent(browser.authorize(scope="mcp"), "approve"))
    mark = h.mark()
    again = browser.authorize(scope="mcp", state="second")
    params = redirect_params(again)
    assert (params["state"], params["iss"]) == ("second", ISSUER)
    row = assert_audited(h.since(mark), "oauth/authorize", "allow", None, "cli")
    assert row.arguments["decision"] == "remembered consent"
    assert h.exchange(params["code"]).status_code == 200


def test_a_remembered_consent_does_not_cover_more_scopes_or_another_route(h: Harness) -> None:
    browser = h.browser(signed_in=True)
    code_of(browser.consent(browser.authorize(scope="mcp"), "approve"))
    assert_page(browser.authorize(scope="mcp read"), 200)
    assert_page(browser.authorize(scope="mcp", resource=OTHER), 200)
    assert_page(browser.authorize(scope="mcp", client_id="other-cli"), 200)


def test_a_remembered_consent_needs_the_sign_in_cookie(h: Harness) -> None:
    browser = h.browser(signed_in=True)
    code_of(browser.consent(browser.authorize(), "approve"))
    del browser.cookies[SIGN_IN_COOKIE]
    page = browser.authorize()
    assert_page(page, 200)
    assert 'name="password"' in page.text


def test_every_page_forbids_framing(h: Harness) -> None:
    browser = h.browser()
    pages = [browser.authorize(), h.browser().authorize(client_id="nobody")]
    pages.append(browser.sign_in(pages[0], password="wrong"))
    signed = h.browser(signed_in=True)
    pages.append(signed.authorize())
    assert [p.status_code for p in pages] == [200, 400, 401, 200]
    for page in pages:
        assert_page(page, page.status_code)
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert page.headers["cache-control"] == "no-store"


# --- /oauth/token: codes --------------------------------------------------------------------------


def test_a_replayed_code_is_invalid_grant_and_revokes_its_tokens(h: Harness) -> None:
    code = h.code()
    first = h.exchange(code)
    assert first.status_code == 200
    jti = jwt_claims(first.json()["access_token"])["jti"]
    mark = h.mark()
    replay = h.exchange(code)
    oauth_error(replay, 400, "invalid_grant")
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_grant", "cli")
    assert h.revocations.is_revoked(jti) is True
    oauth_error(h.refresh(first.json()["refresh_token"]), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("params", "error", "route"),
    [
        ({"resource": None}, "invalid_target", None),
        ({"resource": OTHER}, "invalid_target", "other"),
        ({"resource": ECHO + "/"}, "invalid_target", None),
        ({"code_verifier": None}, "invalid_grant", "echo"),
        ({"code_verifier": "x" * 43}, "invalid_grant", "echo"),
        ({"redirect_uri": "http://127.0.0.1:5556/cb"}, "invalid_grant", "echo"),
        ({"redirect_uri": None}, "invalid_grant", "echo"),
        ({"code": "not-a-code"}, "invalid_grant", "echo"),
    ],
)
def test_a_bad_code_exchange_is_refused(
    h: Harness, params: dict[str, str | None], error: str, route: str | None
) -> None:
    code = h.code()
    mark = h.mark()
    oauth_error(h.exchange(code, **params), 400, error)
    row = assert_audited(h.since(mark), "oauth/token", "deny", error, "cli")
    assert row.route == (route or "-")


def test_another_clients_code_is_invalid_grant(h: Harness) -> None:
    code = h.code()
    mark = h.mark()
    oauth_error(h.exchange(code, client_id="other-cli"), 400, "invalid_grant")
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_grant", "other-cli")


def test_an_expired_code_is_invalid_grant(h: Harness) -> None:
    code = h.code()
    h.clock.advance(60)
    oauth_error(h.exchange(code), 400, "invalid_grant")


# --- /oauth/token: refresh ------------------------------------------------------------------------


def test_a_refresh_token_rotates_and_its_reuse_revokes_the_family(h: Harness) -> None:
    first = h.tokens()
    h.clock.advance(10)
    rotated = h.refresh(first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert jwt_claims(second["access_token"])["aud"] == ECHO
    h.clock.advance(10)
    mark = h.mark()
    oauth_error(h.refresh(first["refresh_token"]), 400, "invalid_grant")
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_grant", "cli")
    for token in (first, second):
        assert h.revocations.is_revoked(jwt_claims(token["access_token"])["jti"]) is True
    oauth_error(h.refresh(second["refresh_token"]), 400, "invalid_grant")


def test_a_refresh_within_the_grace_gets_tokens(h: Harness) -> None:
    first = h.tokens()
    assert h.refresh(first["refresh_token"]).status_code == 200
    h.clock.advance(5)
    assert h.refresh(first["refresh_token"]).status_code == 200


def test_another_clients_refresh_token_is_invalid_grant(h: Harness) -> None:
    first = h.tokens()
    mark = h.mark()
    oauth_error(h.refresh(first["refresh_token"], client_id="other-cli"), 400, "invalid_grant")
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_grant", "other-cli")


# --- /oauth/token: client authentication and request form -----------------------------------------


def conf_code(h: Harness) -> str:
    browser = h.browser(signed_in=True)
    page = browser.authorize(client_id="conf", redirect_uri=CONF_REDIRECT)
    return code_of(browser.consent(page, "approve"), CONF_REDIRECT)


def conf_exchange(code: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CONF_REDIRECT,
        "code_verifier": RFC7636_VERIFIER,
        "resource": ECHO,
    }


def test_a_confidential_client_authenticates_with_basic(h: Harness) -> None:
    response = h.token(conf_exchange(conf_code(h)), basic("conf", CONF_SECRET))
    assert response.status_code == 200, response.text
    assert jwt_claims(response.json()["access_token"])["client_id"] == "conf"


def test_a_confidential_client_authenticates_with_client_secret_post(h: Harness) -> None:
    data = {**conf_exchange(conf_code(h)), "client_id": "conf", "client_secret": CONF_SECRET}
    assert h.token(data).status_code == 200


def test_basic_with_a_wrong_secret_is_401_with_a_basic_challenge(h: Harness) -> None:
    code = conf_code(h)
    mark = h.mark()
    response = h.token(conf_exchange(code), basic("conf", "wrong"))
    oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="bastion"'
    rows = h.since(mark)
    assert [(r.method, r.effect, r.reason) for r in rows] == [("oauth/token", "deny", "invalid_client")]
    assert h.token(conf_exchange(code), basic("conf", CONF_SECRET)).status_code == 200, "the code was not used up"


def test_a_failed_basic_authentication_is_audited_with_the_client_id(h: Harness) -> None:
    mark = h.mark()
    h.token(conf_exchange("some-code"), basic("conf", "wrong"))
    h.http.post("/oauth/revoke", data={"token": "x"}, headers=basic("conf", "wrong"))
    assert [r.target for r in h.since(mark)] == ["conf", "conf"]


@pytest.mark.parametrize(
    ("data", "headers", "status", "error", "target"),
    [
        ({"client_id": "conf", "client_secret": "wrong"}, {}, 401, "invalid_client", "conf"),
        ({"client_id": "conf"}, {}, 401, "invalid_client", "conf"),
        ({"client_id": "cli", "client_secret": "anything"}, {}, 401, "invalid_client", "cli"),
        ({}, {}, 401, "invalid_client", None),
        ({"client_id": "nobody"}, {}, 401, "invalid_client", "nobody"),
        # A refused request is audited under the client it claimed, Basic credentials first.
        ({"client_secret": CONF_SECRET}, basic("conf", CONF_SECRET), 400, "invalid_request", "conf"),
        ({"client_id": "cli"}, basic("conf", CONF_SECRET), 401, "invalid_client", "conf"),
    ],
)
def test_client_authentication_failures(
    h: Harness, data: dict[str, str], headers: dict[str, str], status: int, error: str, target: str | None
) -> None:
    mark = h.mark()
    response = h.token({**conf_exchange("some-code"), **data}, headers)
    oauth_error(response, status, error)
    assert ("www-authenticate" in response.headers) is (error == "invalid_client" and bool(headers))
    assert_audited(h.since(mark), "oauth/token", "deny", error, target)


def test_a_json_token_request_is_invalid_request(h: Harness) -> None:
    mark = h.mark()
    response = h.http.post("/oauth/token", json={"grant_type": "authorization_code", "client_id": "cli"})
    oauth_error(response, 400, "invalid_request")
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_request", None)


def test_a_repeated_token_parameter_is_invalid_request(h: Harness) -> None:
    body = "grant_type=authorization_code&client_id=cli&code=a&code=b"
    mark = h.mark()
    oauth_error(h.http.post("/oauth/token", content=body, headers=FORM), 400, "invalid_request")
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_request", None)


@pytest.mark.parametrize("grant_type", ["client_credentials", "password", "implicit", ""])
def test_an_unsupported_grant_type_is_refused(h: Harness, grant_type: str) -> None:
    mark = h.mark()
    oauth_error(h.token({"grant_type": grant_type, "client_id": "cli"}), 400, "unsupported_grant_type")
    assert_audited(h.since(mark), "oauth/token", "deny", "unsupported_grant_type", "cli")


# --- /oauth/revoke --------------------------------------------------------------------------------


def test_revoking_a_refresh_token_revokes_its_family(h: Harness) -> None:
    first = h.tokens()
    mark = h.mark()
    response = h.http.post("/oauth/revoke", data={"token": first["refresh_token"], "client_id": "cli"})
    assert (response.status_code, response.content) == (200, b"")
    assert_audited(h.since(mark), "oauth/revoke", "allow", None, "cli")
    assert h.revocations.is_revoked(jwt_claims(first["access_token"])["jti"]) is True
    oauth_error(h.refresh(first["refresh_token"]), 400, "invalid_grant")


def test_a_revocation_record_names_the_token_type(h: Harness) -> None:
    first = h.tokens()
    mark = h.mark()
    h.http.post("/oauth/revoke", data={"token": first["refresh_token"], "client_id": "cli"})
    assert [row.arguments for row in h.since(mark)] == [{"type_hint": "refresh_token"}]


def test_revoking_an_unknown_token_is_200(h: Harness) -> None:
    mark = h.mark()
    response = h.http.post("/oauth/revoke", data={"token": "unknown", "client_id": "cli"})
    assert response.status_code == 200
    assert_audited(h.since(mark), "oauth/revoke", "allow", None, "cli")


def test_revoking_another_clients_token_is_unauthorized_client(h: Harness) -> None:
    first = h.tokens()
    mark = h.mark()
    response = h.http.post("/oauth/revoke", data={"token": first["refresh_token"], "client_id": "other-cli"})
    oauth_error(response, 400, "unauthorized_client")
    assert_audited(h.since(mark), "oauth/revoke", "deny", "unauthorized_client", "other-cli")
    assert h.refresh(first["refresh_token"]).status_code == 200


def test_a_revocation_without_a_token_is_invalid_request(h: Harness) -> None:
    mark = h.mark()
    oauth_error(h.http.post("/oauth/revoke", data={"client_id": "cli"}), 400, "invalid_request")
    assert_audited(h.since(mark), "oauth/revoke", "deny", "invalid_request", "cli")


# --- /oauth/register (RFC 7591) -------------------------------------------------------------------


def test_dynamic_registration_is_off_by_default(h: Harness) -> None:
    mark = h.mark()
    response = h.http.post("/oauth/register", json={"redirect_uris": ["http://127.0.0.1/cb"]})
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_request"
    assert_audited(h.since(mark), "oauth/register", "deny", "invalid_request", None)


def test_a_registered_client_can_start_an_authorization(h_dcr: Harness) -> None:
    h = h_dcr
    mark = h.mark()
    response = h.http.post(
        "/oauth/register",
        json={"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "Tool", "token_endpoint_auth_method": "none"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    client_id = body["client_id"]
    assert re.fullmatch(r"dcr-[0-9a-f]{32}", client_id)
    assert body["redirect_uris"] == ["http://127.0.0.1/cb"]
    assert (body["token_endpoint_auth_method"], body["client_name"]) == ("none", "Tool")
    assert "client_secret" not in body
    assert response.headers["cache-control"] == "no-store"
    assert_audited(h.since(mark), "oauth/register", "allow", None, client_id)

    browser = h.browser(signed_in=True)
    page = browser.authorize(client_id=client_id)
    assert_page(page, 200)
    assert client_id in page.text
    code = code_of(browser.consent(page, "approve"))
    assert h.exchange(code, client_id=client_id).status_code == 200
    assert_error_page(h.browser().authorize(client_id=client_id, redirect_uri=APP_REDIRECT))


def test_a_registered_confidential_client_gets_a_secret(h_dcr: Harness) -> None:
    response = h_dcr.http.post("/oauth/register", json={"redirect_uris": ["https://tool.example.com/cb"]})
    assert response.status_code == 201
    body = response.json()
    assert (body["token_endpoint_auth_method"], body["client_secret_expires_at"]) == ("client_secret_basic", 0)
    revoke = h_dcr.http.post(
        "/oauth/revoke", data={"token": "x"}, headers=basic(body["client_id"], body["client_secret"])
    )
    assert revoke.status_code == 200
    wrong = h_dcr.http.post("/oauth/revoke", data={"token": "x"}, headers=basic(body["client_id"], "wrong"))
    oauth_error(wrong, 401, "invalid_client")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://tool.example.com/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        ([], "invalid_client_metadata"),
    ],
)
def test_a_bad_registration_is_refused(h_dcr: Harness, body: Any, error: str) -> None:
    mark = h_dcr.mark()
    response = h_dcr.http.post("/oauth/register", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert_audited(h_dcr.since(mark), "oauth/register", "deny", error, None)


def test_a_registration_that_is_not_json_is_refused(h_dcr: Harness) -> None:
    response = h_dcr.http.post("/oauth/register", content=b"{not json", headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_client_metadata")


# --- metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_metadata_is_served_at_both_discovery_paths(h: Harness, path: str) -> None:
    response = h.http.get(path)
    assert response.status_code == 200
    document = response.json()
    assert document["issuer"] == ISSUER
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_endpoint"] == ISSUER + "/oauth/authorize"
    assert document["token_endpoint"] == ISSUER + "/oauth/token"
    assert document["scopes_supported"] == ["mcp", "read"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert "registration_endpoint" not in document


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_metadata_names_the_registration_endpoint_when_registration_is_on(h_dcr: Harness, path: str) -> None:
    document = h_dcr.http.get(path).json()
    assert document["registration_endpoint"] == ISSUER + "/oauth/register"
    assert document["code_challenge_methods_supported"] == ["S256"]


# --- fail closed ----------------------------------------------------------------------------------


def break_audit(h: Harness, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "closed":
        h.run(h.audit.close)
    else:

        async def broken(_: Any) -> None:
            raise AuditUnavailable("disk full")

        monkeypatch.setattr(h.audit, "append", broken)


def families(h: Harness) -> list[tuple[str, float | None]]:
    with closing(sqlite3.connect(h.database)) as conn:
        return [(str(f), r) for f, r in conn.execute("SELECT id, revoked_at FROM oauth_families")]


@pytest.mark.parametrize("how", ["closed", "append raises"])
def test_a_refused_token_request_with_the_audit_log_down_is_503(
    h: Harness, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_audit(h, how, monkeypatch)
    response = h.exchange("not-a-code")
    oauth_error(response, 503, "temporarily_unavailable")


@pytest.mark.parametrize("how", ["closed", "append raises"])
def test_no_usable_token_is_issued_while_the_audit_log_is_down(
    h: Harness, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = h.code()
    break_audit(h, how, monkeypatch)
    response = h.exchange(code)
    assert response.json()["error"] == "temporarily_unavailable"
    assert "access_token" not in response.json()
    assert "refresh_token" not in response.json()
    started = families(h)
    assert len(started) == 1
    assert started[0][1] is not None, "the family the code started is revoked"
    with closing(sqlite3.connect(h.database)) as conn:
        jtis = [row[0] for row in conn.execute("SELECT jti FROM oauth_access_tokens")]
    assert len(jtis) == 1
    assert h.revocations.is_revoked(jtis[0]) is True


@pytest.mark.parametrize("how", ["closed", "append raises"])
def test_a_grant_with_the_audit_log_down_is_503(h: Harness, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code = h.code()
    break_audit(h, how, monkeypatch)
    oauth_error(h.exchange(code), 503, "temporarily_unavailable")


@pytest.mark.parametrize("how", ["closed", "append raises"])
def test_no_code_is_issued_while_the_audit_log_is_down(h: Harness, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    browser = h.browser(signed_in=True)
    code_of(browser.consent(browser.authorize(), "approve"))
    break_audit(h, how, monkeypatch)
    params = redirect_params(browser.authorize(state="down"))
    assert (params["error"], params["state"]) == ("temporarily_unavailable", "down")
    assert "code" not in params


@pytest.mark.parametrize("how", ["closed", "append raises"])
def test_sign_in_fails_closed_while_the_audit_log_is_down(
    h: Harness, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = h.browser()
    page = browser.authorize()
    break_audit(h, how, monkeypatch)
    response = browser.sign_in(page)
    assert_page(response, 503)
    assert "set-cookie" not in response.headers


def test_an_oversize_chunked_token_request_is_refused_without_buffering_it(h: Harness) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"grant_type=authorization_code&client_id=cli&code="
        for _ in range(100):
            yield b"x" * 1024  # 100 KB, no Content-Length: the declared size cannot be trusted

    mark = h.mark()
    response = h.http.post(
        "/oauth/token", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    oauth_error(response, 400, "invalid_request")
    assert response.json()["error_description"] == "the request is too large"
    assert_audited(h.since(mark), "oauth/token", "deny", "invalid_request", None)
