"""``bastion.errors.clip``, and the messages that quote client input through it.

Every message Bastion builds from what a client sent (a method name, a header
value, a form field, a URL, a JWS header) quotes at most ``ECHO_LIMIT``
characters of it, so a 10,000-character name is not sent back whole.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from bastion.egress.target import parse_target
from bastion.errors import ECHO_LIMIT, AuthenticationError, BastionError, EgressDenied, OAuthError, clip
from bastion.identity.signature import verify_compact_jws
from bastion.oauth.clients import registration_metadata
from bastion.oauth.requests import requested_scopes, single_params
from bastion.transport.checks import protocol_era

LONG = "q" * 10_000
#: A JWS alg about as long as joserfc lets through (it refuses an encoded header over 512 bytes).
LONG_ALG = "q" * 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("tools/call", "tools/call"),
        ("a" * ECHO_LIMIT, "a" * ECHO_LIMIT),
        ("a" * (ECHO_LIMIT + 1), "a" * ECHO_LIMIT + "…(1 more character)"),
        (LONG, "q" * ECHO_LIMIT + "…(9800 more characters)"),
        ("😀" * 201, "😀" * 200 + "…(1 more character)"),  # counted in code points, never split
    ],
)
def test_clip_keeps_at_most_the_limit_and_says_how_much_is_left_out(text: str, expected: str) -> None:
    assert clip(text) == expected


def test_clip_takes_another_limit() -> None:
    assert clip("abcdef", 3) == "abc…(3 more characters)"


def _jws_with_alg(alg: str) -> str:
    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([segment(json.dumps({"alg": alg}).encode()), segment(b"{}"), segment(b"sig")])


def _raise_egress() -> None:
    parse_target(LONG + "://example.com/", allow_http=False)


def _raise_bad_port() -> None:
    parse_target("https://example.com:" + LONG + "/", allow_http=False)


SITES: dict[str, Callable[[], object]] = {
    "MCP-Protocol-Version header": lambda: protocol_era({"mcp-protocol-version": LONG}, {"method": "tools/list"}),
    "OAuth scope": lambda: requested_scopes(LONG, ["mcp"], default=["mcp"]),
    "repeated OAuth parameter": lambda: single_params([(LONG, "a"), (LONG, "b")]),
    "URL scheme of a URL argument": _raise_egress,
    "unreadable port of a URL argument": _raise_bad_port,
    "client's token_endpoint_auth_method": lambda: registration_metadata(
        {"redirect_uris": ["https://client.example/cb"], "token_endpoint_auth_method": LONG}
    ),
    "JWS alg": lambda: verify_compact_jws(_jws_with_alg(LONG_ALG), lambda _: None, ["ES256"]),  # type: ignore[arg-type,return-value]
}


@pytest.mark.parametrize("site", SITES)
def test_a_message_built_from_10000_characters_of_client_input_quotes_at_most_the_limit(site: str) -> None:
    with pytest.raises((AuthenticationError, EgressDenied, OAuthError, BastionError)) as caught:
        SITES[site]()
    error = caught.value
    text = error.description if isinstance(error, OAuthError) else error.message
    assert "q" * 100 in text  # the start is quoted...
    assert "more characters)" in text
    assert len(text) < ECHO_LIMIT + 150  # ...the rest is not
