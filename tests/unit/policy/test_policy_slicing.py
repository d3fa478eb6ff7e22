"""Policy slicing (``bastion.policy.slicing``): evaluating a request against its slice answers exactly
what evaluating it against the whole policy set answers.

The property tests generate policy sets (scopes of every form Cedar has, conditions that are
satisfied, unsatisfied or fail at run time, both effects, obligations) and requests (principals
with groups, every action, tools, prompts, resources and servers of two routes), and compare
Cedar's raw answers on the full set with those on the slice: the decision, the determining
policies and the errors; for partial evaluation (arguments unknown, as listings; principal and
context unknown, as inventories) also the policies that may and must be determining. Then the
engine's own answers (``decide``, ``filter_allowed``, ``filter_listable``) against the same
answers computed on the full set.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_helpers import user

from bastion.policy import PolicyEngine, ResourceRef
from bastion.policy.engine import (
    _UNKNOWN_ARGUMENTS,
    _context_record,
    _entity_handle,
    _principal_scope,
    _resource_scope,
    _uid_text,
    build_context,
)
from bastion.policy.model import ACTIONS, principal_entity
from bastion.policy.slicing import PolicySlicer, Scope
from bastion.principal import Principal

ROUTES = ("r0", "r1")
GROUPS = ("g0", "g1", "g2")
PRINCIPAL_SCOPES = (
    "principal",
    'principal == User::"u0"',
    'principal == User::"u1"',
    'principal == ServiceAccount::"s0"',
    'principal in Group::"g0"',
    'principal in Group::"g1"',
    'principal in User::"u0"',
    "principal is User",
    "principal is ServiceAccount",
    'principal is User in Group::"g2"',
    'principal is ServiceAccount in Group::"g0"',
)
ACTION_SCOPES = (
    "action",
    'action == Action::"tools/call"',
    'action == Action::"prompts/get"',
    'action in [Action::"tools/call", Action::"resources/read"]',
    'action in [Action::"sampling/createMessage"]',
)
RESOURCE_SCOPES = (
    "resource",
    'resource == Tool::"r0/t0"',
    'resource == Tool::"r1/t1"',
    'resource == Server::"r0"',
    'resource in Server::"r0"',
    'resource in Server::"r1"',
    'resource in Tool::"r0/t1"',
    "resource is Tool",
    "resource is Prompt",
    'resource is Tool in Server::"r1"',
    'resource is Resource in Server::"r0"',
)
CONDITIONS = (
    "",
    'when { resource has risk && resource.risk == "destructive" }',
    "when { context.records * 4611686018427387904 > 0 }",  # fails (overflow) when records >= 2
    'when { principal has email && principal.email like "*@a.test" }',
    "when { context.arguments has x && context.arguments.x == 2 }",
    "unless { context.arguments has y }",
    # Argument guards (PolicySlicer.unsatisfiable): a leading `has` is one; a `has` after a conjunct that
    # can fail, under `||`, or in a later clause is not; `has x.z` on a number fails when x is there.
    "when { context.arguments has y && context.records * 4611686018427387904 > 0 }",
    "when { context.records * 4611686018427387904 > 0 && context.arguments has y }",
    "when { context.arguments has x.z }",
    "when { context.arguments has y || context.approved }",
    "when { context.approved } when { context.arguments has x }",
    'when { context.arguments has y && context.arguments has x && context.arguments.y == "v" }',
    'when { context has client_id && context.client_id == "agent" }',
    "when { context.approved }",
    'when { principal in Group::"g1" }',
    'unless { resource has owner && resource.owner == "alice" }',
    'when { resource == Tool::"r0/t1" }',  # conditions that see the resource's uid, not only attributes
    'unless { resource in Server::"r1" }',
    'when { resource has name && resource.name == "t2" }',
    "when { resource is Tool }",
)
OBLIGATIONS = ("", '@approval("review")', '@reason("r")', '@reason("s")')

POLICY = st.tuples(
    st.sampled_from(("permit", "forbid")),
    st.sampled_from(PRINCIPAL_SCOPES),
    st.sampled_from(ACTION_SCOPES),
    st.sampled_from(RESOURCE_SCOPES),
    st.sampled_from(CONDITIONS),
    st.sampled_from(OBLIGATIONS),
)
PRINCIPAL = st.builds(
    lambda kind, sub, groups, email: Principal(
        kind=kind,
        sub=sub,
        issuer="https://idp.example.test",
        auth_method="bastion_jwt",
        expires_at=0,
        groups=tuple(groups),
        email=email if kind == "User" else None,
    ),
    st.sampled_from(("User", "ServiceAccount")),
    st.sampled_from(("u0", "u1", "s0")),
    st.lists(st.sampled_from(GROUPS), unique=True, max_size=3),
    st.sampled_from((None, "x@a.test", "x@b.test")),
)
RESOURCE = st.one_of(
    st.builds(
        lambda route, name, risk, owner: ResourceRef.from_tool(route, {"name": name}, risk=risk, owner=owner),
        st.sampled_from(ROUTES),
        st.sampled_from(("t0", "t1", "t2")),
        st.sampled_from(("read", "write", "destructive")),
        st.sampled_from(("", "alice")),
    ),
    st.builds(lambda route, name: ResourceRef("Prompt", route, name), st.sampled_from(ROUTES), st.just("p0")),
    st.builds(lambda route, name: ResourceRef("Resource", route, name), st.sampled_from(ROUTES), st.just("f://a")),
    st.builds(ResourceRef.server, st.sampled_from(ROUTES)),
)
CONTEXT = st.fixed_dictionaries(
    {
        "arguments": st.fixed_dictionaries({}, optional={"x": st.integers(1, 3), "y": st.just("v")}),
        "records": st.integers(0, 3),
        "approved": st.booleans(),
        "client_id": st.sampled_from(("agent", "other")),
        "time": st.just(1_000_000),
    }
)


def policy_text(policies: list[tuple[str, str, str, str, str, str]]) -> str:
    """Cedar text of generated policies, each with its own ``@id`` (``@approval`` only on permits)."""
    lines = []
    for i, (effect, p, a, r, condition, note) in enumerate(policies):
        kept = note if effect == "permit" or "approval" not in note else ""
        lines.append(f'@id("p{i}") {kept} {effect} ({p}, {a}, {r}) {condition};')
    return "\n".join(lines)


def load(text: str, *, validate: bool = True) -> PolicyEngine:
    """An engine of ``text``; ``validate=False`` skips Cedar's strict validation, which refuses generated
    scopes that can never match under the schema (``prompts/get`` on a ``Tool``): those still
    exercise slicing, and evaluation does not use the schema."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.cedar"
        path.write_text(text, encoding="utf-8")
        if validate:
            return PolicyEngine.load([path])
        with mock.patch("bastion.policy.loader._validate"):
            return PolicyEngine.load([path])


