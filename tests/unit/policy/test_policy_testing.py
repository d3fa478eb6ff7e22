"""The table-driven policy test runner behind ``bastion policy test``."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from bastion.policy import PolicyTestReport, render, run_policy_tests

Write = Callable[[str, str], Path]
EXAMPLES = Path(__file__).parents[3] / "examples" / "policies"

POLICIES = """
@id("dev-read") permit (principal in Group::"dev", action == Action::"tools/call", resource)
when { resource.risk == "read" };
@id("ops-write") @approval("review") permit (principal in Group::"ops", action, resource);
@id("cap") forbid (principal, action, resource)
when { context.arguments has limit && context.arguments.limit > 10 };
"""

CASE = """
  - name: {name}
    principal: {{type: User, id: alice, groups: [dev]}}
    action: tools/call
    resource: {{type: Tool, route: demo, name: t, annotations: {{readOnlyHint: true}}, trust_annotations: true}}
"""


def run(
    write: Write, cases: str, policies: str = POLICIES, header: str = "policies: [p.cedar]"
) -> PolicyTestReport:
    write("p.cedar", policies)
    return run_policy_tests([write("t.yaml", f"{header}\ncases:\n{cases}")])


def statuses(report: PolicyTestReport) -> list[tuple[str, str]]:
    return [(r.name, r.status) for r in report.results]


def rendered(report: PolicyTestReport) -> str:
    out = io.StringIO()
    render(report, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_the_shipped_example_passes() -> None:
    report = run_policy_tests([EXAMPLES / "demo.cases.yaml"])
    assert report.ok, rendered(report)
    assert len(report.results) >= 10


def test_pass_and_fail(write: Write) -> None:
    cases = (
        CASE.format(name="passes")
        + "    expect: allow\n    policies: [dev-read]\n    obligations: {}\n"
        + CASE.format(name="wrong effect")
        + "    expect: deny\n"
        + CASE.format(name="wrong ids")
        + "    expect: allow\n    policies: [ops-write]\n"
        + CASE.format(name="wrong obligations")
        + "    expect: allow\n    obligations: {approval: review}\n"
    )
    report = run(write, cases)
    assert statuses(report) == [
        ("passes", "PASS"),
        ("wrong effect", "FAIL"),
        ("wrong ids", "FAIL"),
        ("wrong obligations", "FAIL"),
    ]
    assert report.results[1].reason == "expected deny, got allow (permit)"
    assert "expected policies ['ops-write'], got ['dev-read']" in report.results[2].reason
    assert "expected obligations {'approval': 'review'}, got {}" in report.results[3].reason
    assert not report.ok
    text = rendered(report)
    assert "PASS  " in text
    assert "FAIL  " in text
    assert "4 cases: 1 passed, 3 failed, 0 errors" in text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("  - name: only a name\n", "'expect' must be"),
        ("  - just text\n", "a case is a mapping"),
        (CASE.format(name="no expect"), "'expect' must be allow, approval_required, deny or error"),
        (CASE.format(name="typo") + "    expected: allow\n", "unknown case key 'expected'"),
        (
            CASE.format(name="bad ctx") + "    expect: allow\n    context: [1]\n",
            "'context' must be a mapping",
        ),
        (CASE.format(name="x").replace("id: alice, ", "") + "    expect: allow\n", "string 'id'"),
        (
            CASE.format(name="x").replace("type: User", "type: Robot") + "    expect: allow\n",
            "User or ServiceAccount",
        ),
        (
            CASE.format(name="x").replace("groups: [dev]", "groups: dev") + "    expect: allow\n",
            "must be a list",
        ),
        (CASE.format(name="x").replace("route: demo, ", "") + "    expect: allow\n", "string 'route'"),
        (
            CASE.format(name="x").replace("type: Tool", "type: Widget") + "    expect: allow\n",
            "unknown resource kind",
        ),
        (
            CASE.format(name="x").replace("name: t, ", "colour: red, ") + "    expect: allow\n",
            "unknown resource key",
        ),
        (
            CASE.format(name="x") + "    expect: allow\n    context: {arguments: {limit: '99'}}\n",
            "evaluation error",
        ),
        (CASE.format(name="x") + "    expect: allow\n    context: {weather: sunny}\n", "unknown context key"),
        (
            CASE.format(name="x").replace("name: t, ", "name: t, labels: pii, ") + "    expect: allow\n",
            "'labels' must be a list of strings",
        ),
        (
            CASE.format(name="x").replace("trust_annotations: true", "trust_annotations: 'yes'")
            + "    expect: allow\n",
            "'trust_annotations' must be true or false",
        ),
        (CASE.format(name="x").replace("name: t, ", "name: t, risk: harmless, ") + "    expect: allow\n", "risk"),
    ],
)
def test_malformed_cases_are_errors_not_crashes(write: Write, case: str, reason: str) -> None:
    report = run(write, case + CASE.format(name="still runs") + "    expect: allow\n")
    assert [r.status for r in report.results] == ["ERROR", "PASS"]
    assert reason in report.results[0].reason
    assert "1 errors" in rendered(report)


def test_expect_error(write: Write) -> None:
    case = CASE.format(name="fails closed") + "    expect: error\n    context: {arguments: {limit: '99'}}\n"
    report = run(write, case)
    assert statuses(report) == [("fails closed", "PASS")]
    assert report.results[0].decision is not None
    assert report.results[0].decision.reason == "error"


def test_other_resource_kinds_and_overrides(write: Write) -> None:
    cases = """
  - name: explicit risk
    principal: {type: User, id: alice, groups: [dev]}
    action: tools/call
    resource: {type: Tool, route: demo, name: t, risk: read}
    expect: allow
  - name: service account on a prompt
    principal: {type: ServiceAccount, id: bot, groups: [ops], idp: "https://ci", auth: external_jwt}
    action: prompts/get
    resource: {type: Prompt, route: demo, name: summary, owner: me}
    expect: deny
    obligations: {approval: review}
  - name: sampling on a server, which approvals do not cover
    principal: {type: User, id: alice, groups: [ops]}
    action: sampling/createMessage
    resource: {type: Server, route: demo}
    expect: deny
