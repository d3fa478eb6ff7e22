"""Bastion as the OAuth client of an upstream's authorization server, attacked and exercised over real HTTP.

Every case runs against ``tests/support/scripted_authorization_server.py`` (uvicorn on 127.0.0.1, scripted
per case), through a real ``EgressGuard`` that allows 127.0.0.1 and a real sealed ``TokenVault``. The server
checks what a real one checks (client authentication, PKCE S256, redirect_uri, resource), so a happy path
that succeeds proves the request was right; the recorded requests prove the exact fields. Refusals must name
the problem and repeat no token, secret, code or verifier. The broker (``UserTokens``,
``send_with_credential``) runs on the same server with a stand-in for the upstream MCP call.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from tests.support.pki import Pki, make_pki
from tests.support.scripted_authorization_server import SECRET_PREFIXES, ScriptedAuthorizationServer, s256

from bastion.config.base import SecretRef
from bastion.config.credentials import UpstreamOAuthSettings
from bastion.credentials.broker import UserTokens, send_with_credential
from bastion.credentials.upstream_oauth import UpstreamOAuthClient
from bastion.credentials.vault import PendingConnection, TokenSet, TokenVault, VaultKeys, generate_key
from bastion.credentials.vault_sqlite import SQLiteVaultStore
from bastion.egress import AllowList, EgressGuard, Refusal
from bastion.errors import (
    BastionError,
    ConnectionExpired,
    UpstreamAuthorizationError,
    UpstreamConnectionRequired,
    UpstreamUnavailable,
)
from bastion.oauth.records import digest
from bastion.principal import Principal

ROUTE = "notes"
REDIRECT = "http://127.0.0.1:1/portal/callback"
CIMD_URL = "https://bastion.example/portal/client-metadata.json"
CONNECT_URL = "https://bastion.example/portal/connect/notes"
LOOPBACK = AllowList.parse(["127.0.0.1"])
ALICE = Principal(kind="User", sub="alice", issuer="https://bastion.example", auth_method="bastion_jwt",
                  expires_at=2_000_000_000)  # fmt: skip
OWNER = ALICE.key
BROWSER = digest("browser-cookie")
PUBLIC_ID = "bastion-public"
CONFIDENTIAL_ID = "bastion:gw%41 é"  # RFC 6749 section 2.3.1: form-encoded before Basic
CONFIDENTIAL_SECRET = "s3:cr%t +/&=é~x"
EVIL = "https://evil.example"


# --- fixtures and helpers ----------------------------------------------------------------------------------


class Clock:
    """Epoch seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a leaf for 127.0.0.1 (the https cases)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def clock() -> Clock:
    """A clock at 1.8e9 epoch seconds."""
    return Clock()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ScriptedAuthorizationServer]:
    """One server for the module (``server`` resets it for each case)."""
    with ScriptedAuthorizationServer() as started:
        yield started


@pytest.fixture
async def server(shared_server: ScriptedAuthorizationServer) -> ScriptedAuthorizationServer:
    """The scripted upstream and authorization server, reset, with a public and a confidential client."""
    await shared_server.reset({"clients": {PUBLIC_ID: None, CONFIDENTIAL_ID: CONFIDENTIAL_SECRET}})
    return shared_server


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[TokenVault]:
    """A sealed token vault in ``tmp_path`` with a fresh key."""
    keys = VaultKeys(base64.urlsafe_b64decode(generate_key() + "="))
    store = TokenVault(SQLiteVaultStore(tmp_path / "bastion.db"), keys)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def refusals() -> list[Refusal]:
    """What the egress guard refused by policy (its ``on_refusal`` hook)."""
    return []


@pytest.fixture
async def guard(refusals: list[Refusal]) -> AsyncIterator[EgressGuard]:
    """The egress guard, allowing 127.0.0.1 and keeping its refusals in ``refusals``."""

    async def record(refusal: Refusal) -> None:
        refusals.append(refusal)

    async with EgressGuard(allow=LOOPBACK, on_refusal=record) as started:
        yield started


@pytest.fixture
def secret_ref(tmp_path: Path) -> SecretRef:
    """A file reference to ``CONFIDENTIAL_SECRET``."""
    path = tmp_path / "client-secret"
    path.write_text(CONFIDENTIAL_SECRET, encoding="utf-8")
    return SecretRef(file=path)


Build = Callable[..., UpstreamOAuthClient]


@pytest.fixture
def build(server: ScriptedAuthorizationServer, vault: TokenVault, guard: EgressGuard, clock: Clock) -> Build:
    """``build(**settings)``: a client for ``server``'s upstream (discovered unless ``issuer=`` is given)."""

    def make(
        *,
        route: str = ROUTE,
        at: ScriptedAuthorizationServer | None = None,
        egress: EgressGuard | None = None,
        cimd: str | None = None,
        **settings: Any,
    ) -> UpstreamOAuthClient:
        return UpstreamOAuthClient(
            route,
            UpstreamOAuthSettings(allow_http=True, **settings),
            upstream_url=(at or server).resource,
            egress=egress or guard,
            vault=vault,
            redirect_uri=REDIRECT,
            metadata_document_url=cimd,
            upstream_allow=LOOPBACK,
            upstream_http=True,
            clock=clock,
        )

    return make


@dataclass
class Connected:
    """What one run of the authorization code flow left behind."""

    tokens: TokenSet
    pending: PendingConnection
    back: dict[str, str]


async def authorized(
    client: UpstreamOAuthClient, server: ScriptedAuthorizationServer, vault: TokenVault, clock: Clock
) -> tuple[PendingConnection, dict[str, str]]:
    """``begin``, the browser at ``/authorize``, and the pending connection the callback takes."""
    back = await server.authorize(await client.begin(OWNER, BROWSER))
    pending = await vault.take_pending(digest(back["state"]), clock())
    assert pending is not None
    return pending, back


async def connect(
    client: UpstreamOAuthClient, server: ScriptedAuthorizationServer, vault: TokenVault, clock: Clock
) -> Connected:
    """The whole flow, as the portal runs it: begin, authorize, callback, ``finish``."""
    pending, back = await authorized(client, server, vault, clock)
    tokens = await client.finish(pending, code=back["code"], iss=back.get("iss"))
    return Connected(tokens, pending, back)