def raw(result: Any, within: set[str] | None = None) -> tuple[Any, ...]:
    """What must be equal between the full set and the slice, for a full or partial answer; with
    ``within``, only the policies of those Cedar ids count."""
    diagnostics = result.diagnostics
    named = [diagnostics.reasons]
    if hasattr(diagnostics, "may_be_determining"):
        named += [diagnostics.may_be_determining, diagnostics.must_be_determining]
    ids = [sorted(c for c in group if within is None or c in within) for group in named]
    return (result.decision, sorted(diagnostics.errors), *ids)


def scopes(principal: Principal, resource: ResourceRef) -> tuple[Scope, Scope]:
    """The request's two sides as the engine gives them to the slicer."""
    return _principal_scope(principal), _resource_scope(resource)


class Unsliced(PolicySlicer):
    """A slicer whose every slice is the whole set (so not exact on the resource)."""

    def __init__(self, templates: Any) -> None:
        super().__init__(templates)
        self.resource_exact = False

    def mask(self, principal: Scope | None, action: str | None, resource: Scope | None) -> int:
        return self.all

    def unsatisfiable(self, arguments: Any) -> int:
        return 0


class Whole(PolicyEngine):
    """An engine that evaluates every request against the whole policy set: no scope slice, no
    narrowing by partial evaluation (what ``PolicyEngine`` did before slicing)."""

    def __init__(self, loaded: Any) -> None:
        super().__init__(loaded)
        self._slicer = Unsliced(loaded.templates)
        self._admin = Unsliced({k: t for k, t in loaded.templates.items() if k in loaded.admin_ids})

    def _narrowed(self, key: tuple[str, str, str], principal: Principal, action: str, resource: ResourceRef) -> int:
        return self._slicer.all


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    policies=st.lists(POLICY, min_size=1, max_size=25),
    requests=st.lists(
        st.tuples(PRINCIPAL, st.sampled_from(sorted(ACTIONS)), RESOURCE, CONTEXT), min_size=1, max_size=6
    ),
)
def test_a_slice_answers_as_the_whole_set(policies: list[Any], requests: list[Any]) -> None:
    policy_set = cedarpy.PolicySet.from_str(policy_text(policies))
    slicer = PolicySlicer(policy_set.to_pst().static_policies)
    for principal, action, resource, context in requests:
        principal_scope, resource_scope = scopes(principal, resource)
        handle = _entity_handle(principal, [resource], action)
        # Full evaluation, as decide does it.
        request = {
            "principal": {"type": principal.kind, "id": principal.sub},
            "action": {"type": "Action", "id": action},
            "resource": resource.uid,
            "context": build_context(context),
        }
        mask = slicer.mask(principal_scope, action, resource_scope)
        full = cedarpy.is_authorized_batch([request], policy_set, handle)[0]
        sliced = cedarpy.is_authorized_batch([request], slicer.policy_set(mask), handle)[0]
        assert raw(sliced) == raw(full)
        # Less the policies the call's arguments cannot satisfy (a leading `has` names one it lacks).
        cut = mask & ~slicer.unsatisfiable(context["arguments"])
        assert raw(cedarpy.is_authorized_batch([request], slicer.policy_set(cut), handle)[0]) == raw(full)
        # Partial evaluation with the arguments unknown (listings).
        record = _context_record(context, None)
        record["arguments"] = _UNKNOWN_ARGUMENTS
        partial = {
            "principal": _uid_text(principal.kind, principal.sub),
            "action": _uid_text("Action", action),
            "resource": _uid_text(resource.uid["type"], resource.uid["id"]),
            "context": json.dumps(record),
        }
        full = cedarpy.is_authorized_partial(partial, policy_set, handle)
        sliced = cedarpy.is_authorized_partial(partial, slicer.policy_set(mask), handle)
        assert raw(sliced) == raw(full)
        # Principal and context unknown (inventories). Cedar keeps "unknown == X && false" as a
        # residual, so on the full set a policy scoped to another action or resource may still be
        # "may be determining" (and make a permit only "may" where it must); the slice leaves it
        # out, so its answer is sharper, never different: the same errors, no policy named that the
        # full answer does not name, and a decision Cedar reaches on the full set is the slice's too.
        inventory = {"action": partial["action"], "resource": partial["resource"]}
        wide = slicer.mask(None, action, resource_scope)
        assert wide & mask == mask
        full = cedarpy.is_authorized_partial(inventory, policy_set, handle)
        sliced = cedarpy.is_authorized_partial(inventory, slicer.policy_set(wide), handle)
        _, errors, *named = raw(sliced)
        _, full_errors, *full_named = raw(full, set(slicer.cedar_ids(wide)))
        assert errors == full_errors
        assert set().union(*named) <= set().union(*full_named)
        if full.decision != cedarpy.Decision.NoDecision:
            assert sliced.decision == full.decision


