"""The portal refuses what it must: forged forms, stolen or replayed callbacks, bad tokens, bad keys.

Real processes on loopback, nothing mocked (``tests/support/upstream_oauth_world``): ``oidc-provider``
as the upstream's authorization server (HTTPS, throwaway CA), the OAuth-protected MCP upstream and
``bastion serve`` with the route ``tracker`` (``credentials.oauth``) and ``plain`` (no
credentials). People are scripted browsers (``httpx2``, no redirect followed unless the test
follows it); Chromium only where a browser property matters (SameSite cookies and the ``Origin``
a real browser sends with a forged cross-origin form).

Every refusal is checked three ways: the answer, what did not change (no connection started,
stored or deleted; no code redeemed or token revoked at the authorization server) and the deny
audit record.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey
from tests.support.bastion_process import BASTION, DEMO_CEDAR, free_port, write_users_file
from tests.support.browser import chromium
from tests.support.browser_people import LoopbackSite, new_context
from tests.support.e2e_helpers import jwt_header, jwt_payload, modern_post, reply_message, wait_until
from tests.support.oidc_provider import OIDCAccount
from tests.support.upstream_oauth_world import ScriptedBrowser, UpstreamOAuthWorld, upstream_oauth_world

from bastion.credentials.vault import generate_key
from bastion.demo.browser import query_of
from bastion.identity import SigningKeys, TokenIssuer
from bastion.oauth.authorize_endpoint import PORTAL_CLIENT_ID, SIGN_IN_COOKIE

pytestmark = pytest.mark.e2e

NAMES = ("alice", "bob", "erin", "frank", "grace", "heidi", "ivan", "judy", "kate", "mallory", "oscar")
PASSWORDS = {name: f"{name}'s bastion passphrase" for name in NAMES}
ACCOUNTS = {
    name: OIDCAccount(f"{name}-up", f"{name} at the tracker", f"{name}@tracker.example", name.title()) for name in NAMES
}
PLAIN_ROUTE = {"name": "plain", "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]}}
FOREIGN_ORIGINS = ("https://attacker.example", "null")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamOAuthWorld]:
    with upstream_oauth_world(
        tmp_path_factory.mktemp("portal-attacks"),
        people={name: (PASSWORDS[name], ["engineering"]) for name in NAMES},
        accounts=list(ACCOUNTS.values()),
        extra_routes=[PLAIN_ROUTE],
        identity={"leeway_s": 0},
    ) as running:
        yield running


def signed_in(world: UpstreamOAuthWorld, name: str) -> ScriptedBrowser:
    """A new browser profile in which ``name`` signed in at ``/portal/sign-in``."""
    browser = ScriptedBrowser(world)
    browser.sign_in(name, PASSWORDS[name])
    return browser


@pytest.fixture(scope="module")
def frank(world: UpstreamOAuthWorld) -> Iterator[ScriptedBrowser]:
    """Frank, signed in and connected to ``tracker`` (so a forged disconnect has something to delete)."""
    browser = signed_in(world, "frank")
    done = browser.connect("tracker", ACCOUNTS["frank"])
    assert done.headers.get("location", "").endswith("/portal?connected=tracker"), done.text
    yield browser
    browser.close()


def denials(world: UpstreamOAuthWorld, method: str) -> list[dict[str, Any]]:
    return [r for r in world.audit_records(method) if r["decision"]["effect"] == "deny"]


def summary(record: dict[str, Any]) -> tuple[str | None, str, str | None, Any]:
    """``(reason, route, principal sub, arguments)`` of a decision record."""
    principal = record["principal"]
    return record["decision"]["reason"], record["route"], principal["sub"] if principal else None, record["arguments"]


def new_records(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    assert after[: len(before)] == before
    return [summary(record) for record in after[len(before) :]]


def assert_page_headers(response: httpx2.Response) -> None:
    """The security headers every portal page carries."""
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("cache-control") == "no-store", where
    assert response.headers.get("referrer-policy") == "same-origin", where


# -- signing in -------------------------------------------------------------------------------------


def test_the_portal_without_a_sign_in_points_at_the_sign_in_page(world: UpstreamOAuthWorld) -> None:
    with ScriptedBrowser(world) as browser:
        page = browser.get("/portal")
    assert page.status_code == 401
    assert f"{world.bastion.base_url}/portal/sign-in" in page.text
    assert "Tracker" not in page.text
    assert "csrf_token" not in page.text


def test_signing_in_at_the_portal_sets_the_cookie_and_issues_no_code(world: UpstreamOAuthWorld) -> None:
    base = world.bastion.base_url
    codes, consents = world.count("oauth_codes"), world.count("oauth_consents")
    allowed_before = len(world.audit_records("oauth/sign-in"))
    with ScriptedBrowser(world) as browser:
        page = browser.get("/portal/sign-in")
        assert page.status_code == 200
        assert "<title>Sign in to Bastion</title>" in page.text
        form = browser.form(page)
        assert form.action == f"{base}/oauth/sign-in"
        assert {"transaction", "csrf_token", "username", "password"} <= set(form.fields)
        assert browser.sign_in_cookie is None

        # A wrong password: the form again, no cookie, a deny record.
        wrong = browser.post(form.action, {**form.fields, "username": "erin", "password": "not erin's"})
        assert wrong.status_code == 401
        assert browser.sign_in_cookie is None

        # The same form sent from another origin: refused before the password is looked at.
        foreign = browser.post(
            form.action, {**form.fields, "username": "erin", "password": PASSWORDS["erin"]}, origin=FOREIGN_ORIGINS[0]
        )
        assert foreign.status_code == 400
        assert browser.sign_in_cookie is None

        # The right password from Bastion's own page: straight back to the portal, no consent page.
        response = browser.post(form.action, {**form.fields, "username": "erin", "password": PASSWORDS["erin"]})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"{base}/portal"
        assert "code=" not in response.headers["location"]
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith(f"{SIGN_IN_COOKIE}=")
        assert "Secure" in set_cookie
        assert "HttpOnly" in set_cookie
        assert browser.sign_in_cookie
        portal = browser.get(response.headers["location"])
        assert portal.status_code == 200
        assert "Signed in as <strong>erin</strong>" in portal.text
        assert "Connect Tracker" in portal.text

        # Signed in already: the sign-in page sends the browser to the portal.
        again = browser.get("/portal/sign-in")
        assert again.status_code == 303
        assert again.headers["location"] == f"{base}/portal"

    assert world.count("oauth_codes") == codes
    assert world.count("oauth_consents") == consents
    records = [(*summary(r), r["decision"]["effect"], r["target"]) for r in world.audit_records("oauth/sign-in")]
    assert records[allowed_before:] == [
        ("access_denied", "-", None, {"username": "erin"}, "deny", PORTAL_CLIENT_ID),
        ("invalid_request", "-", None, {}, "deny", None),
        (None, "-", "erin", {"username": "erin"}, "allow", PORTAL_CLIENT_ID),
    ]


# -- forged connect and disconnect forms ------------------------------------------------------------

FORGERIES = ["no csrf_token", "another person's csrf_token", "a made-up csrf_token", *FOREIGN_ORIGINS]


def forged_form(world: UpstreamOAuthWorld, frank: ScriptedBrowser, forgery: str) -> tuple[dict[str, str], str]:
    """The form fields and ``Origin`` of a forged POST in Frank's browser."""
    good = frank.connect_form("tracker")
    if forgery == "no csrf_token":
        return {}, ""
    if forgery == "another person's csrf_token":
        with signed_in(world, "bob") as bob:
            return bob.connect_form("tracker"), ""
    if forgery == "a made-up csrf_token":
        return {"csrf_token": secrets.token_hex(32)}, ""
    return good, forgery  # the right token, from another origin


