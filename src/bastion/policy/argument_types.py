"""Infer, per policy, the Cedar record type of ``context.arguments`` that it assumes.

Why: tool arguments are unknown when policies load, Cedar 4 schemas have no open records
(``additionalAttributes`` is rejected as unsupported) and a closed empty record would let
``context.arguments has env && ...`` validate while the validator skips type-checking
everything after the ``has`` (it types the guard as ``false``), hiding typos such as
``principal.emial``. So the built-in schema leaves the common type ``Arguments`` undeclared
and the engine declares it for each policy from how that policy uses its arguments:

* every attribute the policy names under ``context.arguments`` becomes an OPTIONAL
  attribute, so Cedar's validator rejects any access not guarded by ``has``;
* its type comes from the operation applied to it: compared with a literal -> that
  literal's type; ``<``, ``+`` -> Long; ``like`` -> String; ``&&``/``!``/``if`` -> Bool;
  ``.contains(x)`` -> Set of x's type; ``.lessThan(decimal(..))`` -> decimal;
  ``is Null`` -> Null; further ``.attr`` / ``has a.b`` -> Record; otherwise String;
* the rest of the policy is validated strictly against the schema as usual.

Two uses of one attribute with different types in one policy raise ``ValueError`` (the
engine reports it as a ``ConfigError``). Different policies may type the same argument
differently; at run time a value of another type makes ``==`` false and any other
operation an evaluation error, which the engine turns into a deny.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

from cedarpy import pst

__all__ = ["ArgType", "RecordType", "SetType", "infer_arguments_type", "render_cedar_type"]


@dataclass(frozen=True, slots=True)
class SetType:
    """``Set<element>``; ``element`` None when unconstrained."""

    element: ArgType


@dataclass(frozen=True, slots=True)
class RecordType:
    """A record; each field maps to (type, required)."""

    fields: tuple[tuple[str, ArgType, bool], ...] = ()


ArgType: TypeAlias = "str | SetType | RecordType | None"
"""A primitive, extension or entity type name, a Set, a Record, or None (unconstrained)."""

_BOOL_OPS = {"and", "or"}
_ORDER_OPS = {"less", "less_eq", "greater", "greater_eq"}
_UNARY_ARG = {
    "not": "Bool",
    "neg": "Long",
    "decimal": "String",
    "ip": "String",
    "datetime": "String",
    "duration": "String",
    "is_ipv4": "ipaddr",
    "is_ipv6": "ipaddr",
    "is_loopback": "ipaddr",
    "is_multicast": "ipaddr",
    "to_date": "datetime",
    "to_time": "datetime",
    "to_milliseconds": "duration",
    "to_seconds": "duration",
    "to_minutes": "duration",
    "to_hours": "duration",
    "to_days": "duration",
}
_UNARY_RESULT = {
    "neg": "Long",
    "decimal": "decimal",
    "ip": "ipaddr",
    "datetime": "datetime",
    "duration": "duration",
    "to_date": "datetime",
    "to_time": "duration",
    "to_milliseconds": "Long",
    "to_seconds": "Long",
    "to_minutes": "Long",
    "to_hours": "Long",
    "to_days": "Long",
}
_BINARY_ARGS = {
    "add": ("Long", "Long"),
    "sub": ("Long", "Long"),
    "mul": ("Long", "Long"),
    "is_in_range": ("ipaddr", "ipaddr"),
    "offset": ("datetime", "duration"),
    "duration_since": ("datetime", "datetime"),
    "get_tag": (None, "String"),
    "has_tag": (None, "String"),
}
_BINARY_RESULT = {
    "add": "Long",
    "sub": "Long",
    "mul": "Long",
    "offset": "datetime",
    "duration_since": "duration",
}
_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*\Z")


def infer_arguments_type(policy: pst.Template) -> RecordType:
    """Return the record type of ``context.arguments`` that ``policy`` (a PST node) assumes.

    Raises ``ValueError`` naming the attribute when two uses disagree on its type.
    """
    hints: list[tuple[tuple[str, ...], ArgType]] = []
    for clause in policy.clauses:
        _walk(clause.expr, "Bool", hints)
    root: ArgType = RecordType()
    for path, hint in hints:
        for attr in reversed(path):
            hint = RecordType(((attr, hint, False),))
        root = _merge(root, hint, ())
    if not isinstance(root, RecordType):
        raise ValueError(f"context.arguments is a record, not {render_cedar_type(root)}")
    return root


def render_cedar_type(arg_type: ArgType) -> str:
    """Render a type in Cedar schema syntax; unconstrained types render as ``String``."""
    if arg_type is None:
        return "String"
    if isinstance(arg_type, str):
        return arg_type
    if isinstance(arg_type, SetType):
        return f"Set<{render_cedar_type(arg_type.element)}>"
    parts = [
        f"{_quote(name)}{'' if required else '?'}: {render_cedar_type(field)}"
        for name, field, required in arg_type.fields
    ]
    return "{" + ", ".join(parts) + "}"


def _arg_path(expr: Any) -> tuple[str, ...] | None:
    """The attribute path below ``context.arguments`` that ``expr`` reads, else None."""
    attrs: list[str] = []
    while isinstance(expr, pst.GetAttr):
        attrs.append(expr.attr)
        expr = expr.base
    if isinstance(expr, pst.Var) and expr.name == "context" and attrs and attrs[-1] == "arguments":
        return tuple(reversed(attrs[:-1]))
    return None


def _walk(expr: Any, expected: ArgType, hints: list[tuple[tuple[str, ...], ArgType]]) -> None:
    """Record in ``hints`` the type each argument path must have for ``expr`` to type-check."""
    path = _arg_path(expr)
    if path is not None:
        hints.append((path, expected))
        return
    if isinstance(expr, pst.GetAttr):
        _walk(expr.base, RecordType(((expr.attr, expected, False),)), hints)
    elif isinstance(expr, pst.HasAttr):
        needed: ArgType = None
        for attr in reversed(expr.attrs):
            needed = RecordType(((attr, needed, False),))
        _walk(expr.base, needed, hints)
    elif isinstance(expr, pst.UnaryOp):
        _walk(expr.arg, SetType(None) if expr.op == "is_empty" else _UNARY_ARG.get(expr.op), hints)
    elif isinstance(expr, pst.BinaryOp):
        left, right = _binary_operand_types(expr)
        _walk(expr.left, left, hints)
        _walk(expr.right, right, hints)
    elif isinstance(expr, pst.Like):
        _walk(expr.base, "String", hints)
    elif isinstance(expr, pst.Is):
        _walk(expr.base, str(expr.entity_type), hints)
        if expr.in_expr is not None:
            _walk(expr.in_expr, None, hints)
    elif isinstance(expr, pst.IfThenElse):
        _walk(expr.cond, "Bool", hints)
        _walk(expr.then_expr, expected, hints)
        _walk(expr.else_expr, expected, hints)
    elif isinstance(expr, pst.Set):
        element = expected.element if isinstance(expected, SetType) else None
        for item in expr.elements:
            _walk(item, element, hints)
    elif isinstance(expr, pst.Record):
        known = {name: t for name, t, _ in expected.fields} if isinstance(expected, RecordType) else {}
        for name, item in expr.fields.items():
            _walk(item, known.get(name), hints)


def _binary_operand_types(expr: pst.BinaryOp) -> tuple[ArgType, ArgType]:
    op, left, right = expr.op, _literal_type(expr.left), _literal_type(expr.right)
    if op in _BOOL_OPS:
        return "Bool", "Bool"
    same = _unify(left, right)
    if op in {"eq", "not_eq", "contains_all", "contains_any"}:
        return same, same
    if op in _ORDER_OPS:
        return (same, same) if same in {"datetime", "duration"} else ("Long", "Long")
    if op.startswith("decimal_"):
        return "decimal", "decimal"
    if op == "contains":
        return SetType(right), left.element if isinstance(left, SetType) else None
    if op == "in":
        return (right.element if isinstance(right, SetType) else right), None
    return _BINARY_ARGS.get(op, (None, None))


def _unify(a: ArgType, b: ArgType) -> ArgType:
    """Both sides' evident types combined; on a conflict the left one (Cedar will object)."""
    try:
        return _merge(a, b, ())
    except ValueError:
        return a


