"""The validate stage: a tools/call's arguments against the tool's own inputSchema (jsonschema-rs),
answered as the client's protocol version asks; and policy denials as tool errors on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.config import HttpUpstream, RouteSettings
from bastion.errors import InvalidArguments, PolicyDenied
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.runner import error_reply
from bastion.pipeline.stages.authorize import AuthorizeStage
from bastion.pipeline.stages.validate import MAX_REPORTED_ERRORS, ValidateStage, compile_validator, json_pointer
from bastion.policy import PolicyEngine
from bastion.principal import Principal
from bastion.transport.routes import RouteRuntime

ALICE = Principal(kind="User", sub="alice", issuer="http://gw.test", auth_method="bastion_jwt", expires_at=0)

DEPLOY = {
    "name": "deploy",
    "inputSchema": {
        "type": "object",
        "properties": {
            "env": {"type": "string", "enum": ["dev", "prod"]},
            "replicas": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["env"],
    },
}


def _route(*tools: dict[str, Any], **settings: Any) -> RouteRuntime:
    route = RouteRuntime(
        settings=RouteSettings(
            name="ops", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True), **settings
        ),
        resource_uri="http://gw.test/mcp/ops",
        metadata_url="http://gw.test/.well-known/oauth-protected-resource/mcp/ops",
    )
    route.catalog_for(None).merge(list(tools or [DEPLOY]), complete=True)
    return route


def _call(
    route: RouteRuntime, arguments: Any, *, tool: str = "deploy", version: str = "2025-11-25", era: str = "handshake"
) -> Exchange:
    params: dict[str, Any] = {"name": tool}
    if arguments is not None:
        params["arguments"] = arguments
    message = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    exchange = Exchange(route=route, http=HttpRequest("POST", "/mcp/ops", {}, (), None, json.dumps(message).encode()))
    exchange.message, exchange.kind, exchange.principal = message, "request", ALICE
    exchange.era, exchange.protocol_version = era, version  # type: ignore[assignment]
    exchange.action, exchange.target = "tools/call", tool
    return exchange


async def _refusal(stage: ValidateStage, exchange: Exchange) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as caught:
        await stage.run(exchange)
    return caught.value


@pytest.mark.parametrize("arguments", [{"env": "dev"}, {"env": "prod", "replicas": 3, "tags": ["a"], "extra": 1}])
async def test_arguments_the_schema_accepts_pass(arguments: dict[str, Any]) -> None:
    await ValidateStage().run(_call(_route(), arguments))


@pytest.mark.parametrize(
    ("arguments", "pointer", "words"),
    [
        ({"env": "staging"}, "/env", "is not one of"),
        ({"env": "dev", "replicas": "3"}, "/replicas", "is not of type"),
        ({"env": "dev", "replicas": 0}, "/replicas", "less than the minimum"),
        ({"env": "dev", "tags": ["a", 2]}, "/tags/1", "is not of type"),
        ({}, "(root)", "required"),
        (None, "(root)", "required"),  # no arguments at all: validated as {}
        ([1], "(root)", "is not of type"),
    ],
)
async def test_arguments_the_schema_refuses_name_the_pointer_and_reason(
    arguments: Any, pointer: str, words: str
) -> None:
    error = await _refusal(ValidateStage(), _call(_route(), arguments))
    assert error.message.startswith("Invalid arguments for tool 'deploy':\n")
    assert f"- {pointer}: " in error.message
    assert words in error.message
    assert (error.jsonrpc_code, error.code) == (-32602, "invalid_arguments")


@pytest.mark.parametrize(
    ("version", "era", "tool_result"),
    [("2025-06-18", "handshake", False), ("2025-03-26", "handshake", False), ("2025-11-25", "handshake", True),
     ("2026-07-28", "modern", True)],
)  # fmt: skip
async def test_the_refusal_takes_the_form_the_protocol_version_asks(version: str, era: str, tool_result: bool) -> None:
    exchange = _call(_route(), {"env": 5}, version=version, era=era)
    error = await _refusal(ValidateStage(), exchange)
    reply = error_reply(exchange, error)
    assert reply.status == 200
    assert reply.message is not None
    if tool_result:  # MCP 2025-11-25 server/tools "Error Handling": the model reads it and corrects itself
        result = reply.message["result"]
        assert result["isError"] is True
        assert result["content"] == [{"type": "text", "text": error.message}]
        assert result["structuredContent"] == {"error": {"code": -32602, "reason": "invalid_arguments"}}
        assert ("resultType" in result) == (era == "modern")
    else:
        assert reply.message["error"] == {"code": -32602, "message": error.message}
    assert reply.message["id"] == 7


async def test_many_errors_are_listed_up_to_a_limit() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(30)}}
    route = _route({"name": "wide", "inputSchema": schema})
    error = await _refusal(ValidateStage(), _call(route, {f"p{i}": "x" for i in range(30)}, tool="wide"))
    lines = error.message.splitlines()[1:]
    assert len(lines) == MAX_REPORTED_ERRORS + 1
    assert lines[-1].startswith("- and ")


async def test_strict_arguments_refuses_unknown_properties_unless_the_schema_allows_them() -> None:
    loose = {"name": "loose", "inputSchema": {"type": "object", "properties": {}, "additionalProperties": True}}
    route = _route(DEPLOY, loose, strict_arguments=True)
    error = await _refusal(ValidateStage(strict_arguments=True), _call(route, {"env": "dev", "extra": 1}))
    assert "- (root): Unevaluated properties are not allowed ('extra' was unexpected)" in error.message
    await ValidateStage(strict_arguments=True).run(_call(route, {"anything": 1}, tool="loose"))


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"$ref": "http://169.254.169.254/latest/meta-data/schema.json"}, "does not fetch"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}, "does not fetch"),
        ({"type": 12}, "anyOf"),
        ({"$schema": "https://example.com/my-draft", "type": "object"}, "does not fetch"),  # an unknown draft
        (["not", "an", "object"], "not a JSON object"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(unclosed"}}}, ""),
    ],
)
async def test_a_schema_that_does_not_compile_makes_the_tool_unusable(schema: Any, why: str) -> None:
    route = _route({"name": "odd", "inputSchema": schema})
    error = await _refusal(ValidateStage(), _call(route, {"a": "x"}, tool="odd"))
    assert error.message.startswith("Tool 'odd' cannot be called: its inputSchema is unusable (")
    assert why in error.message


async def test_a_tool_the_upstream_did_not_list_is_left_to_the_policy() -> None:
    await ValidateStage().run(_call(_route(), {"whatever": 1}, tool="unlisted"))


async def test_the_draft_the_schema_names_is_used() -> None:
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
              "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}}}  # fmt: skip
    route = _route({"name": "old", "inputSchema": draft4})
    await ValidateStage().run(_call(route, {"n": 4}, tool="old"))
    error = await _refusal(ValidateStage(), _call(route, {"n": 5}, tool="old"))  # draft-04's boolean exclusiveMaximum
    assert "- /n: " in error.message


async def test_a_validator_is_compiled_once_per_definition() -> None:
    stage, route = ValidateStage(), _route()
    for _ in range(3):
        await stage.run(_call(route, {"env": "dev"}))
    assert len(stage._cache) == 1
    route.catalog_for(None).merge([{**DEPLOY, "description": "changed"}], complete=True)
    await stage.run(_call(route, {"env": "dev"}))
    assert len(stage._cache) == 2


def test_json_pointers_escape_as_rfc_6901_says() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["a/b", "m~n", 0]) == "/a~1b/m~0n/0"


def test_compile_validator_strict_only_adds_what_the_schema_left_open() -> None:
    closed = compile_validator({"type": "object", "unevaluatedProperties": True}, strict=True)
    assert closed.is_valid({"x": 1})
    assert not compile_validator({"type": "object"}, strict=True).is_valid({"x": 1})


@pytest.mark.parametrize(("denials", "tool_result"), [("jsonrpc", False), ("tool_error", True)])
async def test_a_policy_denial_can_reach_the_model_as_a_tool_error(
    tmp_path: Path, denials: str, tool_result: bool
) -> None:
    policy = tmp_path / "p.cedar"
    policy.write_text(
        '@id("ops")\npermit (principal, action == Action::"tools/call", resource);\n'
        '@id("no-prod")\nforbid (principal, action == Action::"tools/call", resource)\n'
        '  when { context.arguments has env && context.arguments.env == "prod" };\n'
    )
    route = _route(denials=denials)
    exchange = _call(route, {"env": "prod"})
    exchange.resource = route.catalog_for(None).ref("ops", "deploy")
    with pytest.raises(PolicyDenied) as caught:
        await AuthorizeStage(PolicyEngine.load([policy])).run(exchange)
    reply = error_reply(exchange, caught.value)
    assert (reply.status, reply.message is not None) == (200, True)
    assert reply.message is not None
    if tool_result:
        result = reply.message["result"]
        assert result["isError"] is True
        assert result["content"][0]["text"] == "Denied by policy no-prod"
        error = {"code": -32003, "reason": "policy_denied", "policies": ["no-prod"]}
        assert result["structuredContent"] == {"error": error}
    else:
        assert reply.message["error"] == {"code": -32003, "message": "Denied by policy no-prod",
                                          "data": {"policies": ["no-prod"]}}  # fmt: skip


DEFS = {"A": {"type": "object", "properties": {"x": {"type": "string"}}}}


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/A", "$defs": DEFS},
        {"type": "object", "allOf": [{"$ref": "#/$defs/A"}], "$defs": DEFS},
        {"type": "object", "anyOf": [DEFS["A"]]},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"x": {}}},
    ],
)
def test_strict_sees_properties_declared_through_refs_and_combinators(schema: dict[str, Any]) -> None:
    validator = compile_validator(schema, strict=True)
    assert validator.is_valid({"x": "a"})
    assert not validator.is_valid({"x": "a", "z": 1})


@pytest.mark.parametrize("key", ["$ref", "allOf"])
def test_strict_refuses_a_draft_07_schema_it_cannot_make_strict(key: str) -> None:
    composed = {"$ref": "#/definitions/A"} if key == "$ref" else {"allOf": [{"$ref": "#/definitions/A"}]}
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": DEFS, **composed}
    with pytest.raises(InvalidArguments, match="strict_arguments cannot apply"):
        compile_validator(schema, strict=True)
    assert compile_validator(schema).is_valid({"x": "a", "z": 1})  # without strict: usable as it is
