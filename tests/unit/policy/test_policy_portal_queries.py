"""The portal's questions to the engine: ``approval_need_for`` (does this person's call need an
approval?) and ``may_search_audit`` (may this person search everyone's audit records?)."""

from __future__ import annotations

import json
from collections.abc import Callable

import cedarpy
import pytest
from policy_helpers import tool, user

from bastion.errors import ConfigError
from bastion.policy import PolicyEngine
from bastion.policy.engine import admin_context
from bastion.policy.loader import builtin_schema_text
from bastion.policy.model import ADMIN_ACTIONS, POLICY_ACTIONS, principal_entity

READ = {"readOnlyHint": True}
DESTRUCTIVE = {"destructiveHint": True}

AUDITORS = """
@id("auditors")
permit (principal in Group::"audit", action == Action::"audit/search", resource == AuditLog::"bastion");

@id("everyone-reads")
permit (principal, action == Action::"tools/call", resource is Tool) when { resource.risk == "read" };
"""


# approval_need_for
@pytest.mark.parametrize(
    ("groups", "annotations", "expected"),
    [
        (("ops",), DESTRUCTIVE, "always"),  # only ops-all-tools, which asks for review
        (("dev",), READ, "no"),  # only dev-read-tools, which does not
        (("dev", "ops"), READ, "some"),  # both permits may allow the call
        (("dev",), DESTRUCTIVE, "no"),  # no permit for dev: nothing to approve
        (("ops", "contractors"), DESTRUCTIVE, "no"),  # a forbid applies whatever the arguments
        ((), READ, "no"),  # nobody
    ],
)
def test_approval_need_for_judges_the_person(
    engine: PolicyEngine, groups: tuple[str, ...], annotations: dict[str, bool], expected: str
) -> None:
    assert engine.approval_need_for(user(*groups), tool("t", **annotations), {}) == expected


def test_approval_need_for_sees_only_this_persons_permits(engine: PolicyEngine) -> None:
    reader = tool("lookup", **READ)
    # Whoever asks, some permit that may allow a call asks for review and another does not...
    assert engine.approval_need(reader) == "some"
    # ...but a dev is only ever allowed by the one that does not, an ops person only by the one that does.
    assert engine.approval_need_for(user("dev"), reader, {}) == "no"
    assert engine.approval_need_for(user("ops"), reader, {}) == "always"


def test_approval_need_for_leaves_only_the_arguments_unknown(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("prod-needs-review") @approval("review")
        permit (principal in Group::"dev", action == Action::"tools/call", resource)
        when { context.arguments has env && context.arguments.env == "prod" };

        @id("staging-free")
        permit (principal in Group::"dev", action == Action::"tools/call", resource)
        when { context.arguments has env && context.arguments.env == "staging" };

        @id("night-review") @approval("review")
        permit (principal in Group::"night", action == Action::"tools/call", resource)
        when { context.time > 2000000000 };
        """
    )
    deploy = tool("deploy", **DESTRUCTIVE)
    # the arguments decide which permit applies: some calls need review, some do not
    assert engine.approval_need_for(user("dev"), deploy, {"arguments": {"env": "staging"}}) == "some"
    # the time is known: the night permit applies after 2033 only
    assert engine.approval_need_for(user("night"), deploy, {"time": 2_000_000_001}) == "always"
    assert engine.approval_need_for(user("night"), deploy, {"time": 1_000}) == "no"


def test_approval_need_for_fails_to_no(engine: PolicyEngine) -> None:
    assert engine.approval_need_for(user("ops"), tool("t"), {"unknown_key": 1}) == "no"
    assert engine.approval_need_for(user("ops"), tool("t"), {"time": "noon"}) == "no"
    assert engine.approval_need_for(user("ops"), tool("t"), {}, "no/such-action") == "no"


# may_search_audit
def test_audit_search_is_an_admin_action_policies_may_name() -> None:
    assert "audit/search" in ADMIN_ACTIONS
    assert "audit/search" in POLICY_ACTIONS


def test_may_search_audit_follows_policy(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(AUDITORS)
    assert engine.may_search_audit(user("audit"), now=1_000) is True
    assert engine.may_search_audit(user("dev"), now=1_000) is False
    assert engine.may_search_audit(user(), now=1_000) is False


def test_may_search_audit_denies_by_default(engine: PolicyEngine) -> None:
    # ops may call every tool on demo, which says nothing about the audit log
    assert engine.may_search_audit(user("ops"), now=1_000) is False


def test_a_forbid_beats_the_auditors_permit(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        AUDITORS
        + """
        @id("no-contractor-audits")
        forbid (principal in Group::"contractors", action == Action::"audit/search", resource);

        @id("office-hours")
        forbid (principal, action == Action::"audit/search", resource) when { context.time > 2000000000 };
        """
    )
    assert engine.may_search_audit(user("audit"), now=1_000) is True
    assert engine.may_search_audit(user("audit", "contractors"), now=1_000) is False
    assert engine.may_search_audit(user("audit"), now=2_000_000_001) is False


def test_an_evaluation_error_is_a_deny(engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(
        """
        @id("overflows-later")
        permit (principal, action == Action::"audit/search", resource)
        when { context.time + 9223372036854775000 > 0 };

        @id("or-by-group")
        permit (principal in Group::"audit", action == Action::"audit/search", resource);
        """
    )
    assert engine.may_search_audit(user("audit"), now=100) is True
    # the first policy overflows after 807 s: an error anywhere is a deny, even beside a permit
    assert engine.may_search_audit(user("audit"), now=1_000) is False


def test_a_policy_on_the_wrong_resource_type_does_not_load(engine_for: Callable[[str], PolicyEngine]) -> None:
    with pytest.raises(ConfigError):
        engine_for('@id("x") permit (principal, action == Action::"audit/search", resource is Tool);')


def test_the_audit_search_request_conforms_to_the_builtin_schema() -> None:
    schema = cedarpy.Schema.from_str(builtin_schema_text() + "\ntype Arguments = {};\n")
    principal = user("audit", email="a@example.com")
    entities = json.dumps([principal_entity(principal), {"uid": {"type": "AuditLog", "id": "bastion"},
                                                         "attrs": {}, "parents": []}])  # fmt: skip
    request = {
        "principal": {"type": "User", "id": principal.sub},
        "action": {"type": "Action", "id": "audit/search"},
        "resource": {"type": "AuditLog", "id": "bastion"},
        "context": admin_context(5),
    }
    result = cedarpy.is_authorized(request, '@id("a") permit (principal, action, resource);', entities, schema)
    assert result.diagnostics.errors == []
    assert result.allowed