def assert_safe(error: BastionError, *secrets: str | None) -> None:
    """``error`` starts with the route and repeats nothing secret: no issued value, nor any of ``secrets``."""
    assert error.message.startswith(f"{ROUTE}: ")
    assert str(error) == error.message
    for marker in (*SECRET_PREFIXES, CONFIDENTIAL_SECRET, *(s for s in secrets if s)):
        assert marker not in error.message


def params(url: str) -> dict[str, str]:
    """The query of ``url``, each parameter present exactly once."""
    query = parse_qs(urlsplit(url).query)
    assert all(len(values) == 1 for values in query.values()), query
    return {name: values[0] for name, values in query.items()}


def reply(status: int, body: Any = None, **headers: str) -> dict[str, Any]:
    """One scripted answer: JSON unless ``body`` is a string."""
    answer: dict[str, Any] = {"status": status, "headers": headers}
    answer["body" if isinstance(body, str) else "json"] = body if body is not None else ""
    return answer


# --- discovery ------------------------------------------------------------------------------------------------


async def test_static_issuer_discovery_reads_rfc8414_metadata_and_caches_it_hourly(
    server: ScriptedAuthorizationServer, build: Build, clock: Clock
) -> None:
    client = build(issuer=server.base, client_id=PUBLIC_ID)
    info = await client.server()
    assert (info.issuer, info.authorization_endpoint, info.token_endpoint) == (
        server.base, server.url("/authorize"), server.url("/token"),
    )  # fmt: skip
    assert (info.revocation_endpoint, info.registration_endpoint) == (server.url("/revoke"), server.url("/register"))
    assert info.auth_methods == ("client_secret_basic", "none")
    assert (info.metadata_documents, info.iss_parameter) == (False, False)
    assert (info.resource, info.scopes) == (server.resource, ())
    assert [r.path for r in await server.requests()] == ["/.well-known/oauth-authorization-server"]
    await client.server()
    clock.now += 3599
    await client.server()
    assert len(await server.requests()) == 1
    clock.now += 2
    await client.server()
    assert len(await server.requests()) == 2


async def test_discovery_follows_the_resource_metadata_named_by_the_401(
    server: ScriptedAuthorizationServer, build: Build
) -> None:
    await server.script(prm_paths=[], prm_url="/tenants/acme/resource-metadata")
    info = await build(client_id=PUBLIC_ID).server()
    assert info.issuer == server.base
    probe, *fetches = await server.requests()
    assert (probe.method, probe.path, probe.json["method"]) == ("POST", "/mcp", "initialize")
    assert probe.headers["mcp-protocol-version"] == "2025-11-25"
    assert "authorization" not in probe.headers
    assert [r.path for r in fetches] == ["/tenants/acme/resource-metadata", "/.well-known/oauth-authorization-server"]


@pytest.mark.parametrize(
    ("served_at", "fetched"),
    [
        (["path"], ["/.well-known/oauth-protected-resource/mcp"]),
        (["root"], ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]),
    ],
    ids=["path-based", "root"],
)
async def test_discovery_falls_back_to_the_well_known_uris_when_the_401_names_none(
    server: ScriptedAuthorizationServer, build: Build, served_at: list[str], fetched: list[str]
) -> None:
    await server.script(challenge_metadata=False, prm_paths=served_at)
    info = await build(client_id=PUBLIC_ID).server()
    assert info.issuer == server.base
    paths = [r.path for r in await server.requests()]
    assert paths == ["/mcp", *fetched, "/.well-known/oauth-authorization-server"]


@pytest.mark.parametrize(
    ("configured", "challenge", "listed", "expected"),
    [
        (("notes:read",), "notes:write", ["notes:admin"], ("notes:read",)),
        ((), "notes:write notes:share", ["notes:admin"], ("notes:write", "notes:share")),
        ((), None, ["notes:read", "notes:admin"], ("notes:read", "notes:admin")),
        ((), None, None, ()),
    ],
    ids=["settings-win", "challenge-scope", "prm-scopes-supported", "none"],
)
async def test_scopes_come_from_settings_else_the_challenge_else_the_resource_metadata(
    server: ScriptedAuthorizationServer,
    build: Build,
    configured: tuple[str, ...],
    challenge: str | None,
    listed: list[str] | None,
    expected: tuple[str, ...],
) -> None:
    await server.script(challenge_scope=challenge, prm={"scopes_supported": listed})
    client = build(client_id=PUBLIC_ID, scopes=configured)
    assert (await client.server()).scopes == expected
    asked = params(await client.begin(OWNER, BROWSER))
    assert asked.get("scope") == (" ".join(expected) or None)


@pytest.mark.parametrize(
    ("prm_resource", "settings", "expected"),
    [
        ("{resource}/", {}, "{resource}/"),
        ("{resource}", {"resource": "https://notes.example/api"}, "https://notes.example/api"),
        ("{resource}", {"issuer": "{base}"}, "{resource}"),
    ],
    ids=["prm-resource", "settings-resource", "static-issuer-upstream-url"],
)
async def test_the_resource_defaults_to_the_protected_resource_metadata(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    prm_resource: str,
    settings: dict[str, str],
    expected: str,
) -> None:
    def fill(text: str) -> str:
        return text.format(resource=server.resource, base=server.base)

    await server.script(prm={"resource": fill(prm_resource)})
    client = build(client_id=PUBLIC_ID, **{key: fill(value) for key, value in settings.items()})
    connected = await connect(client, server, vault, clock)
    assert connected.tokens.client_id == PUBLIC_ID
    [authorize] = await server.requests("/authorize")
    [token] = await server.requests("/token")
    assert authorize.query["resource"] == token.form["resource"] == fill(expected)


@dataclass(frozen=True)
class Refused:
    """A misbehaving server (``script(base)``) and the refusal it must get."""

    id: str
    script: Callable[[str], dict[str, Any]]
    fragment: str
    discovered: bool = False
    error: type[BastionError] = UpstreamAuthorizationError


