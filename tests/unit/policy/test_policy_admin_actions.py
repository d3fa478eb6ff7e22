"""Bastion's own actions (``approvals/decide``, ``audit/search``) are granted only by permits that
name them: a permit with an unconstrained action makes nobody an approver or an auditor, while any
forbid still applies."""

from __future__ import annotations

from pathlib import Path

from bastion.approvals.model import ApprovalBinding, ApprovalRequest
from bastion.policy import PolicyEngine
from bastion.principal import Principal

NOW = 1_700_000_000.0


def engine(tmp_path: Path, text: str) -> PolicyEngine:
    (tmp_path / "p.cedar").write_text(text, encoding="utf-8")
    return PolicyEngine.load([tmp_path / "p.cedar"])


def user(sub: str, *groups: str) -> Principal:
    return Principal(kind="User", sub=sub, issuer="https://b.test", auth_method="bastion_jwt", expires_at=0,
                     idp="local", groups=groups)  # fmt: skip


REQUEST = ApprovalRequest(
    id="a1", kind="review", binding=ApprovalBinding("https://b.test\x1frita", "ci", "deploy", "0" * 64, "v"),
    requester_label="rita", client_id="c", arguments={}, risk="destructive", classification="", policy_ids=("p",),
    decision_id="d", created_at=NOW, expires_at=NOW + 60,
)  # fmt: skip


def test_an_unconstrained_action_grants_neither(tmp_path: Path) -> None:
    broad = engine(tmp_path, '@id("admins-everything") permit (principal in Group::"admins", action, resource);')
    admin = user("ada", "admins")
    assert not broad.decide_approver(admin, REQUEST, now=NOW).allowed
    assert not broad.may_search_audit(admin, now=NOW)


def test_permits_that_name_the_action_grant_it_and_forbids_still_apply(tmp_path: Path) -> None:
    named = engine(tmp_path, """
@id("ops-decide") permit (principal in Group::"ops", action == Action::"approvals/decide", resource);
@id("audit-search") permit (principal in Group::"audit", action in [Action::"audit/search"], resource);
@id("no-contractors") forbid (principal in Group::"contractors", action, resource);
""")  # fmt: skip
    assert named.decide_approver(user("olga", "ops"), REQUEST, now=NOW).policy_ids == ("ops-decide",)
    assert named.may_search_audit(user("aud", "audit"), now=NOW)
    denied = named.decide_approver(user("carl", "ops", "contractors"), REQUEST, now=NOW)
    assert (denied.effect, denied.policy_ids) == ("deny", ("no-contractors",))
    assert not named.may_search_audit(user("cleo", "audit", "contractors"), now=NOW)
    assert not named.decide_approver(user("bob", "dev"), REQUEST, now=NOW).allowed