"""
    assert [r.status for r in run(write, cases).results] == ["PASS", "PASS", "PASS"]


def test_a_case_names_the_principals_identity_provider_and_issuer(write: Write) -> None:
    policies = """
@id("corp") permit (principal, action, resource) when { principal.idp == "corp" };
@id("own-tokens") permit (principal, action, resource) when { principal.issuer == "https://bastion.example" };
"""
    principal = "{type: User, id: dana, %s}"
    cases = "".join(
        f"""
  - name: {name}
    principal: {principal % fields}
    action: tools/call
    resource: {{type: Tool, route: demo, name: t}}
    expect: {expect}
    policies: {policies_}
"""
        for name, fields, expect, policies_ in [
            ("corp", "idp: corp", "allow", "[corp]"),
            ("partner", "idp: partner", "deny", "[]"),
            ("issuer", "idp: partner, issuer: 'https://bastion.example'", "allow", "[own-tokens]"),
            ("idp defaults to the issuer", "issuer: corp", "allow", "[corp]"),
        ]
    )
    report = run(write, cases, policies)
    assert statuses(report) == [
        ("corp", "PASS"), ("partner", "PASS"), ("issuer", "PASS"), ("idp defaults to the issuer", "PASS")
    ], rendered(report)  # fmt: skip


def test_no_cases_is_not_ok(write: Write) -> None:
    write("p.cedar", POLICIES)
    report = run_policy_tests([write("t.yaml", "policies: [p.cedar]\ncases: []\n")])
    assert report.results == ()
    assert not report.ok
    assert "no policy test cases ran" in rendered(report)
    assert not run_policy_tests([]).ok


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("policies: [p.cedar]\ncases: [\n", "cannot read test file"),
        ("- just\n- a list\n", "a test file is a mapping"),
        ("cases: []\n", "'policies' must name"),
        ("policies: [p.cedar]\ncases: {a: 1}\n", "'cases' must be a list"),
        ("policies: [p.cedar]\nschema: [1]\ncases: []\n", "'schema' must be a path"),
        ("policies: [p.cedar]\nsetup: x\ncases: []\n", "unknown test file key 'setup'"),
        ("policies: [missing.cedar]\ncases: []\n", "policy path not found"),
        ("policies: p.cedar\nschema: missing.cedarschema\ncases: []\n", "cannot read schema"),
    ],
)
def test_bad_files_are_one_error(write: Write, text: str, reason: str) -> None:
    write("p.cedar", POLICIES)
    report = run_policy_tests([write("t.yaml", text)])
    assert [(r.name, r.status) for r in report.results] == [("(file)", "ERROR")]
    assert reason in report.results[0].reason


def test_invalid_policies_error_every_file_using_them(write: Write, tmp_path: Path) -> None:
    write("p.cedar", "permit (principal, action, resource);")
    first = write("a.yaml", "policies: [p.cedar]\ncases: []\n")
    second = write("b.yaml", "policies: [p.cedar]\ncases: []\n")
    report = run_policy_tests([first, second, tmp_path / "missing.yaml"])
    assert [r.status for r in report.results] == ["ERROR", "ERROR", "ERROR"]
    assert '@id("...")' in report.results[0].reason
    assert report.results[0].reason == report.results[1].reason


def test_render_does_not_interpret_markup(write: Write) -> None:
    report = run(write, CASE.format(name="'[bold red]x[/] [link=http://evil]'") + "    expect: allow\n")
    assert "[bold red]x[/] [link=http://evil]" in rendered(report)


def test_a_tool_is_built_as_the_route_configuration_would_build_it(write: Write) -> None:
    policies = """