@pytest.mark.parametrize("action", ["connect", "disconnect"])
@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_forms_start_and_delete_nothing(
    world: UpstreamOAuthWorld, frank: ScriptedBrowser, action: str, forgery: str
) -> None:
    data, origin = forged_form(world, frank, forgery)
    method = f"upstream/{action}"
    pending, rows = world.count("vault_pending"), world.vault_rows()
    revoked = len(world.provider_events("grant.revoked"))
    refused_before = denials(world, method)

    response = frank.post(f"/portal/{action}/tracker", data, origin=origin)

    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert "The form did not come from Bastion." in response.text
    assert world.count("vault_pending") == pending  # no connection started
    assert world.vault_rows() == rows  # Frank's connection neither deleted nor replaced
    assert ("frank", "tracker") in [(sub, route) for sub, route, _ in rows]
    assert len(world.provider_events("grant.revoked")) == revoked
    assert new_records(refused_before, denials(world, method)) == [
        ("invalid_request", "tracker", "frank", {"problem": "form"})
    ]


def test_the_genuine_connect_form_starts_one_connection(world: UpstreamOAuthWorld, frank: ScriptedBrowser) -> None:
    """The control for the forgeries: the same POST with the page's own token and origin goes through."""
    pending = world.count("vault_pending")
    for origin in ("", None):  # Bastion's origin, or none (a browser may leave it out)
        response = frank.post("/portal/connect/tracker", frank.connect_form("tracker"), origin=origin)
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        assert location.startswith(f"{world.provider.issuer}/auth?")
        assert query_of(location)["client_id"] == "bastion-gateway"
        assert response.headers["cache-control"] == "no-store"
    assert world.count("vault_pending") == pending + 2


