"""An upstream that needs its own OAuth, its authorization server and Bastion, running on loopback;
and a person at a scripted browser who signs in to the portal and connects that upstream.

    with upstream_oauth_world(workdir, people={"alice": ("pw", ["engineering"])},
                              accounts=[OIDCAccount("alice-up", "pw-up", ...)]) as world:
        alice = ScriptedBrowser(world)
        alice.sign_in("alice", "pw")
        callback = alice.authorize_upstream(alice.start_connect("tracker"), world.accounts["alice-up"])
        alice.get(callback)  # 303 to /portal?connected=tracker

The processes are the ones of ``tests/e2e/test_upstream_oauth.py``: ``oidc-provider`` over HTTPS
with a throwaway CA (``tests/support/oidc_provider``), the OAuth-protected MCP server
(``tests/support/oauth_upstream_server``) and ``bastion serve`` with a users file and the route
``tracker`` (configured issuer and client), plus any ``extra_routes``.

``ScriptedBrowser`` is plain ``httpx2`` that follows no redirect by itself. It keeps Bastion's
cookies by hand: they are ``__Host-`` and ``Secure``, which a browser keeps on
``http://127.0.0.1`` (a potentially trustworthy origin) and ``http.cookiejar`` does not. The
authorization server is HTTPS, so its cookies live in an ordinary cookie jar, one per browser.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx2

from bastion.credentials.vault import generate_key
from bastion.demo.browser import Form, forms_of
from bastion.oauth.authorize_endpoint import SIGN_IN_COOKIE
from tests.support.bastion_process import DEMO_CEDAR, BastionProcess, free_port, write_users_file
from tests.support.oauth_upstream_server import OAuthUpstreamServer, resource_for
from tests.support.oidc_provider import OIDCAccount, OIDCClient, OIDCProvider, OIDCResourceServer
from tests.support.pki import Pki, make_pki

__all__ = [
    "BASTION_CLIENT",
    "SCOPE",
    "ScriptedBrowser",
    "UpstreamOAuthWorld",
    "upstream_oauth_world",
]

BASTION_CLIENT = "bastion-gateway"
SCOPE = "tracker:read"
_MAX_HOPS = 8


@dataclass
class UpstreamOAuthWorld:
    """The running processes and what a test reads of them."""

    bastion: BastionProcess
    provider: OIDCProvider
    upstream: OAuthUpstreamServer
    pki: Pki
    vault_key: str
    accounts: dict[str, OIDCAccount]

    @property
    def origin(self) -> str:
        """Bastion's origin (what a browser sends as ``Origin`` from Bastion's own pages)."""
        return self.bastion.base_url

    def count(self, table: str) -> int:
        """How many rows ``table`` of Bastion's database holds (0 when it does not exist yet)."""
        with sqlite3.connect(self.bastion.database) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
            if found is None:
                return 0
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - a table name from the test
        return int(row[0])

    def vault_rows(self) -> list[tuple[str, str, float]]:
        """``(subject, route, updated_at)`` of every stored connection."""
        with sqlite3.connect(self.bastion.database) as db:
            rows = db.execute("SELECT owner, route, updated_at FROM vault_tokens ORDER BY owner, route").fetchall()
        return [(str(owner).split("\x1f")[-1], str(route), float(updated)) for owner, route, updated in rows]

    def audit_records(self, method: str | None = None) -> list[dict[str, Any]]:
        """Every audit record (the ``record`` JSON column) of ``method`` (or all), oldest first."""
        with sqlite3.connect(self.bastion.database) as db:
            rows = db.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
        records = [json.loads(row[0]) for row in rows]
        return [r for r in records if method is None or r.get("method") == method]

    def provider_events(self, event: str) -> list[dict[str, Any]]:
        """The authorization server's events named ``event``, oldest first."""
        return [e for e in self.provider.events() if e["event"] == event]


