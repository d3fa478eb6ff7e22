"""``@redact`` (issue 15): validated at load, and merged as a union of classes over the deciding permits,
never a conflict (``bastion.scan.redact_classes``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from policy_helpers import tool, user

from bastion.errors import ConfigError
from bastion.policy import PolicyEngine
from bastion.scan.redact_classes import merge_redact, parse_redact

POLICIES = """
@id("analysts-secrets") @redact("secrets")
permit (principal in Group::"analysts", action == Action::"tools/call", resource);

@id("contractors-pii") @redact("pii")
permit (principal in Group::"contractors", action == Action::"tools/call", resource);

@id("auditors-both") @redact("PII, secrets") @approval("review")
permit (principal in Group::"auditors", action == Action::"tools/call", resource);

@id("admins") @approval("confirm")
permit (principal in Group::"admins", action == Action::"tools/call", resource);
"""


@pytest.fixture
def engine(engine_for: Callable[[str], PolicyEngine]) -> PolicyEngine:
    return engine_for(POLICIES)


def test_one_permit_gives_its_classes(engine: PolicyEngine) -> None:
    decision = engine.decide(user("contractors"), "tools/call", tool("t"), {})
    assert decision.allowed
    assert decision.obligations == {"redact": "pii"}


def test_two_permits_give_the_union_of_their_classes(engine: PolicyEngine) -> None:
    decision = engine.decide(user("analysts", "contractors"), "tools/call", tool("t"), {})
    assert decision.allowed
    assert decision.policy_ids == ("analysts-secrets", "contractors-pii")
    assert decision.obligations == {"redact": "secrets,pii"}


def test_a_value_is_written_back_in_one_form_and_other_obligations_still_conflict(engine: PolicyEngine) -> None:
    decision = engine.decide(user("auditors", "analysts"), "tools/call", tool("t"), {})
    assert decision.obligations == {"redact": "secrets,pii", "approval": "review"}
    conflict = engine.decide(user("auditors", "admins"), "tools/call", tool("t"), {})
    assert not conflict.allowed
    assert "conflicting obligation @approval" in conflict.errors[0]
    assert not any("@redact" in error for error in conflict.errors)


def test_a_permit_without_redact_adds_nothing(engine: PolicyEngine) -> None:
    decision = engine.decide(user("admins", "contractors"), "tools/call", tool("t"), {})
    assert decision.obligations == {"approval": "confirm", "redact": "pii"}
    assert engine.filter_listable(user("analysts", "contractors"), "tools/call", [tool("t")], {}) == [True]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ('@redact("passwords")', "must name secrets, pii"),
        ('@redact("")', "must name secrets, pii"),
        ('@redact("secrets,,pii")', "must name secrets, pii"),
    ],
)
def test_unknown_classes_are_refused_at_load(
    engine_for: Callable[[str], PolicyEngine], annotation: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        engine_for(f'@id("p") {annotation} permit (principal, action, resource);')
    assert "@id('p')" in str(info.value)


def test_redact_on_a_forbid_is_refused_at_load(engine_for: Callable[[str], PolicyEngine]) -> None:
    with pytest.raises(ConfigError, match="belongs on a permit"):
        engine_for('@id("f") @redact("pii") forbid (principal, action, resource);')


def test_parse_and_merge() -> None:
    assert parse_redact(" Secrets , pii ") == frozenset({"secrets", "pii"})
    assert merge_redact("pii", "secrets") == merge_redact("secrets,pii", "pii") == "secrets,pii"
    with pytest.raises(ValueError, match="must name"):
        merge_redact("pii", "ssn")
