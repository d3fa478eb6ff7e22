"""Canonical JSON for hashing: RFC 8785 (JSON Canonicalization Scheme, JCS).

``canonical(value)`` returns the bytes that are hashed for the audit chain and for
``arguments_sha256`` (which approvals bind to as well). For every value that JCS
accepts, the output is byte-for-byte the JCS output: object members sorted by their
UTF-16 code units, no whitespace, strings escaped as in RFC 8785 section 3.2.2.2,
numbers in the ECMAScript ``Number.prototype.toString`` form (``1.0`` -> ``1``,
``1e-7`` -> ``1e-7``, ``1e21`` -> ``1e+21``), UTF-8. The tests check this against the
reference package ``rfc8785`` (a test-only dependency).

Why not call ``rfc8785.dumps`` directly: it is about five times slower on the hot path
(it walks every value in Python; here values without floats and with ASCII keys go
through the C ``json`` encoder, which yields the same bytes), and it rejects inputs
that a client can legitimately send and that must still be audited, since a record
that cannot be written refuses the call with a misleading "audit unavailable". So
this function is total on what ``json.loads`` produces, extending JCS where JCS
has no answer:

- integers beyond +-(2**53 - 1) are written as their exact decimal digits (JCS
  rejects them; writing them as doubles would make two ids hash alike);
- NaN and +-Infinity are written ``NaN``, ``Infinity``, ``-Infinity`` as Python's
  ``json`` does (not valid JSON; ``json.loads`` reads them back);
- lone surrogates in strings are written as ``\\udXXX`` escapes.

Each extension maps distinct values to distinct bytes and reads back to the same
value, so a stored record re-hashes identically. Anything that is not a JSON value
(bytes, sets, objects, non-string keys) raises ``NotCanonicalizable``.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import orjson

__all__ = ["NotCanonicalizable", "arguments_sha256", "canonical"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=True)
_encode_str = json.JSONEncoder(ensure_ascii=False).encode


class NotCanonicalizable(TypeError):
    """The value holds something that is not a JSON value (e.g. bytes, a set, an int key)."""


def canonical(value: Any) -> bytes:
    """Return the canonical UTF-8 bytes of a JSON value (RFC 8785 plus the extensions above).

    ``value`` is built from ``dict`` (string keys), ``list``/``tuple``, ``str``, ``int``,
    ``float``, ``bool`` and ``None``. Raises ``NotCanonicalizable`` for anything else.
    """
    if _plain(value):
        try:
            # For plain values orjson's sorted output is byte-for-byte the C encoder's (a test pins
            # this) at a seventh of the cost; it refuses what it cannot write exactly (integers past
            # 64 bits, lone surrogates), which then takes the C encoder.
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            return _ENCODER.encode(value).encode("utf-8", "backslashreplace")
    return "".join(_write(value, [])).encode("utf-8", "backslashreplace")


def arguments_sha256(arguments: Any) -> str:
    """Lower-case hex SHA-256 of ``canonical(arguments)``: the UNREDACTED tool arguments.

    Key order and insignificant whitespace do not change the digest. A call without
    arguments should pass ``{}`` (``None`` hashes ``null``, a different digest).
    """
    return hashlib.sha256(canonical(arguments)).hexdigest()


def _plain(value: Any) -> bool:
    """True when the C encoder's output is already canonical: ASCII string keys, and floats
    only where Python's ``repr`` and ECMAScript's ``Number::toString`` agree.

    Both print the shortest round-tripping digits; they differ only in when they switch to
    exponent notation (Python below 1e-4 and from 1e16, ECMAScript below 1e-6 and from
    1e21) and in integral values (``1.0`` against ``1``). So a non-integral float with
    1e-4 <= |x| < 1e16 (e.g. a duration in milliseconds) is written alike by both.
    Exact type checks (subclasses take the general path) and plain loops: this runs on
    every record, and generator expressions cost twice as much here.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    if kind is dict:
        for key, item in value.items():  # noqa: SIM110 - a loop is faster than all() here
            if type(key) is not str or not key.isascii() or not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(map(_plain, value))
    return False


def _write(value: Any, out: list[str]) -> list[str]:
    """Append the canonical text of ``value`` to ``out`` (the general, slower path)."""
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None or isinstance(value, bool):
        out.append("null" if value is None else "true" if value else "false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise NotCanonicalizable("object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise NotCanonicalizable(f"{type(value).__name__} is not a JSON value")
    return out


def _number(f: float) -> str:
    """ECMAScript ``Number::toString`` of a double (RFC 8785 section 3.2.2.3)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "0"
    if f < 0:
        return "-" + _number(-f)
    mantissa, _, exp = repr(f).partition("e")  # repr is the shortest round-trip form
    whole, _, frac = mantissa.partition(".")
    raw = whole + frac
    stripped = raw.lstrip("0")
    n = len(whole) + int(exp or "0") - (len(raw) - len(stripped))  # value = 0.DIGITS x 10**n
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{'+' if e > 0 else '-'}{abs(e)}"