def test_forms_without_a_sign_in_start_and_delete_nothing(world: UpstreamOAuthWorld, frank: ScriptedBrowser) -> None:
    fields = frank.connect_form("tracker")  # a valid token, but sent without Frank's cookies
    pending, rows = world.count("vault_pending"), world.vault_rows()
    revoked = len(world.provider_events("grant.revoked"))
    with ScriptedBrowser(world) as stranger:
        for action in ("connect", "disconnect"):
            response = stranger.post(f"/portal/{action}/tracker", fields)
            assert response.status_code == 400, response.text
            assert "location" not in response.headers
        response = frank.post("/portal/disconnect/tracker", fields, cookies=False)
        assert response.status_code == 400
    assert world.count("vault_pending") == pending
    assert world.vault_rows() == rows
    assert len(world.provider_events("grant.revoked")) == revoked


@pytest.mark.parametrize("action", ["connect", "disconnect"])
def test_forms_without_a_sign_in_are_audited(world: UpstreamOAuthWorld, frank: ScriptedBrowser, action: str) -> None:
    fields = frank.connect_form("tracker")
    method = f"upstream/{action}"
    refused_before = denials(world, method)
    with ScriptedBrowser(world) as stranger:
        assert stranger.post(f"/portal/{action}/tracker", fields).status_code == 400
    refused = new_records(refused_before, denials(world, method))
    assert [record[:3] for record in refused] == [("invalid_request", "tracker", None)]


@pytest.mark.parametrize("action", ["connect", "disconnect"])
def test_a_form_with_a_repeated_field_starts_and_deletes_nothing(
    world: UpstreamOAuthWorld, frank: ScriptedBrowser, action: str
) -> None:
    token = frank.connect_form("tracker")["csrf_token"]
    pending, rows = world.count("vault_pending"), world.vault_rows()
    revoked = len(world.provider_events("grant.revoked"))
    response = frank.post(f"/portal/{action}/tracker", [("csrf_token", token), ("csrf_token", token)])
    assert response.status_code >= 400
    assert "location" not in response.headers
    assert world.count("vault_pending") == pending
    assert world.vault_rows() == rows
    assert len(world.provider_events("grant.revoked")) == revoked


@pytest.mark.parametrize("action", ["connect", "disconnect"])
def test_a_form_with_a_repeated_field_is_refused_as_a_forgery(
    world: UpstreamOAuthWorld, frank: ScriptedBrowser, action: str
) -> None:
    token = frank.connect_form("tracker")["csrf_token"]
    method = f"upstream/{action}"
    refused_before = denials(world, method)
    response = frank.post(f"/portal/{action}/tracker", [("csrf_token", token), ("csrf_token", token)])
    assert response.status_code == 400
    refused = new_records(refused_before, denials(world, method))
    assert [record[:3] for record in refused] == [("invalid_request", "tracker", "frank")]