def _literal_type(expr: Any) -> ArgType:
    """The type of ``expr`` when it is evident without a schema (literals, operators)."""
    if isinstance(expr, pst.StringLit):
        return "String"
    if isinstance(expr, pst.LongLit):
        return "Long"
    if isinstance(expr, pst.BoolLit | pst.Like | pst.Is | pst.HasAttr):
        return "Bool"
    if isinstance(expr, pst.EntityLit):
        return str(expr.value.type)
    if isinstance(expr, pst.UnaryOp):
        return _UNARY_RESULT.get(expr.op, "Bool")
    if isinstance(expr, pst.BinaryOp):
        return None if expr.op == "get_tag" else _BINARY_RESULT.get(expr.op, "Bool")
    if isinstance(expr, pst.Set):
        element: ArgType = None
        for item in expr.elements:
            element = _unify(element, _literal_type(item))
        return SetType(element)
    if isinstance(expr, pst.Record):
        return RecordType(tuple((name, _literal_type(item), True) for name, item in expr.fields.items()))
    return None


def _merge(a: ArgType, b: ArgType, path: tuple[str, ...]) -> ArgType:
    """Unify two uses of the value at ``path``; raise ``ValueError`` when they conflict."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if isinstance(a, SetType) and isinstance(b, SetType):
        return SetType(_merge(a.element, b.element, path))
    if isinstance(a, RecordType) and isinstance(b, RecordType):
        merged = {name: (t, required) for name, t, required in a.fields}
        for name, t, required in b.fields:
            if name in merged:
                old, old_required = merged[name]
                merged[name] = (_merge(old, t, (*path, name)), old_required and required)
            else:
                merged[name] = (t, required)
        return RecordType(tuple((name, t, required) for name, (t, required) in merged.items()))
    raise ValueError(f"{_display(path)} is used both as {render_cedar_type(a)} and as {render_cedar_type(b)}")


def _display(path: tuple[str, ...]) -> str:
    text = "context.arguments"
    for attr in path:
        text += f".{attr}" if _IDENT.match(attr) else f"[{_quote(attr)}]"
    return text


def _quote(text: str) -> str:
    """A Cedar string literal (escapes per the Cedar grammar: \\n \\r \\t \\\\ \\" \\u{..})."""
    out = []
    for char in text:
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