@contextmanager
def upstream_oauth_world(
    workdir: Path,
    *,
    people: Mapping[str, tuple[str, Sequence[str]]],
    accounts: Sequence[OIDCAccount],
    extra_routes: Sequence[Mapping[str, Any]] = (),
    identity: Mapping[str, Any] | None = None,
    tracker_oauth: Mapping[str, Any] | None = None,
    token_ttl_s: int | None = None,
    registration: bool = False,
    dynamic_registration: bool = False,
) -> Iterator[UpstreamOAuthWorld]:
    """Start the authorization server, the upstream and Bastion under ``workdir``; stop them after.

        ``people`` are Bastion's local users (``{username: (password, groups)}``); ``accounts`` the
        upstream authorization server's. ``identity`` is merged into Bastion's ``identity`` section,
        ``tracker_oauth`` into the ``tracker`` route's ``credentials.oauth``; an extra route without
    ``http`` gets the upstream's. ``token_ttl_s`` is the
        upstream access tokens' lifetime (the provider's default when ``None``); ``registration``
        opens RFC 7591 registration at the upstream's authorization server, ``dynamic_registration``
        at Bastion's.
    """
    for part in ("pki", "bastion", "provider", "upstream"):
        (workdir / part).mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki")
    users_file = write_users_file(workdir / "bastion", people)
    bastion = BastionProcess(workdir / "bastion", {"policy": {"files": [str(DEMO_CEDAR)]}, "routes": []})
    bastion_secret = secrets.token_urlsafe(24)
    introspector = OIDCClient("tracker-rs", (), client_secret=secrets.token_urlsafe(24), grant_types=())
    upstream_port = free_port()
    resource = resource_for(upstream_port)
    provider = OIDCProvider(
        workdir / "provider",
        pki,
        accounts=list(accounts),
        clients=[
            OIDCClient(
                BASTION_CLIENT,
                [f"{bastion.base_url}/portal/callback"],
                client_secret=bastion_secret,
                grant_types=("authorization_code", "refresh_token"),
            ),
            introspector,
        ],
        resource_servers={resource: OIDCResourceServer(scopes=(SCOPE,), access_token_ttl=token_ttl_s)},
        refresh_tokens=True,
        revocation=True,
        introspection=True,
        registration=registration,
    )
    upstream_http = {"url": resource, "allow_http": True, "allow": ["127.0.0.1"]}
    bastion.config.update(
        identity={
            "authorization_server": {
                "users_file": users_file,
                "scopes": ["mcp"],
                "default_scopes": ["mcp"],
                "dynamic_registration": dynamic_registration,
            },
            **(identity or {}),
        },
        egress={"allow": ["127.0.0.1"], "ca_file": str(pki.ca_file)},
        credentials={"vault_key": {"env": "BASTION_VAULT_KEY"}},
        routes=[
            {
                "name": "tracker",
                "title": "Tracker",
                "http": upstream_http,
                "credentials": {
                    "oauth": {
                        "issuer": provider.issuer,
                        "client_id": BASTION_CLIENT,
                        "client_secret": {"env": "TRACKER_CLIENT_SECRET"},
                        "scopes": [SCOPE],
                        **(tracker_oauth or {}),
                    }
                },
            },
            *({"http": upstream_http, **route} for route in extra_routes),
        ],
    )
    bastion.write_config()
    env = {"BASTION_VAULT_KEY": generate_key(), "TRACKER_CLIENT_SECRET": bastion_secret}
    with (
        provider,
        OAuthUpstreamServer(
            workdir / "upstream",
            issuer=provider.issuer,
            ca_file=pki.ca_file,
            introspection_client_id=introspector.client_id,
            introspection_client_secret=str(introspector.client_secret),
            required_scopes=(SCOPE,),
            port=upstream_port,
        ) as upstream,
    ):
        bastion.start(env)
        try:
            yield UpstreamOAuthWorld(
                bastion, provider, upstream, pki, env["BASTION_VAULT_KEY"], {a.login: a for a in accounts}
            )
        finally:
            bastion.stop()


