"""Encoded payloads in definition text: runs of base64, hex, percent-encoding, HTML character
references or ``\\u`` escapes that a reviewer cannot read but a model decodes.

``find_encoded`` reports each run that decodes to readable text (RFC 4648 base64 and base64url,
base16; RFC 3986 percent-encoding; HTML numeric character references) and hands the decoded text
back so the caller scans it like any other text. Binary data (an image, a hash) is not text and
is not reported: a description has no reason to hide words in an encoding, but schemas do carry
hashes and small images.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import urllib.parse
from dataclasses import dataclass

__all__ = ["Decoded", "find_encoded"]

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])(?:[A-Za-z0-9+/]{4}){10,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
                     r"|(?<![A-Za-z0-9+/_-])[A-Za-z0-9_-]{40,}={0,2}")  # fmt: skip
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){20,}(?![0-9A-Fa-f])|(?:\\x[0-9A-Fa-f]{2}){8,}")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}){6,}")
_ENTITIES = re.compile(r"(?:&#(?:x[0-9A-Fa-f]{1,6}|\d{1,7});){6,}")
_ESCAPES = re.compile(r"(?:\\u[0-9A-Fa-f]{4}){6,}")
MAX_RUNS = 16
MAX_DECODED = 64 * 1024


@dataclass(frozen=True, slots=True)
class Decoded:
    """One encoded run: its ``encoding``, where it is in the text, and the text it decodes to."""

    encoding: str
    start: int
    end: int
    text: str


def _readable(raw: bytes) -> str | None:
    """``raw`` as text when it is UTF-8 and at least 85% printable with some letters, else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _looks_like_text(text) else None


def _looks_like_text(text: str) -> bool:
    if len(text) < 8:
        return False
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\t\r")
    letters = sum(1 for ch in text if ch.isalpha())
    return printable >= 0.85 * len(text) and letters >= 0.4 * len(text) and " " in text.strip()


def _base64(run: str) -> str | None:
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(run + "=" * (-len(run) % 4))
        except (binascii.Error, ValueError):
            continue
        text = _readable(raw[:MAX_DECODED])
        if text is not None:
            return text
    return None


def _hex(run: str) -> str | None:
    digits = run.replace("\\x", "")
    try:
        return _readable(bytes.fromhex(digits[: 2 * MAX_DECODED]))
    except ValueError:
        return None


def _text_of(decoded: str) -> str | None:
    return decoded if _looks_like_text(decoded) else None


def _escapes(run: str) -> str | None:
    try:
        return _text_of(codecs.decode(run, "unicode_escape"))
    except (UnicodeDecodeError, ValueError):
        return None


_DECODERS = (
    ("base64", _BASE64, _base64),
    ("hex", _HEX, _hex),
    ("percent-encoding", _PERCENT, lambda run: _text_of(urllib.parse.unquote(run))),
    ("HTML character references", _ENTITIES, lambda run: _text_of(html.unescape(run))),
    ("\\u escapes", _ESCAPES, _escapes),
)


def find_encoded(text: str) -> list[Decoded]:
    """The encoded runs of ``text`` that decode to readable text (at most 16). Never raises."""
    found: list[Decoded] = []
    for encoding, pattern, decode in _DECODERS:
        for match in pattern.finditer(text):
            decoded = decode(match.group())
            if decoded is not None:
                found.append(Decoded(encoding, match.start(), match.end(), decoded))
            if len(found) >= MAX_RUNS:
                return found
    return found