def test_a_route_without_upstream_oauth_has_nothing_to_connect(
    world: UpstreamOAuthWorld, frank: ScriptedBrowser
) -> None:
    fields = frank.connect_form("tracker")  # Frank's valid form token
    pending, rows = world.count("vault_pending"), world.vault_rows()
    for route in ("plain", "no-such-route"):
        page = frank.get(f"/portal/connect/{route}")
        assert page.status_code == 404
        assert "csrf_token" not in page.text
        for action in ("connect", "disconnect"):
            response = frank.post(f"/portal/{action}/{route}", fields)
            assert response.status_code == 400, response.text
            assert "location" not in response.headers
    assert world.count("vault_pending") == pending
    assert world.vault_rows() == rows


# -- the callback ------------------------------------------------------------------------------------


def test_a_replayed_callback_is_refused(world: UpstreamOAuthWorld) -> None:
    with signed_in(world, "grace") as grace:
        callback = grace.authorize_upstream(grace.start_connect("tracker"), ACCOUNTS["grace"])
        first = grace.get(callback)
        assert first.status_code == 303, first.text
        assert first.headers["location"] == f"{world.bastion.base_url}/portal?connected=tracker"
        rows, grants = world.vault_rows(), len(world.provider_events("grant.success"))
        refused_before = denials(world, "upstream/connect")

        replay = grace.get(callback)

    assert replay.status_code == 400
    assert "This connection has expired" in replay.text
    assert world.vault_rows() == rows  # not stored again (same updated_at)
    assert len(world.provider_events("grant.success")) == grants  # the code was not presented again
    assert new_records(refused_before, denials(world, "upstream/connect")) == [
        ("invalid_request", "-", "grace", {"problem": "state"})
    ]


def test_a_callback_carried_to_another_browser_is_refused_and_stores_nothing(world: UpstreamOAuthWorld) -> None:
    rows, grants = world.vault_rows(), len(world.provider_events("grant.success"))
    refused_before = denials(world, "upstream/connect")
    expected = []
    with signed_in(world, "alice") as alice, signed_in(world, "bob") as bob, signed_in(world, "heidi") as heidi:
        # Bob connects his own tracker account and carries the callback to Alice's browser, hoping
        # Alice's Bastion account ends up using his tracker account (login CSRF).
        planted = bob.authorize_upstream(bob.start_connect("tracker"), ACCOUNTS["bob"])
        assert alice.get(planted).status_code == 400
        expected.append(("invalid_request", "tracker", "alice", {"problem": "state"}))
        # The state is spent: the browser that started it cannot finish it now either.
        assert bob.get(planted).status_code == 400
        expected.append(("invalid_request", "-", "bob", {"problem": "state"}))

        # The same person signed in in another browser: still not the browser that started it.
        with signed_in(world, "heidi") as heidi_elsewhere:
            started_here = heidi.authorize_upstream(heidi.start_connect("tracker"), ACCOUNTS["heidi"])
            assert heidi_elsewhere.get(started_here).status_code == 400
            expected.append(("invalid_request", "tracker", "heidi", {"problem": "state"}))

        # A browser where nobody is signed in.
        started = heidi.authorize_upstream(heidi.start_connect("tracker"), ACCOUNTS["heidi"])
        with ScriptedBrowser(world) as nobody:
            assert nobody.get(started).status_code == 400
            expected.append(("invalid_request", "tracker", None, {"problem": "state"}))

    assert world.vault_rows() == rows  # no tokens for anyone
    assert len(world.provider_events("grant.success")) == grants  # no code redeemed
    assert new_records(refused_before, denials(world, "upstream/connect")) == expected


def test_a_refused_authorization_stores_nothing(world: UpstreamOAuthWorld) -> None:
    rows = world.vault_rows()
    refused_before = denials(world, "upstream/connect")
    with signed_in(world, "ivan") as ivan:
        state = query_of(ivan.start_connect("tracker"))["state"]
        query = urlencode({"error": "access_denied", "state": state, "iss": world.provider.issuer})
        answer = ivan.get(f"/portal/callback?{query}")
    assert answer.status_code == 400
    assert "access_denied" in answer.text
    assert world.vault_rows() == rows
    assert new_records(refused_before, denials(world, "upstream/connect")) == [
        ("access_denied", "tracker", "ivan", {"problem": "access_denied"})
    ]


