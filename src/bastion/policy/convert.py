"""Convert an MCP call's arguments (JSON values) to Cedar values, in Cedar's JSON form.

Cedar values (Cedar docs, "JSON format for entities and context") are String, Long (signed
64-bit), Bool, Set, Record, entity references and extension values such as ``decimal``.
JSON has values Cedar cannot hold directly (null, floats, big integers), and Cedar's JSON
form reads a single-key object named ``__entity``, ``__extn`` or ``__expr`` as an escape,
so a client could otherwise smuggle an entity reference or extension value into
``context.arguments``. The rule, applied recursively; nothing is ever dropped:

==========================================  ==============================================
JSON value                                  Cedar value
==========================================  ==============================================
``true`` / ``false``                        Bool
integer in [-2**63, 2**63 - 1]              Long
integer outside that range                  String of its decimal digits
float with an integral value inside i64     Long (``2.0`` is ``2``: JSON has one number)
other float whose shortest text has at      ``decimal`` extension value (``1.5``,
most 4 fractional digits, inside Cedar's    ``-0.0001``); compare with
decimal range (+-922337203685477.5807)      ``.lessThan(decimal("2.0"))`` etc.
any other float (``0.12345``, ``1e300``,    String of its JSON text (Python ``repr``:
NaN, Infinity)                              ``"0.12345"``, ``"1e+300"``, ``"nan"``)
string                                      String
null                                        the entity ``Null::"null"``; test it with
                                            ``context.arguments.x == Null::"null"``
                                            (``is Null`` is an evaluation error, so a
                                            deny, when x holds a non-entity). No other
                                            argument value is ever an entity.
array                                       Set (Cedar sets: order and duplicates go)
object                                      Record, keys verbatim
object with a key ``__entity``, ``__extn``  String of its canonical JSON text; at the top
or ``__expr``                               level of the arguments: ``ValueError``
array or object nested deeper than          String of its canonical JSON text
``MAX_DEPTH`` (top-level values: depth 1)
==========================================  ==============================================

Keys are kept verbatim, whether or not they are Cedar identifiers: any string is a valid
record key in Cedar's JSON form. Policies reach other keys with the string form,
``context.arguments has "dry-run" && context.arguments["dry-run"] == true``.

Only what policies read is converted: given the ``ArgumentPaths`` the loaded policies read
(``bastion.policy.loader``), ``to_cedar_arguments`` converts just those members, so the cost
of a decision does not grow with arguments no policy looks at (an attribute no policy names
cannot change a decision). Every rule above still applies along the kept paths.

Canonical JSON text is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``. Values that JSON cannot produce (bytes, sets, objects, non-string
keys) raise ``TypeError``; the policy engine turns any such error into a deny.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

__all__ = ["MAX_DEPTH", "NULL_ENTITY", "RESERVED_KEYS", "ArgumentPaths", "to_cedar_arguments", "to_cedar_value"]

ArgumentPaths: TypeAlias = "Mapping[str, ArgumentPaths | None]"
"""The paths below ``context.arguments`` that policies read: each attribute maps to the paths read
below it, or to None when its whole value is read."""

MAX_DEPTH = 8
"""Containers nested deeper than this below ``context.arguments`` become JSON text."""

NULL_ENTITY: dict[str, str] = {"type": "Null", "id": "null"}
"""The entity uid a JSON ``null`` becomes (see the module docstring)."""

RESERVED_KEYS = frozenset({"__entity", "__extn", "__expr"})
"""Object keys that Cedar's JSON value form reads as escapes."""

_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1
_DECIMAL_LIMIT = Decimal("922337203685477.5807")


def to_cedar_arguments(arguments: Mapping[str, Any], paths: ArgumentPaths | None = None) -> dict[str, Any]:
    """Convert a ``tools/call`` ``arguments`` object to the Cedar record ``context.arguments``.

    Returns a dict in Cedar's JSON value form (see the module docstring for every rule), with
    only the members on ``paths`` (None: all). Raises ``ValueError`` when a top-level key is
    one of ``RESERVED_KEYS`` (the record would otherwise be read as a Cedar escape) and
    ``TypeError`` for values JSON cannot produce (on the kept paths).
    """
    reserved = RESERVED_KEYS.intersection(arguments)
    if reserved:
        raise ValueError(f"argument name {sorted(reserved)[0]!r} is reserved by Cedar's JSON format")
    if paths is None:
        return {_key(key): to_cedar_value(value, depth=1) for key, value in arguments.items()}
    return _kept(arguments, paths, 1)


def _kept(record: Mapping[str, Any], paths: ArgumentPaths, depth: int) -> dict[str, Any]:
    """The members of ``record`` (found at ``depth``) on ``paths``, each converted. Walks the smaller
    of the two (a call has a few arguments; a large policy set may read hundreds of paths)."""
    kept: dict[str, Any] = {}
    if len(record) < len(paths):
        pairs = [(key, paths[key], record[key]) for key in record if key in paths]
    else:
        pairs = [(key, below, record[key]) for key, below in paths.items() if key in record]
    for key, below, value in pairs:
        if below is None or not isinstance(value, Mapping):
            kept[key] = to_cedar_value(value, depth=depth)
        elif depth > MAX_DEPTH or RESERVED_KEYS.intersection(value):
            kept[key] = canonical_json(value)  # what to_cedar_value makes of it: no member is reachable
        else:
            kept[key] = _kept(value, below, depth + 1)
    return kept


def to_cedar_value(value: Any, *, depth: int = 1) -> Any:
    """Convert one JSON value found at nesting ``depth`` to Cedar's JSON value form.

    ``depth`` is 1 for a top-level argument value; see the module docstring for the rules.
    Raises ``TypeError`` for a value that is not a JSON value.
    """
    if value is None:
        return {"__entity": dict(NULL_ENTITY)}
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _LONG_MIN <= value <= _LONG_MAX else str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, list | tuple):
        if depth > MAX_DEPTH:
            return canonical_json(value)
        return [to_cedar_value(item, depth=depth + 1) for item in value]
    if isinstance(value, Mapping):
        if depth > MAX_DEPTH or RESERVED_KEYS.intersection(value):
            return canonical_json(value)
        return {_key(key): to_cedar_value(item, depth=depth + 1) for key, item in value.items()}
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (sorted keys, no spaces, UTF-8 kept).

    Raises ``TypeError`` when ``value`` holds something JSON cannot encode.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"object keys must be strings, not {type(key).__name__}")
    return key


def _float(value: float) -> Any:
    """Long for integral floats in range, else ``decimal`` when exact, else the JSON text."""
    text = repr(value)
    if not math.isfinite(value):
        return text
    if value.is_integer() and _LONG_MIN <= value <= _LONG_MAX:
        return int(value)
    try:
        exact = Decimal(text)
    except InvalidOperation:  # pragma: no cover - repr of a finite float always parses
        return text
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -4 and abs(exact) <= _DECIMAL_LIMIT:
        return {"__extn": {"fn": "decimal", "arg": format(exact, "f")}}
    return text
