"""``bastion.oauth.requests``: repeated parameters, PKCE (RFC 7636), resource indicators (RFC 8707), scopes."""

from __future__ import annotations

import pytest
from oauth_helpers import RFC7636_VERIFIER, s256

from bastion.errors import OAuthError
from bastion.oauth.requests import Resources, check_code_challenge, requested_scopes, single_params, verify_pkce

ECHO = "http://127.0.0.1:8123/mcp/echo"
OTHER = "http://127.0.0.1:8123/mcp/other"
RESOURCES = Resources({ECHO: "echo", OTHER: "other"})
CHALLENGE = s256(RFC7636_VERIFIER)


def _error(exc: pytest.ExceptionInfo[OAuthError]) -> str:
    return exc.value.error


# --- repeated and oversized parameters ------------------------------------------------------------


def test_single_params_returns_each_parameter_once() -> None:
    assert single_params([("a", "1"), ("b", "2")]) == {"a": "1", "b": "2"}


@pytest.mark.parametrize("second", ["1", "other", ""])
def test_a_repeated_parameter_is_invalid_request(second: str) -> None:
    with pytest.raises(OAuthError) as exc:
        single_params([("client_id", "1"), ("state", "s"), ("client_id", second)])
    assert _error(exc) == "invalid_request"
    assert "'client_id'" in exc.value.description


def test_a_parameter_longer_than_4096_characters_is_invalid_request() -> None:
    assert single_params([("state", "x" * 4096)]) == {"state": "x" * 4096}
    with pytest.raises(OAuthError) as exc:
        single_params([("state", "x" * 4097)])
    assert _error(exc) == "invalid_request"


# --- PKCE: the authorization request's challenge --------------------------------------------------


def test_rfc7636_appendix_b_challenge_is_accepted() -> None:
    assert CHALLENGE != RFC7636_VERIFIER
    params = {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}
    assert check_code_challenge(params) == CHALLENGE


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({}, "challenge and method missing"),
        ({"code_challenge_method": "S256"}, "challenge missing"),
        ({"code_challenge": ""}, "challenge empty"),
        ({"code_challenge": CHALLENGE}, "method missing (the RFC 7636 default is plain)"),
        ({"code_challenge": CHALLENGE, "code_challenge_method": "plain"}, "plain"),
        ({"code_challenge": RFC7636_VERIFIER, "code_challenge_method": "plain"}, "plain with the verifier"),
        ({"code_challenge": CHALLENGE, "code_challenge_method": "s256"}, "method in lower case"),
        ({"code_challenge": CHALLENGE, "code_challenge_method": "S512"}, "unknown method"),
        ({"code_challenge": CHALLENGE[:-1], "code_challenge_method": "S256"}, "42 characters"),
        ({"code_challenge": CHALLENGE + "A", "code_challenge_method": "S256"}, "44 characters"),
        ({"code_challenge": CHALLENGE[:-1] + "=", "code_challenge_method": "S256"}, "padding"),
        ({"code_challenge": CHALLENGE[:-1] + "+", "code_challenge_method": "S256"}, "base64 not base64url"),
        ({"code_challenge": CHALLENGE[:-1] + ".", "code_challenge_method": "S256"}, "not base64url"),
    ],
)
def test_a_bad_code_challenge_is_invalid_request(params: dict[str, str], why: str) -> None:
    with pytest.raises(OAuthError) as exc:
        check_code_challenge(params)
    assert _error(exc) == "invalid_request", why


# --- PKCE: the token request's verifier -----------------------------------------------------------


def test_rfc7636_appendix_b_verifier_matches_its_challenge() -> None:
    verify_pkce(RFC7636_VERIFIER, CHALLENGE)


@pytest.mark.parametrize("length", [43, 128])
def test_verifier_lengths_43_and_128_are_accepted(length: int) -> None:
    verifier = ("abcXYZ019-._~" * 10)[:length]
    verify_pkce(verifier, s256(verifier))