def test_a_callback_naming_another_issuer_is_refused_before_the_code_is_redeemed(world: UpstreamOAuthWorld) -> None:
    """RFC 9207 (mix-up): the ``iss`` of the authorization response must be the server the flow went to."""
    rows, grants = world.vault_rows(), len(world.provider_events("grant.success"))
    refused_before = denials(world, "upstream/connect")
    with signed_in(world, "oscar") as oscar:
        callback = oscar.authorize_upstream(oscar.start_connect("tracker"), ACCOUNTS["oscar"])
        params = query_of(callback)
        assert params["iss"] == world.provider.issuer
        mixed_up = urlencode({**params, "iss": "https://attacker.example"})
        response = oscar.get(f"/portal/callback?{mixed_up}")
        assert response.status_code == 502
        assert "another issuer" in response.text
        # The genuine callback cannot be used afterwards: the state is spent.
        assert oscar.get(callback).status_code == 400
    assert world.vault_rows() == rows
    assert len(world.provider_events("grant.success")) == grants
    refused = new_records(refused_before, denials(world, "upstream/connect"))
    assert [r[:3] for r in refused] == [("server_error", "tracker", "oscar"), ("invalid_request", "-", "oscar")]
    assert refused[0][3] == {"problem": "tracker: the response names another issuer (RFC 9207)"}


def test_an_unknown_state_is_refused(world: UpstreamOAuthWorld) -> None:
    rows = world.vault_rows()
    refused_before = denials(world, "upstream/connect")
    with signed_in(world, "judy") as judy:
        for query in (f"code=made-up&state={secrets.token_urlsafe(32)}", "code=made-up", ""):
            response = judy.get(f"/portal/callback?{query}")
            assert response.status_code == 400, query
            assert "This connection has expired" in response.text
    assert world.vault_rows() == rows
    assert (
        new_records(refused_before, denials(world, "upstream/connect"))
        == [("invalid_request", "-", "judy", {"problem": "state"})] * 3
    )


# -- every page's headers ------------------------------------------------------------------------------


def test_every_portal_page_forbids_framing_caching_and_referrers(
    world: UpstreamOAuthWorld, frank: ScriptedBrowser
) -> None:
    with ScriptedBrowser(world) as nobody:
        pages = [
            nobody.get("/portal"),
            nobody.get("/portal/sign-in"),
            nobody.get("/portal/connect/tracker"),
            nobody.get("/portal/callback?code=x&state=y"),
            nobody.post("/portal/connect/tracker", {}),
            frank.get("/portal"),
            frank.get("/portal?connected=tracker"),
            frank.get("/portal/connect/tracker"),
            frank.get("/portal/connect/plain"),
            frank.get("/portal/callback?error=access_denied&state=y"),
            frank.post("/portal/connect/tracker", {"csrf_token": "forged"}),
            frank.post("/portal/disconnect/tracker", {"csrf_token": "forged"}),
        ]
    assert sorted({page.status_code for page in pages}) == [200, 400, 401, 404]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html")
        assert_page_headers(page)


# -- the discovery API ----------------------------------------------------------------------------------


def api(world: UpstreamOAuthWorld, token: str | None = None, **headers: str) -> httpx2.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx2.get(f"{world.bastion.base_url}/portal/api/routes", headers=headers, timeout=30.0)