@SETTINGS
@given(
    policies=st.lists(POLICY, min_size=1, max_size=25),
    principal=PRINCIPAL,
    action=st.sampled_from(sorted(ACTIONS)),
    resources=st.lists(RESOURCE, min_size=1, max_size=8, unique_by=lambda r: json.dumps(r.uid)),
    context=CONTEXT,
)
def test_the_engine_answers_as_the_whole_set(
    policies: list[Any], principal: Principal, action: str, resources: list[ResourceRef], context: dict[str, Any]
) -> None:
    text = policy_text(policies)
    engine = load(text, validate=False)
    whole = Whole(load(text, validate=False)._loaded)  # the reference: every policy for every request
    assert [engine.decide(principal, action, r, context) for r in resources] == [
        whole.decide(principal, action, r, context) for r in resources
    ]
    assert engine.filter_allowed(principal, action, resources, context) == whole.filter_allowed(
        principal, action, resources, context
    )
    assert engine.filter_listable(principal, action, resources, context) == whole.filter_listable(
        principal, action, resources, context
    )
    for resource in resources:
        assert engine.may_permit(resource, action) <= whole.may_permit(resource, action)  # never more reachable
        assert engine.approval_need_for(principal, resource, context, action) == whole.approval_need_for(
            principal, resource, context, action
        )


