"""What a tool result carries: its bytes, text blocks and structured items (issue 14, "Result volume").

``measure(result)`` takes a ``CallToolResult`` as the upstream sent it (a JSON object, MCP
2025-11-25 server/tools "Tool Result") and returns its ``Measures`` with the compact JSON it
measured, so that the caller can digest exactly those bytes without encoding them twice.
Sans-IO and total: any JSON object is measured, whatever fields it lacks.
"""

from __future__ import annotations

import json
from itertools import repeat
from typing import Any, NamedTuple

import orjson

__all__ = ["MEASURES", "Measures", "compact_json", "measure"]

MEASURES = ("bytes", "blocks", "items")
"""The measures' names, in ``Measures`` order (the audit record's keys and the config's floors)."""


class Measures(NamedTuple):
    """One result's volume: ``bytes`` of its compact JSON (UTF-8), ``blocks``: content blocks of
    type ``text``, ``items``: elements of the top-level arrays of ``structuredContent`` (summed; 0
    without one; a ``structuredContent`` that is itself an array counts its elements)."""

    bytes: int
    blocks: int
    items: int


_fallback = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode


def compact_json(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8: orjson (keys in their order, no whitespace); what orjson
    cannot write exactly (integers past 64 bits, lone surrogates) takes the C ``json`` encoder."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return _fallback(value).encode("utf-8", "backslashreplace")


def _text_blocks(content: list[Any]) -> int:
    """How many elements of ``content`` are objects of ``"type": "text"``."""
    try:  # every block an object, as the schema says: one C-level pass (half the cost of a loop)
        return list(map(dict.get, content, repeat("type"))).count("text")
    except TypeError:  # an element that is not an object
        return [block.get("type") for block in content if type(block) is dict].count("text")


def measure(result: dict[str, Any]) -> tuple[Measures, bytes]:
    """The ``Measures`` of ``result`` and the compact JSON (``compact_json``) whose length is ``bytes``."""
    encoded = compact_json(result)
    content = result.get("content")
    blocks = _text_blocks(content) if type(content) is list else 0
    structured = result.get("structuredContent")
    items = 0
    if type(structured) is dict:
        items = sum(len(value) for value in structured.values() if type(value) is list)
    elif type(structured) is list:
        items = len(structured)
    return Measures(len(encoded), blocks, items), encoded