def test_the_api_refuses_anything_but_a_bastion_token_for_a_route(world: UpstreamOAuthWorld) -> None:
    bastion = world.bastion
    valid = bastion.mint("oscar", "tracker", "engineering")
    keys = SigningKeys.load_or_create(bastion.workdir / "data", verify_window_s=3600)
    route_uri = f"{bastion.base_url}/mcp/tracker"
    own = TokenIssuer(keys, bastion.base_url, 3600)
    elsewhere = TokenIssuer(keys, "https://other-issuer.example", 3600)
    impostor = ECKey.generate_key("P-256", parameters={"kid": jwt_header(valid)["kid"]}, private=True)
    refused = {
        "no credentials": api(world),
        "not a JWT": api(world, "not-a-jwt"),
        "Basic credentials": api(world, authorization="Basic b3NjYXI6cGFzc3dvcmQ="),
        # Bastion's header and claims, signed with another key under Bastion's key id
        "forged": api(world, jwt.encode(jwt_header(valid), jwt_payload(valid), impostor, algorithms=["ES256"])),
        # Bastion's own key, but expired ten minutes ago (no leeway configured)
        "expired": api(world, own.mint(sub="oscar", audience=route_uri, ttl_s=60, now=time.time() - 660).token),
        # Bastion's own key, but another issuer
        "other issuer": api(world, elsewhere.mint(sub="oscar", audience=route_uri, ttl_s=300).token),
        # Bastion's own key and issuer, for an audience that is no route (e.g. a token exchange's STS)
        "no route's audience": api(world, own.mint(sub="oscar", audience="http://127.0.0.1:9/sts", ttl_s=300).token),
    }
    for what, response in refused.items():
        assert response.status_code == 401, what
        assert response.headers["www-authenticate"].startswith("Bearer"), what
        assert response.headers["cache-control"] == "no-store", what
        assert response.json()["error"] == "invalid_token", what
        assert "routes" not in response.json(), what
    accepted = api(world, valid)  # the control
    assert accepted.status_code == 200
    assert accepted.json()["user"] == "oscar"


def test_the_api_lists_routes_and_only_the_callers_connections(world: UpstreamOAuthWorld) -> None:
    base = world.bastion.base_url
    kate_token = world.bastion.mint("kate", "tracker", "engineering")
    mallory_token = world.bastion.mint("mallory", "plain", "engineering")  # a token for any route will do

    before = api(world, kate_token)
    assert before.status_code == 200
    assert before.headers["cache-control"] == "no-store"
    listed = before.json()
    for item in listed["routes"]:  # the tools kate may call: known after a route's first use
        tools = item.pop("tools")
        assert tools is None or all(set(tool) == {"name", "risk", "approval"} for tool in tools), tools
    assert listed == {
        "user": "kate",
        "routes": [
            {
                "name": "tracker", "title": "Tracker", "url": f"{base}/mcp/tracker", "credential": "oauth_user",
                "connected": False, "connected_at": None, "expires_at": None,
                "connect_url": f"{base}/portal/connect/tracker",
            },
            {
                "name": "plain", "title": "plain", "url": f"{base}/mcp/plain", "credential": "none",
                "connected": None, "connected_at": None, "expires_at": None, "connect_url": None,
            },
        ],
    }  # fmt: skip

    started = time.time()
    with signed_in(world, "kate") as kate, signed_in(world, "mallory") as mallory:
        assert kate.connect("tracker", ACCOUNTS["kate"]).status_code == 303

        # Kate's status, with her sign-in cookie and with her token.
        for listing in (kate.get("/portal/api/routes"), api(world, kate_token)):
            assert listing.status_code == 200
            assert listing.json()["user"] == "kate"
            (tracker,) = [r for r in listing.json()["routes"] if r["name"] == "tracker"]
            assert tracker["connected"] is True
            assert started - 1 <= tracker["connected_at"] <= time.time() + 1
            assert tracker["expires_at"] > time.time()

        # Mallory sees her own status only: not connected, whichever way she asks.
        for listing in (mallory.get("/portal/api/routes"), api(world, mallory_token)):
            assert listing.status_code == 200
            body = listing.json()
            assert body["user"] == "mallory"
            (tracker,) = [r for r in body["routes"] if r["name"] == "tracker"]
            assert (tracker["connected"], tracker["connected_at"], tracker["expires_at"]) == (False, None, None)
            assert "kate" not in listing.text
        page = mallory.get("/portal")
        assert "Not connected." in page.text
        assert "Disconnect Tracker" not in page.text


# -- a call to a route that is not connected ---------------------------------------------------------------


def call_whoami(world: UpstreamOAuthWorld, token: str) -> tuple[httpx2.Response, dict[str, Any]]:
    with httpx2.Client(timeout=30.0) as http:
        response = modern_post(http, world.bastion.url("tracker"), token, "tools/call",
                               {"name": "whoami", "arguments": {}})  # fmt: skip
    return response, reply_message(response)


