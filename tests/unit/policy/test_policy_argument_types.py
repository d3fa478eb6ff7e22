"""Inference of the ``context.arguments`` record type each policy assumes."""

from __future__ import annotations

import cedarpy
import pytest

from bastion.policy.argument_types import (
    RecordType,
    SetType,
    infer_arguments_type,
    render_cedar_type,
)


def inferred(condition: str) -> str:
    text = f'@id("p") permit (principal, action, resource) when {{ {condition} }};'
    (template,) = cedarpy.PolicySet.from_str(text).to_pst().static_policies.values()
    return render_cedar_type(infer_arguments_type(template))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("true", "{}"),
        ('principal.email == "x"', "{}"),
        ("context.arguments has env", '{"env"?: String}'),
        ('context.arguments.env == "dev"', '{"env"?: String}'),
        ("context.arguments.n == 3", '{"n"?: Long}'),
        ("-3 == context.arguments.n", '{"n"?: Long}'),
        ("context.arguments.n < 3", '{"n"?: Long}'),
        ("context.arguments.n + 1 == 2", '{"n"?: Long}'),
        ("context.arguments.flag", '{"flag"?: Bool}'),
        ("!context.arguments.flag", '{"flag"?: Bool}'),
        ("context.arguments.flag == true", '{"flag"?: Bool}'),
        ('context.arguments.path like "/tmp/*"', '{"path"?: String}'),
        ('context.arguments.tags.contains("x")', '{"tags"?: Set<String>}'),
        ('["a", "b"].contains(context.arguments.k)', '{"k"?: String}'),
        ("context.arguments.tags.containsAny([1, 2])", '{"tags"?: Set<Long>}'),
        ("context.arguments.tags.isEmpty()", '{"tags"?: Set<String>}'),
        ('context.arguments.amount.lessThan(decimal("1.5"))', '{"amount"?: decimal}'),
        ('context.arguments.c == Null::"null"', '{"c"?: Null}'),
        ("context.arguments.c is Null", '{"c"?: Null}'),
        ('context.arguments.a.b == "x"', '{"a"?: {"b"?: String}}'),
        ("context.arguments has a.b.c", '{"a"?: {"b"?: {"c"?: String}}}'),
        ('context.arguments.r == {"x": 1}', '{"r"?: {"x": Long}}'),
        ('context.arguments["we\\"ird\\nkey"] == "x"', '{"we\\"ird\\nkey"?: String}'),
        ('if context.arguments.f then context.arguments.g == "x" else false', '{"f"?: Bool, "g"?: String}'),
        ('context.arguments.ip.isInRange(ip("10.0.0.0/8"))', '{"ip"?: ipaddr}'),
        ("context.arguments.a == context.arguments.b", '{"a"?: String, "b"?: String}'),
        ('context.arguments.u in Group::"g"', '{"u"?: Group}'),
        ('context.arguments.ts.offset(duration("1h")) > datetime("2024-01-01")', '{"ts"?: datetime}'),
        ("context.arguments.d.toSeconds() > 3", '{"d"?: duration}'),
        ("resource.hasTag(context.arguments.k)", '{"k"?: String}'),
        ("[context.arguments.s] == [1]", '{"s"?: Long}'),
        ('{"k": context.arguments.v} == {"k": true}', '{"v"?: Bool}'),
    ],
)
def test_inferred_types(condition: str, expected: str) -> None:
    assert inferred(condition) == expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            'context.arguments.n == 1 && context.arguments.n == "x"',
            "context.arguments.n is used both as Long and as String",
        ),
        ('context.arguments.a == "x" && context.arguments.a.b == "y"', "context.arguments.a is used both as"),
        ('context.arguments == "x"', "context.arguments is used both as {} and as String"),
        ('context.arguments["a b"] == 1 && context.arguments["a b"] like "x"', 'context.arguments["a b"]'),
    ],
)
def test_conflicts_raise_value_error(condition: str, message: str) -> None:
    with pytest.raises(ValueError, match="used both as") as info:
        inferred(condition)
    assert message in str(info.value)


def test_render() -> None:
    assert render_cedar_type(None) == "String"
    assert render_cedar_type(SetType(None)) == "Set<String>"
    record = RecordType((("a", "Long", True), ("\t\x01", SetType("Bool"), False)))
    assert render_cedar_type(record) == '{"a": Long, "\\t\\u{1}"?: Set<Bool>}'