METADATA_PATH = "/.well-known/oauth-authorization-server"
DISCOVERY_REFUSALS = [
    Refused("metadata-names-another-issuer", lambda b: {"metadata": {"issuer": EVIL}},
            "metadata names another issuer (RFC 8414 section 3.3)"),
    Refused("metadata-issuer-with-trailing-slash", lambda b: {"metadata": {"issuer": b + "/"}},
            "names another issuer"),
    Refused("discovered-metadata-names-another-issuer", lambda b: {"metadata": {"issuer": EVIL}},
            "names another issuer", discovered=True),
    Refused("no-s256", lambda b: {"metadata": {"code_challenge_methods_supported": ["plain"]}},
            "does not offer PKCE S256"),
    Refused("no-pkce-methods-listed", lambda b: {"metadata": {"code_challenge_methods_supported": None}},
            "does not offer PKCE S256"),
    Refused("metadata-not-json", lambda b: {"metadata_body": '{"issuer": '}, "publishes no metadata"),
    Refused("metadata-not-an-object", lambda b: {"metadata_body": "[]"}, "publishes no metadata"),
    Refused("metadata-missing", lambda b: {"replies": {METADATA_PATH: [reply(404, {})]}}, "publishes no metadata"),
    Refused("metadata-without-token-endpoint", lambda b: {"metadata": {"token_endpoint": None}},
            "the authorization server's metadata is not valid"),
    Refused("metadata-over-64-kib", lambda b: {"metadata_body": json.dumps({"issuer": b, "pad": "x" * 70_000})},
            "the authorization server metadata cannot be reached"),
    Refused("metadata-redirects-to-cloud-metadata",
            lambda b: {"replies": {METADATA_PATH: [reply(302, location="http://169.254.169.254/latest/meta-data")]}},
            "169.254.169.254 is a cloud metadata address"),
    Refused("prm-for-another-resource", lambda b: {"prm": {"resource": "https://other.example/mcp"}},
            "resource metadata is for another resource (RFC 9728 section 3.3)", discovered=True),
    Refused("prm-for-a-sibling-path", lambda b: {"prm": {"resource": b + "/admin"}},
            "is for another resource", discovered=True),
    Refused("prm-not-json", lambda b: {"prm_body": "<html>hello</html>"},
            "the upstream publishes no protected resource metadata", discovered=True),
    Refused("prm-without-authorization-servers", lambda b: {"prm": {"authorization_servers": []}},
            "the upstream's resource metadata is not valid", discovered=True),
    Refused("no-prm-anywhere", lambda b: {"challenge_metadata": False, "prm_paths": []},
            "the upstream publishes no protected resource metadata", discovered=True),
    Refused("prm-names-cloud-metadata-server", lambda b: {"prm": {"authorization_servers": ["http://169.254.169.254"]}},
            "cannot be reached (169.254.169.254 is a cloud metadata address)", discovered=True),
    Refused("prm-names-private-server", lambda b: {"prm": {"authorization_servers": ["http://10.0.0.1:8443"]}},
            "cannot be reached (10.0.0.1 is a private address)", discovered=True),
]  # fmt: skip


@pytest.mark.parametrize("case", DISCOVERY_REFUSALS, ids=lambda case: case.id)
async def test_unusable_discovery_is_refused(server: ScriptedAuthorizationServer, build: Build, case: Refused) -> None:
    await server.script(**case.script(server.base))
    client = build(client_id=PUBLIC_ID) if case.discovered else build(issuer=server.base, client_id=PUBLIC_ID)
    with pytest.raises(case.error) as caught:
        await client.begin(OWNER, BROWSER)
    assert case.fragment in caught.value.message
    assert_safe(caught.value)
    assert not await server.requests("/authorize")


async def test_https_is_required_of_the_authorization_servers_endpoints(
    pki: Pki, vault: TokenVault, clock: Clock
) -> None:
    """Over https without ``allow_http``: a good server connects; one naming an http endpoint is refused."""
    async with EgressGuard(allow=LOOPBACK, ca_file=pki.ca_file) as tls_guard:
        with ScriptedAuthorizationServer({"clients": {PUBLIC_ID: None}}, pki=pki) as tls:
            settings = UpstreamOAuthSettings(issuer=tls.base, client_id=PUBLIC_ID)

            def client() -> UpstreamOAuthClient:
                return UpstreamOAuthClient(ROUTE, settings, upstream_url=tls.resource, egress=tls_guard, vault=vault,
                                           redirect_uri=REDIRECT, metadata_document_url=None, clock=clock)  # fmt: skip

            connected = await connect(client(), tls, vault, clock)
            assert connected.tokens.issuer == tls.base
            for endpoint in ("authorization_endpoint", "token_endpoint"):
                await tls.script(metadata={endpoint: tls.url("/x").replace("https://", "http://")})
                with pytest.raises(UpstreamAuthorizationError) as caught:
                    await client().begin(OWNER, BROWSER)
                assert caught.value.message == f"{ROUTE}: the authorization server's {endpoint} is not https"
            await tls.script(metadata={"registration_endpoint": tls.url("/register").replace("https:", "http:")})
            settings = UpstreamOAuthSettings(issuer=tls.base)  # no client_id: dynamic registration
            with pytest.raises(UpstreamAuthorizationError) as caught:
                await client().begin(OWNER, BROWSER)
            assert "the dynamic registration cannot be reached" in caught.value.message
            assert not await tls.requests("/register")


# --- the egress guard -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "reason"),
    [("http://169.254.169.254", "169.254.169.254 is a cloud metadata address"),
     ("http://10.0.0.1", "10.0.0.1 is a private address")],
    ids=["cloud-metadata", "private"],
)  # fmt: skip
async def test_a_configured_issuer_on_a_forbidden_address_is_refused_before_connecting(
    build: Build, refusals: list[Refusal], issuer: str, reason: str
) -> None:
    with pytest.raises(UpstreamAuthorizationError) as caught:
        await build(issuer=issuer, client_id=PUBLIC_ID).begin(OWNER, BROWSER)
    assert caught.value.message == f"{ROUTE}: the authorization server metadata cannot be reached ({reason})"
    assert refusals == [
        Refusal(url=f"{issuer}/.well-known/oauth-authorization-server", reason=reason, hop=0, purpose="upstream_oauth")
    ]


async def test_the_upstreams_exceptions_do_not_reach_its_authorization_server(
    server: ScriptedAuthorizationServer, build: Build, refusals: list[Refusal]
) -> None:
    """The route's ``upstream_allow`` covers the probe and same-origin metadata, never the authorization server."""

    async def record(refusal: Refusal) -> None:
        refusals.append(refusal)

    async with EgressGuard(on_refusal=record) as strict:
        with pytest.raises(UpstreamAuthorizationError) as caught:
            await build(client_id=PUBLIC_ID, egress=strict).server()
    assert "authorization server metadata cannot be reached (127.0.0.1 is a loopback address)" in caught.value.message
    assert [r.path for r in await server.requests()] == ["/mcp", "/.well-known/oauth-protected-resource/mcp"]
    assert [r.url for r in refusals] == [server.url(METADATA_PATH)]


async def test_the_upstreams_exceptions_stop_at_its_origin(
    server: ScriptedAuthorizationServer, build: Build, refusals: list[Refusal]
) -> None:
    """A 401 naming resource metadata on another origin does not borrow the upstream's exceptions."""

    async def record(refusal: Refusal) -> None:
        refusals.append(refusal)

    with ScriptedAuthorizationServer() as other:
        await server.script(challenge_metadata=other.url("/.well-known/oauth-protected-resource/mcp"))
        async with EgressGuard(on_refusal=record) as strict:
            with pytest.raises(UpstreamAuthorizationError) as caught:
                await build(client_id=PUBLIC_ID, egress=strict).server()
        assert not await other.requests()
    assert "protected resource metadata cannot be reached (127.0.0.1 is a loopback address)" in caught.value.message
    assert [r.url for r in refusals] == [other.url("/.well-known/oauth-protected-resource/mcp")]


async def test_without_settings_allow_a_loopback_authorization_server_is_refused(
    server: ScriptedAuthorizationServer, build: Build
) -> None:
    async with EgressGuard() as strict:
        with pytest.raises(UpstreamAuthorizationError, match=r"127\.0\.0\.1 is a loopback address"):
            await build(issuer=server.base, client_id=PUBLIC_ID, egress=strict).server()


async def test_settings_allow_admits_an_authorization_server_on_a_private_address(
    server: ScriptedAuthorizationServer, build: Build
) -> None:
    async with EgressGuard() as strict:
        info = await build(issuer=server.base, client_id=PUBLIC_ID, allow=("127.0.0.1",), egress=strict).server()
    assert info.issuer == server.base


# --- registration ---------------------------------------------------------------------------------------------


