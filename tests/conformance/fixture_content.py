"""Literal payloads of the conformance fixture that the scenarios compare byte for byte or key
for key: a 1x1 PNG, a tiny WAV clip, and the JSON Schema 2020-12 inputSchema of
``json_schema_2020_12_tool``.

Used by ``fixture_tools.py`` (image, audio and schema), ``fixture_resources.py`` (the PNG as a
binary resource) and ``fixture_prompts.py`` (the PNG in a prompt). Plain data, no SDK.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = [
    "JSON_SCHEMA_2020_12",
    "JSON_SCHEMA_2020_12_TOOL_SCHEMA",
    "RED_PIXEL_PNG",
    "RED_PIXEL_PNG_B64",
    "TINY_WAV_B64",
]

# 1x1 red pixel PNG.
RED_PIXEL_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
RED_PIXEL_PNG = base64.b64decode(RED_PIXEL_PNG_B64)


def _tiny_wav() -> bytes:
    """A valid 8 kHz mono 8-bit PCM WAV file holding 8 samples of silence."""
    samples = bytes([128] * 8)
    fmt = (
        b"fmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + (8000).to_bytes(4, "little")  # sample rate
        + (8000).to_bytes(4, "little")  # byte rate
        + (1).to_bytes(2, "little")  # block align
        + (8).to_bytes(2, "little")  # bits per sample
    )
    data = b"data" + len(samples).to_bytes(4, "little") + samples
    body = b"WAVE" + fmt + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


TINY_WAV_B64 = base64.b64encode(_tiny_wav()).decode()

JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# The inputSchema the json-schema-2020-12 scenario expects, verbatim: SEP-1613 keywords ($schema,
# $defs, additionalProperties) and the SEP-2106 vocabulary ($anchor, allOf/anyOf, if/then/else).
JSON_SCHEMA_2020_12_TOOL_SCHEMA: dict[str, Any] = {
    "$schema": JSON_SCHEMA_2020_12,
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}