def assert_connection_required(world: UpstreamOAuthWorld, response: httpx2.Response, message: dict[str, Any]) -> str:
    assert response.status_code == 200
    assert "result" not in message
    error = message["error"]
    assert error["code"] == -32042
    (elicitation,) = error["data"]["elicitations"]
    assert elicitation["mode"] == "url"
    assert elicitation["url"] == f"{world.bastion.base_url}/portal/connect/tracker"
    assert elicitation["elicitationId"]
    assert "Tracker" in elicitation["message"]
    elicitation_id: str = elicitation["elicitationId"]
    return elicitation_id


def test_a_call_before_connecting_gets_the_url_elicitation_error(
    world: UpstreamOAuthWorld, frank: ScriptedBrowser
) -> None:
    outsider = world.bastion.mint("outsider", "tracker", "engineering")
    seen = len(world.upstream.requests())
    first = assert_connection_required(world, *call_whoami(world, outsider))
    assert len(world.upstream.requests()) == seen  # refused before anything went upstream

    # Frank is connected: his call goes through (and Bastion learns Frank's tool catalog: on a route with
    # per-user upstream credentials each person has a catalog of their own).
    _, message = call_whoami(world, world.bastion.mint("frank", "tracker", "engineering"))
    assert message["result"]["structuredContent"]["sub"] == "frank-up", message

    seen = len(world.upstream.requests())
    second = assert_connection_required(world, *call_whoami(world, outsider))
    assert second != first  # one elicitation id per error
    assert len(world.upstream.requests()) == seen

    def outsider_records() -> list[dict[str, Any]]:
        return [r for r in world.audit_records("tools/call") if (r["principal"] or {}).get("sub") == "outsider"]

    # Both calls are refused before the decision: the outsider's catalog cannot be loaded without
    # the outsider's own upstream token, and Frank's is not theirs to be judged by.
    records = wait_until(lambda: len(outsider_records()) >= 2 and outsider_records())
    assert len(records) == 2
    for refused in records:
        assert refused["kind"] == "decision"
        assert refused["decision"]["effect"] == "deny"
        assert refused["decision"]["reason"] == "upstream_not_connected"
        assert refused["target"] == "whoami"