def test_unrelated_policies_are_not_in_the_slice() -> None:
    text = "\n".join(
        f'@id("other{i}") permit (principal in Group::"g{i}", action == Action::"tools/call", '
        f'resource == Tool::"r{i % 7}/t{i}");'
        for i in range(500)
    )
    text += """
    @id("mine") permit (principal in Group::"dev", action == Action::"tools/call", resource in Server::"demo");
    @id("no-destructive") forbid (principal, action, resource is Tool) when { resource.risk == "destructive" };
    """
    engine = load(text)
    alice = user("dev")
    ref = ResourceRef.from_tool("demo", {"name": "search"}, risk="read")
    principal_scope, resource_scope = scopes(alice, ref)
    mask = engine._slicer.mask(principal_scope, "tools/call", resource_scope)
    assert [engine._loaded.by_cedar_id[c].policy_id for c in engine._slicer.cedar_ids(mask)] == [
        "mine",
        "no-destructive",
    ]
    assert engine.decide(alice, "tools/call", ref, {}).policy_ids == ("mine",)
    assert not engine.decide(user("ops"), "tools/call", ref, {}).allowed


def test_no_matching_scope_is_a_default_deny_without_cedar(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = load('@id("ops") permit (principal in Group::"ops", action, resource);')

    def boom(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Cedar was asked")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", boom)
    decision = engine.decide(user("dev"), "tools/call", ResourceRef.from_tool("demo", {"name": "t"}), {})
    assert (decision.effect, decision.policy_ids, decision.errors) == ("deny", (), ())
    assert engine.filter_listable(user("dev"), "tools/call", [ResourceRef.from_tool("demo", {"name": "t"})], {}) == [
        False
    ]


def test_slices_are_cached_and_bounded() -> None:
    loaded_text = "\n".join(f'@id("p{i}") permit (principal in Group::"g{i}", action, resource);' for i in range(6))
    engine = load(loaded_text)
    slicer = PolicySlicer(engine._loaded.templates, cache_size=2)
    first = slicer.policy_set(0b1)
    assert slicer.policy_set(0b1) is first
    slicer.policy_set(0b10)
    slicer.policy_set(0b100)  # evicts 0b1, the least recently used
    assert slicer.policy_set(0b1) is not first
    assert slicer.cedar_ids(0b101) == ["policy0", "policy2"]


def test_a_list_shares_answers_only_between_alike_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tools of one route whose slices match and whose read attributes are equal get one partial
    evaluation; a tool whose risk differs, or a slice whose conditions see the uid, gets its own."""
    engine = load(
        """
        @id("dev") permit (principal in Group::"dev", action == Action::"tools/call", resource in Server::"demo")
        unless { context.arguments has path && context.arguments.path like "/etc/*" };
        @id("no-destructive") forbid (principal, action, resource is Tool in Server::"demo")
        when { resource.risk == "destructive" };
        @id("not-t9") forbid (principal, action, resource in Server::"other") when { resource == Tool::"other/t9" };
        @id("other") permit (principal, action, resource in Server::"other")
        when { context.arguments has x && context.arguments.x == 1 };
        """
    )
    calls = 0
    partial = cedarpy.is_authorized_partial

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return partial(*args, **kwargs)

    monkeypatch.setattr(cedarpy, "is_authorized_partial", counted)
    tools = [ResourceRef.from_tool("demo", {"name": f"t{n}"}, risk="read") for n in range(5)]
    tools += [ResourceRef.from_tool("demo", {"name": "drop"}, risk="destructive")]
    assert engine.filter_listable(user("dev"), "tools/call", tools, {}) == [True] * 5 + [False]
    assert calls == 2  # one per distinct risk
    calls = 0
    others = [ResourceRef.from_tool("other", {"name": f"t{n}"}, risk="read") for n in (1, 9, 2)]
    assert engine.filter_listable(user("dev"), "tools/call", others, {}) == [True, False, True]
    assert calls == 3  # "not-t9" sees the uid: each tool on its own


def test_a_slice_is_narrowed_by_what_is_known_before_the_context() -> None:
    """Policies whose conditions fail for this principal and resource whatever the context are left
    out of the call's slice; those that depend on the context, or fail with an error, stay."""
    text = "\n".join(
        f'@id("team{i}") permit (principal, action == Action::"tools/call", resource in Server::"demo") '
        f'when {{ principal has email && principal.email like "*@team{i}.example" }};'
        for i in range(50)
    )
    text += """
    @id("no-etc") forbid (principal, action, resource in Server::"demo")
    when { context.arguments has path && context.arguments.path like "/etc/*" };
    @id("no-destructive") forbid (principal, action, resource is Tool) when { resource.risk == "destructive" };
    """
    engine = load(text)
    dana = user("dev", email="dana@team7.example")
    ref = ResourceRef.from_tool("demo", {"name": "search"}, risk="read")
    key = ("tools/call", json.dumps(principal_entity(dana)), ref.entity_json()[0])
    narrowed = engine._narrowed(key, dana, "tools/call", ref)
    ids = [engine._loaded.by_cedar_id[c].policy_id for c in engine._slicer.cedar_ids(narrowed)]
    assert ids == ["team7", "no-etc"]
    assert engine.decide(dana, "tools/call", ref, {"arguments": {"path": "/srv/a"}}).policy_ids == ("team7",)
    assert engine.decide(dana, "tools/call", ref, {"arguments": {"path": "/etc/passwd"}}).policy_ids == ("no-etc",)


def test_a_call_without_a_guarded_argument_leaves_its_policies_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leading ``context.arguments has x`` in a policy's first ``when`` is a guard: a call without
    ``x`` never asks Cedar about that policy. A ``has`` anywhere else is not a guard."""
    engine = load(
        """
        @id("no-etc") forbid (principal, action, resource)
        when { context.arguments has path && context.arguments.path like "/etc/*" };
        @id("nested") forbid (principal, action, resource)
        when { context.arguments has opts.force && context.arguments.opts.force };
        @id("late") forbid (principal, action, resource) when { context.approved && context.arguments has path };
        @id("either") forbid (principal, action, resource) when { context.arguments has path || context.approved };
        @id("second") forbid (principal, action, resource)
        when { context.approved } when { context.arguments has path };
        @id("unless") permit (principal, action, resource) unless { context.arguments has path };
        @id("dev") permit (principal in Group::"dev", action, resource);
        """,
        validate=False,
    )
    slicer = engine._slicer

    def ids(mask: int) -> list[str]:
        return [engine._loaded.by_cedar_id[c].policy_id for c in slicer.cedar_ids(mask)]

    assert ids(slicer.unsatisfiable({})) == ["no-etc", "nested"]
    assert ids(slicer.unsatisfiable({"path": "/srv", "other": 1})) == ["nested"]
    assert ids(slicer.unsatisfiable({"opts": {}, "path": "/srv"})) == []
    asked: list[list[str]] = []  # the policies of each slice given to Cedar
    policy_set = PolicySlicer.policy_set

    def seen(self: PolicySlicer, mask: int) -> cedarpy.PolicySet:
        asked.append(sorted(ids(mask)))
        return policy_set(self, mask)

    monkeypatch.setattr(PolicySlicer, "policy_set", seen)
    ref = ResourceRef.from_tool("demo", {"name": "search"}, risk="read")
    assert engine.decide(user("dev"), "tools/call", ref, {"arguments": {"q": "a"}}).policy_ids == ("dev", "unless")
    assert asked[-1] == ["dev", "either", "late", "second", "unless"]  # (asked[0]: the narrowing, context unknown)
    decision = engine.decide(user("dev"), "tools/call", ref, {"arguments": {"path": "/etc/passwd"}})
    assert decision.policy_ids == ("either", "no-etc")
    assert asked[-1] == ["dev", "either", "late", "no-etc", "second", "unless"]
