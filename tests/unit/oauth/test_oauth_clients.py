"""``bastion.oauth.clients``: redirect URI matching, registered, metadata-document and dynamic clients."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from oauth_helpers import FakeClock

from bastion.config.oauth import ClientMetadataDocumentSettings, RegisteredClient
from bastion.errors import EgressDenied, OAuthError, UpstreamUnavailable
from bastion.oauth import SQLiteAuthorizationStore
from bastion.oauth.clients import ClientDirectory, parse_metadata_document, redirect_uri_matches, registration_metadata
from bastion.oauth.records import digest

DOC_URL = "https://app.example.com/oauth/client.json"
DOC_REDIRECT = "https://app.example.com/callback"

# --- redirect_uri_matches -------------------------------------------------------------------------

REGISTERED = (
    "https://app.example.com/callback",
    "https://app.example.com/cb?tenant=1",
    "http://127.0.0.1/cb",
    "http://[::1]/cb",
    "http://localhost/cb",
    "com.example.app:/oauth",
)


@pytest.mark.parametrize("presented", REGISTERED)
def test_a_registered_redirect_uri_matches_exactly(presented: str) -> None:
    assert redirect_uri_matches(REGISTERED, presented) is True


@pytest.mark.parametrize(
    "presented",
    [
        "http://127.0.0.1:5555/cb",
        "http://127.0.0.1:80/cb",
        "http://127.0.0.1:65535/cb",
        "http://[::1]:5555/cb",
        "http://[::1]:49152/cb",
    ],
)
def test_a_loopback_ip_redirect_may_use_any_port(presented: str) -> None:
    assert redirect_uri_matches(REGISTERED, presented) is True


@pytest.mark.parametrize(
    ("presented", "why"),
    [
        # prefix / suffix
        ("https://app.example.com/callback/evil", "registered URI is a prefix"),
        ("https://app.example.com/callbackx", "registered URI is a prefix (no slash)"),
        ("https://app.example.com/call", "presented is a prefix of the registered URI"),
        ("https://app.example.com.evil.example/callback", "host suffix"),
        ("https://evil.app.example.com/callback", "subdomain"),
        ("https://evil.example/https://app.example.com/callback", "registered URI as a path suffix"),
        ("https://app.example.com/callback/", "trailing slash"),
        ("https://app.example.com/./callback", "dot segment"),
        # case
        ("https://APP.example.com/callback", "host case"),
        ("https://app.example.com/Callback", "path case"),
        ("HTTPS://app.example.com/callback", "scheme case"),
        # percent-encoding
        ("https://app.example.com/%63allback", "percent-encoded path character"),
        ("https://app.example.com/callback%2F", "percent-encoded slash"),
        ("https://app%2Eexample.com/callback", "percent-encoded host"),
        # query and fragment
        ("https://app.example.com/callback?x=1", "extra query"),
        ("https://app.example.com/cb?tenant=2", "another query value"),
        ("https://app.example.com/cb?tenant=1&x=1", "extra query parameter"),
        ("https://app.example.com/callback#x", "fragment"),
        # userinfo and port
        ("https://user@app.example.com/callback", "userinfo"),
        ("https://app.example.com@evil.example/callback", "userinfo trick"),
        ("https://app.example.com:443/callback", "explicit default port"),
        ("https://app.example.com:8443/callback", "https port variance"),
        # loopback: only the port may differ, only for http IP literals
        ("http://localhost:5555/cb", "localhost is not a loopback IP literal"),
        ("https://127.0.0.1:5555/cb", "https loopback not registered"),
        ("http://127.0.0.2:5555/cb", "another loopback address"),
        ("http://[::2]:5555/cb", "another IPv6 address"),
        ("http://[0:0:0:0:0:0:0:1]:5555/cb", "IPv6 loopback spelled out"),
        ("http://127.0.0.1:5555/cb2", "path change"),
        ("http://127.0.0.1:5555/", "path removed"),
        ("http://127.0.0.1:5555/cb/", "trailing slash"),
        ("http://127.0.0.1:5555/CB", "path case"),
        ("http://127.0.0.1:5555/%63b", "percent-encoded path"),
        ("http://127.0.0.1:5555/cb?x=1", "extra query"),
        ("http://127.0.0.1:5555/cb#f", "fragment"),
        ("http://127.0.0.1:5555:6666/cb", "two ports"),
        ("http://127.0.0.1:99999/cb", "port out of range"),
        ("http://[::1:5555/cb", "broken IPv6 literal"),
        # other
        ("com.example.app:/oauth/x", "private-use scheme path change"),
        ("", "empty"),
    ],
)
def test_any_other_redirect_uri_is_refused(presented: str, why: str) -> None:
    assert redirect_uri_matches(REGISTERED, presented) is False, why


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param("http://user@127.0.0.1:5555/cb", id="userinfo"),
        pytest.param("http://user:pw@127.0.0.1:5555/cb", id="userinfo-password"),
        pytest.param("http://evil.example@[::1]:5555/cb", id="userinfo-ipv6"),
        pytest.param("HTTP://127.0.0.1:5555/cb", id="scheme-case"),
        pytest.param("http://127.0.0.1:5555/cb?", id="empty-query"),
        pytest.param("http://127.0.0.1:5555/cb#", id="empty-fragment"),
    ],
)
def test_a_loopback_variant_other_than_the_port_is_refused(presented: str) -> None:
    assert redirect_uri_matches(REGISTERED, presented) is False


def test_a_loopback_redirect_registered_with_a_port_may_use_another_port() -> None:
    assert redirect_uri_matches(("http://127.0.0.1:3000/cb",), "http://127.0.0.1:4000/cb") is True


def test_loopback_port_variance_never_changes_the_host() -> None:
    assert redirect_uri_matches(("http://127.0.0.1/cb",), "http://[::1]:5555/cb") is False
    assert redirect_uri_matches(("http://[::1]/cb",), "http://127.0.0.1:5555/cb") is False


# --- fakes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: Mapping[str, str]
    body: bytes


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": DOC_URL,
        "client_name": "Example App",
        "redirect_uris": [DOC_REDIRECT, "http://127.0.0.1/cb"],
        "token_endpoint_auth_method": "none",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def answer(body: Any = None, *, status: int = 200, cache_control: str | None = None) -> Fetched:
    raw = body if isinstance(body, bytes) else json.dumps(document() if body is None else body).encode()
    headers = {"content-type": "application/json"}
    if cache_control is not None:
        headers["cache-control"] = cache_control
    return Fetched(status, headers, raw)


@dataclass
class FakeFetch:
    """Answers every URL with ``response`` (or raises it) and records the calls."""

    response: Fetched | Exception
    calls: list[tuple[str, int, float]] = field(default_factory=list)

    async def __call__(self, url: str, *, max_bytes: int, timeout_s: float) -> Fetched:
        self.calls.append((url, max_bytes, timeout_s))
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def directory(
    store: SQLiteAuthorizationStore,
    fetch: FakeFetch | None = None,
    *,
    registered: tuple[RegisteredClient, ...] = (),
    clock: FakeClock | None = None,
    **documents: Any,
) -> ClientDirectory:
    settings = ClientMetadataDocumentSettings(**documents)
    return ClientDirectory(registered, store, settings, fetch, clock=clock or FakeClock())


async def refused(clients: ClientDirectory, client_id: str) -> OAuthError:
    with pytest.raises(OAuthError) as exc:
        await clients.find(client_id)
    return exc.value


# --- registered clients ---------------------------------------------------------------------------


async def test_a_registered_public_client(store: SQLiteAuthorizationStore) -> None:
    entry = RegisteredClient(client_id="cli", client_name="CLI", redirect_uris=("http://127.0.0.1/cb",))
    client = await directory(store, registered=(entry,)).find("cli")
    assert (client.client_id, client.name, client.redirect_uris) == ("cli", "CLI", ("http://127.0.0.1/cb",))
    assert (client.kind, client.verified, client.secret_digest) == ("registered", True, None)
    assert client.check_secret(None) is True
    assert client.check_secret("") is False
    assert client.check_secret("anything") is False


async def test_a_registered_client_without_a_name_is_named_by_its_id(store: SQLiteAuthorizationStore) -> None:
    entry = RegisteredClient(client_id="cli", redirect_uris=("http://127.0.0.1/cb",))
    assert (await directory(store, registered=(entry,)).find("cli")).name == "cli"


async def test_a_registered_confidential_client_reads_its_secret_from_the_environment(
    store: SQLiteAuthorizationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_TEST_CLIENT_SECRET", "s3cret-value")
    entry = RegisteredClient.model_validate(
        {
            "client_id": "conf",
            "redirect_uris": ["https://app.example.com/callback"],
            "client_secret": {"env": "BASTION_TEST_CLIENT_SECRET"},
        }
    )
    client = await directory(store, registered=(entry,)).find("conf")
    assert client.secret_digest == digest("s3cret-value")
    assert client.check_secret("s3cret-value") is True
    assert client.check_secret("s3cret-valuE") is False
    assert client.check_secret("s3cret-value ") is False
    assert client.check_secret(None) is False


async def test_a_registered_client_wins_over_the_store(store: SQLiteAuthorizationStore) -> None:
    await store.put_client("cli", {"redirect_uris": ["https://evil.example/cb"]}, 0.0)
    entry = RegisteredClient(client_id="cli", redirect_uris=("http://127.0.0.1/cb",))
    client = await directory(store, registered=(entry,)).find("cli")
    assert (client.kind, client.redirect_uris) == ("registered", ("http://127.0.0.1/cb",))


# --- dynamic and unknown clients ------------------------------------------------------------------


async def test_a_dynamic_client_comes_from_the_store_unverified(store: SQLiteAuthorizationStore) -> None:
    await store.put_client(
        "dcr-1",
        {"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "Tool", "client_secret_digest": digest("x")},
        0.0,
    )
    await store.put_client("dcr-2", {"redirect_uris": ["http://127.0.0.1/cb"], "client_name": None}, 0.0)
    clients = directory(store)
    one = await clients.find("dcr-1")
    assert (one.client_id, one.name, one.redirect_uris, one.kind) == (
        "dcr-1",
        "Tool",
        ("http://127.0.0.1/cb",),
        "dynamic",
    )
    assert one.verified is False
    assert one.check_secret("x") is True
    assert one.check_secret(None) is False
    two = await clients.find("dcr-2")
    assert (two.name, two.secret_digest) == ("dcr-2", None)


@pytest.mark.parametrize("client_id", ["nobody", "", "https://app.example.com", "https://app.example.com/"])
async def test_an_unknown_client_is_invalid_client(store: SQLiteAuthorizationStore, client_id: str) -> None:
    fetch = FakeFetch(answer())
    exc = await refused(directory(store, fetch), client_id)
    assert (exc.error, exc.http_status) == ("invalid_client", 401)
    assert fetch.calls == []


# --- client ID metadata documents -----------------------------------------------------------------


async def test_a_metadata_document_makes_a_public_client(store: SQLiteAuthorizationStore) -> None:
    fetch = FakeFetch(answer())
    client = await directory(store, fetch, max_bytes=2048, timeout_s=2.5).find(DOC_URL)
    assert fetch.calls == [(DOC_URL, 2048, 2.5)]
    assert (client.client_id, client.name, client.kind) == (DOC_URL, "Example App", "metadata_document")
    assert client.redirect_uris == (DOC_REDIRECT, "http://127.0.0.1/cb")
    assert (client.verified, client.secret_digest) == (False, None)


async def test_a_metadata_document_without_a_name_is_named_by_its_url(store: SQLiteAuthorizationStore) -> None:
    fetch = FakeFetch(answer(document(client_name="  ")))
    assert (await directory(store, fetch).find(DOC_URL)).name == DOC_URL


async def test_metadata_documents_switched_off_are_invalid_client(store: SQLiteAuthorizationStore) -> None:
    fetch = FakeFetch(answer())
    clients = directory(store, fetch, enabled=False)
    assert clients.documents_enabled is False
    assert (await refused(clients, DOC_URL)).error == "invalid_client"
    assert fetch.calls == []
    no_fetch = directory(store, None)
    assert no_fetch.documents_enabled is False
    assert (await refused(no_fetch, DOC_URL)).error == "invalid_client"


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (answer(document(client_id="https://app.example.com/oauth/other.json")), "client_id mismatch"),
        (answer(document(client_id=DOC_URL + "/")), "client_id with a trailing slash"),
        (answer(document(client_id="https://APP.example.com/oauth/client.json")), "client_id in another case"),
        (answer(document(client_id=None)), "client_id missing"),
        (answer(status=404), "HTTP 404"),
        (answer(status=301), "HTTP 301"),
        (answer(status=500), "HTTP 500"),
        (answer(status=201), "HTTP 201"),
        (answer(b"<html>not json</html>"), "not JSON"),
        (answer(b""), "empty body"),
        (answer(b"\xff\xfe"), "not UTF-8"),
        (answer([document()]), "a JSON array"),
        (answer("client"), "a JSON string"),
        (answer(document(client_secret="shh")), "client_secret present"),
        (answer(document(client_secret_expires_at=0)), "client_secret_expires_at present"),
        (answer(document(token_endpoint_auth_method="client_secret_basic")), "auth method client_secret_basic"),
        (answer(document(token_endpoint_auth_method="private_key_jwt")), "auth method private_key_jwt"),
        (answer(document(redirect_uris=None)), "redirect_uris missing"),
        (answer(document(redirect_uris=[])), "redirect_uris empty"),
        (answer(document(redirect_uris=DOC_REDIRECT)), "redirect_uris a string"),
        (answer(document(redirect_uris=[DOC_REDIRECT, 7])), "a redirect URI not a string"),
        (answer(document(redirect_uris=["javascript:alert(1)"])), "javascript: redirect"),
        (answer(document(redirect_uris=["http://app.example.com/callback"])), "http non-loopback redirect"),
        (answer(document(redirect_uris=[DOC_REDIRECT + "#frag"])), "redirect with a fragment"),
        (answer(document(redirect_uris=["/callback"])), "relative redirect"),
    ],
)
async def test_a_bad_metadata_document_is_invalid_client(
    store: SQLiteAuthorizationStore, response: Fetched, why: str
) -> None:
    exc = await refused(directory(store, FakeFetch(response)), DOC_URL)
    assert exc.error == "invalid_client", why


@pytest.mark.parametrize(
    "error", [EgressDenied("app.example.com resolves to 10.0.0.1"), UpstreamUnavailable("timed out")]
)
async def test_a_refused_fetch_is_invalid_client(store: SQLiteAuthorizationStore, error: Exception) -> None:
    exc = await refused(directory(store, FakeFetch(error)), DOC_URL)
    assert exc.error == "invalid_client"
    assert isinstance(exc.__cause__, type(error))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (DOC_URL, ("app.example.com",)),
        (DOC_URL, ("example.com",)),
        ("https://a.b.example.com/client.json", ("example.com",)),
        (DOC_URL, ("other.example", "example.com")),
    ],
)
async def test_a_document_from_an_allowed_domain_is_verified(
    store: SQLiteAuthorizationStore, url: str, allowed: tuple[str, ...]
) -> None:
    fetch = FakeFetch(answer(document(client_id=url)))
    client = await directory(store, fetch, allowed_domains=allowed).find(url)
    assert client.verified is True
    assert fetch.calls[0][0] == url


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.org/client.json",
        "https://evilexample.com/client.json",
        "https://example.com.evil.example/client.json",
    ],
)
async def test_a_document_from_another_domain_is_refused_without_fetching(
    store: SQLiteAuthorizationStore, url: str
) -> None:
    fetch = FakeFetch(answer(document(client_id=url)))
    exc = await refused(directory(store, fetch, allowed_domains=("example.com",)), url)
    assert exc.error == "invalid_client"
    assert fetch.calls == []


async def test_a_document_is_cached_for_its_max_age(store: SQLiteAuthorizationStore) -> None:
    clock = FakeClock()
    fetch = FakeFetch(answer(cache_control="public, max-age=60"))
    clients = directory(store, fetch, clock=clock)
    first = await clients.find(DOC_URL)
    clock.advance(59)
    assert await clients.find(DOC_URL) is first
    assert len(fetch.calls) == 1
    clock.advance(1)
    await clients.find(DOC_URL)
    assert len(fetch.calls) == 2


@pytest.mark.parametrize("cache_control", ["no-store", "no-cache", "max-age=60, no-store", "private, no-cache"])
async def test_a_document_marked_no_store_is_fetched_every_time(
    store: SQLiteAuthorizationStore, cache_control: str
) -> None:
    fetch = FakeFetch(answer(cache_control=cache_control))
    clients = directory(store, fetch)
    await clients.find(DOC_URL)
    await clients.find(DOC_URL)
    assert len(fetch.calls) == 2


async def test_a_document_without_cache_control_is_cached_five_minutes(store: SQLiteAuthorizationStore) -> None:
    clock = FakeClock()
    fetch = FakeFetch(answer())
    clients = directory(store, fetch, clock=clock)
    await clients.find(DOC_URL)
    clock.advance(299)
    await clients.find(DOC_URL)
    assert len(fetch.calls) == 1
    clock.advance(1)
    await clients.find(DOC_URL)
    assert len(fetch.calls) == 2


async def test_the_cache_time_is_capped_by_max_cache_s(store: SQLiteAuthorizationStore) -> None:
    clock = FakeClock()
    fetch = FakeFetch(answer(cache_control="max-age=86400"))
    clients = directory(store, fetch, clock=clock, max_cache_s=10)
    await clients.find(DOC_URL)
    clock.advance(10)
    await clients.find(DOC_URL)
    assert len(fetch.calls) == 2


async def test_a_refused_document_is_not_cached(store: SQLiteAuthorizationStore) -> None:
    fetch = FakeFetch(answer(status=503, cache_control="max-age=600"))
    clients = directory(store, fetch)
    assert (await refused(clients, DOC_URL)).error == "invalid_client"
    fetch.response = answer(cache_control="max-age=600")
    assert (await clients.find(DOC_URL)).client_id == DOC_URL
    assert len(fetch.calls) == 2


def test_parse_metadata_document_keeps_the_verified_flag() -> None:
    assert parse_metadata_document(DOC_URL, answer(), verified=True).verified is True
    assert parse_metadata_document(DOC_URL, answer(), verified=False).verified is False


# --- dynamic registration metadata (RFC 7591) -----------------------------------------------------


def test_registration_metadata_keeps_only_what_bastion_supports() -> None:
    metadata, method = registration_metadata(
        {
            "redirect_uris": ["http://127.0.0.1/cb"],
            "client_name": "Tool",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "scope": "admin",
            "jwks_uri": "https://evil.example/jwks",
        }
    )
    assert method == "none"
    assert metadata == {
        "redirect_uris": ["http://127.0.0.1/cb"],
        "client_name": "Tool",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }


def test_registration_defaults_to_client_secret_basic() -> None:
    assert registration_metadata({"redirect_uris": ["https://app.example.com/cb"]})[1] == "client_secret_basic"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://app.example.com/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example.com/cb#f"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["data:text/html,x"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({}, "invalid_redirect_uri"),
        ([], "invalid_client_metadata"),
        ("x", "invalid_client_metadata"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "private_key_jwt"},
         "invalid_client_metadata"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": "authorization_code"}, "invalid_client_metadata"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "response_types": ["token"]}, "invalid_client_metadata"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "x" * 201}, "invalid_client_metadata"),
        ({"redirect_uris": ["http://127.0.0.1/cb"], "client_name": 7}, "invalid_client_metadata"),
    ],
)  # fmt: skip
def test_bad_registration_metadata_is_refused(body: Any, error: str) -> None:
    with pytest.raises(OAuthError) as exc:
        registration_metadata(body)
    assert exc.value.error == error