# -- Chromium: a forged form from another page ------------------------------------------------------------


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "localhost"])
async def test_a_forged_disconnect_from_another_page_is_refused_in_chromium(
    world: UpstreamOAuthWorld, attacker_host: str
) -> None:
    """A page of another origin auto-submits a disconnect form at Bastion. Same site (127.0.0.1 on
    another port), Chromium sends the SameSite=Lax sign-in cookie along and Bastion's Origin and
    form-token checks refuse it; cross-site (localhost), Chromium withholds the cookie."""
    base = world.bastion.base_url
    name = "alice" if attacker_host == "127.0.0.1" else "bob"
    forged = (
        f'<!DOCTYPE html><form id="f" method="post" action="{base}/portal/disconnect/tracker">'
        '<input type="hidden" name="csrf_token" value="guessed"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    async with LoopbackSite({"/forged": forged}) as attacker, chromium() as browser:
        context = await new_context(browser, ignore_https_errors=True)
        page = await context.new_page()
        # Sign in at the portal and connect the tracker, as a person would.
        await page.goto(f"{base}/portal/sign-in")
        await page.get_by_label("Username").fill(name)
        await page.get_by_label("Password").fill(PASSWORDS[name])
        async with page.expect_navigation(url=lambda url: url == f"{base}/portal"):
            await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.goto(f"{base}/portal/connect/tracker")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Connect", exact=True).click()
        await page.fill("input[name=login]", ACCOUNTS[name].login)
        await page.fill("input[name=password]", ACCOUNTS[name].password)
        async with page.expect_navigation(url=lambda url: url == f"{base}/portal?connected=tracker"):
            await page.get_by_role("button", name="Sign in", exact=True).click()
        assert (name, "tracker") in [(sub, route) for sub, route, _ in world.vault_rows()]
        rows, revoked = world.vault_rows(), len(world.provider_events("grant.revoked"))
        refused_before = denials(world, "upstream/disconnect")

        # The attacker's page.
        target = f"{base}/portal/disconnect/tracker"
        async with page.expect_response(lambda r: r.url == target and r.request.method == "POST") as answered:
            await page.goto(attacker.url("/forged", host=attacker_host))
        response = await answered.value
        sent = await response.request.all_headers()
        assert response.status == 400
        assert sent["origin"] == f"http://{attacker_host}:{attacker.port}"
        await context.close()

    assert world.vault_rows() == rows
    assert len(world.provider_events("grant.revoked")) == revoked
    refused = new_records(refused_before, denials(world, "upstream/disconnect"))
    if attacker_host == "127.0.0.1":  # same site: the cookie went along; the form checks refused it
        assert f"{SIGN_IN_COOKIE}=" in sent.get("cookie", "")
        assert refused == [("invalid_request", "tracker", name, {"problem": "form"})]
    else:  # cross-site: SameSite=Lax kept the cookie home; nobody was signed in
        assert f"{SIGN_IN_COOKIE}=" not in sent.get("cookie", "")


# -- the vault key ------------------------------------------------------------------------------------------


VAULT_KEY_VAR = "PORTAL_E2E_VAULT_KEY"
VAULT_KEY_PROBLEMS = {
    "missing": (None, None, "credentials.vault_key is needed"),
    "env var unset": ({"env": VAULT_KEY_VAR}, None, f"environment variable {VAULT_KEY_VAR} is not set"),
    "16 bytes": ({"env": VAULT_KEY_VAR}, "AAAAAAAAAAAAAAAAAAAAAA", "this one is 16 bytes"),
    "not base64url": ({"env": VAULT_KEY_VAR}, "not a key!", "a vault key is 32 bytes written as base64url"),
}


def vault_key_config(workdir: Path, vault_key: dict[str, str] | None) -> Path:
    """A configuration with one route connected in the portal and ``credentials.vault_key`` as given;
    nothing it names is running (Bastion must stop before reaching out)."""
    users_file = write_users_file(workdir, {"alice": (PASSWORDS["alice"], ["engineering"])})
    config: dict[str, Any] = {
        "data_dir": str(workdir / "data"),
        "server": {"host": "127.0.0.1", "port": free_port()},
        "policy": {"files": [str(DEMO_CEDAR)]},
        "identity": {"authorization_server": {"users_file": users_file}},
        "routes": [
            {
                "name": "tracker",
                "http": {"url": "http://127.0.0.1:9/mcp", "allow_http": True, "allow": ["127.0.0.1"]},
                "credentials": {"oauth": {"issuer": "https://127.0.0.1:9", "client_id": "bastion"}},
            }
        ],
    }
    if vault_key is not None:
        config["credentials"] = {"vault_key": vault_key}
    path = workdir / "bastion.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_bastion(command: str, config: Path, value: str | None) -> subprocess.CompletedProcess[str]:
    """``bastion COMMAND --config CONFIG`` with ``PORTAL_E2E_VAULT_KEY`` = ``value`` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k != VAULT_KEY_VAR}
    if value is not None:
        env[VAULT_KEY_VAR] = value
    try:
        return subprocess.run(
            [BASTION, command, "--config", str(config)],
            capture_output=True, text=True, env=env, cwd=config.parent, timeout=30, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # it did not stop: it is serving
        raise AssertionError(f"bastion {command} kept running: {exc.stderr!r}") from None


@pytest.mark.parametrize("problem", list(VAULT_KEY_PROBLEMS))
def test_bastion_refuses_to_start_without_a_usable_vault_key(tmp_path: Path, problem: str) -> None:
    reference, value, expected = VAULT_KEY_PROBLEMS[problem]
    config = vault_key_config(tmp_path, reference)
    for command in ("serve", "check"):
        done = run_bastion(command, config, value)
        output = done.stdout + done.stderr
        assert done.returncode != 0, f"{command}: {output}"
        assert "credentials.vault_key" in output, f"{command}: {output}"
        assert expected in output, f"{command}: {output}"
        assert "Traceback" not in output, f"{command}: {output}"


def test_a_good_vault_key_passes_the_check(tmp_path: Path) -> None:
    """The control for the refusals above: the same configuration with a 32-byte key checks out."""
    done = run_bastion("check", vault_key_config(tmp_path, {"env": VAULT_KEY_VAR}), generate_key())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout
