"""PolicyEngine.load: files, @id rules, Cedar parse and validation errors as ConfigError."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from policy_helpers import tool, user

from bastion.errors import ConfigError
from bastion.policy import PolicyEngine
from bastion.policy.loader import builtin_schema_text

Write = Callable[[str, str], Path]
OK = '@id("ok") permit (principal, action, resource);\n'


def load_error(paths: list[Path], schema: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        PolicyEngine.load(paths, schema)
    return info.value.message


def test_directory_loads_every_cedar_file_in_order(write: Write) -> None:
    write("dir/b.cedar", '@id("b") permit (principal, action, resource);')
    write("dir/a.cedar", '@id("a") forbid (principal, action, resource);')
    write("dir/notes.txt", "not cedar")
    write("dir/sub/c.cedar", "ignored: not a direct child")
    engine = PolicyEngine.load(
        [write("dir/a.cedar", '@id("a") forbid (principal, action, resource);').parent]
    )
    assert engine.policy_ids == ("a", "b")


def test_same_file_twice_is_loaded_once(write: Write) -> None:
    path = write("p.cedar", OK)
    assert PolicyEngine.load([path, path.parent / "." / "p.cedar"]).policy_ids == ("ok",)


def test_missing_path_and_empty_directory(write: Write, tmp_path: Path) -> None:
    assert "policy path not found" in load_error([tmp_path / "nope.cedar"])
    (tmp_path / "empty").mkdir()
    assert "no .cedar policy files" in load_error([tmp_path / "empty"])


def test_parse_error_names_the_file_with_cedar_text(write: Write) -> None:
    path = write("bad.cedar", '@id("x") permit (principal, action, resource) when { x };')
    message = load_error([write("good.cedar", OK), path])
    assert str(path) in message
    assert "invalid variable: x" in message


def test_missing_id_names_the_file(write: Write) -> None:
    path = write("noid.cedar", OK + 'permit (principal in Group::"dev", action, resource);')
    message = load_error([path])
    assert str(path) in message
    assert '@id("...")' in message
    assert 'Group::"dev"' in message


def test_empty_id_is_missing(write: Write) -> None:
    assert "non-empty @id" in load_error(
        [write("p.cedar", '@id("  ") permit (principal, action, resource);')]
    )


def test_duplicate_id_across_files(write: Write) -> None:
    first, second = write("a.cedar", OK), write("b.cedar", OK.replace("permit", "forbid"))
    message = load_error([first, second])
    assert "duplicate policy @id('ok')" in message
    assert str(first) in message
    assert str(second) in message


def test_duplicate_id_annotation_in_one_policy_is_a_parse_error(write: Write) -> None:
    message = load_error([write("p.cedar", '@id("a") @id("b") permit (principal, action, resource);')])
    assert "duplicate annotation" in message


def test_templates_are_refused(write: Write) -> None:
    message = load_error([write("t.cedar", '@id("t") permit (principal == ?principal, action, resource);')])
    assert "templates" in message


def test_schema_invalid_policy_has_cedar_message_file_and_id(write: Write) -> None:
    path = write(
        "p.cedar",
        OK + '@id("typo") permit (principal, action, resource is Tool) when { resource.riks == "read" };',
    )
    message = load_error([path])
    assert str(path) in message
    assert "@id('typo')" in message
    assert "attribute `riks` on entity type `Tool` not found" in message
    assert "`typo`" in message  # Cedar's positional id replaced by the @id


def test_unknown_action_and_entity_type_fail_validation(write: Write) -> None:
    assert "Action::'tools/list'" in load_error(
        [write("a.cedar", '@id("a") permit (principal, action == Action::"tools/list", resource);')]
    )
    message = load_error([write("b.cedar", '@id("b") permit (principal == Robot::"x", action, resource);')])
    assert "Robot" in message


DOCUMENTED = (
    '@id("logs") permit(principal in Group::"dev", action == Action::"tools/call", '
    'resource == Tool::"demo/read_logs") '
    'when { context.arguments has env && context.arguments.env == "dev" };'
)


def test_documented_argument_policy_loads_and_works(write: Write) -> None:
    engine = PolicyEngine.load([write("p.cedar", DOCUMENTED)])
    assert engine.decide(user("dev"), "tools/call", tool("read_logs"), {"arguments": {"env": "dev"}}).allowed


def permit_when(policy_id: str, condition: str) -> str:
    return f'@id("{policy_id}") permit (principal, action, resource) when {{ {condition} }};\n'


def test_unguarded_argument_access_is_refused(write: Write) -> None:
    message = load_error([write("p.cedar", permit_when("u", 'context.arguments.env == "dev"'))])
    assert "unable to guarantee safety of access to optional attribute `arguments.env`" in message
    assert 'context.arguments was typed {"env"?: String}' in message


def test_typo_after_an_argument_guard_is_still_caught(write: Write) -> None:
    """An empty ``Arguments`` record would type the guard false and skip the rest; ours does not."""
    text = permit_when("t", 'context.arguments has env && principal.emial == "x"')
    assert "emial" in load_error([write("p.cedar", text)])


def test_conflicting_argument_types_in_one_policy(write: Write) -> None:
    text = permit_when(
        "c", 'context.arguments has n && context.arguments.n == 1 && context.arguments.n == "one"'
    )
    message = load_error([path := write("p.cedar", text)])
    assert str(path) in message
    assert "context.arguments.n is used both as Long and as String" in message


def test_policies_may_type_one_argument_differently(write: Write) -> None:
    """Both load; at run time the wrongly typed ``>`` is an evaluation error, so a deny."""
    engine = PolicyEngine.load(
        [
            write(
                "p.cedar",
                permit_when("n", "context.arguments has n && context.arguments.n > 3")
                + permit_when("s", 'context.arguments has n && context.arguments.n == "x"'),
            )
        ]
    )
    assert engine.decide(user(), "tools/call", tool("t"), {"arguments": {"n": 5}}).policy_ids == ("n",)
    decision = engine.decide(user(), "tools/call", tool("t"), {"arguments": {"n": "x"}})
    assert (decision.effect, decision.reason, decision.policy_ids) == ("deny", "error", ("n",))


def test_action_groups_from_a_custom_schema_are_refused(write: Write) -> None:
    schema = write("s.cedarschema", builtin_schema_text() + 'action "writes";\n')
    message = load_error(
        [write("p.cedar", '@id("g") forbid (principal, action in Action::"writes", resource);')], schema
    )
    assert "action groups are not supported" in message


def test_custom_schema(write: Write) -> None:
    schema = write(
        "s.cedarschema",
        builtin_schema_text().replace("idp: String,", "idp: String,\n  department?: String,", 1),
    )
    guarded = 'principal is User && principal has department && principal.department like "eng*"'
    assert PolicyEngine.load([write("p.cedar", permit_when("d", guarded))], schema).policy_ids == ("d",)
    unknown = 'principal is User && principal.department like "eng*"'
    assert "department" in load_error([write("q.cedar", permit_when("d", unknown))])


@pytest.mark.parametrize(
    ("schema_text", "expected"),
    [
        ("entity User = {", "invalid Cedar schema"),
        (builtin_schema_text() + "type Arguments = {};", "invalid Cedar schema"),
    ],
)
def test_invalid_schema(write: Write, schema_text: str, expected: str) -> None:
    schema = write("s.cedarschema", schema_text)
    message = load_error([write("p.cedar", OK)], schema)
    assert expected in message
    assert str(schema) in message


def test_unreadable_schema(write: Write, tmp_path: Path) -> None:
    assert "cannot read schema" in load_error([write("p.cedar", OK)], tmp_path / "missing.cedarschema")