class ScriptedBrowser:
    """One browser profile played by a script: Bastion's cookies and the authorization server's.

    Requests follow no redirect; POSTs send ``Origin`` (Bastion's own unless told otherwise,
    ``origin=None`` sends none).
    """

    def __init__(self, world: UpstreamOAuthWorld) -> None:
        self.world = world
        self.cookies: dict[str, str] = {}
        self._http = httpx2.Client(timeout=30.0, follow_redirects=False, trust_env=False)
        self._upstream = httpx2.Client(
            timeout=30.0,
            follow_redirects=False,
            trust_env=False,
            verify=ssl.create_default_context(cafile=world.pki.ca_file),
        )

    def close(self) -> None:
        self._http.close()
        self._upstream.close()

    def __enter__(self) -> ScriptedBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Bastion
    def url(self, path_or_url: str) -> str:
        return urljoin(self.world.bastion.base_url + "/", path_or_url)

    def _send(self, method: str, path_or_url: str, *, cookies: bool, **kwargs: Any) -> httpx2.Response:
        headers: dict[str, str] = dict(kwargs.pop("headers", None) or {})
        if cookies and self.cookies:
            headers["cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = self._http.request(method, self.url(path_or_url), headers=headers, **kwargs)
        for raw in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        return response

    def get(self, path_or_url: str, *, cookies: bool = True, **headers: str) -> httpx2.Response:
        """GET at Bastion with this browser's cookies (unless ``cookies`` is False)."""
        return self._send("GET", path_or_url, cookies=cookies, headers=headers)

    def post(
        self,
        path_or_url: str,
        data: Mapping[str, str] | Sequence[tuple[str, str]],
        *,
        origin: str | None = "",
        cookies: bool = True,
    ) -> httpx2.Response:
        """POST a form (fields as a mapping, or pairs when one repeats) at Bastion; ``origin`` ""
        is Bastion's own, ``None`` sends no ``Origin``."""
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["origin"] = origin or self.world.origin
        body = urlencode(list(data.items()) if isinstance(data, Mapping) else list(data)).encode()
        return self._send("POST", path_or_url, cookies=cookies, content=body, headers=headers)

    @property
    def sign_in_cookie(self) -> str | None:
        return self.cookies.get(SIGN_IN_COOKIE)

    def form(self, response: httpx2.Response) -> Form:
        """The one form of a Bastion page."""
        forms = forms_of(response.text)
        assert len(forms) == 1, f"{response.status_code}: expected one form, found {len(forms)}: {response.text[:500]}"
        return forms[0]

    def sign_in(self, username: str, password: str) -> httpx2.Response:
        """Sign in at ``/portal/sign-in`` with the password form; the POST's response (a 303 to the portal)."""
        page = self.get("/portal/sign-in")
        assert page.status_code == 200, page.text
        form = self.form(page)
        response = self.post(form.action, {**form.fields, "username": username, "password": password})
        assert response.status_code == 303, f"{response.status_code}: {response.text[:500]}"
        return response

    def connect_form(self, route: str) -> dict[str, str]:
        """The fields of the "Connect <route>?" page's form (its ``csrf_token``)."""
        page = self.get(f"/portal/connect/{route}")
        assert page.status_code == 200, f"{page.status_code}: {page.text[:500]}"
        return dict(self.form(page).fields)

    def start_connect(self, route: str) -> str:
        """Press Connect for ``route``; the authorization URL Bastion sends the browser to."""
        response = self.post(f"/portal/connect/{route}", self.connect_form(route))
        assert response.status_code == 303, f"{response.status_code}: {response.text[:500]}"
        location: str = response.headers["location"]
        return location

    # the upstream's authorization server
    def authorize_upstream(self, authorization_url: str, account: OIDCAccount) -> str:
        """Sign in at the authorization server as ``account`` (its ``/interaction/<uid>`` form, button
        "Sign in") until it redirects back to Bastion; that callback URL, not yet opened."""
        url = authorization_url
        response = self._upstream.get(url)
        for _ in range(_MAX_HOPS):
            if response.status_code in (302, 303):
                url = urljoin(url, response.headers["location"])
                if url.startswith(self.world.bastion.base_url):
                    return url
                response = self._upstream.get(url)
                continue
            if response.status_code == 200 and "/interaction/" in urlsplit(url).path:
                (form,) = forms_of(response.text)
                assert "Sign in" in response.text, response.text[:500]
                url = urljoin(url, form.action)
                response = self._upstream.post(url, data={"login": account.login, "password": account.password})
                continue
            raise AssertionError(f"unexpected answer {response.status_code} at {url}: {response.text[:500]}")
        raise AssertionError("too many redirects at the authorization server")

    def connect(self, route: str, account: OIDCAccount) -> httpx2.Response:
        """The whole flow: Connect, sign in upstream, open the callback; the callback's response."""
        callback = self.authorize_upstream(self.start_connect(route), account)
        return self.get(callback)
