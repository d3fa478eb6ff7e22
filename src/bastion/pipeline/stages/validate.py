"""Stage 4c, validate: a ``tools/call``'s arguments against the tool's own ``inputSchema``.

Runs before the policy decision, so the policy (and everything after it) only ever sees
arguments of the shape the tool declared. The schema is the one the upstream listed
(``bastion.catalog``), compiled with jsonschema-rs for the draft it names in ``$schema``,
2020-12 when it names none (MCP 2025-11-25 server/tools: "defaults to 2020-12"). A
compiled validator is kept per tool definition (by its SHA-256), so a call costs one
validation, not a compilation.

Compiling is closed to the outside: a ``$ref`` to anything but the schema itself is
refused (no network fetch from an upstream's schema: SSRF), and ``pattern`` runs on a
regex engine with a backtracking limit. A schema that does not compile makes the tool
unusable: its calls are refused (``InvalidArguments``), never let through unvalidated.

``strict_arguments: true`` on a route refuses arguments a tool's schema does not declare: the
schema gets ``unevaluatedProperties: false`` (2019-09 and 2020-12, which also sees properties
declared through ``$ref``, ``allOf``, ``anyOf``, ``oneOf``) or ``additionalProperties: false``
(earlier drafts), unless it says something about them itself. A draft-07 or older schema whose
properties come through ``$ref`` or a combinator cannot be made strict that way (the keyword
would not see them): under ``strict_arguments`` such a tool is unusable, with a message saying why.

Refusals are recorded (reason ``invalid_arguments``) and nothing is forwarded. The answer is
one the model can correct itself from: a tool execution error listing each error's JSON
pointer and reason for 2025-11-25 and later clients (MCP 2025-11-25 server/tools "Error
Handling", SEP-1303), JSON-RPC -32602 with the same text for earlier ones.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import jsonschema_rs

from bastion.errors import InvalidArguments, clip
from bastion.pipeline.context import Exchange

__all__ = ["MAX_REPORTED_ERRORS", "ValidateStage", "compile_validator", "json_pointer"]

MAX_REPORTED_ERRORS = 10
"""How many validation errors one answer lists (the rest are counted)."""

BACKTRACK_LIMIT = 100_000
"""The most backtracking steps one ``pattern`` may take on one string (fancy-regex)."""

_TOOL_RESULT_FROM = "2025-11-25"
"""The first protocol version whose clients get argument errors as a tool execution error."""


def compile_validator(schema: Any, *, strict: bool = False) -> Any:
    """A jsonschema-rs validator for ``schema`` (a tool's ``inputSchema``), for the draft it names.

    ``strict`` refuses undeclared properties (see the module docstring). Raises
    ``InvalidArguments`` (the tool is unusable) when the schema is not an object, names an
    unknown draft, is invalid against its meta-schema, has a ``$ref`` outside itself, or cannot
    be made strict.
    """
    if not isinstance(schema, dict):
        raise InvalidArguments("the inputSchema is not a JSON object")
    if strict and "additionalProperties" not in schema and "unevaluatedProperties" not in schema:
        schema = _strict(schema)
    refused: list[str] = []

    def no_remote_refs(uri: str) -> Any:
        refused.append(uri)
        raise ValueError("Bastion does not fetch schemas")

    try:
        return jsonschema_rs.validator_for(
            schema,
            retriever=no_remote_refs,
            pattern_options=jsonschema_rs.FancyRegexOptions(backtrack_limit=BACKTRACK_LIMIT),
        )
    except Exception as exc:  # the library's ValidationError / ReferencingError, or a bad option
        if refused:
            raise InvalidArguments(f"it refers to {clip(refused[0], 100)}, which Bastion does not fetch") from exc
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidArguments(clip(first_line, 200)) from exc


_LATE_DRAFTS = (jsonschema_rs.Draft201909Validator, jsonschema_rs.Draft202012Validator)
_COMPOSED = ("$ref", "allOf", "anyOf", "oneOf")


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` refusing properties it does not declare (``strict_arguments``)."""
    if jsonschema_rs.validator_cls_for(schema) in _LATE_DRAFTS:
        return {**schema, "unevaluatedProperties": False}
    if any(key in schema for key in _COMPOSED):
        raise InvalidArguments(
            "strict_arguments cannot apply to a draft-07 or older schema whose properties come through "
            "$ref, allOf, anyOf or oneOf (the schema would have to say additionalProperties itself)"
        )
    return {**schema, "additionalProperties": False}


def json_pointer(path: Any) -> str:
    """The RFC 6901 JSON pointer of an instance path (a list of keys and indexes); ``""`` is the root."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


class ValidateStage:
    """Refuse a ``tools/call`` whose arguments do not fit the tool's ``inputSchema`` (see module docstring).

    ``strict_arguments`` is the route's option. Validators are cached by the definition's
    SHA-256 (at most ``cache_size``).
    """

    name = "validate"

    def __init__(self, *, strict_arguments: bool = False, cache_size: int = 4096) -> None:
        self._strict = strict_arguments
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size

    async def run(self, exchange: Exchange) -> None:
        """Raise ``InvalidArguments`` for arguments the tool's schema refuses, or a schema that does not compile."""
        if exchange.kind != "request" or exchange.method != "tools/call" or exchange.target is None:
            return
        catalog = exchange.route.catalog_for(exchange.principal)
        name = exchange.target
        tool = catalog.get(name)
        if tool is None:  # unlisted: no schema to check against (the policy sees it as destructive)
            return
        arguments = exchange.params.get("arguments")
        arguments = {} if arguments is None else arguments
        validator = self._validator(catalog.hashes.get(name, ""), tool)
        if isinstance(validator, InvalidArguments):
            unusable = f"Tool {clip(name, 64)!r} cannot be called: its inputSchema is unusable ({validator.message})"
            raise self._refusal(exchange, unusable)
        errors = []
        for count, error in enumerate(validator.iter_errors(arguments), 1):
            if count <= MAX_REPORTED_ERRORS:
                errors.append(f"- {json_pointer(error.instance_path) or '(root)'}: {clip(error.message, 200)}")
            else:
                errors.append(f"- and {count - MAX_REPORTED_ERRORS} more")
                break
        if errors:
            lines = "\n".join(errors)
            raise self._refusal(exchange, f"Invalid arguments for tool {clip(name, 64)!r}:\n{lines}")

    def _validator(self, digest: str, tool: dict[str, Any]) -> Any:
        """The cached validator (or the ``InvalidArguments`` that compiling it raised)."""
        cached = self._cache.get(digest) if digest else None
        if cached is None:
            try:
                cached = compile_validator(tool.get("inputSchema"), strict=self._strict)
            except InvalidArguments as exc:
                cached = exc
            if digest:
                self._cache[digest] = cached
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(digest)
        return cached

    @staticmethod
    def _refusal(exchange: Exchange, message: str) -> InvalidArguments:
        error = InvalidArguments(message)
        version = exchange.protocol_version or ""
        error.as_tool_result = exchange.era == "modern" or version >= _TOOL_RESULT_FROM
        return error