@pytest.mark.parametrize(
    ("verifier", "why"),
    [
        (None, "missing"),
        ("", "empty"),
        (RFC7636_VERIFIER[:-1] + "J", "another verifier of the same shape"),
        (RFC7636_VERIFIER[:42], "42 characters"),
        ("a" * 129, "129 characters"),
        (RFC7636_VERIFIER[:-1] + "+", "'+' is not unreserved"),
        (RFC7636_VERIFIER[:-1] + "/", "'/' is not unreserved"),
        (RFC7636_VERIFIER[:-1] + " ", "a space"),
        (RFC7636_VERIFIER[:-1] + "é", "not ASCII"),
        (RFC7636_VERIFIER + "\n", "a trailing newline"),
        (CHALLENGE, "the challenge itself (plain)"),
    ],
)
def test_a_wrong_or_malformed_verifier_is_invalid_grant(verifier: str | None, why: str) -> None:
    with pytest.raises(OAuthError) as exc:
        verify_pkce(verifier, CHALLENGE)
    assert _error(exc) == "invalid_grant", why


def test_a_short_verifier_is_refused_even_when_its_hash_matches() -> None:
    short = "a" * 42
    with pytest.raises(OAuthError) as exc:
        verify_pkce(short, s256(short))
    assert _error(exc) == "invalid_grant"


def test_a_bad_character_verifier_is_refused_even_when_its_hash_matches() -> None:
    bad = "a" * 42 + "!"
    with pytest.raises(OAuthError) as exc:
        verify_pkce(bad, s256(bad))
    assert _error(exc) == "invalid_grant"


# --- resource indicators --------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "route"), [(ECHO, "echo"), (OTHER, "other")])
def test_a_route_resource_names_its_route(uri: str, route: str) -> None:
    assert RESOURCES.route_for(uri) == (route, uri)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "missing"),
        ("", "empty"),
        ("http://127.0.0.1:8123/mcp/unknown", "no such route"),
        ("http://127.0.0.1:8123/mcp", "a prefix of the route"),
        ("http://127.0.0.1:8123/mcp/ech", "a prefix of the resource URI"),
        ("http://127.0.0.1:8123/mcp/echo/", "a trailing slash"),
        ("http://127.0.0.1:8123/mcp/echo/tools", "a longer path"),
        ("http://127.0.0.1:8123/mcp/ECHO", "another case"),
        ("http://127.0.0.1:8123/mcp/%65cho", "percent-encoded"),
        ("http://127.0.0.1:8123/mcp/echo?x=1", "a query"),
        ("http://127.0.0.1:8123/mcp/echo#f", "a fragment"),
        ("https://127.0.0.1:8123/mcp/echo", "another scheme"),
        ("http://localhost:8123/mcp/echo", "another host name"),
        ("http://127.0.0.1:8124/mcp/echo", "another port"),
    ],
)
def test_a_resource_that_is_not_exactly_a_route_is_invalid_target(value: str | None, why: str) -> None:
    with pytest.raises(OAuthError) as exc:
        RESOURCES.route_for(value)
    assert _error(exc) == "invalid_target", why


# --- scopes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_scope_means_the_default(value: str | None) -> None:
    assert requested_scopes(value, ("mcp", "read"), default=("mcp",)) == ("mcp",)


def test_scopes_come_back_in_supported_order_without_duplicates() -> None:
    assert requested_scopes("read mcp read", ("mcp", "read", "write"), default=("mcp",)) == ("mcp", "read")


@pytest.mark.parametrize("value", ["admin", "mcp admin", "MCP", "mcp:read"])
def test_an_unknown_scope_is_invalid_scope(value: str) -> None:
    with pytest.raises(OAuthError) as exc:
        requested_scopes(value, ("mcp", "read"), default=("mcp",))
    assert _error(exc) == "invalid_scope"