async def test_dynamic_registration_happens_once_per_route_and_issuer_and_is_kept(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    connected = await connect(build(), server, vault, clock)
    [registration] = await server.requests("/register")
    assert registration.json == {
        "client_name": "Bastion MCP gateway",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    kept = await vault.get_client(ROUTE, server.base)
    assert kept is not None
    assert str(kept["client_secret"]).startswith("sas-secret-")
    assert connected.tokens.client_id == kept["client_id"]
    [token] = await server.requests("/token")
    assert token.basic_credentials() == (kept["client_id"], kept["client_secret"])
    assert "client_id" not in token.form
    restarted = build()  # another instance on the same vault: a restart
    assert params(await restarted.begin(OWNER, BROWSER))["client_id"] == kept["client_id"]
    assert len(await server.requests("/register")) == 1
    other_route = params(await build(route="wiki").begin(OWNER, BROWSER))["client_id"]
    assert other_route != kept["client_id"]
    assert len(await server.requests("/register")) == 2


@pytest.mark.parametrize(
    ("methods", "chosen"),
    [(None, "client_secret_basic"), (["client_secret_post", "client_secret_basic"], "client_secret_basic"),
     (["none"], "none"), (["private_key_jwt"], "none")],
    ids=["rfc8414-default", "basic-listed", "none-only", "basic-not-listed"],
)  # fmt: skip
async def test_registration_asks_for_client_secret_basic_only_when_advertised(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    methods: list[str] | None,
    chosen: str,
) -> None:
    await server.script(metadata={"token_endpoint_auth_methods_supported": methods})
    connected = await connect(build(), server, vault, clock)
    [registration] = await server.requests("/register")
    assert registration.json["token_endpoint_auth_method"] == chosen
    [token] = await server.requests("/token")
    if chosen == "none":
        assert token.form["client_id"] == connected.tokens.client_id
        assert "authorization" not in token.headers
    else:
        assert token.basic_credentials() is not None
        assert "client_id" not in token.form


@pytest.mark.parametrize(
    ("advertised", "cimd", "settings", "expected"),
    [
        (True, CIMD_URL, {}, CIMD_URL),
        (True, None, {}, "registered"),
        (False, CIMD_URL, {}, "registered"),
        (True, CIMD_URL, {"registration": "dynamic"}, "registered"),
        (True, CIMD_URL, {"registration": "metadata_document"}, CIMD_URL),
        (True, CIMD_URL, {"client_id": PUBLIC_ID}, PUBLIC_ID),
    ],
    ids=["metadata-document", "no-https-url", "not-advertised", "dynamic-forced", "document-forced", "configured"],
)
async def test_client_id_metadata_documents_are_used_when_offered(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    advertised: bool,
    cimd: str | None,
    settings: dict[str, str],
    expected: str,
) -> None:
    await server.script(metadata={"client_id_metadata_document_supported": advertised})
    connected = await connect(build(cimd=cimd, **settings), server, vault, clock)
    registrations = await server.requests("/register")
    if expected == "registered":
        assert len(registrations) == 1
        assert connected.tokens.client_id.startswith("sas-client-")
    else:
        assert registrations == []
        assert connected.tokens.client_id == expected
        [token] = await server.requests("/token")
        assert token.form["client_id"] == expected


REGISTRATION_REFUSALS = [
    ("refused", {"replies": {"/register": [reply(400, {"error": "invalid_client_metadata",
                                                       "error_description": "sas-secret-echoed"})]}},
     {}, "dynamic registration was refused (invalid_client_metadata)"),
    ("server-error", {"replies": {"/register": [reply(500, "<html>down</html>")]}}, {},
     "dynamic registration was refused (500)"),
    ("error-not-a-word", {"replies": {"/register": [reply(400, {"error": "bad\r\nSet-Cookie: x=1"})]}}, {},
     "dynamic registration was refused (400)"),
    ("answer-without-client-id", {"replies": {"/register": [reply(201, {"client_secret": "sas-secret-orphan"})]}},
     {}, "the registration response is not valid"),
    ("answer-not-json", {"replies": {"/register": [reply(201, "registered")]}}, {},
     "dynamic registration was refused (201)"),
    ("no-registration-endpoint", {"metadata": {"registration_endpoint": None}}, {}, "cannot register"),
    ("documents-not-offered", {}, {"registration": "metadata_document"}, "cannot register"),
    ("dynamic-without-endpoint",
     {"metadata": {"registration_endpoint": None, "client_id_metadata_document_supported": True}},
     {"registration": "dynamic"}, "cannot register"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "settings", "fragment"),
    [case[1:] for case in REGISTRATION_REFUSALS],
    ids=[case[0] for case in REGISTRATION_REFUSALS],
)
async def test_failed_registration_is_refused_and_nothing_is_kept(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    script: dict[str, Any],
    settings: dict[str, str],
    fragment: str,
) -> None:
    await server.script(**script)
    with pytest.raises(UpstreamAuthorizationError) as caught:
        await build(cimd=CIMD_URL if settings else None, **settings).begin(OWNER, BROWSER)
    assert fragment in caught.value.message
    assert_safe(caught.value)
    assert await vault.get_client(ROUTE, server.base) is None


# --- begin ----------------------------------------------------------------------------------------------------


async def test_begin_returns_the_authorization_url_and_keeps_the_pkce_verifier(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    url = await build(client_id=PUBLIC_ID, scopes=("notes:read", "notes:write")).begin(OWNER, BROWSER)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == server.url("/authorize")
    asked = params(url)
    assert set(asked) == {"response_type", "client_id", "redirect_uri", "state", "code_challenge",
                          "code_challenge_method", "resource", "scope"}  # fmt: skip
    assert (asked["response_type"], asked["client_id"], asked["redirect_uri"]) == ("code", PUBLIC_ID, REDIRECT)
    assert (asked["code_challenge_method"], asked["resource"]) == ("S256", server.resource)
    assert asked["scope"] == "notes:read notes:write"
    assert len(asked["state"]) >= 43
    pending = await vault.take_pending(digest(asked["state"]), clock())
    assert pending is not None
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", pending.code_verifier)  # RFC 7636 section 4.1
    assert asked["code_challenge"] == create_s256_code_challenge(pending.code_verifier) == s256(pending.code_verifier)
    assert pending == PendingConnection(
        owner=OWNER, route=ROUTE, browser=BROWSER, code_verifier=pending.code_verifier, issuer=server.base,
        client_id=PUBLIC_ID, redirect_uri=REDIRECT, expires_at=clock() + 600,
    )  # fmt: skip
    assert await vault.take_pending(digest(asked["state"]), clock()) is None  # single use


async def test_each_begin_has_its_own_state_and_verifier_and_the_pending_record_expires(
    build: Build, vault: TokenVault, clock: Clock
) -> None:
    client = build(client_id=PUBLIC_ID)
    first, second = params(await client.begin(OWNER, BROWSER)), params(await client.begin(OWNER, BROWSER))
    assert first["state"] != second["state"]
    assert first["code_challenge"] != second["code_challenge"]
    assert await vault.take_pending(digest(first["state"]), clock() + 600) is None
    assert await vault.take_pending(digest(second["state"]), clock() + 599) is not None


async def test_begin_keeps_the_query_of_the_authorization_endpoint(
    server: ScriptedAuthorizationServer, build: Build
) -> None:
    await server.script(metadata={"authorization_endpoint": server.url("/authorize?tenant=acme")})
    asked = params(await build(issuer=server.base, client_id=PUBLIC_ID).begin(OWNER, BROWSER))
    assert (asked["tenant"], asked["client_id"]) == ("acme", PUBLIC_ID)


# --- finish ---------------------------------------------------------------------------------------------------


async def test_finish_redeems_the_code_with_pkce_and_resource_as_a_public_client(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    connected = await connect(build(client_id=PUBLIC_ID, scopes=("notes:read",)), server, vault, clock)
    [token] = await server.requests("/token")
    assert token.form == {
        "grant_type": "authorization_code",
        "code": connected.back["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": connected.pending.code_verifier,
        "resource": server.resource,
        "client_id": PUBLIC_ID,
    }
    assert "authorization" not in token.headers
    tokens = connected.tokens
    assert (tokens.issuer, tokens.client_id, tokens.token_type) == (server.base, PUBLIC_ID, "Bearer")
    assert tokens.access_token.startswith("sas-at-")
    assert str(tokens.refresh_token).startswith("sas-rt-")
    assert (tokens.expires_at, tokens.scope) == (clock() + 3600, "notes:read")


async def test_finish_authenticates_a_confidential_client_with_form_encoded_basic(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock, secret_ref: SecretRef
) -> None:
    """RFC 6749 section 2.3.1: id and secret are form-encoded, so ``:`` and ``%`` in them survive."""
    connected = await connect(build(client_id=CONFIDENTIAL_ID, client_secret=secret_ref), server, vault, clock)
    assert connected.tokens.client_id == CONFIDENTIAL_ID
    [token] = await server.requests("/token")
    assert token.basic_credentials() == (CONFIDENTIAL_ID, CONFIDENTIAL_SECRET)
    encoded = base64.b64decode(token.headers["authorization"].removeprefix("Basic ")).decode("ascii")
    assert encoded.count(":") == 1  # the ":" inside the id is escaped
    assert not {" ", "é"} & set(encoded)
    assert "client_id" not in token.form
    assert CONFIDENTIAL_SECRET not in json.dumps(token.form)


@pytest.mark.parametrize(
    ("advertised", "iss", "accepted"),
    [(False, None, True), (False, "{base}", True), (False, EVIL, False), (True, "{base}", True),
     (True, None, False), (True, EVIL, False), (True, "{base}/", False)],
    ids=["absent-not-advertised", "right", "wrong", "advertised-right", "advertised-missing",
         "advertised-wrong", "trailing-slash"],
)  # fmt: skip
async def test_finish_checks_the_rfc9207_iss_parameter(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    advertised: bool,
    iss: str | None,
    accepted: bool,
) -> None:
    await server.script(metadata={"authorization_response_iss_parameter_supported": advertised})
    client = build(client_id=PUBLIC_ID)
    pending, back = await authorized(client, server, vault, clock)
    assert back.get("iss") == (server.base if advertised else None)
    given = iss.format(base=server.base) if iss else None
    if accepted:
        assert (await client.finish(pending, code=back["code"], iss=given)).issuer == server.base
        return
    with pytest.raises(UpstreamAuthorizationError) as caught:
        await client.finish(pending, code=back["code"], iss=given)
    assert caught.value.message == f"{ROUTE}: the response names another issuer (RFC 9207)"
    assert not await server.requests("/token")


async def test_finish_refuses_when_the_authorization_server_changed_since_begin(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    with ScriptedAuthorizationServer({"clients": {PUBLIC_ID: None}}) as other:
        client = build(client_id=PUBLIC_ID)
        pending, back = await authorized(client, server, vault, clock)
        await server.script(prm={"authorization_servers": [other.base]})
        clock.now += 3601  # the metadata is discovered again
        with pytest.raises(UpstreamAuthorizationError) as caught:
            await client.finish(pending, code=back["code"], iss=None)
        assert caught.value.message == f"{ROUTE}: the authorization server changed; connect again"
        assert not await other.requests("/token")
        assert not await server.requests("/token")


async def test_finish_refuses_when_the_registration_changed_since_begin(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    await server.script(metadata={"client_id_metadata_document_supported": True})
    pending, back = await authorized(build(cimd=CIMD_URL), server, vault, clock)
    with pytest.raises(UpstreamAuthorizationError) as caught:
        await build(client_id=PUBLIC_ID).finish(pending, code=back["code"], iss=None)
    assert caught.value.message == f"{ROUTE}: Bastion's registration changed; connect again"
    assert not await server.requests("/token")


TOKEN_REFUSALS = [
    ("invalid-grant", lambda code: reply(400, {"error": "invalid_grant", "error_description": f"{code} used"}),
     UpstreamAuthorizationError, "the authorization server refused (invalid_grant)"),
    ("invalid-client", lambda code: reply(401, {"error": "invalid_client"}),
     UpstreamAuthorizationError, "the authorization server refused (invalid_client)"),
    ("error-not-a-word", lambda code: reply(400, {"error": "invalid_grant\r\nX-Injected: 1"}),
     UpstreamAuthorizationError, "the authorization server refused (400)"),
    ("server-error", lambda code: reply(500, f"<pre>{code}</pre>"),
     UpstreamUnavailable, "the authorization server answered 500"),
    ("unavailable", lambda code: reply(503, {"error": "temporarily_unavailable"}),
     UpstreamUnavailable, "the authorization server answered 503"),
    ("mac-token", lambda code: reply(200, {"access_token": "sas-at-mac", "token_type": "mac"}),
     UpstreamAuthorizationError, "the token response is not a bearer token"),
    ("dpop-token", lambda code: reply(200, {"access_token": "sas-at-dpop", "token_type": "DPoP"}),
     UpstreamAuthorizationError, "the token response is not a bearer token"),
    ("no-access-token", lambda code: reply(200, {"token_type": "Bearer", "refresh_token": "sas-rt-orphan"}),
     UpstreamAuthorizationError, "the token response is not a bearer token"),
    ("not-json", lambda code: reply(200, "access_token=sas-at-form&token_type=bearer"),
     UpstreamAuthorizationError, "the token response is not a bearer token"),
    ("redirected", lambda code: reply(307, location="http://169.254.169.254/token"),
     UpstreamAuthorizationError, "the authorization server refused (307)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "error", "message"), [case[1:] for case in TOKEN_REFUSALS], ids=[case[0] for case in TOKEN_REFUSALS]
)
async def test_a_failed_code_redemption_is_refused_without_leaking(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    refusals: list[Refusal],
    answer: Callable[[str], dict[str, Any]],
    error: type[BastionError],
    message: str,
) -> None:
    client = build(client_id=PUBLIC_ID)
    pending, back = await authorized(client, server, vault, clock)
    await server.script(replies={"/token": [answer(back["code"])]})
    with pytest.raises(error) as caught:
        await client.finish(pending, code=back["code"], iss=None)
    assert type(caught.value) is error  # a code refused is not a ConnectionExpired
    assert caught.value.message == f"{ROUTE}: {message}"
    assert_safe(caught.value, back["code"], pending.code_verifier, back["state"])
    assert len(await server.requests("/token")) == 1
    assert refusals == []  # a redirect of the code is not followed


# --- refresh --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotates", [True, False], ids=["rotated", "kept"])
async def test_refresh_keeps_the_old_refresh_token_when_none_comes_back(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock, rotates: bool
) -> None:
    client = build(issuer=server.base, client_id=PUBLIC_ID, scopes=("notes:read",))
    tokens = (await connect(client, server, vault, clock)).tokens
    await server.script(refresh_rotates=rotates)
    clock.now += 100
    fresh = await client.refresh(tokens)
    _, request = await server.requests("/token")
    assert request.form == {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
                            "resource": server.resource, "client_id": PUBLIC_ID}  # fmt: skip
    assert fresh.access_token != tokens.access_token
    assert fresh.access_token.startswith("sas-at-")
    assert (fresh.expires_at, fresh.scope, fresh.issuer) == (clock() + 3600, "notes:read", server.base)
    if rotates:
        assert fresh.refresh_token != tokens.refresh_token
        assert str(fresh.refresh_token).startswith("sas-rt-")
    else:
        assert fresh.refresh_token == tokens.refresh_token
    assert (await client.refresh(fresh)).refresh_token is not None


async def test_refresh_authenticates_a_confidential_client(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock, secret_ref: SecretRef
) -> None:
    client = build(issuer=server.base, client_id=CONFIDENTIAL_ID, client_secret=secret_ref)
    await client.refresh((await connect(client, server, vault, clock)).tokens)
    _, request = await server.requests("/token")
    assert request.basic_credentials() == (CONFIDENTIAL_ID, CONFIDENTIAL_SECRET)
    assert request.form["grant_type"] == "refresh_token"
    assert "client_id" not in request.form


REFRESH_FAILURES = [
    ("invalid-grant", reply(400, {"error": "invalid_grant"}), ConnectionExpired,
     "the upstream refused the refresh token; connect again"),
    ("invalid-grant-with-401", reply(401, {"error": "invalid_grant"}), ConnectionExpired,
     "the upstream refused the refresh token; connect again"),
    ("invalid-client", reply(401, {"error": "invalid_client"}), UpstreamAuthorizationError,
     "the authorization server refused (invalid_client)"),
    ("server-error", reply(500, "oops"), UpstreamUnavailable, "the authorization server answered 500"),
    ("not-bearer", reply(200, {"access_token": "sas-at-x", "token_type": "mac"}), UpstreamAuthorizationError,
     "the token response is not a bearer token"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [case[1:] for case in REFRESH_FAILURES],
    ids=[case[0] for case in REFRESH_FAILURES],
)
async def test_a_failed_refresh_is_classified(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    answer: dict[str, Any],
    error: type[BastionError],
    message: str,
) -> None:
    client = build(issuer=server.base, client_id=PUBLIC_ID)
    tokens = (await connect(client, server, vault, clock)).tokens
    await server.script(replies={"/token": [answer]})
    with pytest.raises(error) as caught:
        await client.refresh(tokens)
    assert type(caught.value) is error
    assert caught.value.message == f"{ROUTE}: {message}"
    assert_safe(caught.value, tokens.refresh_token, tokens.access_token)


async def test_refresh_without_a_refresh_token_expires_the_connection_without_asking(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    client = build(issuer=server.base, client_id=PUBLIC_ID)
    tokens = dataclasses.replace((await connect(client, server, vault, clock)).tokens, refresh_token=None)
    with pytest.raises(ConnectionExpired, match="cannot be refreshed"):
        await client.refresh(tokens)
    assert len(await server.requests("/token")) == 1


async def test_refresh_never_sends_the_refresh_token_to_another_authorization_server(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    with ScriptedAuthorizationServer({"clients": {PUBLIC_ID: None}}) as other:
        client = build(client_id=PUBLIC_ID)
        tokens = (await connect(client, server, vault, clock)).tokens
        await server.script(prm={"authorization_servers": [other.base]})
        clock.now += 3601
        with pytest.raises(ConnectionExpired, match="registration changed"):
            await client.refresh(tokens)
        assert not await other.requests("/token")


# --- revocation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidential", [True, False], ids=["confidential", "public"])
async def test_revoke_sends_the_refresh_token_then_the_access_token_with_client_auth(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    secret_ref: SecretRef,
    confidential: bool,
) -> None:
    auth = {"client_id": CONFIDENTIAL_ID, "client_secret": secret_ref} if confidential else {"client_id": PUBLIC_ID}
    client = build(issuer=server.base, **auth)
    tokens = (await connect(client, server, vault, clock)).tokens
    assert await client.revoke(tokens) is True
    seen = await server.requests("/revoke")
    assert [(r.form["token_type_hint"], r.form["token"]) for r in seen] == [
        ("refresh_token", tokens.refresh_token), ("access_token", tokens.access_token),
    ]  # fmt: skip
    for request in seen:
        if confidential:
            assert request.basic_credentials() == (CONFIDENTIAL_ID, CONFIDENTIAL_SECRET)
            assert "client_id" not in request.form
        else:
            assert request.form["client_id"] == PUBLIC_ID
            assert "authorization" not in request.headers
    with pytest.raises(ConnectionExpired):  # the server forgot the refresh token
        await client.refresh(tokens)


async def test_revoke_without_a_refresh_token_revokes_the_access_token(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    client = build(issuer=server.base, client_id=PUBLIC_ID)
    tokens = dataclasses.replace((await connect(client, server, vault, clock)).tokens, refresh_token=None)
    assert await client.revoke(tokens) is True
    assert [r.form["token_type_hint"] for r in await server.requests("/revoke")] == ["access_token"]


REVOKE_FAILURES = [
    ("no-endpoint", {"metadata": {"revocation_endpoint": None}}, 0),
    ("unavailable", {"replies": {"/revoke": [reply(503, "busy"), reply(503, "busy")]}}, 2),
    ("refresh-token-refused", {"replies": {"/revoke": [reply(400, {"error": "unsupported_token_type"})]}}, 2),
    ("client-refused", {"replies": {"/revoke": [reply(401, {"error": "invalid_client"})] * 2}}, 2),
    ("endpoint-on-private-address", {"metadata": {"revocation_endpoint": "http://10.0.0.1/revoke"}}, 0),
    ("metadata-broken", {"metadata_body": "nope"}, 0),
]


@pytest.mark.parametrize(
    ("script", "attempts"), [case[1:] for case in REVOKE_FAILURES], ids=[case[0] for case in REVOKE_FAILURES]
)
async def test_revoke_returns_false_and_never_raises_when_revocation_fails(
    server: ScriptedAuthorizationServer,
    build: Build,
    vault: TokenVault,
    clock: Clock,
    script: dict[str, Any],
    attempts: int,
) -> None:
    client = build(issuer=server.base, client_id=PUBLIC_ID)
    tokens = (await connect(client, server, vault, clock)).tokens
    await server.script(**script)
    clock.now += 3601  # the metadata is discovered again
    assert await client.revoke(tokens) is False
    assert len(await server.requests("/revoke")) == attempts


async def test_revoke_never_sends_tokens_to_another_authorization_server(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> None:
    with ScriptedAuthorizationServer({"clients": {PUBLIC_ID: None}}) as other:
        client = build(client_id=PUBLIC_ID)
        tokens = (await connect(client, server, vault, clock)).tokens
        await server.script(prm={"authorization_servers": [other.base]})  # the upstream now names another server
        clock.now += 3601
        revoked = await client.revoke(tokens)
        leaked = [r.form.get("token") for r in await other.requests("/revoke")]
    assert leaked == []
    assert revoked is False


# --- the broker -----------------------------------------------------------------------------------------------


@dataclass
class FakeResponse:
    """What ``send_with_credential`` needs of an ``UpstreamResponse``: a status and ``aclose``."""

    status: int
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeUpstream:
    """A stand-in for one upstream MCP call: 401 for every token in ``refused`` (or for all), else 200."""

    refused: set[str] = field(default_factory=set)
    refuse_all: bool = False
    seen: list[dict[str, str] | None] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)

    async def __call__(self, credential: dict[str, str] | None) -> Any:
        self.seen.append(credential)
        await asyncio.sleep(0)
        token = (credential or {}).get("authorization", "").removeprefix("Bearer ")
        response = FakeResponse(401 if self.refuse_all or token in self.refused else 200)
        self.responses.append(response)
        return response


@pytest.fixture
async def connected(
    server: ScriptedAuthorizationServer, build: Build, vault: TokenVault, clock: Clock
) -> tuple[UserTokens, TokenSet]:
    """Alice connected (tokens in the vault) and the route's ``UserTokens``."""
    client = build(issuer=server.base, client_id=PUBLIC_ID)
    tokens = (await connect(client, server, vault, clock)).tokens
    await vault.put(OWNER, ROUTE, tokens, now=clock())
    return UserTokens(client, vault, connect_url=CONNECT_URL, title="Notes", clock=clock), tokens


async def refreshes(server: ScriptedAuthorizationServer) -> list[str]:
    """The refresh tokens the server was asked to redeem, in order."""
    return [r.form["refresh_token"] for r in await server.requests("/token") if r.form["grant_type"] == "refresh_token"]


def bearer(token: str) -> dict[str, str]:
    """The header ``UserTokens`` hands out for ``token``."""
    return {"authorization": f"Bearer {token}"}


async def test_not_connected_raises_the_url_elicitation_error(
    build: Build, vault: TokenVault, server: ScriptedAuthorizationServer
) -> None:
    source = UserTokens(build(issuer=server.base, client_id=PUBLIC_ID), vault, connect_url=CONNECT_URL, title="Notes")
    upstream = FakeUpstream()
    with pytest.raises(UpstreamConnectionRequired) as caught:
        await send_with_credential(source, ALICE, upstream)
    error = caught.value
    assert (error.jsonrpc_code, error.code, error.url) == (-32042, "upstream_not_connected", CONNECT_URL)
    [elicitation] = error.data["elicitations"]
    assert set(elicitation) == {"mode", "url", "elicitationId", "message"}
    assert (elicitation["mode"], elicitation["url"], elicitation["message"]) == ("url", CONNECT_URL, error.message)
    assert re.fullmatch(r"[0-9a-f]{32}", elicitation["elicitationId"])
    assert error.message.startswith("Connect Notes in Bastion")
    assert upstream.seen == []


async def test_a_token_far_from_expiry_is_used_as_it_is(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet], clock: Clock
) -> None:
    source, tokens = connected
    clock.now = float(tokens.expires_at or 0) - 61
    assert await source.header(ALICE) == bearer(tokens.access_token)
    assert await refreshes(server) == []


async def test_a_token_near_expiry_is_refreshed_first_and_stored(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet], vault: TokenVault, clock: Clock
) -> None:
    source, tokens = connected
    clock.now = float(tokens.expires_at or 0) - 30
    upstream = FakeUpstream()
    response = await send_with_credential(source, ALICE, upstream)
    assert response.status == 200
    assert await refreshes(server) == [tokens.refresh_token]
    stored = await vault.get(OWNER, ROUTE)
    assert stored is not None
    assert stored.access_token != tokens.access_token
    assert upstream.seen == [bearer(stored.access_token)]


async def test_a_401_refreshes_once_and_resends_with_the_new_token(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet], vault: TokenVault
) -> None:
    source, tokens = connected
    upstream = FakeUpstream(refused={tokens.access_token})
    response = await send_with_credential(source, ALICE, upstream)
    stored = await vault.get(OWNER, ROUTE)
    assert stored is not None
    assert upstream.seen == [bearer(tokens.access_token), bearer(stored.access_token)]
    assert response is upstream.responses[1]
    assert response.status == 200
    assert not response.closed
    assert upstream.responses[0].closed
    assert await refreshes(server) == [tokens.refresh_token]


async def test_a_second_401_raises_the_sources_refusal(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet]
) -> None:
    source, _ = connected
    upstream = FakeUpstream(refuse_all=True)
    with pytest.raises(UpstreamConnectionRequired) as caught:
        await send_with_credential(source, ALICE, upstream)
    assert caught.value.message.startswith("Reconnect Notes")
    assert len(upstream.seen) == 2
    assert all(r.closed for r in upstream.responses)
    assert len(await refreshes(server)) == 1


@pytest.mark.parametrize("trigger", ["near-expiry", "401"])
async def test_concurrent_callers_cause_one_refresh(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet], clock: Clock, trigger: str
) -> None:
    source, tokens = connected
    upstream = FakeUpstream(refused={tokens.access_token})
    if trigger == "near-expiry":
        clock.now = float(tokens.expires_at or 0) - 1
    responses = await asyncio.gather(*(send_with_credential(source, ALICE, upstream) for _ in range(6)))
    assert [r.status for r in responses] == [200] * 6
    assert await refreshes(server) == [tokens.refresh_token]
    fresh = {c["authorization"] for c in upstream.seen if c} - {bearer(tokens.access_token)["authorization"]}
    assert len(fresh) == 1


@pytest.mark.parametrize("how", ["scripted-invalid-grant", "revoked"])
async def test_a_refused_refresh_token_deletes_the_connection_and_asks_to_reconnect(
    server: ScriptedAuthorizationServer,
    connected: tuple[UserTokens, TokenSet],
    vault: TokenVault,
    clock: Clock,
    how: str,
) -> None:
    source, tokens = connected
    if how == "revoked":
        assert await source.client.revoke(tokens) is True
    else:
        await server.script(replies={"/token": [reply(400, {"error": "invalid_grant"})]})
    clock.now = float(tokens.expires_at or 0) - 30
    with pytest.raises(UpstreamConnectionRequired) as caught:
        await source.header(ALICE)
    assert caught.value.jsonrpc_code == -32042
    assert caught.value.message.startswith("Reconnect Notes in Bastion")
    assert caught.value.data["elicitations"][0]["url"] == CONNECT_URL
    assert await vault.get(OWNER, ROUTE) is None
    assert await refreshes(server) == [tokens.refresh_token]


async def test_a_refresh_the_server_cannot_answer_keeps_the_tokens(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet], vault: TokenVault, clock: Clock
) -> None:
    source, tokens = connected
    await server.script(replies={"/token": [reply(500, "down")]})
    clock.now = float(tokens.expires_at or 0) - 30
    with pytest.raises(UpstreamUnavailable):
        await source.header(ALICE)
    assert await vault.get(OWNER, ROUTE) == tokens
    assert await source.header(ALICE) != bearer(tokens.access_token)  # the next call refreshes


async def test_a_refresh_refused_for_another_reason_denies_the_call_with_its_own_code(
    server: ScriptedAuthorizationServer, connected: tuple[UserTokens, TokenSet], vault: TokenVault, clock: Clock
) -> None:
    """``invalid_client`` at refresh: the call ends with ``UpstreamAuthorizationError`` (502, audit code
    ``upstream_authorization_error``, not the bug case ``internal_error``) and the tokens are kept."""
    source, tokens = connected
    await server.script(replies={"/token": [reply(401, {"error": "invalid_client"})]})
    clock.now = float(tokens.expires_at or 0) - 30
    upstream = FakeUpstream()
    with pytest.raises(UpstreamAuthorizationError) as caught:
        await send_with_credential(source, ALICE, upstream)
    error = caught.value
    assert (error.status, error.jsonrpc_code, error.code) == (502, -32603, "upstream_authorization_error")
    assert upstream.seen == []
    assert await vault.get(OWNER, ROUTE) == tokens


async def test_without_a_source_or_a_principal(connected: tuple[UserTokens, TokenSet]) -> None:
    source, _ = connected
    upstream = FakeUpstream()
    assert (await send_with_credential(None, ALICE, upstream)).status == 200
    assert upstream.seen == [None]
    with pytest.raises(UpstreamConnectionRequired, match=r"^Reconnect"):
        await send_with_credential(source, None, upstream)
    assert upstream.seen == [None]
