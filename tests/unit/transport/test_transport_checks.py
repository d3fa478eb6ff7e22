"""Sans-IO tests of ``bastion.transport.checks``: Origin/Host, Accept, JSON-RPC shape, era, 2026 envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.jsonrpc import INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION

from bastion.errors import (
    BatchRejected,
    ForbiddenOrigin,
    HeaderMismatch,
    ParseError,
    TransportError,
    UnsupportedVersion,
)
from bastion.transport.checks import (
    DEFAULT_HANDSHAKE_VERSION,
    SERVED_HANDSHAKE_VERSIONS,
    SERVED_MODERN_VERSIONS,
    OriginPolicy,
    accepts,
    check_modern_envelope,
    check_param_headers,
    classify_message,
    parse_message,
    protocol_era,
)

MODERN = "2026-07-28"

# --- OriginPolicy -----------------------------------------------------------------------------


@pytest.fixture
def loopback() -> OriginPolicy:
    return OriginPolicy.for_listener("http://127.0.0.1:8080", 8080)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080", "LocalHost:8080"])
def test_loopback_hosts_of_the_port_are_allowed_in_any_case(loopback: OriginPolicy, host: str) -> None:
    loopback.check({"host": host})


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1:8081", "localhost", "127.0.0.1", "attacker.localhost:8080", "", " "]
)
def test_other_hosts_are_forbidden(loopback: OriginPolicy, host: str) -> None:
    with pytest.raises(ForbiddenOrigin) as caught:
        loopback.check({"host": host})
    assert caught.value.status == 403
    assert caught.value.jsonrpc_code == -32600


def test_a_missing_host_is_refused(loopback: OriginPolicy) -> None:
    with pytest.raises(ForbiddenOrigin, match="Host"):
        loopback.check({})


def test_a_missing_origin_passes(loopback: OriginPolicy) -> None:
    loopback.check({"host": "127.0.0.1:8080"})


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "HTTP://LOCALHOST:8080",
        "http://localhost:8080/",
        "http://[::1]:8080",
    ],
)
def test_loopback_origins_are_allowed_case_insensitively(loopback: OriginPolicy, origin: str) -> None:
    loopback.check({"host": "127.0.0.1:8080", "origin": origin})


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "", "https://127.0.0.1:8080", "http://localhost:8081", "http://localhost"],
)
def test_foreign_origins_are_forbidden(loopback: OriginPolicy, origin: str) -> None:
    with pytest.raises(ForbiddenOrigin, match="Origin"):
        loopback.check({"host": "127.0.0.1:8080", "origin": origin})


def test_the_public_url_names_an_allowed_host_and_origin() -> None:
    policy = OriginPolicy.for_listener("https://GW.example.com", 8443)
    policy.check({"host": "gw.example.com", "origin": "https://gw.example.com"})
    policy.check({"host": "localhost:8443"})
    with pytest.raises(ForbiddenOrigin):
        policy.check({"host": "gw.example.com", "origin": "https://evil.example.com"})
    with pytest.raises(ForbiddenOrigin):
        policy.check({"host": "gw.example.com:8443"})


def test_extra_hosts_and_origins_are_added() -> None:
    policy = OriginPolicy.for_listener(
        "http://127.0.0.1:9000", 9000, extra_hosts=["proxy.internal"], extra_origins=["https://app.example/"]
    )
    policy.check({"host": "PROXY.internal", "origin": "https://APP.example"})


def test_explicit_lists_compare_case_insensitively() -> None:
    policy = OriginPolicy(["Example.COM"], ["https://Example.com/"])
    policy.check({"host": "example.com", "origin": "https://example.COM"})
    with pytest.raises(ForbiddenOrigin):
        policy.check({"host": "example.org"})


# --- accepts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, (True, True)),
        ("application/json", (True, False)),
        ("text/event-stream", (False, True)),
        ("application/json, text/event-stream", (True, True)),
        ("*/*", (True, True)),
        ("application/*", (True, False)),
        ("text/*", (False, True)),
        ("APPLICATION/JSON;q=0.9", (True, False)),
        ("text/html", (False, False)),
        ("", (False, False)),
        ("application/json-seq", (False, False)),
        (" text/event-stream ; q=1 , image/png", (False, True)),
    ],
)
def test_accepts(accept: str | None, expected: tuple[bool, bool]) -> None:
    headers = {} if accept is None else {"accept": accept}
    assert accepts(headers) == expected


# --- parse_message ----------------------------------------------------------------------------


def _body(message: Any) -> bytes:
    return json.dumps(message).encode()


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b'{"jsonrpc":"2.0",}', b"\xff\xfe\x00", b'{"a":"\xc3\x28"}', b"[" * 100_000,
     b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":NaN}}',
     b'{"jsonrpc":"2.0","method":"m","params":[-Infinity]}'],
    ids=["empty", "truncated", "text", "trailing-comma", "bad-utf8-bom", "bad-utf8", "deep-nesting", "nan", "infinity"],
)  # fmt: skip
def test_invalid_json_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(body)
    assert caught.value.jsonrpc_code == -32700
    assert caught.value.status == 400


@pytest.mark.parametrize("body", [b"[]", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]'])
def test_batches_are_rejected(body: bytes) -> None:
    with pytest.raises(BatchRejected) as caught:
        parse_message(body)
    assert (caught.value.status, caught.value.jsonrpc_code) == (400, -32600)


@pytest.mark.parametrize(
    "message",
    [
        1,
        "x",
        None,
        True,
        {},
        {"id": 1, "method": "ping"},
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": 2.0, "id": 1, "method": "ping"},
        {"jsonrpc": None, "id": 1, "method": "ping"},
    ],
)
def test_non_json_rpc_2_messages_are_invalid_requests(message: Any) -> None:
    with pytest.raises(TransportError) as caught:
        parse_message(_body(message))
    assert not isinstance(caught.value, ParseError | BatchRejected)
    assert caught.value.jsonrpc_code == -32600


@pytest.mark.parametrize("bad_id", [True, False, 1.5, 1.0, None, [], {}, [1]])
def test_ids_other_than_strings_and_integers_are_refused(bad_id: Any) -> None:
    with pytest.raises(TransportError, match="id must be"):
        parse_message(_body({"jsonrpc": "2.0", "id": bad_id, "method": "ping"}))


@pytest.mark.parametrize("good_id", [0, -1, 2**63, 10**30, "", "abc", "ünïcödé"])
def test_string_and_integer_ids_are_accepted(good_id: Any) -> None:
    assert parse_message(_body({"jsonrpc": "2.0", "id": good_id, "method": "ping"}))["id"] == good_id


@pytest.mark.parametrize("method", [1, None, "", [], {}, True])
def test_method_must_be_a_non_empty_string(method: Any) -> None:
    with pytest.raises(TransportError, match="method"):
        parse_message(_body({"jsonrpc": "2.0", "id": 1, "method": method}))


@pytest.mark.parametrize("params", [[], [1, 2], "x", 1, None, True])
def test_params_must_be_an_object(params: Any) -> None:
    with pytest.raises(TransportError, match="params"):
        parse_message(_body({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}))
    with pytest.raises(TransportError, match="params"):
        parse_message(_body({"jsonrpc": "2.0", "method": "notifications/initialized", "params": params}))


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, "request"),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}, "request"),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, "notification"),
        ({"jsonrpc": "2.0", "id": 1, "result": {}}, "response"),
        ({"jsonrpc": "2.0", "id": "a", "result": None}, "response"),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}, "response"),
        ({"jsonrpc": "2.0", "id": 1, "method": "ping", "extra": [1, 2]}, "request"),
    ],
)
def test_well_formed_messages_parse_and_classify(message: dict[str, Any], kind: str) -> None:
    parsed = parse_message(_body(message))
    assert parsed == message
    assert classify_message(parsed) == kind


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}},
        {"jsonrpc": "2.0", "result": {}},
        {"jsonrpc": "2.0", "error": {"code": 1, "message": "x"}},
        {"jsonrpc": "2.0"},
    ],
)
def test_malformed_responses_are_invalid_requests(message: dict[str, Any]) -> None:
    with pytest.raises(TransportError, match="neither a request"):
        parse_message(_body(message))


def test_parse_accepts_utf8_bytes_and_unicode() -> None:
    message = {"jsonrpc": "2.0", "id": "ключ", "method": "tools/call", "params": {"name": "天気"}}
    assert parse_message(json.dumps(message, ensure_ascii=False).encode()) == message


# --- protocol_era -----------------------------------------------------------------------------


def test_served_versions() -> None:
    assert MODERN in SERVED_MODERN_VERSIONS
    assert "2025-11-25" in SERVED_HANDSHAKE_VERSIONS
    assert "2025-03-26" in SERVED_HANDSHAKE_VERSIONS
    assert "2024-11-05" not in SERVED_HANDSHAKE_VERSIONS


@pytest.mark.parametrize(
    ("header", "method", "expected"),
    [
        (None, "tools/list", ("handshake", DEFAULT_HANDSHAKE_VERSION)),
        ("2025-06-18", "tools/list", ("handshake", "2025-06-18")),
        ("2025-11-25", "tools/call", ("handshake", "2025-11-25")),
        ("2025-03-26", "ping", ("handshake", "2025-03-26")),
        (MODERN, "tools/list", ("modern", MODERN)),
        (MODERN, "server/discover", ("modern", MODERN)),
        (None, "initialize", ("handshake", DEFAULT_HANDSHAKE_VERSION)),
        ("2025-11-25", "initialize", ("handshake", "2025-11-25")),
        (MODERN, "initialize", ("handshake", MODERN)),
        (None, None, ("handshake", DEFAULT_HANDSHAKE_VERSION)),
    ],
)
def test_protocol_era(header: str | None, method: str | None, expected: tuple[str, str]) -> None:
    headers = {} if header is None else {"mcp-protocol-version": header}
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1}
    if method is not None:
        message["method"] = method
    assert protocol_era(headers, message) == expected


@pytest.mark.parametrize("header", ["2024-11-05", "1999-01-01", "garbage", "", "2026-07-28 ", "2025-11-25,2025-06-18"])
def test_unsupported_versions_are_refused(header: str) -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        protocol_era({"mcp-protocol-version": header}, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    # MCP 2026-07-28 UnsupportedProtocolVersionError: the versions to retry with, and the header echoed.
    assert (caught.value.status, caught.value.jsonrpc_code) == (400, -32022)
    assert caught.value.data == {"supported": list(SERVED_MODERN_VERSIONS), "requested": header}


def test_initialize_is_handshake_era_whatever_the_header() -> None:
    era, _ = protocol_era({"mcp-protocol-version": "garbage"}, {"jsonrpc": "2.0", "id": 1, "method": "initialize"})
    assert era == "handshake"


# --- check_modern_envelope --------------------------------------------------------------------


def _meta(**extra: Any) -> dict[str, Any]:
    return {
        PROTOCOL_VERSION_META_KEY: MODERN,
        CLIENT_CAPABILITIES_META_KEY: {},
        CLIENT_INFO_META_KEY: {"name": "t", "version": "1"},
        **extra,
    }


def _modern(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": _meta()}}


def _headers(method: str, name: str | None = None, version: str = MODERN) -> dict[str, str]:
    headers = {"mcp-protocol-version": version, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


def _check(message: dict[str, Any], headers: dict[str, str], raw: list[tuple[str, str]] | None = None) -> None:
    check_modern_envelope(message, headers, raw if raw is not None else list(headers.items()))


@pytest.mark.parametrize(
    ("message", "headers"),
    [
        (_modern("server/discover"), _headers("server/discover")),
        (_modern("tools/list"), _headers("tools/list")),
        (_modern("tools/call", name="add", arguments={"a": 1}), _headers("tools/call", "add")),
        (_modern("prompts/get", name="greet"), _headers("prompts/get", "greet")),
        (_modern("resources/read", uri="file:///a.txt"), _headers("resources/read", "file:///a.txt")),
    ],
)
def test_a_consistent_envelope_passes(message: dict[str, Any], headers: dict[str, str]) -> None:
    _check(message, headers)


def test_a_base64_sentinel_mcp_name_matches_a_non_ascii_name() -> None:
    name = "天気 "
    sentinel = f"=?base64?{base64.b64encode(name.encode()).decode()}?="
    _check(_modern("tools/call", name=name), _headers("tools/call", sentinel))


@pytest.mark.parametrize(
    ("message", "headers"),
    [
        (_modern("tools/list"), _headers("tools/call")),
        (_modern("tools/list"), {"mcp-protocol-version": MODERN}),
        (_modern("tools/list"), {"mcp-method": "tools/list"}),
        (_modern("tools/list"), _headers("tools/list", version="2025-11-25")),
        (_modern("tools/call", name="add"), _headers("tools/call", "delete")),
        (_modern("tools/call", name="add"), _headers("tools/call")),
        (_modern("resources/read", uri="file:///a"), _headers("resources/read", "file:///b")),
        (_modern("tools/call", name="add"), _headers("tools/call", "=?base64?!!!?=")),
    ],
    ids=[
        "method-differs",
        "method-missing",
        "version-missing",
        "version-differs",
        "name-differs",
        "name-missing",
        "uri-differs",
        "bad-sentinel",
    ],
)
def test_mirrored_header_mismatch_is_32020(message: dict[str, Any], headers: dict[str, str]) -> None:
    with pytest.raises(HeaderMismatch) as caught:
        _check(message, headers)
    assert caught.value.jsonrpc_code == -32020
    assert caught.value.status == 400
    assert caught.value.code == "header_mismatch"


@pytest.mark.parametrize("duplicated", ["mcp-method", "mcp-name", "mcp-protocol-version", "Mcp-Method"])
def test_a_duplicated_routing_header_is_a_mismatch(duplicated: str) -> None:
    message = _modern("tools/call", name="add")
    headers = _headers("tools/call", "add")
    raw = [*headers.items(), (duplicated, headers[duplicated.lower()])]
    with pytest.raises(HeaderMismatch, match="more than once"):
        _check(message, headers, raw)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"_meta": None},
        {"_meta": "x"},
        {"_meta": {}},
        {"_meta": {PROTOCOL_VERSION_META_KEY: MODERN}},
        {"_meta": {CLIENT_CAPABILITIES_META_KEY: {}}},
    ],
    ids=["no-meta", "null-meta", "string-meta", "empty-meta", "no-capabilities", "no-version"],
)
def test_a_missing_envelope_is_invalid_params_from_the_sdk_ladder(params: dict[str, Any]) -> None:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}
    with pytest.raises(TransportError) as caught:
        _check(message, _headers("tools/list"))
    assert not isinstance(caught.value, HeaderMismatch)
    assert caught.value.jsonrpc_code == INVALID_PARAMS == -32602
    assert caught.value.status == 400


def test_a_request_without_params_is_invalid_params() -> None:
    with pytest.raises(TransportError) as caught:
        _check({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, _headers("tools/list"))
    assert caught.value.jsonrpc_code == -32602


def test_an_unsupported_envelope_version_carries_the_ladder_code_and_data() -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": {PROTOCOL_VERSION_META_KEY: "2099-01-01", CLIENT_CAPABILITIES_META_KEY: {}}},
    }
    with pytest.raises(TransportError) as caught:
        _check(message, _headers("tools/list", version="2099-01-01"))
    assert caught.value.jsonrpc_code == UNSUPPORTED_PROTOCOL_VERSION
    assert caught.value.data == {"supported": list(SERVED_MODERN_VERSIONS), "requested": "2099-01-01"}


# --- check_param_headers (SEP-2243 Mcp-Param-* headers) -------------------------------------------

REGION_TOOL = {
    "name": "deploy",
    "inputSchema": {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "count": {"type": "integer", "x-mcp-header": "Count"},
            "note": {"type": "string"},
        },
    },
}


def _param_headers(*pairs: tuple[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    return {name.lower(): value for name, value in pairs}, list(pairs)


@pytest.mark.parametrize(
    ("arguments", "pairs"),
    [
        ({"region": "eu-west", "count": 3}, [("Mcp-Param-Region", "eu-west"), ("Mcp-Param-Count", "3")]),
        ({"region": "eu-west"}, [("mcp-param-region", "eu-west")]),  # header names are case-insensitive
        ({"region": "€uro"}, [("Mcp-Param-Region", "=?base64?4oKsdXJv?=")]),  # a non-ASCII value, base64
        ({"note": "x"}, []),  # an argument that is not promoted needs no header
        ({}, [("Mcp-Param-Other", "ignored")]),  # a header no property promotes is not checked
    ],
)
def test_promoted_headers_that_equal_the_body_pass(arguments: dict[str, Any], pairs: list[tuple[str, str]]) -> None:
    check_param_headers(REGION_TOOL, arguments, *_param_headers(*pairs))


@pytest.mark.parametrize(
    ("arguments", "pairs"),
    [
        ({"region": "eu-west"}, [("Mcp-Param-Region", "us-east")]),  # the router would see another region
        ({"region": "eu-west"}, []),  # promoted argument without its header
        ({}, [("Mcp-Param-Region", "eu-west")]),  # header without the argument
        ({"region": "eu-west"}, [("Mcp-Param-Region", "=?base64?not*base64?=")]),
        ({"count": 3}, [("Mcp-Param-Count", "4")]),
        ({"region": "eu-west"}, [("Mcp-Param-Region", "eu-west"), ("MCP-PARAM-REGION", "eu-west")]),  # twice
    ],
)
def test_promoted_headers_that_differ_from_the_body_are_header_mismatch(
    arguments: dict[str, Any], pairs: list[tuple[str, str]]
) -> None:
    with pytest.raises(HeaderMismatch) as caught:
        check_param_headers(REGION_TOOL, arguments, *_param_headers(*pairs))
    assert (caught.value.status, caught.value.jsonrpc_code) == (400, -32020)


def test_an_unlisted_tool_leaves_the_check_to_the_upstream_but_not_a_repeated_header() -> None:
    check_param_headers(None, {"region": "eu-west"}, *_param_headers(("Mcp-Param-Region", "us-east")))
    with pytest.raises(HeaderMismatch):
        check_param_headers(None, {}, *_param_headers(("Mcp-Param-A", "1"), ("mcp-param-a", "1")))