@id("read") permit (principal, action, resource is Tool) when { resource.risk == "read" };
@id("no-destructive") forbid (principal, action, resource is Tool) when { resource.risk == "destructive" };
@id("no-pii") forbid (principal, action, resource is Tool) when { resource.labels.contains("pii") };
@id("owned") permit (principal, action, resource is Tool)
when { resource.owner == "ops" && resource.classification == "internal" };
"""
    case = """
  - name: {name}
    principal: {{type: User, id: alice}}
    action: tools/call
    resource: {{type: Tool, route: demo, name: t, annotations: {{readOnlyHint: true}}, {fields}}}
    expect: {expect}
    policies: [{ids}]
"""
    cases = "".join(
        case.format(name=name, fields=fields, expect=expect, ids=ids)
        for name, fields, expect, ids in [
            ("annotations not trusted", "owner: x", "deny", "no-destructive"),
            ("annotations trusted", "trust_annotations: true", "allow", "read"),
            ("configured risk wins", "trust_annotations: true, risk: destructive", "deny", "no-destructive"),
            ("labels", "risk: read, labels: [pii, billing]", "deny", "no-pii"),
            ("owner and classification", "risk: write, owner: ops, classification: internal", "allow", "owned"),
        ]
    )
    report = run(write, cases, policies)
    assert [status for _, status in statuses(report)] == ["PASS"] * 5, rendered(report)


def test_a_call_that_needs_approval_is_approval_required_until_approved(write: Write) -> None:
    ops = """
  - name: {name}
    principal: {{type: User, id: olga, groups: [ops]}}
    action: tools/call
    resource: {{type: Tool, route: demo, name: restart, risk: destructive}}
    context: {context}
    expect: {expect}
"""
    cases = "".join(
        ops.format(name=name, context=context, expect=expect)
        for name, context, expect in [
            ("needs approval", "{}", "approval_required"),
            ("allow is not enough", "{}", "allow"),
            ("approved", "{approved: true}", "allow"),
            ("approved is not approval_required", "{approved: true}", "approval_required"),
        ]
    ) + CASE.format(name="no approval needed") + "    expect: approval_required\n"
    report = run(write, cases)
    assert statuses(report) == [
        ("needs approval", "PASS"),
        ("allow is not enough", "FAIL"),
        ("approved", "PASS"),
        ("approved is not approval_required", "FAIL"),
        ("no approval needed", "FAIL"),
    ]
    assert report.results[1].reason == "expected allow, got approval_required (permit)"
